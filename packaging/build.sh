#!/usr/bin/env bash
# Packaging steps, called by the Makefile (make dist | deb | rpm | container-context).
#
#   packaging/build.sh dist BINARY TRIPLE     copy the static binary to dist/, record size,
#                                              sha256 and a CycloneDX SBOM next to it
#   packaging/build.sh deb  BINARY            dist/mcp-tunnel_VERSION-1_amd64.deb (dpkg-deb)
#   packaging/build.sh rpm  BINARY            dist/mcp-tunnel-VERSION-1.x86_64.rpm (rpmbuild)
#   packaging/build.sh container-context BINARY   dist/container/{Dockerfile,.dockerignore,passwd,group,mcp-tunnel}
#   packaging/build.sh image BINARY           the image $IMAGE_REPO:VERSION from dist/container with
#                                              buildah, and target/image/mcp-tunnel-VERSION.oci.tar
#
# Reproducible: every timestamp is $SOURCE_DATE_EPOCH (default: the time of the commit the
# binary was built from, as its --version says; else of HEAD), files are staged with fixed modes and mtimes, gzip runs with -n, dpkg-deb and
# rpmbuild clamp to SOURCE_DATE_EPOCH. The same binary and commit give byte-identical packages.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dist=${DIST:-$root/dist}
python=${PYTHON:-python3}
export TZ=UTC LC_ALL=C
umask 022

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
release=${PKG_RELEASE:-1}
maintainer=${MAINTAINER:-mcp-tunnel maintainers <maintainers@users.noreply.r-seed-d086072d.example>}
commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# The commit the binary was built from (it may predate HEAD), when it can run here.
binary_commit() {
    local c
    c=$("$1" --version 2>/dev/null | sed -n 's/.*(commit \([0-9a-f]*\),.*/\1/p') || true
    [ -z "$c" ] || commit=$c
}

die() { echo "packaging: $*" >&2; exit 1; }

# SOURCE_DATE_EPOCH: as given, else the binary's commit time, else HEAD's.
set_epoch() {
    if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
        SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct "$commit" 2>/dev/null ||
            git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
    fi
    export SOURCE_DATE_EPOCH
}

check_binary() {
    local bin=$1
    [ -x "$bin" ] || die "$bin: no such binary (run make static first)"
    file -b "$bin" | grep -Eq 'static(-pie|ally)? ?(linked|pie)' || die "$bin is not statically linked"
    # A cross-built binary cannot run here; its version is checked where it runs.
    if file -b "$bin" | grep -q 'x86-64'; then
        "$bin" --version | grep -q "^mcp-tunnel $version " ||
            die "$bin --version says '$("$bin" --version)', Cargo.toml says $version"
        binary_commit "$bin"
    fi
    set_epoch
}

# Every file and directory under $1 gets the same mtime, so archives do not depend on when or
# in which order the tree was staged.
clamp_mtimes() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }

gz() { gzip -9n "$1"; }

# ---------------------------------------------------------------------------------- dist
cmd_dist() {
    local bin=$1 triple=$2
    check_binary "$bin"
    mkdir -p "$dist"
    local out=$dist/mcp-tunnel-$version-$triple
    install -m 0755 "$bin" "$out"
    touch -d "@$SOURCE_DATE_EPOCH" "$out"
    local bytes
    bytes=$(stat -c %s "$out")
    printf '%s bytes (%s KiB) %s\n' "$bytes" "$((bytes / 1024))" "$(basename "$out")" > "$out.size"
    (cd "$dist" && sha256sum "$(basename "$out")" > "$(basename "$out").sha256")
    "$python" "$here/sbom.py" --target "$triple" --out "$out.cdx.json" --commit "$commit"
    cat "$out.size"
}

# --------------------------------------------------------------------------------- stage
# The tree both packages install, apart from Debian- or RPM-only files.
stage_common() {
    local bin=$1 st=$2
    rm -rf "$st"
    install -d -m 0755 "$st"/usr/bin "$st"/etc/mcp-tunnel "$st"/etc/init.d "$st"/etc/logrotate.d \
        "$st"/usr/lib/systemd/system "$st"/usr/lib/sysusers.d "$st"/usr/share/man/man1 \
        "$st"/usr/share/doc/mcp-tunnel/examples "$st"/usr/share/doc/mcp-tunnel/help
    install -m 0755 "$bin" "$st"/usr/bin/mcp-tunnel
    local b=$st/usr/bin/mcp-tunnel
    # Generated from the binary's own --help, so they cannot drift from it.
    "$python" "$here/from_help.py" env "$b" run > "$st"/etc/mcp-tunnel/mcp-tunnel.env
    "$python" "$here/from_help.py" env "$b" relay > "$st"/etc/mcp-tunnel/relay.env
    chmod 0640 "$st"/etc/mcp-tunnel/mcp-tunnel.env "$st"/etc/mcp-tunnel/relay.env
    install -m 0755 "$here"/sysv/mcp-tunnel "$st"/etc/init.d/mcp-tunnel
    install -m 0755 "$here"/sysv/mcp-tunnel-relay "$st"/etc/init.d/mcp-tunnel-relay
    install -m 0644 "$here"/logrotate/mcp-tunnel "$st"/etc/logrotate.d/mcp-tunnel
    install -m 0644 "$here"/systemd/mcp-tunnel.service "$here"/systemd/mcp-tunnel-relay.service \
        "$st"/usr/lib/systemd/system/
    install -m 0644 "$here"/sysusers/mcp-tunnel.conf "$st"/usr/lib/sysusers.d/mcp-tunnel.conf
    "$python" "$here/from_help.py" man "$b" > "$st"/usr/share/man/man1/mcp-tunnel.1
    gz "$st"/usr/share/man/man1/mcp-tunnel.1
    local doc=$st/usr/share/doc/mcp-tunnel
    install -m 0644 "$root"/README.md "$doc"/README.md
    install -m 0644 "$here"/README.md "$doc"/README.packaging.md
    install -m 0644 "$here"/cron/mcp-tunnel.cron "$here"/systemd/stdio-child.conf \
        "$here"/systemd/relay-low-port.conf "$here"/systemd/relay-cluster.conf "$doc"/examples/
    "$b" --help > "$doc"/help/mcp-tunnel.txt
    for c in run relay stub demo doctor; do
        if "$b" "$c" --help > "$doc/help/$c.txt" 2>/dev/null; then :; else rm -f "$doc/help/$c.txt"; fi
    done
    "$b" relay tunnel --help > "$doc"/help/relay-tunnel.txt
    "$b" --version > "$doc"/help/version.txt
    gz "$doc"/README.md
    gz "$doc"/README.packaging.md
    write_copyright "$doc"/copyright
}

# Debian machine-readable copyright, with the licences of the crates linked into the binary
# (from the SBOM next to it).
write_copyright() {
    local sbom=$dist/mcp-tunnel-$version-x86_64-unknown-linux-musl.cdx.json
    [ -s "$sbom" ] || die "no $sbom: run make dist"
    {
        cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mcp-tunnel
Upstream-Contact: $maintainer

Files: *
Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) the mcp-tunnel authors
License: Apache-2.0
Comment: /usr/bin/mcp-tunnel is statically linked (Rust, musl libc) with the crates below,
 each under its own licence; dist/*.cdx.json next to the binary is the full SBOM.
EOF
        "$python" - "$sbom" <<'EOF'
import json, sys
bom = json.load(open(sys.argv[1]))
for c in bom["components"]:
    if c.get("scope") == "excluded":
        continue
    lic = c["licenses"][0].get("expression") or c["licenses"][0]["license"]["name"]
    print(f" {c['name']} {c['version']}: {lic}")
print(" musl libc (Rust's bundled copy): MIT")
EOF
        cat <<EOF

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License. You may obtain a copy of
 the License at http://www.apache.org/licenses/LICENSE-2.0
 .
 On Debian systems, the complete text of the Apache License, Version 2.0 can be
 found in "/usr/share/common-licenses/Apache-2.0".
EOF
    } > "$1"
    chmod 0644 "$1"
}

# ----------------------------------------------------------------------------------- deb
cmd_deb() {
    local bin=$1
    check_binary "$bin"
    local work=$dist/deb st arch=amd64
    st=$work/mcp-tunnel
    stage_common "$bin" "$st"
    local doc=$st/usr/share/doc/mcp-tunnel
    # Debian changelog (lintian wants changelog.Debian.gz for a non-native version).
    {
        printf 'mcp-tunnel (%s-%s) unstable; urgency=medium\n\n' "$version" "$release"
        printf '  * Static musl build of mcp-tunnel %s (commit %s).\n\n' "$version" "$commit"
        printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
    } > "$doc"/changelog.Debian
    gz "$doc"/changelog.Debian
    install -d -m 0755 "$st"/usr/share/lintian/overrides
    install -m 0644 "$here"/deb/lintian-overrides "$st"/usr/share/lintian/overrides/mcp-tunnel

    install -d -m 0755 "$st"/DEBIAN
    local size
    size=$(du -k -s --apparent-size --exclude=DEBIAN "$st" | cut -f1)
    sed -e "s/@VERSION@/$version-$release/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
        -e "s|@MAINTAINER@|$maintainer|" "$here"/deb/control.in > "$st"/DEBIAN/control
    install -m 0644 "$here"/deb/conffiles "$st"/DEBIAN/conffiles
    install -m 0755 "$here"/deb/postinst "$here"/deb/prerm "$here"/deb/postrm "$st"/DEBIAN/
    (cd "$st" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
        xargs -0 md5sum) > "$st"/DEBIAN/md5sums
    chmod 0644 "$st"/DEBIAN/md5sums
    clamp_mtimes "$st"
    local out=$dist/mcp-tunnel_${version}-${release}_${arch}.deb
    dpkg-deb --root-owner-group -Zxz --build "$st" "$out"
    echo "$out"
}

# ----------------------------------------------------------------------------------- rpm
cmd_rpm() {
    local bin=$1
    check_binary "$bin"
    command -v rpmbuild >/dev/null || die "rpmbuild not found (apt-get install rpm)"
    local work=$dist/rpm st
    st=$work/stage
    stage_common "$bin" "$st"
    # Red Hat keeps SysV scripts in /etc/rc.d/init.d (/etc/init.d is a symlink to it there).
    install -d -m 0755 "$st"/etc/rc.d
    mv "$st"/etc/init.d "$st"/etc/rc.d/init.d
    install -d -m 0755 "$st"/usr/share/licenses/mcp-tunnel
    if [ -r /usr/share/common-licenses/Apache-2.0 ]; then
        install -m 0644 /usr/share/common-licenses/Apache-2.0 "$st"/usr/share/licenses/mcp-tunnel/LICENSE
    else
        die "/usr/share/common-licenses/Apache-2.0 missing (Debian's base-files provides it)"
    fi
    clamp_mtimes "$st"
    rm -rf "$work/top"
    mkdir -p "$work/top"
    rpmbuild -bb --quiet \
        --define "_topdir $work/top" \
        --define "_rpmdir $dist" \
        --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        --define "pkg_version $version" \
        --define "pkg_release $release" \
        --define "pkg_commit $commit" \
        --define "pkg_packager $maintainer" \
        --define "pkg_date $(date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %d %Y')" \
        --define "stage_dir $st" \
        --define "_buildhost reproducible" \
        --define "source_date_epoch_from_changelog 0" \
        --define "use_source_date_epoch_as_buildtime 1" \
        --define "clamp_mtime_to_source_date_epoch 1" \
        --define "_binary_payload w9.xzdio" \
        --define "_build_id_links none" \
        --target x86_64-linux \
        "$here"/rpm/mcp-tunnel.spec
    echo "$dist/mcp-tunnel-$version-$release.x86_64.rpm"
}

# ----------------------------------------------------------------------------- container
cmd_container_context() {
    local bin=$1
    check_binary "$bin"
    local ctx=$dist/container
    rm -rf "$ctx"
    install -d -m 0755 "$ctx"
    install -m 0755 "$bin" "$ctx"/mcp-tunnel
    install -m 0644 "$here"/container/Dockerfile "$here"/container/.dockerignore \
        "$here"/container/passwd "$here"/container/group "$ctx"/
    clamp_mtimes "$ctx"
    echo "$ctx: build with  make image  (or docker build --build-arg VERSION=$version --build-arg REVISION=$commit -t mcp-tunnel:$version $ctx)"
}

# The image, built from dist/container by buildah without a daemon: vfs storage (no overlay
# mounts needed) and chroot isolation (no runc namespaces), both overridable. FROM scratch
# pulls nothing, so no registry is contacted. --timestamp pins every date to SOURCE_DATE_EPOCH;
# without the io.buildah.version label the image ID does not depend on the buildah release.
cmd_image() {
    local bin=$1
    check_binary "$bin"
    local ctx=$dist/container
    cmp -s "$ctx/mcp-tunnel" "$bin" || die "$ctx does not hold $bin: run make container-context"
    command -v buildah >/dev/null || die "buildah is missing: apt-get install buildah (make package-setup)"
    local image=${IMAGE_REPO:-registry.example.com/mcp-tunnel}:$version
    local source=${IMAGE_SOURCE:-$(git -C "$root" config --get remote.origin.url 2>/dev/null || echo unknown)}
    local out=$root/target/image
    local archive=$out/mcp-tunnel-$version.oci.tar
    # shellcheck disable=SC2206 # BUILDAH is a command with flags
    local buildah=(${BUILDAH:-buildah --storage-driver vfs})
    export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
    # A rebuild replaces the tag; drop the old image so vfs storage does not pile up copies.
    "${buildah[@]}" rmi "$image" >/dev/null 2>&1 || true
    "${buildah[@]}" build --quiet --format oci --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false \
        --build-arg VERSION="$version" --build-arg REVISION="$commit" \
        --build-arg SOURCE="$source" \
        --build-arg CREATED="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
        -t "$image" -f "$ctx/Dockerfile" "$ctx" >/dev/null
    install -d -m 0755 "$out"
    rm -f "$archive"
    "${buildah[@]}" push --quiet "$image" "oci-archive:$archive:$image"
    echo "$image  ($("${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$image" | cut -c1-12))"
    echo "$archive  ($(stat -c %s "$archive") bytes)"
}

case "${1:-}" in
    dist) cmd_dist "$2" "$3" ;;
    deb) cmd_deb "$2" ;;
    rpm) cmd_rpm "$2" ;;
    container-context) cmd_container_context "$2" ;;
    image) cmd_image "$2" ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
