#!/usr/bin/env python3
"""Asserts the security and wiring rules of packaging/kubernetes/*.yaml that a schema cannot.

    check_security.py FILE.yaml...

(The schema check is kubernetes-validate --strict, run by packaging/check.sh.) For every Pod
template: non-root, seccomp RuntimeDefault, no service-account token; for every container:
no privilege escalation, read-only root filesystem, all capabilities dropped, resources set,
no :latest image. For the mcp-tunnel `run` container: probes on /healthz and /readyz at port
8080, the API key as a file from a Secret volume, never as a literal value. For a `relay`
container: readiness on /healthz, liveness not on /healthz (it is 503 while Redis is down, which
must restart nothing), the tunnels file from a Secret or ConfigMap volume without subPath (so its
updates arrive), RELAY_STORE from a Secret when set. A pod without an mcp-tunnel image (the
relays' Redis: no `run` or `relay` argument) gets the generic checks only. Needs PyYAML.
"""

import sys

import yaml

KEY_PATH = "/var/run/secrets/mcp-tunnel/api-key"
failures = []


def need(cond, where, what):
    if not cond:
        failures.append(f"{where}: {what}")


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_pod(where, spec, labels, selector):
    need(selector.items() <= labels.items(), where, "selector does not match the template labels")
    need(spec.get("automountServiceAccountToken") is False, where,
         "automountServiceAccountToken must be false")
    psc = spec.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
    need(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where,
         "pod seccompProfile must be RuntimeDefault")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    names = [c["name"] for c in spec["containers"]]
    need(len(names) == len(set(names)), where, "container names must be unique")
    tunnels = 0
    for c in spec["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        need(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
        need(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
        need(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, cw, "must run as non-root")
        need(sc.get("privileged") in (None, False), cw, "must not be privileged")
        need(sc.get("capabilities", {}).get("drop") == ["ALL"], cw, "capabilities.drop must be [ALL]")
        need(not sc.get("capabilities", {}).get("add"), cw, "must add no capabilities")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
        need(seccomp.get("type") == "RuntimeDefault", cw, "seccompProfile must be RuntimeDefault")
        need(":" in c["image"].rsplit("/", 1)[-1] and not c["image"].endswith(":latest"), cw,
             "image needs a pinned tag")
        need("limits" in c.get("resources", {}) and "requests" in c.get("resources", {}), cw,
             "resources.requests and resources.limits must be set")
        for m in c.get("volumeMounts", []):
            need(m["name"] in volumes, cw, f"volumeMount {m['name']} has no volume")
        env = {e["name"]: e for e in c.get("env", [])}
        for e in env.values():
            need(not (e["name"].endswith("API_KEY") and "value" in e
                      and not str(e["value"]).startswith(("file:", "env:"))),
                 cw, f"{e['name']} must be a file: reference, never a literal key")
        if c.get("args", [None])[0] not in ("run", "relay"):
            continue
        tunnels += 1
        if c.get("args", [None])[0] == "relay":
            check_relay(cw, c, env, volumes)
            continue
        need(env.get("CONTROL_PLANE_API_KEY", {}).get("value") == f"file:{KEY_PATH}", cw,
             f"CONTROL_PLANE_API_KEY must be file:{KEY_PATH}")
        mount = [m for m in c.get("volumeMounts", [])
                 if KEY_PATH.startswith(m["mountPath"].rstrip("/") + "/")]
        need(len(mount) == 1, cw, f"{KEY_PATH} must come from one volumeMount")
        if mount:
            need(mount[0].get("readOnly") is True, cw, "the key mount must be readOnly")
            vol = volumes.get(mount[0]["name"], {})
            need("secret" in vol, cw, "the key must come from a Secret volume")
        need(env.get("HEALTH_LISTEN_ADDR", {}).get("value") == "0.0.0.0:8080", cw,
             "HEALTH_LISTEN_ADDR must be 0.0.0.0:8080 (probes come from the kubelet)")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                            ("startupProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            need(get.get("path") == path, cw, f"{probe} must GET {path}")
            need(port_number(c, get.get("port")) == 8080, cw, f"{probe} must use port 8080")
    any_ours = any(c.get("args", [None])[0] in ("run", "relay") for c in spec["containers"])
    need(tunnels == 1 or not any_ours, where, "exactly one mcp-tunnel container expected")
    return tunnels


def check_relay(cw, c, env, volumes):
    ready = c.get("readinessProbe", {}).get("httpGet", {})
    need(ready.get("path") == "/healthz", cw, "readinessProbe must GET /healthz")
    need(port_number(c, ready.get("port")) is not None, cw, "readinessProbe port must be declared")
    live = c.get("livenessProbe", {})
    need(live and live.get("httpGet", {}).get("path") != "/healthz", cw,
         "livenessProbe must exist and not use /healthz (503 while Redis is down)")
    path = env.get("RELAY_TUNNELS_FILE", {}).get("value", "/etc/mcp-tunnel/tunnels.toml")
    mount = [m for m in c.get("volumeMounts", [])
             if path.startswith(m["mountPath"].rstrip("/") + "/")]
    need(len(mount) == 1, cw, f"{path} must come from one volumeMount")
    if mount:
        need(mount[0].get("readOnly") is True, cw, "the tunnels mount must be readOnly")
        need("subPath" not in mount[0], cw, "no subPath: its updates would never arrive")
        vol = volumes.get(mount[0]["name"], {})
        need("secret" in vol or "configMap" in vol, cw,
             "the tunnels file must come from a Secret or ConfigMap volume")
    store = env.get("RELAY_STORE")
    if store:
        need("value" not in store and "secretKeyRef" in store.get("valueFrom", {}), cw,
             "RELAY_STORE (it may hold a password) must come from a Secret")


def main(paths):
    pods = ours = 0
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            where = f"{path} {d.get('kind')}/{d.get('metadata', {}).get('name')}"
            need(d.get("metadata", {}).get("labels"), where, "metadata.labels missing")
            if d.get("kind") == "Deployment":
                t = d["spec"]["template"]
                ours += check_pod(where, t["spec"], t["metadata"].get("labels", {}),
                                  d["spec"]["selector"]["matchLabels"])
                pods += 1
            if d.get("kind") == "Secret":
                failures.append(f"{where}: ship no Secret objects; create them with kubectl")
    need(ours >= 3, "manifests",
         "expected the sidecar, the dedicated Deployment and the relay cluster")
    for f in failures:
        print(f"FAIL {f}")
    if failures:
        sys.exit(1)
    print(f"kubernetes: {pods} pod templates in {len(paths)} files pass the security checks")


if __name__ == "__main__":
    main(sys.argv[1:])
