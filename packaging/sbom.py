#!/usr/bin/env python3
"""CycloneDX 1.5 JSON SBOM of the static binary's dependency graph, made without network.

    sbom.py --target x86_64-unknown-linux-musl --out dist/mcp-tunnel-….cdx.json

Sources, all local and offline:
- `cargo tree -e normal --target TARGET --locked --offline`: which crates the release build for
  TARGET compiles, and their edges. Only normal dependencies (no dev-, no build-dependencies),
  with the resolver's real feature selection for that build. (`cargo metadata` alone unifies
  features across dev-dependencies too, and would list crates the binary does not contain.)
- `cargo metadata --format-version 1 --locked --offline --filter-platform TARGET`: each crate's
  licence expression, repository and kind. Proc-macro crates and what only they depend on
  (syn, quote, ...) run inside the compiler: they are listed with `"scope": "excluded"`,
  present in the build, absent from the shipped binary.
- Cargo.lock: the SHA-256 checksum of every crates.io archive.

Deterministic: the timestamp is $SOURCE_DATE_EPOCH, the serial number is derived from the
name, version, commit and target, and lists are sorted. Python standard library only.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.parse
import uuid


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def spdx_expression(text):
    """Cargo licence field to an SPDX expression (old `MIT/Apache-2.0` means OR)."""
    return re.sub(r"\s*/\s*", " OR ", text.strip())


def purl(name, version):
    # purl spec: the version is percent-encoded ("1.2.2+spec-1.1.0" -> "1.2.2%2Bspec-1.1.0").
    return f"pkg:cargo/{name}@{urllib.parse.quote(version, safe='.-_~')}"


def tree(target):
    """(crates {(name, version)}, edges {parent: set(child)}, root) from `cargo tree`."""
    out = run(
        "cargo", "tree", "-e", "normal", "--target", target, "--locked", "--offline",
        "--prefix", "depth", "--format", "{p}",
    )
    stack, edges, root = [], {}, None
    for line in out.splitlines():
        m = re.match(r"^(\d+)(\S+) v(\S+)", line)
        if not m:
            continue
        depth, node = int(m.group(1)), (m.group(2), m.group(3))
        del stack[depth:]
        if stack:
            edges.setdefault(stack[-1], set()).add(node)
        else:
            root = node
        edges.setdefault(node, set())
        stack.append(node)
    return set(edges), edges, root


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--commit", default="unknown")
    args = ap.parse_args()

    crates, edges, root = tree(args.target)
    meta = json.loads(run(
        "cargo", "metadata", "--format-version", "1", "--locked", "--offline",
        "--filter-platform", args.target,
    ))
    info = {(p["name"], p["version"]): p for p in meta["packages"]}
    with open(os.path.join(meta["workspace_root"], "Cargo.lock"), "rb") as f:
        lock = tomllib.load(f)
    checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}
    rustc = run("rustc", "-V").strip()

    def is_proc_macro(node):
        return any("proc-macro" in t["kind"] for t in info[node]["targets"])

    # What the binary links: everything reachable from the root without entering a proc-macro
    # crate. Proc macros and their own dependencies (syn, quote, ...) run inside the compiler.
    linked, todo = set(), [root]
    while todo:
        node = todo.pop()
        if node not in linked:
            linked.add(node)
            todo.extend(d for d in edges[node] if not is_proc_macro(d))

    def component(node, kind):
        p = info[node]
        c = {
            "type": kind,
            "bom-ref": purl(*node),
            "name": node[0],
            "version": node[1],
            "purl": purl(*node),
        }
        if p.get("description"):
            c["description"] = " ".join(p["description"].split())
        if node not in linked:
            c["scope"] = "excluded"  # build-time only: no code of it in the binary
        if p.get("license"):
            c["licenses"] = [{"expression": spdx_expression(p["license"])}]
        else:
            c["licenses"] = [{"license": {"name": "see the crate's license file"}}]
        if checksums.get(node):
            c["hashes"] = [{"alg": "SHA-256", "content": checksums[node]}]
        if p.get("repository"):
            c["externalReferences"] = [{"type": "vcs", "url": p["repository"]}]
        return c

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    name, version = root
    bom = {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(
            uuid.NAMESPACE_URL, f"{purl(name, version)}?commit={args.commit}&target={args.target}")),
        "version": 1,
        "metadata": {
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{
                "type": "application",
                "name": "packaging/sbom.py",
                "description": "cargo tree -e normal + cargo metadata + Cargo.lock, offline",
            }]},
            "component": component(root, "application"),
            "properties": [
                {"name": "cargo:target", "value": args.target},
                {"name": "cargo:profile", "value": "release"},
                {"name": "rustc:version", "value": rustc},
                {"name": "git:commit", "value": args.commit},
            ],
        },
        "components": [component(n, "library") for n in sorted(crates - {root})],
        "dependencies": [
            {"ref": purl(*n), "dependsOn": sorted(purl(*d) for d in edges[n])}
            for n in sorted(crates)
        ],
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(bom, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(bom['components'])} components "
          f"({sum(1 for c in bom['components'] if c.get('scope') == 'excluded')} of them "
          f"build-time only: proc macros and their dependencies)", file=sys.stderr)


if __name__ == "__main__":
    main()
