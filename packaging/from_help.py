#!/usr/bin/env python3
"""Packaging files derived from the binary's own `--help`, so they cannot drift from it.

    from_help.py env   BINARY run|relay         > mcp-tunnel.env | relay.env
    from_help.py man   BINARY                   > mcp-tunnel.1
    from_help.py check BINARY run|relay ENVFILE   every variable of `--help` is in ENVFILE

The help format parsed (src/config/table.rs `help_text`):

      --flag <value>
          One or more lines of explanation.
          env: VAR[, OTHER_VAR]   default: VALUE

Python standard library only. Dates come from $SOURCE_DATE_EPOCH (reproducible builds).
"""

import datetime
import os
import re
import subprocess
import sys

OPTION = re.compile(r"^  (--[A-Za-z0-9.-]+) <value>$")
ENV_DEFAULT = re.compile(r"^      env: (.+?)   default: (.*)$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def helptext(binary, *words):
    out = subprocess.run([binary, *words, "--help"], check=True, capture_output=True, text=True)
    return out.stdout


def options(text, required=True):
    """[{flag, help, env: [names], default}] in the order `--help` prints them."""
    found, cur = [], None
    for line in text.splitlines():
        m = OPTION.match(line)
        if m:
            cur = {"flag": m.group(1), "help": [], "env": [], "default": ""}
            continue
        if cur is None:
            continue
        m = ENV_DEFAULT.match(line)
        if m:
            cur["env"] = [v.strip() for v in m.group(1).split(",")]
            cur["default"] = m.group(2).strip()
            cur["help"] = " ".join(cur["help"])
            if not all(ENV_NAME.match(v) for v in cur["env"]):
                sys.exit(f"from_help: unexpected variable names for {cur['flag']}: {cur['env']}")
            found.append(cur)
            cur = None
        elif line.startswith("      "):
            cur["help"].append(line.strip())
        else:
            cur = None
    if not found and required:
        sys.exit("from_help: no options found in --help output; has its format changed?")
    return found


def version(binary):
    return subprocess.run([binary, "--version"], check=True, capture_output=True,
                          text=True).stdout.strip()


# Notes that only make sense in a packaged install, keyed by variable.
RUN_NOTES = {
    "CONTROL_PLANE_API_KEY": [
        "Leave unset under systemd: the unit sets it to file:%d/api-key, the systemd credential",
        "loaded from /etc/mcp-tunnel/api-key (root:root 0600). SysV init and cron: put",
        "file:/etc/mcp-tunnel/api-key here and make that file root:mcp-tunnel 0640.",
        "Never write the key itself into this file.",
    ],
    "MCP_SERVER_URL": [
        "Several channels: one --mcp.server-url flag each, in a drop-in that overrides ExecStart=.",
    ],
    "MCP_COMMAND": [
        "A stdio server under systemd needs the drop-in in /usr/share/doc/mcp-tunnel/examples.",
    ],
    "PID_FILE": [
        "Not needed under systemd; the SysV script passes /run/mcp-tunnel/mcp-tunnel.pid.",
    ],
    "ENV_FILE": [
        "Has no effect inside this file (systemd reads it; the SysV script passes --env-file).",
    ],
    "LOG_FILE": [
        "Under systemd leave unset: stderr goes to the journal.",
    ],
}
RELAY_NOTES = {
    "RELAY_TUNNELS_FILE": [
        "The service runs as user mcp-tunnel: after the first `mcp-tunnel relay tunnel add`",
        "(as root) run `chown mcp-tunnel: /etc/mcp-tunnel/tunnels.toml` once; later",
        "changes keep that owner.",
    ],
    "RELAY_TLS_KEY": [
        "Keep the key root:root 0600 as /etc/mcp-tunnel/relay-tls.key: the unit passes it as",
        "a systemd credential, so set /run/credentials/mcp-tunnel-relay.service/tls-key here.",
    ],
    "RELAY_LISTEN": [
        "A port below 1024 needs the CAP_NET_BIND_SERVICE drop-in (see the examples).",
    ],
}

HEADERS = {
    "run": """\
# /etc/mcp-tunnel/mcp-tunnel.env: configuration of `mcp-tunnel run`, read by
# mcp-tunnel.service (EnvironmentFile=) and by /etc/init.d/mcp-tunnel (--env-file).
#
# KEY=VALUE per line; `#` starts a comment; quotes allowed; no shell expansion.
# Every option of `mcp-tunnel run --help` is listed below, commented out, with its
# default. Uncomment and set at least:
#   CONTROL_PLANE_TUNNEL_ID, the API key (see below), and MCP_SERVER_URL or MCP_COMMAND,
# then start the service:  systemctl enable --now mcp-tunnel
# Later files win: /etc/default/mcp-tunnel and /etc/sysconfig/mcp-tunnel are read first.
#
# Generated from `--help` of {version}.
""",
    "relay": """\
# /etc/mcp-tunnel/relay.env: configuration of `mcp-tunnel relay`, read by
# mcp-tunnel-relay.service (EnvironmentFile=).
#
# KEY=VALUE per line; `#` starts a comment; quotes allowed; no shell expansion.
# Every option of `mcp-tunnel relay --help` is listed below, commented out, with its
# default. Create a tunnel first:
#   mcp-tunnel relay tunnel add --name NAME && chown mcp-tunnel: /etc/mcp-tunnel/tunnels.toml
# then start the service:  systemctl enable --now mcp-tunnel-relay
# Later files win: /etc/default/mcp-tunnel-relay and /etc/sysconfig/mcp-tunnel-relay are read first.
#
# Generated from `--help` of {version}.
""",
}


def env_template(binary, command):
    words = ["run"] if command == "run" else ["relay"]
    notes = RUN_NOTES if command == "run" else RELAY_NOTES
    out = [HEADERS[command].format(version=version(binary)).rstrip("\n")]
    for o in options(helptext(binary, *words)):
        default = o["default"]
        value = "" if default in ("(none)", "(required)") else default
        out.append("")
        line = f"# {o['flag']}: {o['help']}"
        if default == "(required)" and "Required" not in o["help"]:
            line += " Required."
        out.append(line)
        if len(o["env"]) > 1:
            out.append(f"# (also read from {', '.join(o['env'][1:])})")
        for note in notes.get(o["env"][0], []):
            out.append(f"# {note}")
        out.append(f"#{o['env'][0]}={value}")
    return "\n".join(out) + "\n"


def check(binary, command, path):
    """Every variable `--help` names must appear in the packaged env file."""
    text = open(path).read()
    present = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", text, re.M))
    wanted = [o["env"][0] for o in options(helptext(binary, command))]
    missing = [v for v in wanted if v not in present]
    if missing:
        sys.exit(f"{path}: missing {', '.join(missing)} from `{command} --help`")
    print(f"{path}: all {len(wanted)} variables of `mcp-tunnel {command} --help` present")


def roff(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def man(binary):
    top = helptext(binary)
    ver = version(binary)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    date = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d")
    commands = re.findall(r"^  (\w+) +(.+)$", top.split("Commands:", 1)[1].split("\n\n")[0], re.M)
    out = [
        f'.TH MCP-TUNNEL 1 "{date}" "{roff(ver)}" "User Commands"',
        ".\\\" Generated by packaging/from_help.py from the binary's --help; do not edit.",
        ".SH NAME",
        "mcp-tunnel \\- reach private MCP servers through outbound\\-only HTTPS",
        ".SH SYNOPSIS",
        ".B mcp\\-tunnel",
        ".I COMMAND",
        "[\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        "\\fBmcp\\-tunnel run\\fR sits inside a private network, makes only outbound HTTPS calls",
        "to a control plane, long\\-polls it for queued MCP JSON\\-RPC requests, forwards each one",
        "to a private MCP server and posts the answer back. \\fBmcp\\-tunnel relay\\fR is a",
        "self\\-hosted control plane with the public MCP endpoint.",
        ".PP",
        "Every option is also read from the environment variable shown; a flag wins over the",
        "environment, which wins over the default. Durations are one integer and one unit:",
        "30s, 4500ms, 10m (units ns us ms s m h).",
        ".SH COMMANDS",
    ]
    for name, what in commands:
        out += [".TP", f"\\fB{name}\\fR", roff(what)]
    # One section per command: its options when it has the usual option list, else its help
    # text as printed (e.g. `doctor`, which takes run's options).
    for name, _ in commands:
        if name in ("help", "version"):
            continue
        text = helptext(binary, name)
        opts = options(text, required=False)
        out.append(f".SH {name.upper()}")
        if opts:
            out += [roff(text.splitlines()[0]), ".PP", "Options:"]
            for o in opts:
                out += [".TP", f"\\fB{roff(o['flag'])}\\fR \\fIvalue\\fR", roff(o["help"]), ".br",
                        f"Environment: {roff(', '.join(o['env']))}; default: {roff(o['default'])}."]
        else:
            out += [".nf", roff(text.rstrip()), ".fi"]
        if name == "relay":
            out += [".SS Tunnel management", ".nf",
                    roff(helptext(binary, "relay", "tunnel").rstrip()), ".fi"]
    out += [
        ".SH EXIT STATUS",
        ".TP", "0", "clean stop after SIGTERM or SIGINT (also: another copy holds \\-\\-pid\\-file)",
        ".TP", "1", "runtime failure, or a second signal",
        ".TP", "2", "configuration or usage error; the message names the offending key",
        ".TP", "3", "the control plane rejected the API key and \\-\\-exit\\-on\\-auth\\-failure is true",
        ".SH FILES",
        ".TP", "/etc/mcp\\-tunnel/mcp\\-tunnel.env", "configuration of mcp\\-tunnel.service and the SysV script",
        ".TP", "/etc/mcp\\-tunnel/relay.env", "configuration of mcp\\-tunnel\\-relay.service",
        ".TP", "/etc/mcp\\-tunnel/api\\-key", "the runtime API key, passed as a systemd credential",
        ".TP", "/etc/mcp\\-tunnel/tunnels.toml", "the relay's tunnels and key digests",
        ".TP", "/usr/share/doc/mcp\\-tunnel/", "README, examples (cron, systemd drop\\-ins), \\-\\-help texts",
        ".SH SEE ALSO",
        ".BR systemctl (1),",
        ".BR systemd.exec (5),",
        ".BR crontab (5)",
    ]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    mode, binary = sys.argv[1], sys.argv[2]
    if mode == "env" and len(sys.argv) == 4 and sys.argv[3] in ("run", "relay"):
        sys.stdout.write(env_template(binary, sys.argv[3]))
    elif mode == "man" and len(sys.argv) == 3:
        sys.stdout.write(man(binary))
    elif mode == "check" and len(sys.argv) == 5:
        check(binary, sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
