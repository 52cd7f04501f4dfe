#!/usr/bin/env python3
"""Holds N idle tunnel-client long-polls open against the relay at once (the relay scaling run).

Each connection is a raw HTTP/1.1 keep-alive connection sending
`GET /v1/tunnels/<id>/poll?limit=1&timeout_ms=<ms>` with the tunnel's runtime key and its own
`X-Tunnel-Client-Instance-Id`, and polling again as soon as an answer arrives, like a real client.
The tunnel must be one that no connector calls: a fake poller that received a real command would
never answer it. Standard library only (non-blocking sockets and `selectors`).

Prints `ready <n>` once every poll has been sent, then, on SIGTERM/SIGINT or after --max-seconds,
one JSON line of counts and exits: 0 if every answer was a 204 (or a 200 with no commands) and no
connection failed, 1 otherwise.
"""

import argparse
import json
import resource
import selectors
import signal
import socket
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tunnel-id", required=True)
    p.add_argument("--key-file", required=True, help="file holding the runtime key")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--timeout-ms", type=int, default=25000)
    p.add_argument("--max-seconds", type=float, default=300.0, help="hard stop")
    p.add_argument("--connect-seconds", type=float, default=30.0,
                   help="longest time to get every connection open and its poll sent")
    return p.parse_args()


class Poller:
    __slots__ = ("sock", "request", "sent", "buf", "polls")

    def __init__(self, sock, request):
        self.sock = sock
        self.request = request
        self.sent = 0
        self.buf = b""
        self.polls = 0


def response_complete(buf):
    """(status, bytes consumed) once a whole response is buffered, else None."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buf[:head_end].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise ValueError("chunked answers are not expected from a poll")
    total = head_end + 4 + length
    if len(buf) < total:
        return None
    body = buf[head_end + 4:total]
    return status, total, body


def main():
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    with open(args.key_file, encoding="utf-8") as f:
        key = f.read().strip()

    stop = False

    def on_signal(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sel = selectors.DefaultSelector()
    counts = {"connections": 0, "pollers_waiting": 0, "polls_sent": 0, "answers_204": 0, "answers_200_empty": 0,
              "answers_other": 0, "commands_received": 0, "connection_failures": 0}
    started = time.monotonic()

    def make_request(instance):
        return (
            f"GET /v1/tunnels/{args.tunnel_id}/poll?limit=1&timeout_ms={args.timeout_ms} HTTP/1.1\r\n"
            f"Host: {args.host}:{args.port}\r\n"
            f"Authorization: Bearer {key}\r\n"
            "Accept: application/json\r\n"
            "X-Tunnel-Client-Name: bench-idle-poller\r\n"
            f"X-Tunnel-Client-Instance-Id: {instance}\r\n"
            '\r\n'
        ).encode("ascii")

    pollers = []
    for i in range(args.count):
        instance = f"bench-idle-{i:05d}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect_ex((args.host, args.port))
        except OSError:
            counts["connection_failures"] += 1
            sock.close()
            continue
        p = Poller(sock, make_request(instance))
        pollers.append(p)
        sel.register(sock, selectors.EVENT_WRITE, p)
        counts["connections"] += 1

    ready_announced = False
    deadline = started + args.max_seconds
    while not stop and time.monotonic() < deadline:
        if not ready_announced and time.monotonic() - started > args.connect_seconds:
            print(f"not ready: {counts['pollers_waiting']} of {args.count} polls sent in "
                  f"{args.connect_seconds:.0f} s", flush=True)
            counts["connection_failures"] += args.count - counts["pollers_waiting"]
            break
        for key_, mask in sel.select(timeout=0.5):
            p = key_.data
            try:
                if mask & selectors.EVENT_WRITE:
                    n = p.sock.send(p.request[p.sent:])
                    p.sent += n
                    if p.sent == len(p.request):
                        counts["polls_sent"] += 1
                        p.polls += 1
                        if p.polls == 1:
                            counts["pollers_waiting"] += 1
                        sel.modify(p.sock, selectors.EVENT_READ, p)
                    continue
                data = p.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed by the relay")
                p.buf += data
                while True:
                    done = response_complete(p.buf)
                    if done is None:
                        break
                    status, used, body = done
                    p.buf = p.buf[used:]
                    if status == 204:
                        counts["answers_204"] += 1
                    elif status == 200:
                        cmds = json.loads(body or b"{}").get("commands") or []
                        if cmds:
                            counts["commands_received"] += len(cmds)
                        else:
                            counts["answers_200_empty"] += 1
                    else:
                        counts["answers_other"] += 1
                    # Poll again on the same connection, as a client would.
                    p.sent = 0
                    sel.modify(p.sock, selectors.EVENT_WRITE, p)
            except (OSError, ConnectionError, ValueError):
                counts["connection_failures"] += 1
                sel.unregister(p.sock)
                p.sock.close()
        if not ready_announced and counts["pollers_waiting"] == args.count:
            ready_announced = True
            print(f"ready {counts['pollers_waiting']}", flush=True)

    for p in pollers:
        try:
            p.sock.close()
        except OSError:
            pass
    counts["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(counts), flush=True)
    failed = counts["connection_failures"] or counts["answers_other"] or counts["commands_received"]
    return 1 if failed or not ready_announced else 0


if __name__ == "__main__":
    sys.exit(main())
