// The relay's status page: refreshes the tables by polling /status.json (same origin, the
// session cookie goes along). No framework; the page works without this script.
"use strict";

(function () {
  const EVERY_MS = 2000;

  function text(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(1);
    return String(v);
  }

  function fill(id, rows, width, empty) {
    const body = document.getElementById(id);
    if (!body) return;
    const out = [];
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        if (c === "connected") td.className = "ok";
        if (c === "no client") td.className = "bad";
        tr.appendChild(td);
      }
      out.push(tr);
    }
    if (out.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = width;
      td.textContent = empty;
      tr.appendChild(td);
      out.push(tr);
    }
    body.replaceChildren(...out);
  }

  function channels(list) {
    return (list || []).map((c) => (c.proc_affinity ? c.name + " (stdio)" : c.name)).join(", ");
  }

  function calls(list) {
    return list.map((c) => [
      text(c.ts), text(c.tunnel), text(c.channel), text(c.rpc_method) || text(c.http_method),
      text(c.name), text(c.instance_prefix), text(c.status), text(c.outcome), text(c.latency_ms),
    ]);
  }

  function render(s) {
    fill("tunnels", s.tunnels.map((t) => [
      text(t.name), text(t.state), text(t.live_instances),
      text(t.queue.depth) + " / " + text(t.queue.capacity), text(t.in_flight),
      text(t.connector_auth),
    ]), 6, "no tunnels in the tunnels file");
    const instances = [];
    for (const t of s.tunnels) {
      for (const i of t.instances) {
        instances.push([
          text(t.name), text(i.id_prefix), text(i.state), text(i.first_poll),
          text(i.last_poll) + " (" + text(i.last_poll_age_s) + " s ago)", text(i.version),
          channels(i.channels),
        ]);
      }
    }
    fill("instances", instances, 7, "no client instance has polled");
    fill("calls", calls(s.recent_calls), 9, "no calls yet");
    fill("errors", calls(s.errors), 9, "no errors yet");
    document.getElementById("generated").textContent = text(s.relay.generated);
    document.getElementById("draining").textContent = s.relay.draining ? "draining" : "serving";
  }

  function poll() {
    fetch("/status.json", { credentials: "same-origin", cache: "no-store" })
      .then((r) => {
        if (r.status === 401) {
          window.location.reload(); // the session ended: the login form
          return null;
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then((s) => {
        if (!s) return;
        render(s);
        document.getElementById("live").textContent = "(live: refreshed every 2 s)";
      })
      .catch(() => {
        document.getElementById("live").textContent = "(cannot reach the relay; retrying)";
      })
      .finally(() => window.setTimeout(poll, EVERY_MS));
  }

  document.addEventListener("DOMContentLoaded", () => window.setTimeout(poll, EVERY_MS));
})();
