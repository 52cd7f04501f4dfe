#!/usr/bin/env bash
# Checks of the built packages with the distributions' own tools. Run after
# `make deb rpm container-context` (as root: it installs and removes the .deb):
#   bash packaging/check.sh        (or: make package-check)
#
# dist: binary, size, sha256, CycloneDX SBOM (strict schema check); reproducibility (the
# packages rebuilt from the same binary are byte-identical); .deb: dpkg-deb -I/-c (files, modes,
# conffiles, scripts), lintian without errors; .rpm: rpm -qpi, -qplv, -qpc, --scripts, digests,
# an unpack into a scratch root; the env templates against `--help`; the Dockerfile and its
# context (the built image itself: packaging/image-check.sh); the Kubernetes manifests (kubernetes-validate --strict + security assertions);
# dpkg -i on a host without a running systemd, systemd-analyze verify and security (client
# exposure <= 2.0, as documented), the SysV script and the cron line for real against a
# loopback relay and stub MCP server, dpkg -r and --purge (the user stays).
set -euo pipefail
cd "$(dirname "$0")/.."

export LC_ALL=C
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
triple=x86_64-unknown-linux-musl
bin=dist/mcp-tunnel-$version-$triple
deb=dist/mcp-tunnel_${version}-1_amd64.deb
rpm=dist/mcp-tunnel-${version}-1.x86_64.rpm
ctx=dist/container
venv=target/packaging-venv
sys_python=/usr/bin/python3
[ -x "$sys_python" ] || sys_python=python3

checks=0
failed=0
ok() { checks=$((checks + 1)); echo "  ok   $*"; }
bad() { checks=$((checks + 1)); failed=$((failed + 1)); echo "  FAIL $*" >&2; }
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
section() { echo "== $*"; }

scratch=$(mktemp -d /tmp/mcp-tunnel-pkgcheck.XXXXXX)
started_pids=()
cleanup() {
    local p
    for p in "${started_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$scratch"
}
trap cleanup EXIT

for f in "$bin" "$deb" "$rpm" "$ctx/Dockerfile"; do
    [ -e "$f" ] || { echo "packaging/check.sh: $f missing: run make deb rpm container-context" >&2; exit 1; }
done

# A Python environment with the two offline validators from PyPI (schemas bundled).
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/python" -c 'import cyclonedx.validation.json' 2>/dev/null; then
    "$sys_python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        'kubernetes-validate==1.37.0' 'cyclonedx-python-lib[json-validation]==11.12.0'
fi

# ---------------------------------------------------------------------------------------
section "dist: $bin"
check "binary is static-pie" sh -c "file -b '$bin' | grep -Eq 'static(-pie)? ?(linked|pie)'"
check "binary is stripped" sh -c "file -b '$bin' | grep -q ', stripped'"
check "binary --version names $version and a commit" sh -c "'$bin' --version | grep -Eq '^mcp-tunnel $version \\(commit [0-9a-f]{12}, $triple\\)'"
check "no build-machine paths in the binary" sh -c "! grep -aq -e '$HOME/.cargo' -e '$PWD/' '$bin'"
max_bytes=${STATIC_MAX_BYTES:-4194304}
check "binary at most $max_bytes bytes (the 4 MiB budget; the goal is 3 MiB; it is $(stat -c %s "$bin"))" \
    test "$(stat -c %s "$bin")" -le "$max_bytes"
check "size recorded" grep -q "^$(stat -c %s "$bin") bytes" "$bin.size"
check "sha256 recorded" sh -c "cd dist && sha256sum --quiet -c '$(basename "$bin").sha256'"
check "SBOM valid against the CycloneDX 1.5 schema (strict)" "$venv/bin/python" - "$bin.cdx.json" <<'EOF'
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())
if err:
    print(err, file=sys.stderr)
    sys.exit(1)
EOF
check "SBOM: normal dependency graph only, consistent references" "$sys_python" - "$bin.cdx.json" <<'EOF'
import json, sys
bom = json.load(open(sys.argv[1]))
root = bom["metadata"]["component"]
names = {c["name"] for c in bom["components"]}
refs = [c["bom-ref"] for c in bom["components"]] + [root["bom-ref"]]
assert len(refs) == len(set(refs)), "duplicate bom-ref"
assert all(c["purl"].startswith("pkg:cargo/") for c in bom["components"])
assert all(c.get("licenses") for c in bom["components"]), "a component without licence"
assert {"rustls", "ring", "ureq", "serde_json"} <= names, "runtime crates missing"
assert "rcgen" not in names and "cc" not in names, "dev- or build-dependencies listed"
deps = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
assert set(deps) == set(refs), "dependencies do not cover every component"
assert all(t in deps for ds in deps.values() for t in ds), "dangling dependsOn"
print(f"    {len(bom['components'])} components, "
      f"{sum(c.get('scope') == 'excluded' for c in bom['components'])} build-time only",
      file=sys.stderr)
EOF

# ---------------------------------------------------------------------------------------
section "reproducibility: the same binary and commit give the same packages"
repro=$scratch/repro
(
    export DIST=$repro
    bash packaging/build.sh dist "$bin" "$triple" && bash packaging/build.sh deb "$bin" &&
        bash packaging/build.sh rpm "$bin"
) > "$scratch/repro.log" 2>&1 || { cat "$scratch/repro.log" >&2; bad "rebuild"; }
for f in "$(basename "$deb")" "$(basename "$rpm")" "$(basename "$bin").cdx.json"; do
    check "$f rebuilt byte-identical" cmp -s "dist/$f" "$repro/$f"
done

# ---------------------------------------------------------------------------------------
section "deb: $deb"
dpkg-deb -I "$deb" > "$scratch/deb-info"
dpkg-deb -c "$deb" > "$scratch/deb-contents"
sed 's/^/    /' "$scratch/deb-info" | sed -n '1,12p'
field() { dpkg-deb -f "$deb" "$1"; }
check "Package mcp-tunnel, Version $version-1, Architecture amd64" \
    test "$(field Package) $(field Version) $(field Architecture)" = "mcp-tunnel $version-1 amd64"
check "no Depends (static binary)" test -z "$(field Depends)"
# path mode: every file the package must ship, with its mode (all root/root in the archive).
while read -r mode path; do
    line=$(grep -E " \./$path\$" "$scratch/deb-contents" || true)
    check "$mode root/root $path" sh -c "echo '$line' | grep -q '^$mode root/root '"
done <<'EOF'
-rwxr-xr-x usr/bin/mcp-tunnel
-rw-r----- etc/mcp-tunnel/mcp-tunnel.env
-rw-r----- etc/mcp-tunnel/relay.env
-rwxr-xr-x etc/init.d/mcp-tunnel
-rwxr-xr-x etc/init.d/mcp-tunnel-relay
-rw-r--r-- etc/logrotate.d/mcp-tunnel
-rw-r--r-- usr/lib/systemd/system/mcp-tunnel.service
-rw-r--r-- usr/lib/systemd/system/mcp-tunnel-relay.service
-rw-r--r-- usr/lib/sysusers.d/mcp-tunnel.conf
-rw-r--r-- usr/share/man/man1/mcp-tunnel.1.gz
-rw-r--r-- usr/share/doc/mcp-tunnel/copyright
-rw-r--r-- usr/share/doc/mcp-tunnel/changelog.Debian.gz
-rw-r--r-- usr/share/doc/mcp-tunnel/README.md.gz
-rw-r--r-- usr/share/doc/mcp-tunnel/README.packaging.md.gz
-rw-r--r-- usr/share/doc/mcp-tunnel/examples/mcp-tunnel.cron
-rw-r--r-- usr/share/doc/mcp-tunnel/examples/stdio-child.conf
-rw-r--r-- usr/share/doc/mcp-tunnel/examples/relay-low-port.conf
-rw-r--r-- usr/share/doc/mcp-tunnel/examples/relay-cluster.conf
-rw-r--r-- usr/share/doc/mcp-tunnel/help/run.txt
-rw-r--r-- usr/share/doc/mcp-tunnel/help/relay.txt
-rw-r--r-- usr/share/doc/mcp-tunnel/help/mcp-tunnel.txt
EOF
check "every entry owned by root/root" sh -c "! awk '{print \$2}' '$scratch/deb-contents' | grep -v '^root/root\$'"
check "one mtime for every entry (SOURCE_DATE_EPOCH)" sh -c "test \$(awk '{print \$4\" \"\$5}' '$scratch/deb-contents' | sort -u | wc -l) -eq 1"
mkdir -p "$scratch/control"
dpkg-deb -e "$deb" "$scratch/control"
check "conffiles: both env files, both init scripts, logrotate" diff -u packaging/deb/conffiles "$scratch/control/conffiles"
for s in postinst prerm postrm; do
    check "$s is executable and valid sh" sh -c "test -x '$scratch/control/$s' && sh -n '$scratch/control/$s'"
done
check "postinst creates the user (systemd-sysusers, useradd -r fallback)" \
    sh -c "grep -q 'systemd-sysusers' '$scratch/control/postinst' && grep -q 'useradd --system' '$scratch/control/postinst'"
# (comments aside; try-restart after an upgrade only restarts what was already running)
starts='(systemctl|deb-systemd-invoke|invoke-rc.d)( [-a-z=.]+)* (enable|start)\b|deb-systemd-helper enable|update-rc.d mcp-tunnel (defaults|enable)( |$)|chkconfig mcp-tunnel on'
check "postinst enables and starts nothing" sh -c "! grep -v '^ *#' '$scratch/control/postinst' | grep -Eq '$starts'"
check "no maintainer script deletes the user or group" \
    sh -c "! grep -Eq 'userdel|deluser|groupdel|delgroup' '$scratch/control/postinst' '$scratch/control/prerm' '$scratch/control/postrm'"

lintian_out=dist/lintian.txt
if lintian --fail-on error --display-level ">=info" --tag-display-limit 0 "$deb" > "$lintian_out" 2>&1; then
    ok "lintian: no errors ($(grep -c '^W:' "$lintian_out" || true) warnings, $(grep -c '^I:' "$lintian_out" || true) info; $lintian_out)"
else
    bad "lintian reports errors ($lintian_out)"
fi
sed 's/^/    /' "$lintian_out"

# ---------------------------------------------------------------------------------------
section "rpm: $rpm"
rpm -qpi "$rpm" > "$scratch/rpm-info" 2>/dev/null
sed 's/^/    /' "$scratch/rpm-info" | sed -n '1,8p'
check "Name mcp-tunnel, Version $version, Release 1, Arch x86_64, License Apache-2.0" \
    test "$(rpm -qp --qf '%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}' "$rpm" 2>/dev/null)" = "mcp-tunnel $version 1 x86_64 Apache-2.0"
check "digests OK (rpm -K)" sh -c "rpm -K --nosignature '$rpm' | grep -q 'digests OK'"
check "xz payload (readable by rpm >= 4.6: RHEL/CentOS 6 and later)" \
    test "$(rpm -qp --qf '%{PAYLOADCOMPRESSOR}' "$rpm" 2>/dev/null)" = xz
rpm -qplv "$rpm" 2>/dev/null | sed 's/^/    /'
# (rpm -qplv cuts names at 8 characters; the same facts in full:)
rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]' "$rpm" \
    > "$scratch/rpm-contents" 2>/dev/null
while read -r mode owner group path; do
    check "$mode $owner:$group $path" grep -qxF -e "$mode $owner $group $path" "$scratch/rpm-contents"
done <<'EOF'
-rwxr-xr-x root root /usr/bin/mcp-tunnel
-rw-r----- root mcp-tunnel /etc/mcp-tunnel/mcp-tunnel.env
-rw-r----- root mcp-tunnel /etc/mcp-tunnel/relay.env
-rwxr-xr-x root root /etc/rc.d/init.d/mcp-tunnel
-rwxr-xr-x root root /etc/rc.d/init.d/mcp-tunnel-relay
-rw-r--r-- root root /usr/lib/systemd/system/mcp-tunnel.service
-rw-r--r-- root root /usr/lib/systemd/system/mcp-tunnel-relay.service
-rw-r--r-- root root /usr/lib/sysusers.d/mcp-tunnel.conf
-rw-r--r-- root root /usr/share/man/man1/mcp-tunnel.1.gz
-rw-r--r-- root root /usr/share/licenses/mcp-tunnel/LICENSE
EOF
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" 2>/dev/null > "$scratch/rpm-flags"
for f in /etc/mcp-tunnel/mcp-tunnel.env /etc/mcp-tunnel/relay.env /etc/logrotate.d/mcp-tunnel; do
    check "%config(noreplace) $f" grep -qx "cn $f" "$scratch/rpm-flags"
done
rpm -qpR "$rpm" 2>/dev/null | sed 's/^/    requires: /'
check "requires only the shell, getent, useradd/groupadd, rpmlib features (no library, no rtld)" \
    sh -c "! rpm -qpR '$rpm' 2>/dev/null | grep -Ev '^(/bin/sh|/usr/bin/getent|/usr/sbin/useradd|/usr/sbin/groupadd|rpmlib\\(.*|config\\(mcp-tunnel\\) = .*)\$'"
rpm -qp --scripts "$rpm" > "$scratch/rpm-scripts" 2>/dev/null
check "scriptlets: %pre %post %preun %postun present" sh -c "test \$(grep -Ec '^(preinstall|postinstall|preuninstall|postuninstall) scriptlet' '$scratch/rpm-scripts') -eq 4"
awk '/^[a-z]+ scriptlet \(using \/bin\/sh\):$/ {n++; next} {print > ("'"$scratch"'/rpm-script-" n)}' "$scratch/rpm-scripts"
for s in "$scratch"/rpm-script-*; do
    check "scriptlet $(basename "$s") is valid sh" sh -n "$s"
done
check "%pre creates the user, nothing deletes it" \
    sh -c "grep -q 'useradd -r' '$scratch/rpm-scripts' && ! grep -Eq 'userdel|groupdel' '$scratch/rpm-scripts'"
check "%post enables and starts nothing" sh -c "! grep -v '^ *#' '$scratch/rpm-scripts' | grep -Eq '$starts'"
# Unpack into a scratch root that knows the group, then let rpm verify what it installed.
rroot=$scratch/rpmroot
mkdir -p "$rroot/etc"
printf 'root:x:0:0:root:/root:/bin/sh\nmcp-tunnel:x:995:995::/var/lib/mcp-tunnel:/usr/sbin/nologin\n' > "$rroot/etc/passwd"
printf 'root:x:0:\nmcp-tunnel:x:995:\n' > "$rroot/etc/group"
if rpm --root "$rroot" --dbpath /rpmdb -i --nodeps --noscripts --ignorearch --ignoreos "$rpm" > "$scratch/rpm-install.log" 2>&1; then
    check "unpacked env file is root:mcp-tunnel (995) 0640" test "$(stat -c '%a %u %g' "$rroot/etc/mcp-tunnel/mcp-tunnel.env")" = "640 0 995"
    check "rpm -V: installed files match the package" sh -c "test -z \"\$(rpm --root '$rroot' --dbpath /rpmdb -V --nodeps mcp-tunnel 2>&1)\""
else
    cat "$scratch/rpm-install.log" >&2
    bad "rpm -i into a scratch root"
fi

# ---------------------------------------------------------------------------------------
section "container: $ctx"
check "context holds only Dockerfile, .dockerignore, the binary and the account files" \
    test "$(cd "$ctx" && find . -mindepth 1 | sort | tr '\n' ' ')" = "./.dockerignore ./Dockerfile ./group ./mcp-tunnel ./passwd "
check "the context's binary is the dist binary" cmp -s "$ctx/mcp-tunnel" "$bin"
"$sys_python" - "$ctx" <<'EOF' && ok "Dockerfile: FROM scratch, COPY only files in the context, no RUN, user 65532, entrypoint /mcp-tunnel run, health on 0.0.0.0:8080" || bad "Dockerfile rules"
import json, os, re, sys
ctx = sys.argv[1]
text = open(os.path.join(ctx, "Dockerfile")).read()
lines = re.sub(r"\\\n", " ", text).splitlines()
ins = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
cmds = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in ins]
errors = []
froms = [a for c, a in cmds if c == "FROM"]
if froms != ["scratch"]:
    errors.append(f"FROM must be scratch only, got {froms}")
for c, a in cmds:
    if c in ("RUN", "ADD", "ONBUILD"):
        errors.append(f"{c} is not allowed (no shell in scratch; COPY only)")
    if c == "COPY":
        args = [w for w in a.split() if not w.startswith("--")]
        for src in args[:-1]:
            if not os.path.isfile(os.path.join(ctx, src)):
                errors.append(f"COPY names {src}, not in the context")
        if any(w.startswith("--from") for w in a.split()):
            errors.append("COPY --from is not allowed")
ignore = open(os.path.join(ctx, ".dockerignore")).read().split()
if ignore[-4:] != ["*", "!mcp-tunnel", "!passwd", "!group"]:
    errors.append(".dockerignore must exclude everything but mcp-tunnel, passwd and group")
want = {"USER": "65532:65532", "ENTRYPOINT": '["/mcp-tunnel"]', "CMD": '["run"]',
        "ENV": "HEALTH_LISTEN_ADDR=0.0.0.0:8080", "EXPOSE": "8080"}
got = {c: a for c, a in cmds}
for k, v in want.items():
    if got.get(k) != v:
        errors.append(f"{k} must be {v}, got {got.get(k)}")
for e in errors:
    print("    " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

# ---------------------------------------------------------------------------------------
section "kubernetes: packaging/kubernetes"
for k in 1.25.0 1.37.0; do
    check "kubernetes-validate --strict against Kubernetes $k" \
        "$venv/bin/kubernetes-validate" --strict --quiet -k "$k" packaging/kubernetes/*.yaml
done
check "security fields on every container, probes, key from a Secret file, the relays' tunnels file and store" \
    "$venv/bin/python" packaging/kubernetes/check_security.py packaging/kubernetes/*.yaml

# ---------------------------------------------------------------------------------------
section "install: dpkg -i (systemd running: $([ -d /run/systemd/system ] && echo yes || echo no))"
if dpkg -s mcp-tunnel >/dev/null 2>&1; then dpkg --purge mcp-tunnel >/dev/null; fi
check "dpkg -i" dpkg -i "$deb"
echo "    $(/usr/bin/mcp-tunnel --version 2>&1 || true)"
check "/usr/bin/mcp-tunnel --version" sh -c "/usr/bin/mcp-tunnel --version | grep -q '^mcp-tunnel $version '"
check "system user and group mcp-tunnel" sh -c "getent passwd mcp-tunnel | grep -q ':/var/lib/mcp-tunnel:' && getent group mcp-tunnel >/dev/null"
check "user has no login shell" sh -c "getent passwd mcp-tunnel | grep -Eq ':(/usr/sbin/nologin|/sbin/nologin|/bin/false)\$'"
for f in /etc/mcp-tunnel/mcp-tunnel.env /etc/mcp-tunnel/relay.env; do
    check "$f is root:mcp-tunnel 0640" test "$(stat -c '%U:%G %a' "$f")" = "root:mcp-tunnel 640"
done
check "mcp-tunnel.env lists every variable of run --help" "$sys_python" packaging/from_help.py check /usr/bin/mcp-tunnel run /etc/mcp-tunnel/mcp-tunnel.env
check "relay.env lists every variable of relay --help" "$sys_python" packaging/from_help.py check /usr/bin/mcp-tunnel relay /etc/mcp-tunnel/relay.env
check "no unit enabled" sh -c "! ls /etc/systemd/system/*.wants/mcp-tunnel*.service 2>/dev/null | grep -q ."
check "SysV script registered disabled (K links only)" sh -c "ls /etc/rc2.d/K*mcp-tunnel >/dev/null 2>&1 && ! ls /etc/rc2.d/S*mcp-tunnel >/dev/null 2>&1"
# Minimal container images tell dpkg to drop man pages (path-exclude in /etc/dpkg/dpkg.cfg.d).
man_excluded=no
if grep -qs '^path-exclude=*/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then man_excluded=yes; fi
if [ "$man_excluded" = no ]; then
    check "man page installed" test -s /usr/share/man/man1/mcp-tunnel.1.gz
else
    echo "  skip man page installed: this host's dpkg excludes /usr/share/man"
fi

section "systemd units"
man_opt=--man=no
if command -v man >/dev/null 2>&1 && [ "$man_excluded" = no ]; then man_opt=--man=yes; fi
for u in mcp-tunnel.service mcp-tunnel-relay.service; do
    out=$(systemd-analyze verify "$man_opt" "/usr/lib/systemd/system/$u" 2>&1) && rc=0 || rc=$?
    [ -z "$out" ] || echo "$out" | sed 's/^/    /'
    check "systemd-analyze verify $u ($man_opt): clean" test "$rc" -eq 0 -a -z "$out"
done
score() {
    systemd-analyze security --offline=yes "$@" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p'
}
client_score=$(score /usr/lib/systemd/system/mcp-tunnel.service)
relay_score=$(score /usr/lib/systemd/system/mcp-tunnel-relay.service)
echo "    exposure: mcp-tunnel.service $client_score, mcp-tunnel-relay.service $relay_score"
check "client unit exposure $client_score <= 2.0" awk -v s="$client_score" 'BEGIN { exit !(s != "" && s <= 2.0) }'
check "relay unit exposure $relay_score <= 2.0" awk -v s="$relay_score" 'BEGIN { exit !(s != "" && s <= 2.0) }'
check "packaging/README.md records the client score $client_score" grep -q "| \`mcp-tunnel.service\` | $client_score |" packaging/README.md
check "README.md records the client score $client_score" grep -q "exposure level $client_score" README.md
# The stdio drop-in, as an administrator would install it.
install -D -m 0644 packaging/systemd/stdio-child.conf /etc/systemd/system/mcp-tunnel.service.d/stdio-child.conf
stdio_score=$(score mcp-tunnel.service)
out=$(systemd-analyze verify --man=no mcp-tunnel.service 2>&1) && rc=0 || rc=$?
rm -rf /etc/systemd/system/mcp-tunnel.service.d
echo "    exposure with the stdio-child drop-in: $stdio_score"
check "stdio-child drop-in verifies" test "$rc" -eq 0 -a -z "$out"
check "packaging/README.md records the stdio drop-in score $stdio_score" grep -q "| \`mcp-tunnel.service\` + \`stdio-child.conf\` | $stdio_score |" packaging/README.md
# The relay-cluster drop-in, as an administrator would install it (with its store file).
install -D -m 0644 packaging/systemd/relay-cluster.conf /etc/systemd/system/mcp-tunnel-relay.service.d/cluster.conf
store_env_existed=no; [ -e /etc/mcp-tunnel/relay-store.env ] && store_env_existed=yes
[ "$store_env_existed" = yes ] || echo 'RELAY_STORE=redis://127.0.0.1:6379/0' > /etc/mcp-tunnel/relay-store.env
out=$(systemd-analyze verify --man=no mcp-tunnel-relay.service 2>&1) && rc=0 || rc=$?
rm -rf /etc/systemd/system/mcp-tunnel-relay.service.d
[ "$store_env_existed" = yes ] || rm -f /etc/mcp-tunnel/relay-store.env
check "relay-cluster drop-in verifies" test "$rc" -eq 0 -a -z "$out"

# ---------------------------------------------------------------------------------------
section "SysV script and cron line, for real, against a loopback relay and stub"
failed_before=$failed
free_port() { "$sys_python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
relay_port=$(free_port); stub_port=$(free_port); health_port=$(free_port)
tunnels=$scratch/tunnels.toml
/usr/bin/mcp-tunnel relay tunnel add --name pkgcheck --tunnels-file "$tunnels" > "$scratch/tunnel.txt"
tunnel_id=$(grep -Eo 'tunnel_[0-9a-f]{32}' "$scratch/tunnel.txt" | head -n1)
runtime_key=$(sed -n 's/.*runtime[^:]*: *\([^ ]*\).*/\1/Ip' "$scratch/tunnel.txt" | head -n1)
check "relay tunnel add printed a tunnel id and a runtime key" test -n "$tunnel_id" -a -n "$runtime_key"
LOG_LEVEL=warn /usr/bin/mcp-tunnel relay --listen "127.0.0.1:$relay_port" --tunnels-file "$tunnels" --poll-max-wait 1s \
    > "$scratch/relay.log" 2>&1 &
started_pids+=($!)
LOG_LEVEL=warn /usr/bin/mcp-tunnel stub --listen "127.0.0.1:$stub_port" > "$scratch/stub.log" 2>&1 &
started_pids+=($!)
printf '%s\n' "$runtime_key" > /etc/mcp-tunnel/api-key
chgrp mcp-tunnel /etc/mcp-tunnel/api-key
chmod 0640 /etc/mcp-tunnel/api-key
cp /etc/mcp-tunnel/mcp-tunnel.env "$scratch/env.orig"
cat >> /etc/mcp-tunnel/mcp-tunnel.env <<EOF
CONTROL_PLANE_BASE_URL=http://127.0.0.1:$relay_port
CONTROL_PLANE_TUNNEL_ID=$tunnel_id
CONTROL_PLANE_API_KEY=file:/etc/mcp-tunnel/api-key
MCP_SERVER_URL=http://127.0.0.1:$stub_port/mcp
HEALTH_LISTEN_ADDR=127.0.0.1:$health_port
EOF
ready() {
    "$sys_python" - "$1" <<'EOF'
import sys, time, urllib.request
deadline = time.time() + 20
while time.time() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.3)
sys.exit(1)
EOF
}
# Live client processes of user mcp-tunnel (zombies, exited but not reaped, do not count).
clients() { ps -u mcp-tunnel -o stat=,comm= 2>/dev/null | awk '$1 !~ /^Z/ && $2 == "mcp-tunnel"' | wc -l; }
alive() { [ -n "$(ps -o stat= -p "$1" 2>/dev/null | grep -v '^Z')" ]; }
gone() { for _ in $(seq 1 50); do alive "$1" || return 0; sleep 0.1; done; return 1; }
# The script as installed (start-stop-daemon), and copies forced onto its other two paths:
# setpriv (RHEL 8+, no start-stop-daemon) and su (old util-linux).
sed 's/command -v start-stop-daemon/false/' /etc/init.d/mcp-tunnel > "$scratch/init-setpriv"
sed 's/command -v start-stop-daemon/false/; s/command -v setpriv/false/' /etc/init.d/mcp-tunnel > "$scratch/init-su"
chmod 0755 "$scratch/init-setpriv" "$scratch/init-su"
for script in /etc/init.d/mcp-tunnel "$scratch/init-setpriv" "$scratch/init-su"; do
    via=$(basename "$script"); [ "$via" = mcp-tunnel ] && via=start-stop-daemon || via=${via#init-}
    check "init script ($via): start" "$script" start
    check "init script ($via): status says running" "$script" status
    pid=$(cat /run/mcp-tunnel/mcp-tunnel.pid 2>/dev/null || echo none)
    check "init script ($via): the client runs as user mcp-tunnel" test "$(ps -o user:32= -p "$pid" 2>/dev/null)" = mcp-tunnel
    check "init script ($via): /readyz is 200 (polling the relay, the stub reachable)" ready "$health_port"
    "$script" start > /dev/null
    check "init script ($via): a second start is harmless (same pid, one process)" test "$(cat /run/mcp-tunnel/mcp-tunnel.pid) $(clients)" = "$pid 1"
    check "init script ($via): stop (SIGTERM, drained)" "$script" stop
    check "init script ($via): stopped, no pid file" sh -c "$(declare -f alive gone); gone '$pid' && test ! -e /run/mcp-tunnel/mcp-tunnel.pid"
    "$script" status > /dev/null 2>&1 && rc=0 || rc=$?
    check "init script ($via): status is 3 (not running)" test "$rc" -eq 3
done
# A configuration error must fail the start, not vanish into the background.
cp /etc/mcp-tunnel/mcp-tunnel.env "$scratch/env.good"
sed -i 's/^CONTROL_PLANE_TUNNEL_ID=.*/&\nLOG_LEVEL=loud/' /etc/mcp-tunnel/mcp-tunnel.env
/etc/init.d/mcp-tunnel start > "$scratch/bad-start.log" 2>&1 && rc=0 || rc=$?
check "init script: start with a configuration error fails (exit $rc)" test "$rc" -ne 0
check "... and says so in the log" grep -q 'configuration error' /var/log/mcp-tunnel/mcp-tunnel.log
/etc/init.d/mcp-tunnel stop > /dev/null 2>&1 || true
cp "$scratch/env.good" /etc/mcp-tunnel/mcp-tunnel.env
# The cron line, exactly as in the example (schedule and user fields removed), twice.
cron_cmd=$(grep -E '^\* \* \* \* \* mcp-tunnel ' packaging/cron/mcp-tunnel.cron | cut -d' ' -f7-)
check "README.md shows the same crontab line as the example" grep -qF "* * * * * mcp-tunnel $cron_cmd" README.md
install -d -o mcp-tunnel -g mcp-tunnel -m 0750 /run/mcp-tunnel /var/log/mcp-tunnel
su -s /bin/sh mcp-tunnel -c "$cron_cmd"
check "cron line: client ready" ready "$health_port"
su -s /bin/sh mcp-tunnel -c "$cron_cmd"
sleep 1
check "cron line again: still one client" test "$(clients)" -eq 1
cpid=$(cat /run/mcp-tunnel/mcp-tunnel.pid 2>/dev/null || echo none)
kill -TERM "$cpid" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.2; done
check "cron client stopped by SIGTERM" sh -c "! kill -0 '$cpid' 2>/dev/null"
check "it logged to /var/log/mcp-tunnel/mcp-tunnel.log (0600, user mcp-tunnel)" \
    test "$(stat -c '%U %a' /var/log/mcp-tunnel/mcp-tunnel.log 2>/dev/null)" = "mcp-tunnel 600"
if [ "$failed" -ne "$failed_before" ]; then
    for f in /var/log/mcp-tunnel/mcp-tunnel.log "$scratch/bad-start.log" "$scratch/relay.log"; do
        echo "    --- $f"; tail -n 20 "$f" 2>/dev/null | sed 's/^/    /'
    done
fi
cp "$scratch/env.orig" /etc/mcp-tunnel/mcp-tunnel.env
rm -f /etc/mcp-tunnel/api-key

# ---------------------------------------------------------------------------------------
section "the relay's SysV script, for real: start, metrics, audit log, reload, drain on stop"
failed_before=$failed
r_port=$(free_port); m_port=$(free_port)
r_tunnels=/etc/mcp-tunnel/pkgcheck-tunnels.toml
cp "$tunnels" "$r_tunnels" && chown mcp-tunnel:mcp-tunnel "$r_tunnels"
cp /etc/mcp-tunnel/relay.env "$scratch/relay.env.orig"
cat >> /etc/mcp-tunnel/relay.env <<EOF
RELAY_LISTEN=127.0.0.1:$r_port
RELAY_TUNNELS_FILE=$r_tunnels
RELAY_METRICS_LISTEN=127.0.0.1:$m_port
RELAY_AUDIT_LOG=/var/log/mcp-tunnel/audit.log
EOF
get() { "$sys_python" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
rinit=/etc/init.d/mcp-tunnel-relay
rpidf=/run/mcp-tunnel/mcp-tunnel-relay.pid
check "relay init script: start" "$rinit" start
check "relay init script: status says running" "$rinit" status
rpid=$(cat "$rpidf" 2>/dev/null || echo none)
check "relay init script: the relay runs as user mcp-tunnel" test "$(ps -o user:32= -p "$rpid" 2>/dev/null)" = mcp-tunnel
check "relay init script: /healthz is 200 on RELAY_LISTEN" sh -c "$(declare -f get); sys_python='$sys_python'; get http://127.0.0.1:$r_port/healthz | grep -q ok"
get "http://127.0.0.1:$m_port/metrics" > "$scratch/relay-metrics.txt" 2>/dev/null || true
check "relay /metrics on RELAY_METRICS_LISTEN names the tunnel" grep -q 'mcp_tunnel_relay_queue_capacity{tunnel="pkgcheck"}' "$scratch/relay-metrics.txt"
if command -v promtool >/dev/null 2>&1; then
    check "relay /metrics passes promtool check metrics" sh -c "promtool check metrics < '$scratch/relay-metrics.txt'"
fi
check "relay audit log is 0600, user mcp-tunnel" \
    test "$(stat -c '%U %a' /var/log/mcp-tunnel/audit.log 2>/dev/null)" = "mcp-tunnel 600"
"$rinit" reload > /dev/null && sleep 1
check "relay init script: reload (SIGHUP) keeps the same process" test "$(cat "$rpidf" 2>/dev/null)" = "$rpid"
check "relay init script: stop (SIGTERM, drained)" "$rinit" stop
check "relay init script: stopped, no pid file" sh -c "$(declare -f alive gone); gone '$rpid' && test ! -e '$rpidf'"
check "relay log says it drained" grep -q 'drained' /var/log/mcp-tunnel/mcp-tunnel-relay.log
if [ "$failed" -ne "$failed_before" ]; then
    echo "    --- /var/log/mcp-tunnel/mcp-tunnel-relay.log"
    tail -n 20 /var/log/mcp-tunnel/mcp-tunnel-relay.log 2>/dev/null | sed 's/^/    /'
fi
cp "$scratch/relay.env.orig" /etc/mcp-tunnel/relay.env
rm -f "$r_tunnels"

# ---------------------------------------------------------------------------------------
section "remove: dpkg -r, then --purge"
check "dpkg -r" dpkg -r mcp-tunnel
check "binary gone" test ! -e /usr/bin/mcp-tunnel
check "conffiles kept after remove" test -e /etc/mcp-tunnel/mcp-tunnel.env
check "user kept after remove" getent passwd mcp-tunnel
check "dpkg --purge" dpkg --purge mcp-tunnel
check "conffiles gone after purge" test ! -e /etc/mcp-tunnel/mcp-tunnel.env
check "no rc links left after purge" sh -c "! ls /etc/rc?.d/*mcp-tunnel >/dev/null 2>&1"
check "user and group kept after purge" sh -c "getent passwd mcp-tunnel >/dev/null && getent group mcp-tunnel >/dev/null"

echo "packaging: $((checks - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
