#!/usr/bin/env python3
"""The relay's store in the benchmark (run by tests/bench/run.sh after the main part, or alone
with BENCH_ONLY=store): MCP `tools/call echo` through one relay with `--store memory`, one relay
with `--store redis://…`, and three relays sharing one Redis, on the same machine, in one run.

Everything on 127.0.0.1: a `redis-server` of its own on a free port without persistence
(`--save "" --appendonly no`), the built-in stub MCP server, one tunnel client (64 workers)
polling the first relay, and wrk. With three nodes the connector load is split over the three
relays (one wrk per node, started together; their latency histograms merged), so two thirds of
the answers cross nodes through Redis. At c=1 the one connection goes to the second node: every
answer crosses.

Redis's side, per request, from `INFO commandstats` before and after each configuration's
measured runs: EVAL and BLPOP calls (each one round trip from a relay) and every command Redis
executed (the scripts' inner calls included). The exact round trips per request come from a
second, short sequential run with `MONITOR` on: lines sent by a client, not by a script.

Writes its numbers to a JSON file and replaces the section between the `store-bench` markers of
RESULTS.md (appended when missing), so the rest of the file stays as the main run wrote it.
Every process it starts dies with it (PR_SET_PDEATHSIG); every wait is bounded.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the main driver: process handling, wrk, echo probes)
from report import percentile  # noqa: E402

CONFIGS = [("memory, 1 node", "memory", 1), ("Redis, 1 node", "redis", 1),
           ("Redis, 3 nodes", "redis", 3)]
BEGIN = "<!-- store-bench:begin -->"
END = "<!-- store-bench:end -->"


def parse_args():
    p = argparse.ArgumentParser(description="mcp-tunnel store benchmark")
    p.add_argument("--bin", required=True)
    p.add_argument("--results", required=True, help="JSON file to write")
    p.add_argument("--markdown", required=True, help="RESULTS.md to update")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--monitor-requests", type=int, default=200)
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite the RESULTS.md section from the --results JSON")
    return p.parse_args()


def redis_cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                         timeout=10)
    return out.stdout


def commandstats(port):
    calls = {}
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m:
            calls[m.group(1)] = int(m.group(2))
    return calls


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after
            if after.get(k, 0) - before.get(k, 0) and not k.startswith(("info", "config"))}


def start_redis(procs):
    for _ in range(3):
        port = bench.free_port()
        procs.start(f"redis-{port}", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], record=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if redis_cli(port, "PING").strip() == "PONG":
                return port, f"redis-{port}"
            time.sleep(0.05)
        procs.stop(f"redis-{port}")
    raise bench.BenchError("redis-server did not start")


def run_cell(cfg, targets, conc, seconds, workdir, tag):
    """wrk against every (port, path, key) of `targets` at once, `conc` connections in all."""
    share = [conc // len(targets) + (1 if i < conc % len(targets) else 0)
             for i in range(len(targets))]
    jobs = [(t, c) for t, c in zip(targets, share) if c > 0]
    results = []
    errors = []

    def one(i, target, c):
        port, path, key = target
        try:
            res, _ = bench.run_wrk(cfg, f"http://127.0.0.1:{port}{path}", c, seconds,
                                   os.path.join(workdir, f"{tag}-{i}.txt"), auth=key)
            results.append(res)
        except bench.BenchError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=one, args=(i, t, c)) for i, (t, c) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    if errors:
        raise bench.BenchError("; ".join(errors))
    hist = {}
    for r in results:
        for v, n in r["hist"].items():
            hist[v] = hist.get(v, 0) + n
    requests = sum(r.get("requests", 0) for r in results)
    failed = {}
    for r in results:
        for k, v in bench.failures_of(r).items():
            failed[k] = failed.get(k, 0) + v
    return {"conc": conc, "req_s": requests / seconds, "requests": requests,
            "p50_us": percentile(hist, 50), "p99_us": percentile(hist, 99), "failures": failed}


def monitor_round_trips(port, echo_targets, count, workdir):
    """Round trips per request: `count` sequential echoes with MONITOR on."""
    path = os.path.join(workdir, "monitor.txt")
    with open(path, "wb") as out:
        mon = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", "redis-cli", "-p",
                                str(port), "MONITOR"], stdout=out, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.2)  # MONITOR's OK, before the requests
        t0 = time.monotonic()
        for i in range(count):
            p, route, key = echo_targets[i % len(echo_targets)]
            status, _ = bench.post_echo(p, route, key)
            if status != 200:
                raise bench.BenchError(f"echo under MONITOR: HTTP {status}")
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
    finally:
        mon.kill()
        mon.wait(timeout=5)
    client = script = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^\d+\.\d+ \[\d+ ([^\]]+)\] \"(\w+)\"", line)
            if not m:
                continue
            if m.group(1) == "lua":
                script += 1
            else:
                client += 1
    return {"requests": count, "seconds": round(elapsed, 2), "round_trips": client / count,
            "script_commands": script / count}


def run_config(cfg, procs, workdir, name, store, nodes, stub_port):
    env = cfg.base_env
    tunnels = os.path.join(workdir, f"tunnels-{store}-{nodes}.toml")
    t = bench.add_tunnel(cfg.bin, tunnels, "bench-store", env)
    redis_port = redis_role = None
    store_args = []
    if store == "redis":
        redis_port, redis_role = start_redis(procs)
        store_args = ["--store", f"redis://127.0.0.1:{redis_port}/0"]
    relays = []
    for i in range(nodes):
        role = f"relay-{store}-{nodes}-{i}"
        procs.start(role, [cfg.bin, "relay", "--listen", "127.0.0.1:0", "--tunnels-file", tunnels,
                           "--max-connections-per-peer", "0", *store_args], record=(i == 0))
        m = procs.wait_for_output(role, r"relay listening on http://127\.0\.0\.1:(\d+)")
        relays.append((role, int(m.group(1))))
    client_env = dict(env)
    client_env.update({
        "CONTROL_PLANE_BASE_URL": f"http://127.0.0.1:{relays[0][1]}",
        "CONTROL_PLANE_TUNNEL_ID": t["id"], "CONTROL_PLANE_API_KEY": t["runtime_key"],
        "MCP_SERVER_URL": f"http://127.0.0.1:{stub_port}/mcp", "LOG_LEVEL": "warn",
        "HEALTH_LISTEN_ADDR": "off", "MCP_MAX_CONCURRENT_REQUESTS": "64",
        "CONTROL_PLANE_MAX_INFLIGHT_REQUESTS": "128",
    })
    client_role = f"client-{store}-{nodes}"
    procs.start(client_role, [cfg.bin, "run"], env=client_env, record=False)
    path = f"/v1/mcp/{t['id']}"
    targets = [(port, path, t["connector_key"]) for _, port in relays]
    for port, _, key in targets:
        bench.wait_echo_ok(port, path, key, what=f"{name} relay on {port}")
    out = {"name": name, "store": store, "nodes": nodes, "cells": []}
    before = commandstats(redis_port) if redis_port else None
    total = 0
    for conc in cfg.conc:
        # At c=1 on three nodes the one connection goes to a node the client does not poll.
        cell_targets = targets[1:2] if (conc == 1 and nodes > 1) else targets
        bench.log(f"store: {name} c={conc}")
        run_cell(cfg, cell_targets, conc, cfg.warmup, workdir, f"warm-{store}-{nodes}-{conc}")
        if redis_port:
            before_cell = commandstats(redis_port)
        cell = run_cell(cfg, cell_targets, conc, cfg.duration, workdir, f"{store}-{nodes}-{conc}")
        if redis_port:
            d = delta(before_cell, commandstats(redis_port))
            n = max(1, cell["requests"])
            cell["redis_per_request"] = {"eval": d.get("eval", 0) / n,
                                         "blpop": d.get("blpop", 0) / n,
                                         "all": sum(d.values()) / n}
        total += cell["requests"]
        out["cells"].append(cell)
        procs.check_alive()
    if redis_port:
        out["redis_commands"] = delta(before, commandstats(redis_port))
        out["monitor"] = monitor_round_trips(redis_port, targets, cfg.monitor_requests, workdir)
    for role, _ in relays:
        procs.stop(role)
    procs.stop(client_role)
    if redis_role:
        procs.stop(redis_role)
    return out


def fmt_us(us):
    if us is None:
        return "–"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us} µs"


def markdown(results):
    m = results["machine"]
    lines = [BEGIN, "## The relay's store: memory, Redis, three nodes", "",
             f"Generated by `tests/bench/store.py` (part of `make bench`; alone: "
             f"`BENCH_ONLY=store make bench`); run started {results['started_utc']}, "
             f"{results['duration_s']:g} s per cell after a {results['warmup_s']:g} s warm-up, "
             "one round. Machine: "
             f"{m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB, {m['os']}, "
             f"Linux {m['kernel']}, {m['redis']}; relay, client, stub, Redis and wrk all share "
             "those cores, so the absolute numbers move with the machine (and with whatever else "
             "runs on it); compare the rows with each other.", "",
             "`tools/call echo` from wrk through one tunnel client (64 workers) polling the first "
             "relay. Three nodes: the connections are split over the three relays (at c=1 the one "
             "connection goes to the second node, so every answer crosses nodes through Redis).",
             "", "| store | c | req/s | p50 | p99 | Redis EVAL/req | BLPOP/req | "
             "Redis commands/req | failures |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for conf in results["configs"]:
        for c in conf["cells"]:
            r = c.get("redis_per_request")
            red = (f"{r['eval']:.2f} | {r['blpop']:.2f} | {r['all']:.1f}" if r else "– | – | –")
            fails = ", ".join(f"{k} {v}" for k, v in c["failures"].items()) or "none"
            lines.append(f"| {conf['name']} | {c['conc']} | {c['req_s']:,.0f} | "
                         f"{fmt_us(c['p50_us'])} | {fmt_us(c['p99_us'])} | {red} | {fails} |")
    lines += ["", "Round trips to Redis per request, exact: sequential echoes with `MONITOR` on, "
              "counting the commands relays sent (not those their scripts ran); background work "
              "(polls renewing their keys, the response thread's `BLPOP`) included:", "",
              "| store | requests | round trips/req | script commands/req |",
              "|---|---:|---:|---:|"]
    for conf in results["configs"]:
        mo = conf.get("monitor")
        if mo:
            lines.append(f"| {conf['name']} | {mo['requests']} | {mo['round_trips']:.1f} | "
                         f"{mo['script_commands']:.1f} |")
    lines += ["", "Where they go, one request at a time on one node (7): the connector's "
              "`ENQUEUE` (liveness, capacity, queue, pending key in one script) and, when its "
              "thread is done, `WITHDRAW`; the waiting long-poll's `TOUCH` (its keys kept alive), "
              "an empty `TAKE`, the `BLPOP` that wakes it, the `TAKE` that checks and records the "
              "delivery, and a closing `TOUCH`. The response POST needs none on the node where "
              "the connector waits; on another node it is a `FORWARD` plus the waiting node's "
              "`BLPOP`. Under load a poll's `TAKE` takes several commands and its `BLPOP` rarely "
              "waits, so the figures per request fall with concurrency. A request in a session "
              "adds one look-up (`SESSION_OWNER`).", END]
    return "\n".join(lines) + "\n"


def update_markdown(path, section):
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    cfg = parse_args()
    if cfg.report_only:
        with open(cfg.results, encoding="utf-8") as f:
            update_markdown(cfg.markdown, markdown(json.load(f)))
        return 0
    cfg.bin = os.path.abspath(cfg.bin)
    cfg.wrk = shutil.which(cfg.wrk) or cfg.wrk
    cfg.base_env = bench.clean_env()
    cfg.conc = [int(c) for c in cfg.concurrency.split(",")]
    for exe in (cfg.bin, cfg.wrk, shutil.which("redis-server") or "redis-server"):
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"store bench: missing executable: {exe}")
    workdir = tempfile.mkdtemp(prefix="mcp-tunnel-store-bench.")
    procs = bench.Procs(workdir, cfg.base_env)
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             timeout=10).stdout.split()
    results = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "duration_s": cfg.duration, "warmup_s": cfg.warmup, "configs": []}
    try:
        results["machine"] = bench.machine_info(type("C", (), {
            "rathole": "/bin/true", "bore": "/bin/true", "wrk": cfg.wrk, "bin": cfg.bin,
            "glibc_bin": None})())
        results["machine"]["redis"] = " ".join(redis_v[:3])
        procs.start("stub", [cfg.bin, "stub", "--listen", "127.0.0.1:0"], record=False)
        m = procs.wait_for_output("stub", r"serving http://127\.0\.0\.1:(\d+)/mcp", stream="out")
        stub_port = int(m.group(1))
        for name, store, nodes in CONFIGS:
            results["configs"].append(run_config(cfg, procs, workdir, name, store, nodes,
                                                 stub_port))
    except bench.BenchError as e:
        bench.log(f"store bench FAILED: {e}")
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.results)), exist_ok=True)
    with open(cfg.results, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    update_markdown(cfg.markdown, markdown(results))
    failed = [c for conf in results["configs"] for c in conf["cells"] if c["failures"]]
    bench.log(f"store bench: results in {cfg.results}, section in {cfg.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
