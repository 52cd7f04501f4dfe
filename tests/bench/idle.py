#!/usr/bin/env python3
"""Idle cost of the relay and the tunnel client (`make bench-idle`; issue 21, "idle means idle").

Starts, on 127.0.0.1 only, the stub MCP server, a relay with one tunnel, and a tunnel client for
it (its HTTP channel idle: no request ever). Opens `--connections` keep-alive connections to the
relay, each carrying one `GET /healthz` and then left open, as an MCP host's HTTP pool leaves
them. Waits `--settle` seconds, then reads, over `--seconds`, each process's CPU time from
/proc/PID/stat (utime + stime, clock ticks) and its threads' context switches and exact CPU time
(/proc/PID/task/*/{status,schedstat}). Prints one JSON object (also to `--results` if given):
CPU in ms per minute and wake-ups (context switches) per minute, per process and per thread
name. The window is shorter than the relay's 60 s keep-alive idle timeout, so every connection
stays open through it.

Every process it starts dies with it (PR_SET_PDEATHSIG); every wait is bounded.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402  (the bench driver's /proc readers and process handling)
    CLK_TCK, BenchError, Procs, add_tunnel, clean_env, log, open_keepalive, proc_cpu_ticks,
    proc_status, thread_delta, thread_times,
)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", required=True, help="the mcp-tunnel binary to measure")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=float, default=50.0,
                   help="measured window (under the relay's 60 s idle timeout)")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds after the client's start before the window opens")
    p.add_argument("--results", help="JSON file to write")
    cfg = p.parse_args()
    binary = os.path.abspath(cfg.bin)
    env = clean_env()
    workdir = tempfile.mkdtemp(prefix="mcp-tunnel-idle.")
    procs = Procs(workdir, env)
    try:
        tunnels = os.path.join(workdir, "tunnels.toml")
        tunnel = add_tunnel(binary, tunnels, "bench-idle", env)
        procs.start("stub", [binary, "stub", "--listen", "127.0.0.1:0"])
        m = procs.wait_for_output("stub", r"serving http://127\.0\.0\.1:(\d+)/mcp", stream="out")
        stub_port = int(m.group(1))
        # No per-peer cap (default 64): the keep-alive connections and the client's share one
        # address here.
        procs.start("relay", [binary, "relay", "--listen", "127.0.0.1:0", "--tunnels-file",
                              tunnels, "--max-connections-per-peer", "0"])
        m = procs.wait_for_output("relay", r"relay listening on http://127\.0\.0\.1:(\d+)")
        relay_port = int(m.group(1))
        client = procs.start("client", [binary, "run"], env={
            "CONTROL_PLANE_BASE_URL": f"http://127.0.0.1:{relay_port}",
            "CONTROL_PLANE_TUNNEL_ID": tunnel["id"],
            "CONTROL_PLANE_API_KEY": tunnel["runtime_key"],
            "MCP_SERVER_URL": f"http://127.0.0.1:{stub_port}/mcp",
            "LOG_LEVEL": "warn",
            "HEALTH_LISTEN_ADDR": "off",
        })
        socks = open_keepalive(relay_port, cfg.connections)
        time.sleep(max(0.0, client.started_at + cfg.settle - time.monotonic()))
        procs.check_alive()
        pids = {"relay": procs.procs["relay"].pid, "client": client.pid}
        log(f"idle window: {cfg.seconds:g} s, {len(socks)} keep-alive connections to the relay")
        ticks0 = {r: proc_cpu_ticks(pid) for r, pid in pids.items()}
        threads0 = {r: thread_times(pid) for r, pid in pids.items()}
        w0 = time.monotonic()
        time.sleep(cfg.seconds)
        ticks1 = {r: proc_cpu_ticks(pid) for r, pid in pids.items()}
        threads1 = {r: thread_times(pid) for r, pid in pids.items()}
        window = time.monotonic() - w0
        procs.check_alive()
        per_min = 60.0 / window
        out = {"window_s": round(window, 2), "connections": len(socks), "binary": binary}
        for role in pids:
            per_thread = thread_delta(threads0[role], threads1[role])
            out[role] = {
                "cpu_ms_per_min_ticks": round((ticks1[role] - ticks0[role]) / CLK_TCK * 1e3
                                              * per_min, 1),
                "cpu_ms_per_min": round(sum(t["cpu_ms"] for t in per_thread.values())
                                        * per_min, 3),
                "wakes_per_min": round(sum(t["wakes"] for t in per_thread.values()) * per_min),
                "rss_kib": proc_status(pids[role])[0],
                "threads": proc_status(pids[role])[1],
                "per_thread": per_thread,
            }
        for s in socks:
            s.close()
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        procs.stop_all()
    text = json.dumps(out, indent=1)
    print(text)
    if cfg.results:
        with open(cfg.results, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    for role in pids:
        log(f"{role}: {out[role]['cpu_ms_per_min']} ms CPU/min (exact; by ticks "
            f"{out[role]['cpu_ms_per_min_ticks']}), {out[role]['wakes_per_min']} wake-ups/min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
