#!/usr/bin/env python3
"""Turns the benchmark's results JSON into RESULTS.md and latency.svg (standard library only).

    python3 tests/bench/report.py target/bench/results.json --out-dir tests/bench
"""

import argparse
import json
import math
import os
import statistics
import sys

# The run's own list (settings.paths) replaces this: mcp-tunnel-glibc is there when measured.
PATHS = ["direct", "mcp-tunnel", "rathole", "bore"]
COLORS = {"direct": "#6b7280", "mcp-tunnel": "#2563eb", "mcp-tunnel-glibc": "#7c3aed",
          "rathole": "#d97706", "bore": "#059669"}
TUNNEL_ROLES = {"mcp-tunnel": ["relay", "client"],
                "mcp-tunnel-glibc": ["relay-glibc", "client-glibc"],
                "rathole": ["rathole-server", "rathole-client"],
                "bore": ["bore-server", "bore-local"], "direct": []}


# ---------------------------------------------------------------- numbers


def percentile(hist, p):
    """wrk's own rule: the smallest value whose cumulative count reaches round(p% of n + 0.5)."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = round(p / 100.0 * total + 0.5)
    acc = 0
    for value in sorted(hist):
        acc += hist[value]
        if acc >= rank:
            return value
    return max(hist)


def merge(cells):
    """One path x concurrency over all rounds: histograms merged, rates summed."""
    hist = {}
    for c in cells:
        for v, n in c["hist"].items():
            hist[int(v)] = hist.get(int(v), 0) + n
    requests = sum(c["requests"] for c in cells)
    seconds = sum(c["duration_s"] for c in cells)
    roles = sorted({r for c in cells for r in c["cpu_s"]})
    cpu_us = {r: 1e6 * sum(c["cpu_s"].get(r, 0) for c in cells) / requests for r in roles}
    sys_us = {r: 1e6 * sum(c["sys_s"].get(r, 0) for c in cells) / requests for r in roles}
    csw = {r: sum(c["ctx_switches"].get(r, 0) for c in cells) / requests for r in roles}
    return {
        "requests": requests,
        "rps": requests / seconds,
        "rps_rounds": [c["rps"] for c in cells],
        "p50": percentile(hist, 50), "p90": percentile(hist, 90), "p99": percentile(hist, 99),
        "cpu_us": cpu_us,
        "sys_us": sys_us,
        "csw": csw,
        "wrk_cpu_us": 1e6 * sum(c["wrk_cpu_s"] for c in cells) / requests,
        "new_pids": sum(c["new_pids"] for c in cells) / requests,
        "failures": [c["failures"] for c in cells if c["failures"]],
    }


def fmt_us(us):
    if us is None:
        return "–"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def axis_label(us):
    if us >= 1e6:
        return f"{us / 1e6:g} s"
    if us >= 1000:
        return f"{us / 1000:g} ms"
    return f"{us:g} µs"


def fmt_rps(r):
    return f"{r:,.0f}"


def mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib else "–"


def verdict(ok):
    return "**met**" if ok else "**not met**"


# ---------------------------------------------------------------- chart


def svg_chart(table, concurrency, path):
    """Grouped bars, one group per concurrency, per path a p50 bar and a p99 bar, log scale."""
    values = [table[(p, c)][k] for p in PATHS for c in concurrency for k in ("p50", "p99")
              if table.get((p, c)) and table[(p, c)][k]]
    lo = 10 ** math.floor(math.log10(max(1, min(values))))
    # top of the axis: the next 1-2-5 step above the tallest bar, with room for its label
    want = max(values) * 1.6
    hi = next(m * 10 ** e for e in range(0, 9) for m in (1, 2, 5) if m * 10 ** e >= want)
    W, H = 960, 560
    left, right, top, bottom = 90, 30, 90, 110
    pw, ph = W - left - right, H - top - bottom

    def y(v):
        return top + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="28" text-anchor="middle" font-size="18" font-weight="bold">'
           'MCP tools/call latency per path (wrk, loopback)</text>',
           f'<text x="{W / 2}" y="50" text-anchor="middle" font-size="13" fill="#374151">'
           'solid bar: p50 · light bar: p99 · log scale · lower is better</text>']
    # grid and y labels: 1-2-5 steps per decade
    decade = lo
    while decade <= hi:
        for m in (1, 2, 5):
            v = decade * m
            if v < lo or v > hi:
                continue
            yy = y(v)
            major = m == 1
            out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" '
                       f'stroke="{"#d1d5db" if major else "#eef0f3"}" stroke-width="1"/>')
            out.append(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end" font-size="12" '
                       f'fill="#374151">{axis_label(v)}</text>')
        decade *= 10
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#111827"/>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" '
               'stroke="#111827"/>')
    out.append(f'<text transform="translate(22 {top + ph / 2}) rotate(-90)" text-anchor="middle" '
               'font-size="14">latency per request (log scale)</text>')
    group_w = pw / len(concurrency)
    bar = min(22.0, group_w * 0.8 / (2 * len(PATHS) + len(PATHS) - 1))
    for gi, c in enumerate(concurrency):
        gx = left + gi * group_w
        span = len(PATHS) * 2 * bar + (len(PATHS) - 1) * bar
        x = gx + (group_w - span) / 2
        for p in PATHS:
            row = table.get((p, c))
            for k, opacity in (("p50", 1.0), ("p99", 0.38)):
                v = row[k] if row else None
                if v:
                    yy = y(max(v, lo))
                    out.append(f'<rect x="{x:.1f}" y="{yy:.1f}" width="{bar - 1:.1f}" '
                               f'height="{top + ph - yy:.1f}" fill="{COLORS[p]}" '
                               f'fill-opacity="{opacity}"><title>{p} c={c} {k} {fmt_us(v)}'
                               '</title></rect>')
                    out.append(f'<text transform="translate({x + bar / 2 + 3:.1f} {yy - 4:.1f}) '
                               f'rotate(-90)" font-size="10" fill="#111827">{fmt_us(v)}</text>')
                x += bar
            x += bar
        out.append(f'<text x="{gx + group_w / 2:.1f}" y="{top + ph + 22}" text-anchor="middle" '
                   f'font-size="14">c = {c}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 46}" text-anchor="middle" '
               'font-size="14">concurrent connections (wrk -c)</text>')
    # legend
    lx = left + (pw - len(PATHS) * 150) / 2
    ly = H - 30
    for p in PATHS:
        out.append(f'<rect x="{lx:.1f}" y="{ly - 11}" width="14" height="14" fill="{COLORS[p]}"/>')
        out.append(f'<rect x="{lx + 16:.1f}" y="{ly - 11}" width="14" height="14" '
                   f'fill="{COLORS[p]}" fill-opacity="0.38"/>')
        out.append(f'<text x="{lx + 36:.1f}" y="{ly + 1}" font-size="13">{p}</text>')
        lx += 150
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


# ---------------------------------------------------------------- RESULTS.md


def build(res, out_dir):
    global PATHS
    PATHS = res["settings"].get("paths", PATHS)
    conc = res["settings"]["concurrency"]
    table = {}
    for p in PATHS:
        for c in conc:
            cells = [x for x in res["cells"] if x["path"] == p and x["c"] == c]
            if cells:
                table[(p, c)] = merge(cells)
    svg_chart(table, conc, os.path.join(out_dir, "latency.svg"))

    m = res["machine"]
    s = res["settings"]
    L = []
    w = L.append
    failed = bool(res["failures"])

    d1 = table[("direct", 1)]["p50"]
    add = {p: table[(p, 1)]["p50"] - d1 for p in ("mcp-tunnel", "rathole", "bore")}
    add_ratio = add["mcp-tunnel"] / add["rathole"] if add["rathole"] > 0 else float("inf")
    thr = {c: table[("mcp-tunnel", c)]["rps"] / table[("rathole", c)]["rps"] for c in conc}
    idle = res["idle"]
    tick = 1.0 / m["clk_tck"]
    life = idle.get("client_lifetime_cpu_s")
    # The lifetime includes start-up and shutdown; a client that lived only until its first poll
    # (the first-poll runs) shows what that fixed part costs.
    fixed = [f["lifetime_cpu_s"] for f in res["first_poll"] if f.get("lifetime_cpu_s") is not None]
    fixed_cpu = statistics.median(fixed) if fixed else None
    steady_min = None
    if life is not None and fixed_cpu is not None:
        steady_min = max(0.0, life - fixed_cpu) * 60.0 / idle["client_lifetime_s"]
    per_thread = idle["per_thread"]["client"]
    live_min = sum(v["cpu_ms"] for v in per_thread.values()) / 1000 * 60.0 / idle["measured_window_s"]
    goal_thr = thr[max(conc)] >= 1.0
    goal_lat = add_ratio <= 2.0
    # the verdict takes the larger of the two exact readings
    goal_idle = max(live_min, steady_min or 0.0) <= 0.01

    w("# mcp-tunnel benchmark results")
    w("")
    w("Generated by `make bench` (`tests/bench/run.sh`); do not edit by hand. "
      f"Run started {res['started_utc']}, took {res['elapsed_s']:.0f} s after the builds"
      + (f" ({res['total_elapsed_s']:.0f} s for the whole `make bench`, builds and installs "
         "included)" if res.get("total_elapsed_s") else "") + ".")
    w("")
    if failed:
        w("**THIS RUN HAD FAILED REQUESTS OR CHECKS** (the benchmark exited non-zero):")
        w("")
        for f in res["failures"]:
            w(f"- {f}")
        w("")
    else:
        w("Every request of every run was answered HTTP 200 with the echoed text: no failed "
          "request, no socket error, no timeout.")
        w("")
    sz = res["sizes"]
    ours, glibc = sz["mcp-tunnel"], sz.get("mcp-tunnel-glibc")
    w(f"Binaries: **mcp-tunnel** is `{ours['path']}`, {ours['kind']}, the one the packages ship; "
      "every goal below is read on it."
      + (f" **mcp-tunnel-glibc** is `{glibc['path']}`, {glibc['kind']}, measured beside it on a "
         "relay and client pair of its own, for comparison only." if glibc else
         " (No glibc comparison in this run: BENCH_GLIBC=0.)"))
    w("")
    w("![p50 and p99 latency per path and concurrency](latency.svg)")
    w("")
    w("## Goals")
    w("")
    w("| goal | measured | verdict |")
    w("|---|---|---|")
    w(f"| mcp-tunnel throughput at c={max(conc)} ≥ rathole's | "
      f"{fmt_rps(table[('mcp-tunnel', max(conc))]['rps'])} vs "
      f"{fmt_rps(table[('rathole', max(conc))]['rps'])} req/s = **{thr[max(conc)]:.2f}×** | "
      f"{verdict(goal_thr)} |")
    w(f"| added p50 at c=1 ≤ 2× rathole's | mcp-tunnel +{fmt_us(add['mcp-tunnel'])}, rathole "
      f"+{fmt_us(add['rathole'])} over direct ({fmt_us(d1)}) = **{add_ratio:.1f}×** | "
      f"{verdict(goal_lat)} |")
    w(f"| idle client CPU ≤ 0.01 s per minute | {live_min * 1000:.1f} ms per minute by its "
      f"threads' exact run times" + (f", {steady_min * 1000:.1f} ms by whole-process rusage less "
                                      "start-up" if steady_min is not None else "")
      + f" ({idle['cpu_s']['client']:.2f} s in {idle['measured_window_s']:.0f} s by "
      f"`/proc/PID/stat` ticks of {tick:.2f} s) | {verdict(goal_idle)} |")
    w("")
    w("## Latency and throughput")
    w("")
    w(f"MCP `tools/call echo` (Streamable HTTP POST, `Accept: application/json, "
      f"text/event-stream`, JSON answer) from wrk, {s['rounds']} rounds × {s['duration_s']:g} s "
      f"per cell after a {s['warmup_s']:g} s warm-up, paths interleaved. Percentiles are over "
      "all rounds (wrk's latency histograms merged); req/s is the total over all rounds, with "
      "the spread of the rounds in brackets. *CPU/req* is CPU time of the tunnel's own "
      "processes (relay + client, rathole server + client, bore server + local) per request "
      "(in brackets: each process); *switches/req* their context switches per request, every "
      "thread's, read every 0.5 s; the stub's and wrk's CPU are separate columns.")
    w("")
    w("| path | c | req/s (rounds) | p50 | p90 | p99 | tunnel CPU/req | tunnel switches/req | "
      "stub CPU/req | wrk CPU/req |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in conc:
        for p in PATHS:
            t = table.get((p, c))
            if not t:
                continue
            rounds = "–".join(fmt_rps(r) for r in (min(t["rps_rounds"]), max(t["rps_rounds"])))
            tun = sum(t["cpu_us"].get(r, 0) for r in TUNNEL_ROLES[p])
            detail = " + ".join(f"{t['cpu_us'][r]:.0f}" for r in TUNNEL_ROLES[p])
            tun_txt = f"{tun:.0f} µs ({detail})" if TUNNEL_ROLES[p] else "–"
            sw = (f"{sum(t['csw'].get(r, 0) for r in TUNNEL_ROLES[p]):.1f}"
                  if TUNNEL_ROLES[p] else "–")
            w(f"| {p} | {c} | {fmt_rps(t['rps'])} ({rounds}) | {fmt_us(t['p50'])} | "
              f"{fmt_us(t['p90'])} | {fmt_us(t['p99'])} | {tun_txt} | {sw} | "
              f"{t['cpu_us'].get('stub', 0):.0f} µs | {t['wrk_cpu_us']:.0f} µs |")
    w("")
    w("Ratios:")
    w("")
    w(f"- Added p50 at c=1 over direct ({fmt_us(d1)}): mcp-tunnel **+{fmt_us(add['mcp-tunnel'])}**, "
      f"rathole +{fmt_us(add['rathole'])}, bore +{fmt_us(add['bore'])}.")
    w("- mcp-tunnel throughput ÷ rathole throughput: "
      + ", ".join(f"c={c}: **{thr[c]:.2f}×**" for c in conc) + ".")
    if ("mcp-tunnel-glibc", 1) in table:
        w("- mcp-tunnel-glibc (comparison build) throughput ÷ rathole throughput: "
          + ", ".join(f"c={c}: {table[('mcp-tunnel-glibc', c)]['rps'] / table[('rathole', c)]['rps']:.2f}×"
                      for c in conc)
          + "; static musl ÷ glibc: "
          + ", ".join(f"c={c}: {table[('mcp-tunnel', c)]['rps'] / table[('mcp-tunnel-glibc', c)]['rps']:.2f}×"
                      for c in conc) + ".")
    w("- mcp-tunnel throughput ÷ bore throughput: "
      + ", ".join(f"c={c}: {table[('mcp-tunnel', c)]['rps'] / table[('bore', c)]['rps']:.2f}×"
                  for c in conc) + ".")
    w("")

    # ---- footprint
    fp = res["first_poll"]
    ups = [f["ms"] for f in fp]
    rl = res["rss_under_load_kib"]
    w("## Footprint")
    w("")
    w("| what | mcp-tunnel | rathole | bore |")
    w("|---|---|---|---|")
    w(f"| binary size | {ours['bytes'] / 1e6:.2f} MB, {ours['kind']} (`{ours['path']}`; "
      f"glibc release build {ours['release_bytes'] / 1e6:.2f} MB) | "
      f"{sz['rathole'] / 1e6:.2f} MB (release, glibc) | {sz['bore'] / 1e6:.2f} MB "
      "(release, glibc) |")
    w(f"| idle RSS after {idle['seconds_since_start']:.0f} s | client "
      f"{mib(idle['rss_kib']['client'])} ({idle['threads']['client']} threads), relay "
      f"{mib(idle['rss_kib']['relay'])} | – | – |")
    relay_idle = idle["per_thread"]["relay"].values()
    per_min = 60.0 / idle["measured_window_s"]
    w(f"| idle CPU over {idle['measured_window_s']:.0f} s | client "
      f"{idle['cpu_s']['client']:.2f} s, relay {idle['cpu_s']['relay']:.2f} s by ticks; by "
      f"thread run times client {sum(v['cpu_ms'] for v in per_thread.values()):.1f} ms, relay "
      f"{sum(v['cpu_ms'] for v in relay_idle):.1f} ms"
      + (f" holding {idle['relay_keepalive_connections']} idle keep-alive connections "
         f"(**{sum(v['cpu_ms'] for v in relay_idle) * per_min:.1f} ms/min**, "
         f"{sum(v['wakes'] for v in relay_idle) * per_min:.0f} wake-ups/min)"
         if idle.get("relay_keepalive_connections") else "") + " | – | – |")
    w(f"| RSS under c={max(conc)} load (max sampled) | client {mib(rl.get('client'))}, relay "
      f"{mib(rl.get('relay'))} | client {mib(rl.get('rathole-client'))}, server "
      f"{mib(rl.get('rathole-server'))} | local {mib(rl.get('bore-local'))}, server "
      f"{mib(rl.get('bore-server'))} |")
    w(f"| start to first poll | median **{statistics.median(ups):.1f} ms** (runs: "
      + ", ".join(f"{u:.1f}" for u in ups) + " ms) | – | – |")
    w("")
    w("How these were measured:")
    w("")
    busy = ", ".join(f"{k}: {v['cpu_ms']:.2f} ms in {v['wakes']} context switches"
                     for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1]["cpu_ms"])
                     if v["wakes"] or v["cpu_ms"])
    w(f"- *Idle*: a relay and client pair of their own (own tunnels file, same client settings as "
      "the load client, `MCP_MAX_CONCURRENT_REQUESTS=64`) that never get a request, measured "
      "first, before anything else of the benchmark runs (wake-ups cost more on an idle machine "
      f"than on a busy one). The window runs from 5 s after the client's start for "
      f"{s['idle_seconds']:g} s (load average {idle['loadavg'][0]} at its start, "
      f"{idle['loadavg'][1]} at its end). Three readings of the client's CPU: utime+stime from "
      "`/proc/PID/stat` at both ends divided by `getconf CLK_TCK` (= "
      f"{m['clk_tck']}), which resolves only {tick:.2f} s, the size of the goal itself; the exact "
      "run time of each live thread (`/proc/PID/task/*/schedstat`), blind only to threads that "
      "ended within the window; and the exact rusage `wait4` returns when the client is stopped "
      "right after the window, less the median rusage of the first-poll clients below, which "
      "lived only through start-up, one command and shutdown. Per thread in the window: "
      f"{busy}. RSS is `VmRSS` from `/proc/PID/status`.")
    w("- *RSS under load*: `VmRSS` sampled every 0.1 s during the measured c="
      f"{max(conc)} runs, maximum kept.")
    w("- *Start to first poll*: a fresh client (same settings, a tunnel of its own) per run, "
      "pointed at a loopback TCP pass-through in the benchmark driver that forwards to the relay "
      "and notes the moment the client's first `GET /v1/tunnels/<id>/poll` request line passes; "
      "the spawn time and that moment are read from the same monotonic clock. It includes process "
      "start, configuration, the metadata request the client makes first and the 64 worker "
      "threads it starts.")
    w("")

    # ---- scaling
    sc = res["scaling"]
    pc = sc["poller_counts"]
    ld = sc["load"]
    w(f"## Relay scaling: {sc['pollers']:,} idle long-polls plus connector traffic")
    w("")
    w(f"`tests/bench/pollers.py` opened {pc.get('connections')} keep-alive connections to the relay, "
      "each holding a `GET /v1/tunnels/<id>/poll?limit=1&timeout_ms=25000` with the runtime key "
      "and its own `X-Tunnel-Client-Instance-Id`, polling again whenever one returned. They poll a "
      "**second tunnel** that no connector calls: a fake poller that took a real command would "
      "never answer it, so the load's commands could only go to the real client. While all polls "
      f"were held, wrk ran c={ld['c']} for {ld['seconds']:g} s through the real client on the load "
      f"tunnel. The relay had a thread for every poll {sc.get('threads_ready_after_s', 0):.1f} s "
      "after the last one was sent.")
    w("")
    w("| relay | RSS | threads |")
    w("|---|---:|---:|")
    for label, key in (("before the pollers", "relay_before"),
                       (f"{sc['pollers']} polls held", "relay_polls_held"),
                       ("polls held + load (max sampled)", "relay_under_load_max"),
                       ("after the load", "relay_after")):
        w(f"| {label} | {mib(sc[key]['rss_kib'])} | {sc[key]['threads']} |")
    w("")
    ok_polls = pc.get("answers_204", 0) + pc.get("answers_200_empty", 0)
    w(f"Connector load meanwhile: {fmt_rps(ld['rps'])} req/s, p50 {fmt_us(ld['p50_us'])}, p99 "
      f"{fmt_us(ld['p99_us'])}, {ld['requests']:,} requests, failures: "
      f"{ld['failures'] or 'none'}. Idle pollers: {pc.get('pollers_waiting')} waiting at once, "
      f"{pc.get('polls_sent')} polls sent, {ok_polls} answered empty after their wait, "
      f"{pc.get('answers_other', 0)} other answers, {pc.get('connection_failures', 0)} "
      f"connection failures, {pc.get('commands_received', 0)} commands received.")
    w("")

    # ---- why
    big = max(conc)
    mt1, mt64 = table[("mcp-tunnel", 1)], table[("mcp-tunnel", big)]
    r1, r64 = table[("rathole", 1)], table[("rathole", big)]
    b1, b64 = table[("bore", 1)], table[("bore", big)]
    dg = res["diag_one_worker"]
    dg_client_us = 1e6 * dg["cpu_s"]["client"] / dg["requests"]
    dg_relay_us = 1e6 * dg["cpu_s"]["relay"] / dg["requests"]
    dg_csw = dg["ctx_switches"].get("client", 0) / dg["requests"]
    ncpu = m["nproc"]

    def tun_cpu(t, p):
        return sum(t["cpu_us"].get(r, 0) for r in TUNNEL_ROLES[p])

    def tun_csw(t, p):
        return sum(t["csw"].get(r, 0) for r in TUNNEL_ROLES[p])

    def sys_share(t, role):
        return 100.0 * t["sys_us"].get(role, 0) / t["cpu_us"][role] if t["cpu_us"].get(role) else 0

    chain64 = sum(mt64["cpu_us"].values()) + mt64["wrk_cpu_us"]
    rchain64 = sum(r64["cpu_us"].values()) + r64["wrk_cpu_us"]
    w("## Where the time goes")
    w("")
    w(f"All processes share the same {ncpu} cores, so at c={big} every path is CPU-bound: "
      f"throughput ≈ {ncpu} cores ÷ CPU time per request of the whole chain. For mcp-tunnel the "
      f"chain (relay + client + stub + wrk) costs **{chain64:.0f} µs** per request at c={big} "
      f"(≈ {ncpu * 1e6 / chain64:,.0f} req/s possible, {fmt_rps(mt64['rps'])} measured); for "
      f"rathole {rchain64:.0f} µs (≈ {ncpu * 1e6 / rchain64:,.0f} possible, "
      f"{fmt_rps(r64['rps'])} measured). The gap is the tunnel's own CPU per request: "
      f"{tun_cpu(mt64, 'mcp-tunnel'):.0f} µs for relay + client against "
      f"{tun_cpu(r64, 'rathole'):.0f} µs for rathole's pair "
      f"(**{tun_cpu(mt64, 'mcp-tunnel') / max(tun_cpu(r64, 'rathole'), 1e-9):.0f}×**). What it "
      "is spent on:")
    w("")
    w(f"- **Context switches.** Relay and client together were switched "
      f"**{tun_csw(mt64, 'mcp-tunnel'):.1f}** times per request at c={big} (relay "
      f"{mt64['csw'].get('relay', 0):.1f}, client {mt64['csw'].get('client', 0):.1f}) and "
      f"{tun_csw(mt1, 'mcp-tunnel'):.1f} at c=1; rathole's pair {tun_csw(r64, 'rathole'):.1f} at "
      f"c={big} ({tun_csw(r1, 'rathole'):.1f} at c=1), bore's {tun_csw(b64, 'bore'):.1f} "
      f"({tun_csw(b1, 'bore'):.1f}). The relay serves each connection on its own thread with "
      "blocking I/O, so a command passes between three of them (the connector request's, the "
      "waiting poll's, the response POST's) through a condition variable and a channel, and the "
      "client hands each command from its poll thread to a worker; rathole and bore run on "
      "tokio, where one wake-up serves every socket that is ready, so their switches per request "
      "fall as concurrency rises and ours much less. System (kernel) time was "
      f"{sys_share(mt64, 'client'):.0f}% of the client's CPU and {sys_share(mt64, 'relay'):.0f}% "
      f"of the relay's at c={big} ({sys_share(mt1, 'client'):.0f}% and "
      f"{sys_share(mt1, 'relay'):.0f}% at c=1).")
    w(f"- **Three HTTP exchanges per command instead of forwarding bytes.** The relay parses the "
      "connector's request, puts the command in a poll answer and parses the response POST; the "
      "client parses the poll answer, makes the MCP call and posts the answer — each a full HTTP "
      "request with headers and JSON (the MCP message travels as JSON inside JSON). Relay CPU "
      f"per request: {mt1['cpu_us']['relay']:.0f} µs at c=1, {mt64['cpu_us']['relay']:.0f} µs at "
      f"c={big}; client {mt1['cpu_us']['client']:.0f} and {mt64['cpu_us']['client']:.0f} µs; "
      f"rathole's server + client together {tun_cpu(r1, 'rathole'):.0f} and "
      f"{tun_cpu(r64, 'rathole'):.0f} µs. The user-space part is also where the release "
      "profile's `opt-level = \"z\"` (size over speed; rathole and bore are built for speed) "
      "costs something.")
    np = {p: table[(p, 1)]["new_pids"] for p in PATHS}
    if np["mcp-tunnel"] >= 1.0:
        w(f"- **A new thread per outbound request in the client.** Tasks created machine-wide per "
          "request at c=1 (`/proc/loadavg`'s last PID, read every 0.1 s): "
          + ", ".join(f"{p} {v:.2f}" for p, v in np.items()) + ". ureq 3's default resolver "
          "spawns a thread for every lookup of a request that has a timeout, even for an IP "
          "address.")
    else:
        w("- **No thread is started per request**: tasks created machine-wide per request at "
          "c=1 (`/proc/loadavg`'s last PID, read every 0.1 s; other tenants add a little noise): "
          + ", ".join(f"{p} {v:.2f}" for p, v in np.items()) + ".")
    herd = mt1["csw"].get("client", 0) > 3 * max(dg_csw, 1)
    w(f"- **Worker pool.** At c=1 the 64-worker client was switched "
      f"{mt1['csw'].get('client', 0):.1f} times and used {mt1['cpu_us']['client']:.0f} µs of CPU "
      f"per command (p50 {fmt_us(mt1['p50'])}); the same load through a 1-worker client: "
      f"{dg_csw:.1f} switches, {dg_client_us:.0f} µs (p50 {fmt_us(dg['p50_us'])}, relay "
      f"{dg_relay_us:.0f} µs)"
      + (": idle workers are being woken for commands they do not take." if herd else
         ": the pool's size costs little."))
    wb = idle.get("wake_baseline")
    win = idle["measured_window_s"]
    client_sw = sum(v["wakes"] for v in per_thread.values())
    client_ms = sum(v["cpu_ms"] for v in per_thread.values())
    probe = per_thread.get("probe", {"cpu_ms": 0, "wakes": 0})
    needless = probe["wakes"] > 2 * win / 15 + 5
    relay_pt = idle["per_thread"]["relay"]
    relay_ms = sum(v["cpu_ms"] for v in relay_pt.values())
    top_relay = max(relay_pt.items(), key=lambda kv: kv[1]["cpu_ms"]) if relay_pt else None
    txt = (f"- **Idle.** In the {win:.0f} s idle window the client's threads were switched in "
           f"{client_sw} times ("
           + ", ".join(f"{k} {v['wakes']}" for k, v in per_thread.items() if v["wakes"])
           + f") and ran {client_ms:.1f} ms. ")
    if needless:
        txt += ("The probe thread's job is one readiness probe per 15 s, but it wakes about once a "
                "second: `Tunnel::pause` caps every wait at the 1 s watchdog heartbeat interval, "
                "also for the probe thread, which has no heartbeat to give. ")
    else:
        txt += ("That is about what the design needs: a readiness probe of the MCP server every "
                "15 s and a long-poll that the relay holds 25 s (`--poll-max-wait`), each a few "
                "switches. ")
    if wb:
        txt += (f"Each wake-up is expensive on this machine: a process that only sleeps one second "
                f"at a time used {wb['cpu_us_per_wake']:.0f} µs of CPU per wake-up in the same "
                f"window, so {client_sw} wake-ups cost about "
                f"{client_sw * wb['cpu_us_per_wake'] / 1000:.0f} ms here; on this machine the "
                "goal would allow about "
                f"{10000.0 / max(wb['cpu_us_per_wake'], 1) * win / 60:.0f} wake-ups in the "
                "window. ")
    if top_relay:
        txt += (f"The idle relay ran {relay_ms:.1f} ms, most of it in its `{top_relay[0]}` thread "
                f"({top_relay[1]['cpu_ms']:.1f} ms, {top_relay[1]['wakes']} switches"
                + ("; it checks the tunnels file every 2 s)." if top_relay[0] == "tunnels-watch"
                   else ")."))
    w(txt)
    w("")

    # ---- machine and commands
    w("## Machine and versions")
    w("")
    w(f"- {m['nproc']} CPUs (`nproc`), {m['cpu_model']}, {m['mem_total_gib']} GiB memory, "
      f"kernel {m['kernel']}, {m['os']}; shared with other work (load average "
      f"{res['loadavg_start']} at the start, {res['loadavg_end']} at the end).")
    w(f"- mcp-tunnel: `{m['mcp_tunnel']}` (release profile: opt-level \"z\", LTO); "
      f"{m['rustc']}.")
    w(f"- rathole {m['rathole']} (`cargo install` from crates.io, features "
      f"{m['rathole_features']}); {m['bore']}; wrk {m['wrk']} (Debian); Python {m['python']}.")
    w("- Everything bound to 127.0.0.1; listening sockets of the processes the benchmark "
      "started: " + ", ".join(f"{r} {a}" for r, a in res.get("listening", [])) + ".")
    w("")
    w("## Exact commands")
    w("")
    w("`$WORK` is the run's temporary directory (removed at the end). Every `mcp-tunnel run` gets a "
      "tunnel of its own: a client that is stopped leaves its long-poll held at the relay until "
      "the poll's wait ends, and that orphaned poll would take the next command of its tunnel.")
    w("")
    w("```sh")
    w("make bench    # = bash tests/bench/run.sh")
    w("# run.sh: cargo build --release --locked; cargo install --root target/bench/tools "
      "bore-cli@0.6.0 --locked;")
    w("#         cargo install --root target/bench/tools rathole@0.5.0 --no-default-features "
      "--features server,client")
    w("#         (without --locked: rathole 0.5.0's lock file pins time 0.3.29, which no longer "
      "compiles);")
    w("#         apt-get install wrk when missing; then tests/bench/bench.py started these:")
    def tidy(cmd):
        cmd = cmd.replace(res.get("repo", "\0") + "/", "").replace(res.get("workdir", "\0"), "$WORK")
        return cmd.replace(res.get("python", "\0") + " ", "python3 ")

    for role, cmd in res["commands"]:
        w(f"# {role}:")
        w(tidy(cmd))
    w("```")
    w("")
    with open(os.path.join(out_dir, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--total-seconds", type=float, default=None,
                    help="wall time of the whole make bench, builds included")
    a = ap.parse_args()
    with open(a.results, encoding="utf-8") as f:
        res = json.load(f)
    if a.total_seconds:
        res["total_elapsed_s"] = a.total_seconds
    os.makedirs(a.out_dir, exist_ok=True)
    build(res, a.out_dir)
    print(f"wrote {os.path.join(a.out_dir, 'RESULTS.md')} and latency.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
