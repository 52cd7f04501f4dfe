#!/usr/bin/env bash
# Checks of the container image that `make image` built (make image-check; CI runs it after
# make image). No daemon, no registry: buildah with vfs storage and chroot isolation.
#
# The image: user 65532:65532, entrypoint /mcp-tunnel run, health on 0.0.0.0:8080, the OCI
# labels (version, revision = the binary's commit, licence, source, created); the OCI archive:
# at most IMAGE_MAX_BYTES (8 MiB), one layer holding exactly /mcp-tunnel (the dist binary, byte
# for byte), /etc/passwd and /etc/group with uid/gid 65532; the binary run inside the image
# (buildah from + buildah run, as the image's user): --version, then `run` with a bad setting
# exits 2 naming it; the Kubernetes manifests name this image.
set -euo pipefail
cd "$(dirname "$0")/.."

export LC_ALL=C
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
bin=dist/mcp-tunnel-$version-x86_64-unknown-linux-musl
[ -e "$bin" ] || bin=target/x86_64-unknown-linux-musl/release/mcp-tunnel
image=${IMAGE_REPO:-registry.example.com/mcp-tunnel}:$version
archive=target/image/mcp-tunnel-$version.oci.tar
max=${IMAGE_MAX_BYTES:-8388608}
# shellcheck disable=SC2206 # BUILDAH is a command with flags
buildah=(${BUILDAH:-buildah --storage-driver vfs})
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

checks=0
failed=0
ok() { checks=$((checks + 1)); echo "  ok   $*"; }
bad() { checks=$((checks + 1)); failed=$((failed + 1)); echo "  FAIL $*" >&2; }
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }

"${buildah[@]}" inspect --type image "$image" >/dev/null 2>&1 && [ -f "$archive" ] ||
    { echo "packaging/image-check.sh: $image or $archive missing: run make image" >&2; exit 1; }

ctr=
scratch=$(mktemp -d /tmp/mcp-tunnel-imagecheck.XXXXXX)
cleanup() {
    [ -z "$ctr" ] || "${buildah[@]}" rm "$ctr" >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT

echo "== image: $image"
field() { "${buildah[@]}" inspect --type image --format "$1" "$image"; }
label() { field "{{index .OCIv1.Config.Labels \"org.opencontainers.image.$1\"}}"; }
commit=$("$bin" --version | sed -n 's/.*(commit \([0-9a-f]*\),.*/\1/p')
check "user is 65532:65532" test "$(field '{{.OCIv1.Config.User}}')" = "65532:65532"
check "entrypoint /mcp-tunnel, command run" \
    test "$(field '{{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}')" = "[/mcp-tunnel] [run]"
check "HEALTH_LISTEN_ADDR=0.0.0.0:8080, port 8080 exposed" grep -q 'HEALTH_LISTEN_ADDR=0.0.0.0:8080.*8080/tcp' \
    <<<"$(field '{{.OCIv1.Config.Env}} {{.OCIv1.Config.ExposedPorts}}')"
check "label version = $version" test "$(label version)" = "$version"
check "label revision = the binary's commit $commit" test "$(label revision)" = "$commit"
check "label licenses = Apache-2.0" test "$(label licenses)" = "Apache-2.0"
check "label source is set ($(label source))" test -n "$(label source)"
check "label created is an RFC 3339 UTC time" grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$' <<<"$(label created)"

echo "== archive: $archive"
python3 - "$archive" "$bin" "$max" "$image" <<'EOF' && ok "archive: one layer, exactly /mcp-tunnel (the dist binary) and the account files, at most $max bytes" || bad "archive contents or size"
import gzip, hashlib, io, json, sys, tarfile
archive, binary, limit, image = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
errors = []
size = len(open(archive, "rb").read())
with tarfile.open(archive) as oci:
    blob = lambda d: oci.extractfile("blobs/" + d.replace(":", "/")).read()
    index = json.loads(oci.extractfile("index.json").read())
    refs = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]]
    if len(refs) != 1 or refs[0] != image:
        errors.append(f"index names {refs}, want [{image}]")
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    layers = manifest["layers"]
    if len(layers) != 1:
        errors.append(f"{len(layers)} layers, want 1")
    raw = blob(layers[0]["digest"])
    if layers[0]["mediaType"].endswith("+gzip"):
        raw = gzip.decompress(raw)
    members = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as layer:
        for m in layer.getmembers():
            name = m.name.lstrip("./").rstrip("/")
            if name:
                members[name] = (m, layer.extractfile(m).read() if m.isfile() else None)
want = {"etc", "etc/passwd", "etc/group", "mcp-tunnel"}
if set(members) != want:
    errors.append(f"layer holds {sorted(members)}, want {sorted(want)}")
else:
    m, data = members["mcp-tunnel"]
    if data != open(binary, "rb").read():
        errors.append("/mcp-tunnel is not the dist binary")
    if (m.mode & 0o777, m.uid, m.gid) != (0o755, 0, 0):
        errors.append(f"/mcp-tunnel mode {m.mode:o} owner {m.uid}:{m.gid}, want 755 0:0")
    passwd = members["etc/passwd"][1].decode().splitlines()
    group = members["etc/group"][1].decode().splitlines()
    if not any(l.split(":")[2:4] == ["65532", "65532"] for l in passwd):
        errors.append("/etc/passwd has no line for uid/gid 65532")
    if not any(l.split(":")[2] == "65532" for l in group):
        errors.append("/etc/group has no line for gid 65532")
print(f"    archive {size} bytes ({size / 1048576:.2f} MiB), layer {len(raw)} bytes unpacked")
if size > limit:
    errors.append(f"archive is {size} bytes, more than {limit}")
for e in errors:
    print("    " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

echo "== the binary inside the image (buildah from + buildah run, chroot isolation)"
ctr=$("${buildah[@]}" from --pull=never --quiet "$image")
# in_image BUILDAH-RUN-OPTIONS... -- ARGS...: run /mcp-tunnel ARGS in the container as the
# image's user; sets out (stdout and stderr) and rc.
in_image() {
    local opts=()
    while [ "$1" != "--" ]; do opts+=("$1"); shift; done
    shift
    out=$("${buildah[@]}" run "${opts[@]}" "$ctr" -- /mcp-tunnel "$@" 2>&1) && rc=0 || rc=$?
    sed 's/^/    /' <<<"exit $rc: $out"
}
# expect RC PATTERN: the last in_image exited RC and printed PATTERN (grep -E).
expect() { [ "$rc" = "$1" ] && grep -Eq -- "$2" <<<"$out"; }
tunnel=(--env CONTROL_PLANE_TUNNEL_ID=tunnel_0123456789abcdef0123456789abcdef)
in_image -- --version
check "--version in the image names $version and commit $commit" expect 0 "^mcp-tunnel $version \\(commit $commit,"
in_image "${tunnel[@]}" --env CONTROL_PLANE_API_KEY=sk-image-check --env MCP_SERVER_URL=ftp://mcp.invalid/ -- run
check "run with a bad MCP_SERVER_URL exits 2 naming it" expect 2 "configuration error: MCP_SERVER_URL: must be an http"
# A key file only root may read: the image's user cannot, so the key error comes first (as
# root it would be read, and the bad URL would be the error instead).
echo sk-image-check >"$scratch/key"
chmod 0600 "$scratch/key"
"${buildah[@]}" copy --quiet --chown 0:0 --chmod 0600 "$ctr" "$scratch/key" /root-only-key >/dev/null
in_image "${tunnel[@]}" --env CONTROL_PLANE_API_KEY=file:/root-only-key --env MCP_SERVER_URL=ftp://mcp.invalid/ -- run
check "runs as non-root: a root-only key file is refused (exit 2, names CONTROL_PLANE_API_KEY)" \
    expect 2 "CONTROL_PLANE_API_KEY: cannot read file /root-only-key: Permission denied"

echo "== kubernetes manifests name $image"
for f in packaging/kubernetes/sidecar.yaml packaging/kubernetes/deployment.yaml; do
    check "$f: the mcp-tunnel container's image is $image" \
        sh -c "grep -A1 -- '- name: mcp-tunnel\$' '$f' | grep -qx '          image: $image'"
done

echo "$((checks - failed)) passed, $failed failed"
[ "$failed" = 0 ]
