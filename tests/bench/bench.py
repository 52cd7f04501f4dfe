#!/usr/bin/env python3
"""The mcp-tunnel benchmark driver (run by tests/bench/run.sh, i.e. `make bench`).

Starts, on 127.0.0.1 only: the built-in stub MCP server (the backend); our relay + tunnel client
(`--bin`: the static musl binary `make static` builds, the one the packages ship; path
`mcp-tunnel`); with `--glibc-bin`, a second relay + client pair from the glibc release build for
comparison (path `mcp-tunnel-glibc`); a rathole server + client; a bore server + `bore local`; a second, idle relay + client pair for the
idle measurements. Then drives MCP `tools/call echo` requests through each path (direct,
mcp-tunnel, rathole, bore) with wrk at concurrency 1, 8 and 64, interleaved, and runs the relay
scaling test (1,000 idle long-polls plus connector traffic). Writes every number to a JSON file
that report.py turns into RESULTS.md and latency.svg.

Every process it starts is killed when it exits (and, through PR_SET_PDEATHSIG, if it is killed);
every wait is bounded. Exit status: 0 when every request succeeded, 1 otherwise.
"""

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PATHS = ["direct", "mcp-tunnel", "rathole", "bore"]
CONCURRENCY = [1, 8, 64]
# Keep-alive connections held open to the idle relay during the idle window (issue 21's target).
IDLE_CONNECTIONS = 64
ECHO_BODY = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    '"params":{"name":"echo","arguments":{"text":"mcp-tunnel-bench-probe"}}}'
)
BORE_CONTROL_PORT = 7835  # fixed in bore; not configurable
CLK_TCK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
WAKE_BASELINE = """
import json, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
n = int(sys.argv[1])
c0 = cpu()
for _ in range(n):
    time.sleep(1)
print(json.dumps({"wakes": n, "cpu_us_per_wake": round((cpu() - c0) / n * 1e6, 1)}))
"""


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- /proc readings


def proc_cpu_ticks(pid):
    """utime + stime of the whole process (dead threads included), in clock ticks."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def proc_sys_ticks(pid):
    """stime alone (kernel time), in clock ticks."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().rsplit(")", 1)[1].split()[12])


def proc_status(pid):
    """VmRSS in KiB and the thread count."""
    rss = threads = None
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def thread_switches(pid):
    """Voluntary + involuntary context switches of each live thread: {tid: count}."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                out[tid] = sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
        except OSError:
            pass  # the thread ended meanwhile
    return out


def thread_times(pid):
    """Per live thread, grouped by name (worker-0..N -> worker): (ns on CPU, context switches).
    Exact, unlike the tick-granular totals, but blind to threads that ended in between."""
    groups = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
                name = re.sub(r"-\d+$", "", f.read().strip())
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                ns = int(f.read().split()[0])
            switches = 0
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                for line in f:
                    if "ctxt_switches:" in line:
                        switches += int(line.split()[1])
        except OSError:
            continue
        g = groups.setdefault(name, [0, 0, 0])
        g[0] += ns
        g[1] += switches
        g[2] += 1
    return groups


def thread_delta(before, after):
    out = {}
    for name, (ns, sw, n) in after.items():
        b = before.get(name, [0, 0, 0])
        out[name] = {"cpu_ms": round((ns - b[0]) / 1e6, 3), "wakes": sw - b[1], "threads": n}
    return out


def last_pid():
    with open("/proc/loadavg", encoding="ascii") as f:
        return int(f.read().split()[-1])


def pid_max():
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as f:
        return int(f.read())


def loadavg():
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- processes


class Procs:
    """Every long-running process we start, by role; all killed on exit."""

    def __init__(self, workdir, base_env):
        self.workdir = workdir
        self.base_env = base_env
        self.procs = {}
        self.commands = []  # human-readable, secrets masked, for RESULTS.md

    def start(self, role, argv, env=None, shown_env=None, record=True):
        full_env = dict(self.base_env)
        full_env.update(env or {})
        out = open(os.path.join(self.workdir, f"{role}.out"), "wb")
        err = open(os.path.join(self.workdir, f"{role}.err"), "wb")
        # setpriv --pdeathsig: the child is killed if this driver dies without cleaning up.
        p = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--"] + argv,
            env=full_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )
        out.close()
        err.close()
        p.started_at = time.monotonic()
        p.role = role
        self.procs[role] = p
        if record:
            prefix = " ".join(f"{k}={v}" for k, v in (shown_env or {}).items())
            self.commands.append((role, (prefix + " " if prefix else "") + " ".join(argv)))
        return p

    def output(self, role, stream="err"):
        with open(os.path.join(self.workdir, f"{role}.{stream}"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for_output(self, role, pattern, stream="err", timeout=15.0):
        """First match of `pattern` in the process's output, waiting at most `timeout`."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            text = re.sub(r"\x1b\[[0-9;]*m", "", self.output(role, stream))
            m = rx.search(text)
            if m:
                return m
            if self.procs[role].poll() is not None:
                raise BenchError(f"{role} exited ({self.procs[role].returncode}) before printing "
                                 f"{pattern!r}: {text[-2000:]}")
            time.sleep(0.02)
        raise BenchError(f"{role} did not print {pattern!r} within {timeout:.0f} s")

    def stop(self, role, timeout=5.0):
        """SIGTERM, then SIGKILL; returns the rusage of the process."""
        p = self.procs.pop(role, None)
        if p is None or p.returncode is not None:
            return None
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                return usage
            if time.monotonic() >= deadline:
                p.kill()
                _, status, usage = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                return usage
            time.sleep(0.02)

    def check_alive(self):
        for role, p in self.procs.items():
            if p.poll() is not None:
                raise BenchError(f"{role} exited unexpectedly ({p.returncode}): "
                                 f"{self.output(role)[-2000:]}")

    def stop_all(self):
        for role in reversed(list(self.procs)):
            try:
                self.stop(role, timeout=3.0)
            except Exception as e:  # keep stopping the others
                log(f"stopping {role}: {e}")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    """Whether nothing listens on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def post_echo(port, path, key=None, timeout=5.0):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=ECHO_BODY, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def wait_echo_ok(port, path, key=None, timeout=20.0, what=""):
    """Polls until an echo through `port` answers 200 with the echoed text."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = post_echo(port, path, key, timeout=3.0)
            if status == 200 and "mcp-tunnel-bench-probe" in body:
                return
            last = f"HTTP {status}: {body[:200]}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise BenchError(f"{what} not answering echo within {timeout:.0f} s (last: {last})")


class PollSniffer:
    """A loopback TCP pass-through to the relay that notes when each tunnel's first poll request
    line passes (time.monotonic(), the clock the spawn times are taken on)."""

    POLL = re.compile(rb"^GET /v1/tunnels/(tunnel_[0-9a-f]{32})/poll\?", re.M)

    def __init__(self, target_port):
        self.target_port = target_port
        self.seen = {}
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def first_poll(self, tunnel_id):
        with self.lock:
            return self.seen.get(tunnel_id)

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                up.settimeout(None)
            except OSError:
                return
            for sock in (down, up):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.socks += [down, up]
            threading.Thread(target=self._pump, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()

    def _pump(self, src, dst, sniff):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if sniff:
                    m = self.POLL.search(data)
                    if m:
                        now = time.monotonic()
                        with self.lock:
                            self.seen.setdefault(m.group(1).decode("ascii"), now)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()
        with self.lock:
            for sock in self.socks:
                try:
                    sock.close()
                except OSError:
                    pass


# ---------------------------------------------------------------- tunnels


def add_tunnel(binary, tunnels_file, name, env):
    out = subprocess.run(
        [binary, "relay", "tunnel", "add", "--name", name, "--tunnels-file", tunnels_file],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    tid = re.search(r"^\s*id:\s+(tunnel_[0-9a-f]{32})\s*$", out, re.M)
    rt = re.search(r"^\s*runtime key:\s+(\S+)\s*$", out, re.M)
    cn = re.search(r"^\s*connector key:\s+(\S+)\s*$", out, re.M)
    if not (tid and rt and cn):
        raise BenchError(f"cannot read `relay tunnel add` output:\n{out}")
    return {"id": tid.group(1), "runtime_key": rt.group(1), "connector_key": cn.group(1)}


def open_keepalive(port, n):
    """n connections to the relay on `port`, each with one answered keep-alive request, left open."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                raise BenchError("the relay closed a keep-alive connection at once")
            got += chunk
        if not got.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"GET /healthz: {got[:80]!r}")
        socks.append(s)
    return socks



# ---------------------------------------------------------------- wrk


def parse_wrk_result(path):
    res = {"hist": {}}
    with open(path, encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "hist":
                v, c = int(float(parts[1])), int(float(parts[2]))
                res["hist"][v] = res["hist"].get(v, 0) + c
            else:
                res[parts[0]] = float(parts[1])
    return res


def failures_of(res):
    keys = ["bad_status", "bad_body", "err_connect", "err_read", "err_write", "err_status",
            "err_timeout"]
    bad = {k: int(res.get(k, 0)) for k in keys if res.get(k, 0)}
    if res.get("requests", 0) <= 0:
        bad["no_requests"] = 1
    return bad


class Sampler:
    """While a load runs: RSS/threads maxima of some processes, the tasks created machine-wide
    and, for `switch_pids`, the context switches of every thread, including threads that start
    and end during the run (read every 0.5 s; a thread's last 0.5 s before it ends are lost)."""

    SWITCH_EVERY = 0.5

    def __init__(self, pids, switch_pids=None):
        self.pids = pids  # role -> pid
        self.switch_pids = switch_pids or {}
        self.sw_base = {r: thread_switches(p) for r, p in self.switch_pids.items()}
        self.sw_last = {r: dict(v) for r, v in self.sw_base.items()}
        self.next_switch_read = time.monotonic() + self.SWITCH_EVERY
        self.max_rss = {r: 0 for r in pids}
        self.max_threads = {r: 0 for r in pids}
        # Tasks (processes and threads) created machine-wide: the last PID handed out, followed
        # often enough that it cannot wrap around pid_max unnoticed between two samples.
        self.pid_max = pid_max()
        self.last_pid = last_pid()
        self.new_pids = 0

    def sample(self, final=False):
        cur = last_pid()
        self.new_pids += (cur - self.last_pid) % self.pid_max
        self.last_pid = cur
        if self.switch_pids and (final or time.monotonic() >= self.next_switch_read):
            self.next_switch_read += self.SWITCH_EVERY
            for role, pid in self.switch_pids.items():
                self.sw_last[role].update(thread_switches(pid))
        for role, pid in self.pids.items():
            try:
                rss, threads = proc_status(pid)
            except OSError:
                continue
            self.max_rss[role] = max(self.max_rss[role], rss or 0)
            self.max_threads[role] = max(self.max_threads[role], threads or 0)


    def switches(self):
        out = {}
        for role, last in self.sw_last.items():
            base = self.sw_base[role]
            # a count below the start value is a new thread that reused an old one's id
            out[role] = sum(n - base.get(t, 0) if n >= base.get(t, 0) else n
                            for t, n in last.items())
        return out

def run_wrk(cfg, url, conc, seconds, result_file, auth=None, sampler=None):
    """One wrk run; returns (parsed result, wrk's own CPU seconds)."""
    threads = min(2, conc)
    seconds = max(1, int(round(seconds)))  # wrk takes whole seconds
    argv = [cfg.wrk, f"-t{threads}", f"-c{conc}", f"-d{seconds}s", "--timeout", "5s", "--latency",
            "-s", os.path.join(HERE, "echo.lua"), url]
    env = dict(cfg.base_env)
    env["BENCH_RESULT"] = result_file
    if auth:
        env["BENCH_AUTH"] = auth
    if os.path.exists(result_file):
        os.remove(result_file)
    with open(result_file + ".stdout", "wb") as out:
        p = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--"] + argv, env=env,
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds + 30
    usage = None
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            usage = ru
            break
        if time.monotonic() > deadline:
            p.kill()
            os.wait4(p.pid, 0)
            p.returncode = -9
            raise BenchError(f"wrk did not finish: {' '.join(argv)}")
        if sampler:
            sampler.sample()
        time.sleep(0.1)
    if sampler:
        sampler.sample(final=True)
    if p.returncode != 0 or not os.path.exists(result_file):
        with open(result_file + ".stdout", encoding="utf-8", errors="replace") as f:
            raise BenchError(f"wrk failed ({p.returncode}): {f.read()[-2000:]}")
    res = parse_wrk_result(result_file)
    return res, usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- the benchmark


def parse_args():
    p = argparse.ArgumentParser(description="mcp-tunnel benchmark driver")
    p.add_argument("--bin", required=True,
                   help="the mcp-tunnel binary measured (make bench: the static musl one)")
    p.add_argument("--glibc-bin", help="the glibc release build, measured for comparison as the "
                   "path mcp-tunnel-glibc")
    p.add_argument("--tools", required=True, help="folder holding bin/rathole and bin/bore")
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--results", required=True, help="JSON file to write")
    p.add_argument("--duration", type=float, default=8.0, help="seconds measured per cell and round")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each cell")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--idle-seconds", type=float, default=55.0,
                   help="idle window; under the relay's 60 s keep-alive timeout")
    p.add_argument("--pollers", type=int, default=10000)
    p.add_argument("--scale-seconds", type=float, default=20.0)
    p.add_argument("--first-poll-runs", type=int, default=5)
    p.add_argument("--workdir", help="an empty directory for keys, configs and logs (made and "
                   "removed here when not given)")
    return p.parse_args()


def clean_env():
    """Only what the children need: no proxies, no stray CONTROL_PLANE_*/MCP_* settings."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
           if k in os.environ}
    env["NO_COLOR"] = "1"
    return env


def machine_info(cfg):
    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    model = ""
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    rathole_v = re.search(r"Build Version:\s*(\S+)", cmd([cfg.rathole, "--version"]))
    wrk_v = cmd(["dpkg-query", "-W", "-f", "${Version}", "wrk"])
    if not wrk_v:
        wrk_v = (cmd([cfg.wrk, "-v"]).splitlines() or [""])[0]
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": cmd(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "rustc": cmd(["rustc", "--version"]),
        "mcp_tunnel": cmd([cfg.bin, "--version"]),
        "mcp_tunnel_glibc": cmd([cfg.glibc_bin, "--version"]) if cfg.glibc_bin else "",
        "rathole": rathole_v.group(1) if rathole_v else cmd([cfg.rathole, "--version"])[:80],
        "rathole_features": "server,client (plain TCP transport; no TLS/noise/websocket)",
        "bore": cmd([cfg.bore, "--version"]),
        "wrk": wrk_v,
        "python": platform.python_version(),
        "clk_tck": CLK_TCK,
    }


def binary_sizes(cfg):
    """The measured binary and the comparison build: path, size, what kind (from `file`)."""
    repo = os.path.dirname(os.path.dirname(HERE))

    def describe(path):
        info = subprocess.run(["file", "-b", path], capture_output=True, text=True,
                              timeout=10).stdout if shutil.which("file") else ""
        static = "statically linked" in info or "static-pie linked" in info
        kind = "static musl binary (`make static`)" if static else "glibc release build"
        return {"path": os.path.relpath(path, repo), "bytes": os.path.getsize(path),
                "kind": kind, "static": static}

    ours = describe(cfg.bin)
    glibc = describe(cfg.glibc_bin) if cfg.glibc_bin else None
    # Older reports read release_bytes: the glibc build's size.
    ours["release_bytes"] = glibc["bytes"] if glibc else ours["bytes"]
    return {
        "mcp-tunnel": ours,
        "mcp-tunnel-glibc": glibc,
        "rathole": os.path.getsize(cfg.rathole),
        "bore": os.path.getsize(cfg.bore),
    }


def main():
    cfg = parse_args()
    cfg.bin = os.path.abspath(cfg.bin)
    cfg.glibc_bin = os.path.abspath(cfg.glibc_bin) if cfg.glibc_bin else None
    cfg.paths = PATHS[:2] + (["mcp-tunnel-glibc"] if cfg.glibc_bin else []) + PATHS[2:]
    cfg.rathole = os.path.join(os.path.abspath(cfg.tools), "bin", "rathole")
    cfg.bore = os.path.join(os.path.abspath(cfg.tools), "bin", "bore")
    cfg.wrk = shutil.which(cfg.wrk) or cfg.wrk
    cfg.base_env = clean_env()
    for exe in (cfg.bin, cfg.rathole, cfg.bore, cfg.wrk) + ((cfg.glibc_bin,) if cfg.glibc_bin
                                                             else ()):
        if not os.access(exe, os.X_OK):
            raise BenchError(f"missing executable: {exe}")
    # N held polls need N descriptors in the relay (one per connection) and in the pollers, plus
    # the load's; the relay and pollers.py inherit this limit.
    want = cfg.pollers + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (min(hard, want) if hard != resource.RLIM_INFINITY else want, hard))

    workdir = cfg.workdir or tempfile.mkdtemp(prefix="mcp-tunnel-bench.")
    procs = Procs(workdir, cfg.base_env)
    failures = []
    interrupted = []

    def on_signal(sig, _frame):
        interrupted.append(sig)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    results = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {"duration_s": cfg.duration, "warmup_s": cfg.warmup, "rounds": cfg.rounds,
                     "concurrency": CONCURRENCY, "paths": cfg.paths,
                     "idle_seconds": cfg.idle_seconds, "pollers": cfg.pollers,
                     "scale_seconds": cfg.scale_seconds, "wrk_timeout_s": 5},
        "loadavg_start": loadavg(),
    }
    try:
        results["machine"] = machine_info(cfg)
        results["sizes"] = binary_sizes(cfg)
        run_all(cfg, procs, workdir, results, failures)
    except KeyboardInterrupt:
        failures.append(f"interrupted by signal {interrupted[0] if interrupted else '?'}")
        log("interrupted; stopping everything")
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    except BenchError as e:
        log(f"FAILED: {e}")
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    finally:
        procs.stop_all()
    shutil.rmtree(workdir, ignore_errors=True)
    results["loadavg_end"] = loadavg()
    results["failures"] = failures
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["commands"] = procs.commands + results.pop("extra_commands", [])
    results["repo"] = os.path.dirname(os.path.dirname(HERE))
    results["workdir"] = workdir
    results["python"] = sys.executable
    os.makedirs(os.path.dirname(os.path.abspath(cfg.results)), exist_ok=True)
    with open(cfg.results, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    log(f"results in {cfg.results} ({results['elapsed_s']} s)")
    if failures:
        log("FAILED requests or checks:\n  " + "\n  ".join(failures))
        return 1
    return 0


def run_all(cfg, procs, workdir, results, failures):
    env = cfg.base_env
    tunnels_file = os.path.join(workdir, "tunnels.toml")
    idle_tunnels_file = os.path.join(workdir, "idle-tunnels.toml")
    B = cfg.bin

    # -------- tunnels, all created before the relays start
    load_t = add_tunnel(B, tunnels_file, "bench-load", env)
    glibc_t = add_tunnel(B, tunnels_file, "bench-load-glibc", env) if cfg.glibc_bin else None
    pollers_t = add_tunnel(B, tunnels_file, "bench-idle-pollers", env)
    diag_t = add_tunnel(B, tunnels_file, "bench-diag-1-worker", env)
    first_ts = [add_tunnel(B, tunnels_file, f"bench-first-poll-{i}", env)
                for i in range(cfg.first_poll_runs)]
    idle_t = add_tunnel(B, idle_tunnels_file, "bench-idle", env)
    results["extra_commands"] = [
        ("tunnels", f"{B} relay tunnel add --name bench-load --tunnels-file {tunnels_file}  "
                    "(likewise bench-idle-pollers, bench-diag-1-worker, bench-first-poll-N; "
                    "bench-idle into idle-tunnels.toml)"),
    ]

    # -------- backend
    procs.start("stub", [B, "stub", "--listen", "127.0.0.1:0"])
    m = procs.wait_for_output("stub", r"serving http://127\.0\.0\.1:(\d+)/mcp", stream="out")
    stub_port = int(m.group(1))

    # -------- idle: a relay + client pair of their own that never get a request, measured
    # first, while nothing else of ours runs (a busy machine makes idle wake-ups cheaper)
    # It also holds IDLE_CONNECTIONS keep-alive connections an MCP host left open (one answered
    # `GET /healthz` each), all from 127.0.0.1: no per-peer cap.
    procs.start("idle-relay", [B, "relay", "--listen", "127.0.0.1:0", "--tunnels-file",
                               idle_tunnels_file, "--max-connections-per-peer", "0"])
    m = procs.wait_for_output("idle-relay", r"relay listening on http://127\.0\.0\.1:(\d+)")
    idle_relay_port = int(m.group(1))

    def client_env(relay_port, tunnel, workers=64, level="warn"):
        shown = {
            "CONTROL_PLANE_BASE_URL": f"http://127.0.0.1:{relay_port}",
            "CONTROL_PLANE_TUNNEL_ID": tunnel["id"],
            "CONTROL_PLANE_API_KEY": "<runtime key>",
            "MCP_SERVER_URL": f"http://127.0.0.1:{stub_port}/mcp",
            "LOG_LEVEL": level,
            "HEALTH_LISTEN_ADDR": "off",
            "MCP_MAX_CONCURRENT_REQUESTS": str(workers),
            "CONTROL_PLANE_MAX_INFLIGHT_REQUESTS": "128",
        }
        real = dict(shown)
        real["CONTROL_PLANE_API_KEY"] = tunnel["runtime_key"]
        return real, shown

    real, shown = client_env(idle_relay_port, idle_t)
    idle_client = procs.start("idle-client", [B, "run"], env=real, shown_env=shown)
    idle_pids = {"client": idle_client.pid, "relay": procs.procs["idle-relay"].pid}
    log(f"idle measurement: {cfg.idle_seconds:g} s window from 5 s after the client's start")
    t0 = idle_client.started_at
    time.sleep(max(0.0, t0 + 5.0 - time.monotonic()))
    # Opened now, so that none reaches the relay's 60 s keep-alive idle timeout in the window.
    idle_socks = open_keepalive(idle_relay_port, IDLE_CONNECTIONS)
    time.sleep(0.2)
    ticks0 = {r: proc_cpu_ticks(p) for r, p in idle_pids.items()}
    threads0 = {r: thread_times(p) for r, p in idle_pids.items()}
    load0 = loadavg()
    w0 = time.monotonic()
    # What one wake-up of an otherwise idle thread costs on this machine, for scale: a process
    # that only sleeps one second at a time, measuring its own CPU time.
    wakes = max(1, int(cfg.idle_seconds) - 2)
    baseline = procs.start("wake-baseline", [sys.executable, "-c", WAKE_BASELINE, str(wakes)],
                           record=False)
    time.sleep(max(0.0, w0 + cfg.idle_seconds - time.monotonic()))
    ticks1 = {r: proc_cpu_ticks(p) for r, p in idle_pids.items()}
    threads1 = {r: thread_times(p) for r, p in idle_pids.items()}
    window = time.monotonic() - w0
    idle = {
        "window_s": cfg.idle_seconds,
        "measured_window_s": round(window, 2),
        "seconds_since_start": round(time.monotonic() - t0, 1),
        "loadavg": [load0, loadavg()],
        "cpu_s": {r: (ticks1[r] - ticks0[r]) / CLK_TCK for r in idle_pids},
        "rss_kib": {r: proc_status(p)[0] for r, p in idle_pids.items()},
        "threads": {r: proc_status(p)[1] for r, p in idle_pids.items()},
        "per_thread": {r: thread_delta(threads0[r], threads1[r]) for r in idle_pids},
        "relay_keepalive_connections": len(idle_socks),
    }
    for sock in idle_socks:
        sock.close()
    deadline = time.monotonic() + 10
    while baseline.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    procs.stop("wake-baseline")
    m = re.search(r"^\{.*\}$", procs.output("wake-baseline", "out"), re.M)
    idle["wake_baseline"] = json.loads(m.group(0)) if m else None
    usage = procs.stop("idle-client")
    idle["client_lifetime_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 6) if usage else None
    idle["client_lifetime_s"] = round(time.monotonic() - t0, 2)
    procs.stop("idle-relay")
    results["idle"] = idle
    pt = idle["per_thread"]["client"]
    busy = ", ".join(f"{k} {v['cpu_ms']:.2f} ms in {v['wakes']} switches"
                     for k, v in pt.items() if v["wakes"])
    live_ms = sum(v["cpu_ms"] for v in pt.values())
    log(f"idle: client {idle['cpu_s']['client']:.2f} s CPU in {window:.1f} s by ticks, "
        f"{live_ms:.2f} ms by live threads ({busy}); lifetime "
        f"{idle['client_lifetime_cpu_s']} s in {idle['client_lifetime_s']} s; RSS client "
        f"{idle['rss_kib']['client']} KiB, relay {idle['rss_kib']['relay']} KiB")

    # -------- our relay
    # Every load connection comes from 127.0.0.1: the per-peer connection cap (64 by default,
    # a defence for a relay facing the internet) would measure the cap, not the relay.
    # Room for the scaling run's idle polls beside the load (the default cap is 2048).
    procs.start("relay", [B, "relay", "--listen", "127.0.0.1:0", "--tunnels-file",
                          tunnels_file, "--max-connections-per-peer", "0",
                          "--max-connections", str(cfg.pollers + 2048)])
    m = procs.wait_for_output("relay", r"relay listening on http://127\.0\.0\.1:(\d+)")
    relay_port = int(m.group(1))
    connector = lambda t: f"/v1/mcp/{t['id']}"  # noqa: E731

    # -------- time from start to first poll: a fresh client per run, on its own tunnel, talking
    # to the relay through a loopback pass-through that timestamps the moment the first
    # `GET /v1/tunnels/<id>/poll` request line goes by (same clock as the spawn time)
    sniffer = PollSniffer(relay_port)
    first = []
    try:
        for i, t in enumerate(first_ts):
            real, shown = client_env(sniffer.port, t)
            role = f"first-poll-{i}"
            p = procs.start(role, [B, "run"], env=real, shown_env=shown, record=(i == 0))
            t0 = p.started_at
            deadline = t0 + 10.0
            seen = None
            while time.monotonic() < deadline:
                seen = sniffer.first_poll(t["id"])
                if seen is not None:
                    break
                time.sleep(0.001)
            # one real command through it, so each of these clients lived through the same
            # start-up, one command and shutdown (their rusage is the fixed cost of a lifetime)
            if seen is not None:
                status, _ = post_echo(relay_port, connector(t), t["connector_key"], timeout=10)
                if status != 200:
                    failures.append(f"first-poll client {i}: echo answered HTTP {status}")
            usage = procs.stop(role)
            if seen is None:
                raise BenchError("a fresh client did not poll within 10 s")
            first.append({"ms": round((seen - t0) * 1000, 2),
                          "lifetime_cpu_s": round(usage.ru_utime + usage.ru_stime, 6)
                          if usage else None,
                          "lifetime_s": round(time.monotonic() - t0, 3)})
    finally:
        sniffer.close()
    results["first_poll"] = first
    log("time to first poll (ms): " + ", ".join(str(f["ms"]) for f in first))

    # -------- the load client
    real, shown = client_env(relay_port, load_t)
    procs.start("client", [B, "run"], env=real, shown_env=shown)
    wait_echo_ok(relay_port, connector(load_t), load_t["connector_key"], what="mcp-tunnel path")

    # -------- the same pair from the glibc build, for comparison (its own relay and tunnel)
    relay_glibc_port = None
    if cfg.glibc_bin:
        G = cfg.glibc_bin
        procs.start("relay-glibc", [G, "relay", "--listen", "127.0.0.1:0", "--tunnels-file",
                                    tunnels_file, "--max-connections-per-peer", "0"])
        m = procs.wait_for_output("relay-glibc",
                                  r"relay listening on http://127\.0\.0\.1:(\d+)")
        relay_glibc_port = int(m.group(1))
        real, shown = client_env(relay_glibc_port, glibc_t)
        procs.start("client-glibc", [G, "run"], env=real, shown_env=shown)
        wait_echo_ok(relay_glibc_port, connector(glibc_t), glibc_t["connector_key"],
                     what="mcp-tunnel-glibc path")

    # -------- rathole
    r_ctl, r_svc = free_port(), free_port()
    token = os.urandom(16).hex()
    with open(os.path.join(workdir, "rathole-server.toml"), "w", encoding="ascii") as f:
        f.write(f'[server]\nbind_addr = "127.0.0.1:{r_ctl}"\ndefault_token = "{token}"\n'
                f'[server.services.stub]\nbind_addr = "127.0.0.1:{r_svc}"\n')
    with open(os.path.join(workdir, "rathole-client.toml"), "w", encoding="ascii") as f:
        f.write(f'[client]\nremote_addr = "127.0.0.1:{r_ctl}"\ndefault_token = "{token}"\n'
                f'[client.services.stub]\nlocal_addr = "127.0.0.1:{stub_port}"\n')
    rat_env = {"RUST_LOG": "warn"}
    procs.start("rathole-server", [cfg.rathole, "--server", "rathole-server.toml"], env=rat_env,
                shown_env=rat_env)
    procs.start("rathole-client", [cfg.rathole, "--client", "rathole-client.toml"], env=rat_env,
                shown_env=rat_env)
    results["extra_commands"].append(
        ("rathole config", f"server: bind_addr 127.0.0.1:{r_ctl}, service stub bind_addr "
                           f"127.0.0.1:{r_svc}; client: remote_addr 127.0.0.1:{r_ctl}, service "
                           f"stub local_addr 127.0.0.1:{stub_port}; default_token random; "
                           "transport tcp (default)"))
    wait_echo_ok(r_svc, "/mcp", what="rathole path")

    # -------- bore (its control port is fixed at 7835)
    if not port_free(BORE_CONTROL_PORT):
        raise BenchError(f"127.0.0.1:{BORE_CONTROL_PORT} (bore's fixed control port) is in use; "
                         "is another benchmark running?")
    b_port = free_port()
    procs.start("bore-server", [cfg.bore, "server", "--bind-addr", "127.0.0.1"], env=rat_env,
                shown_env=rat_env)
    deadline = time.monotonic() + 15
    while port_free(BORE_CONTROL_PORT):
        procs.check_alive()
        if time.monotonic() > deadline:
            raise BenchError("bore server did not listen on 127.0.0.1:7835 within 15 s")
        time.sleep(0.05)
    procs.start("bore-local", [cfg.bore, "local", str(stub_port), "--local-host", "127.0.0.1",
                               "--to", "127.0.0.1", "--port", str(b_port)], env=rat_env,
                shown_env=rat_env)
    wait_echo_ok(b_port, "/mcp", what="bore path")

    # Nothing we started may listen anywhere but loopback.
    check_loopback_only(procs, results)

    targets = {
        "direct": (stub_port, "/mcp", None, []),
        "mcp-tunnel": (relay_port, connector(load_t), load_t["connector_key"],
                       ["relay", "client"]),
        "rathole": (r_svc, "/mcp", None, ["rathole-server", "rathole-client"]),
        "bore": (b_port, "/mcp", None, ["bore-server", "bore-local"]),
    }
    if cfg.glibc_bin:
        targets["mcp-tunnel-glibc"] = (relay_glibc_port, connector(glibc_t),
                                       glibc_t["connector_key"], ["relay-glibc", "client-glibc"])
    results["ports"] = {"stub": stub_port, "relay": relay_port, "rathole_service": r_svc,
                        "rathole_control": r_ctl, "bore_control": BORE_CONTROL_PORT,
                        "bore_tunnel": b_port}
    results["extra_commands"].append(
        ("load", f"{cfg.wrk} -t<min(2,c)> -c<c> -d{cfg.duration:g}s --timeout 5s --latency "
                 f"-s tests/bench/echo.lua <url>   (warm-up: same with -d{cfg.warmup:g}s; "
                 "BENCH_AUTH=<connector key> for mcp-tunnel)"))
    results["extra_commands"].append(
        ("urls", f"direct http://127.0.0.1:{stub_port}/mcp | mcp-tunnel "
                 f"http://127.0.0.1:{relay_port}/v1/mcp/{load_t['id']} | rathole "
                 f"http://127.0.0.1:{r_svc}/mcp | bore http://127.0.0.1:{b_port}/mcp"))

    # -------- the matrix: per concurrency, cycle through the paths, rotating the order per round
    cells = []
    rss_under_load = {}
    for ci, conc in enumerate(CONCURRENCY):
        for rnd in range(cfg.rounds):
            shift = (rnd + ci) % len(cfg.paths)
            order = cfg.paths[shift:] + cfg.paths[:shift]
            for path in order:
                port, urlpath, auth, roles = targets[path]
                url = f"http://127.0.0.1:{port}{urlpath}"
                procs.check_alive()
                rf = os.path.join(workdir, f"wrk-{path}-{conc}-{rnd}.txt")
                if cfg.warmup > 0:
                    warm, _ = run_wrk(cfg, url, conc, cfg.warmup, rf + ".warm", auth)
                    bad = failures_of(warm)
                    if bad:
                        failures.append(f"warm-up {path} c={conc} round {rnd + 1}: {bad}")
                watched = {r: procs.procs[r].pid for r in roles + ["stub"]}
                sampler = Sampler({r: procs.procs[r].pid for r in roles}, watched)
                cpu0 = {r: proc_cpu_ticks(p) for r, p in watched.items()}
                sys0 = {r: proc_sys_ticks(p) for r, p in watched.items()}
                res, wrk_cpu = run_wrk(cfg, url, conc, cfg.duration, rf, auth, sampler)
                cpu1 = {r: proc_cpu_ticks(p) for r, p in watched.items()}
                sys1 = {r: proc_sys_ticks(p) for r, p in watched.items()}
                bad = failures_of(res)
                if bad:
                    failures.append(f"{path} c={conc} round {rnd + 1}: {bad}")
                cell = {
                    "path": path, "c": conc, "round": rnd + 1,
                    "requests": int(res["requests"]),
                    "duration_s": res["duration_us"] / 1e6,
                    "rps": res["requests"] / (res["duration_us"] / 1e6),
                    "p50_us": res.get("p50"), "p90_us": res.get("p90"), "p99_us": res.get("p99"),
                    "failures": bad,
                    "hist": res["hist"],
                    "cpu_s": {r: (cpu1[r] - cpu0[r]) / CLK_TCK for r in watched},
                    "sys_s": {r: (sys1[r] - sys0[r]) / CLK_TCK for r in watched},
                    "ctx_switches": sampler.switches(),
                    "wrk_cpu_s": wrk_cpu,
                    "new_pids": sampler.new_pids,
                    "max_rss_kib": sampler.max_rss,
                    "max_threads": sampler.max_threads,
                }
                cells.append(cell)
                if conc == max(CONCURRENCY):
                    for r, v in sampler.max_rss.items():
                        rss_under_load[r] = max(rss_under_load.get(r, 0), v)
                log(f"{path:>10} c={conc:<3} round {rnd + 1}: {cell['rps']:9.0f} req/s  "
                    f"p50 {cell['p50_us']:.0f} us  p99 {cell['p99_us']:.0f} us"
                    + (f"  FAILED {bad}" if bad else ""))
    results["cells"] = cells
    results["rss_under_load_kib"] = rss_under_load

    # -------- diagnosis: the same c=1 load through a client with a single worker thread
    real, shown = client_env(relay_port, diag_t, workers=1)
    procs.start("diag-client", [B, "run"], env=real, shown_env=shown)
    wait_echo_ok(relay_port, connector(diag_t), diag_t["connector_key"], what="1-worker client")
    url = f"http://127.0.0.1:{relay_port}{connector(diag_t)}"
    rf = os.path.join(workdir, "wrk-diag.txt")
    run_wrk(cfg, url, 1, min(cfg.warmup, 2) or 1, rf + ".warm", diag_t["connector_key"])
    pids = {"relay": procs.procs["relay"].pid, "client": procs.procs["diag-client"].pid,
            "stub": procs.procs["stub"].pid}
    cpu0 = {r: proc_cpu_ticks(p) for r, p in pids.items()}
    sampler = Sampler({}, pids)
    res, wrk_cpu = run_wrk(cfg, url, 1, cfg.duration, rf, diag_t["connector_key"], sampler)
    bad = failures_of(res)
    if bad:
        failures.append(f"diagnostic 1-worker c=1: {bad}")
    results["diag_one_worker"] = {
        "requests": int(res["requests"]), "rps": res["requests"] / (res["duration_us"] / 1e6),
        "p50_us": res["p50"], "p90_us": res["p90"], "p99_us": res["p99"],
        "cpu_s": {r: (proc_cpu_ticks(p) - cpu0[r]) / CLK_TCK for r, p in pids.items()},
        "ctx_switches": sampler.switches(),
        "new_pids": sampler.new_pids, "wrk_cpu_s": wrk_cpu, "failures": bad,
    }
    procs.stop("diag-client")
    log(f"diagnostic 1-worker client c=1: {results['diag_one_worker']['rps']:.0f} req/s, "
        f"p50 {res['p50']:.0f} us")

    # -------- relay scaling: N idle long-polls on a tunnel nobody calls, plus c=8 load on the
    # load tunnel through the real client
    key_file = os.path.join(workdir, "pollers.key")
    with open(key_file, "w", encoding="ascii") as f:
        f.write(pollers_t["runtime_key"])
    os.chmod(key_file, 0o600)
    relay_pid = procs.procs["relay"].pid
    before_rss, before_threads = proc_status(relay_pid)
    pol = procs.start("pollers", [sys.executable, os.path.join(HERE, "pollers.py"),
                                  "--port", str(relay_port), "--tunnel-id", pollers_t["id"],
                                  "--key-file", key_file, "--count", str(cfg.pollers),
                                  "--max-seconds", str(cfg.scale_seconds + 150),
                                  "--connect-seconds", "60"])
    procs.wait_for_output("pollers", r"ready (\d+)", stream="out", timeout=90)
    # "ready" means every poll was sent; wait until the relay holds a thread for each
    held_at = time.monotonic()
    deadline = held_at + 30
    while (proc_status(relay_pid)[1] < before_threads + cfg.pollers - 10
           and time.monotonic() < deadline):
        procs.check_alive()
        time.sleep(0.1)
    accept_s = round(time.monotonic() - held_at, 2)
    time.sleep(1.0)
    held_rss, held_threads = proc_status(relay_pid)
    sampler = Sampler({"relay": relay_pid, "client": procs.procs["client"].pid})
    sampler.sample()
    url = f"http://127.0.0.1:{relay_port}{connector(load_t)}"
    rf = os.path.join(workdir, "wrk-scale.txt")
    res, _ = run_wrk(cfg, url, 8, cfg.scale_seconds, rf, load_t["connector_key"], sampler)
    after_rss, after_threads = proc_status(relay_pid)
    bad = failures_of(res)
    if bad:
        failures.append(f"scaling run connector load: {bad}")
    procs.stop("pollers", timeout=10)
    m = re.search(r"^\{.*\}$", procs.output("pollers", "out"), re.M)
    poll_counts = json.loads(m.group(0)) if m else {"error": "no summary from pollers.py"}
    if pol.returncode != 0:
        failures.append(f"scaling run idle pollers: {poll_counts}")
    results["scaling"] = {
        "pollers": cfg.pollers,
        "threads_ready_after_s": accept_s,
        "relay_before": {"rss_kib": before_rss, "threads": before_threads},
        "relay_polls_held": {"rss_kib": held_rss, "threads": held_threads},
        "relay_under_load_max": {"rss_kib": sampler.max_rss["relay"],
                                 "threads": sampler.max_threads["relay"]},
        "relay_after": {"rss_kib": after_rss, "threads": after_threads},
        "client_under_load_max_rss_kib": sampler.max_rss["client"],
        "load": {"c": 8, "seconds": cfg.scale_seconds, "requests": int(res["requests"]),
                 "rps": res["requests"] / (res["duration_us"] / 1e6), "p50_us": res["p50"],
                 "p99_us": res["p99"], "failures": bad},
        "poller_counts": poll_counts,
    }
    log(f"scaling: {cfg.pollers} polls held, relay {held_threads} threads, "
        f"{held_rss / 1024:.1f} MiB; under load max {sampler.max_rss['relay'] / 1024:.1f} MiB; "
        f"{results['scaling']['load']['rps']:.0f} req/s")


def check_loopback_only(procs, results):
    """Lists every listening TCP socket of our processes; fails on any not on 127.0.0.1."""
    inodes = {}
    for role, p in procs.procs.items():
        try:
            for fd in os.listdir(f"/proc/{p.pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{p.pid}/fd/{fd}")
                except OSError:
                    continue
                m = re.match(r"socket:\[(\d+)\]", target)
                if m:
                    inodes[m.group(1)] = role
        except OSError:
            continue
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state != "0A" or inode not in inodes:  # 0A = LISTEN
                        continue
                    addr_hex, port_hex = local.split(":")
                    port = int(port_hex, 16)
                    if len(addr_hex) == 8:
                        addr = socket.inet_ntop(socket.AF_INET,
                                                bytes.fromhex(addr_hex)[::-1])
                    else:
                        addr = "[" + addr_hex + "]"
                    listening.append((inodes[inode], f"{addr}:{port}"))
        except OSError:
            continue
    results["listening"] = sorted(listening)
    bad = [(r, a) for r, a in listening if not a.startswith("127.0.0.1:")]
    if bad:
        raise BenchError(f"not loopback-only: {bad}")


if __name__ == "__main__":
    sys.exit(main())
