//! What the status page shows: the snapshot (`/status.json`, and the data of `/status`) and its
//! HTML. The HTML is rendered here in full, so the page works without JS; `status.js` only
//! polls `/status.json` and refills the same tables with the same cells.

use std::time::Instant;

use serde_json::{Value, json};

use super::{InstanceSeen, RECENT_CALLS, RECENT_ERRORS};
use crate::http_server::Response;

pub const CSS: &str = include_str!("assets/status.css");
pub const JS: &str = include_str!("assets/status.js");

/// A compiled-in asset; it never changes while the process runs.
pub fn asset(content_type: &str, body: &str) -> Response {
    Response::new(200, body.as_bytes().to_vec()).with_header("Content-Type", content_type)
}

pub fn html(status: u16, body: &str) -> Response {
    Response::new(status, body.as_bytes().to_vec())
        .with_header("Content-Type", "text/html; charset=utf-8")
}

/// "connected" or "no client" (the words the page shows, and tests look for).
fn state_word(connected: bool) -> &'static str {
    if connected { "connected" } else { "no client" }
}

fn instance_json(seen: &InstanceSeen, live: Option<&(String, bool, usize)>, now: Instant) -> Value {
    let prefix: String = seen.id.chars().take(super::INSTANCE_PREFIX).collect();
    let connected = live.is_some_and(|l| l.1);
    json!({
        "id_prefix": prefix,
        "state": state_word(connected),
        "connected": connected,
        "waiting_polls": live.map_or(0, |l| l.2),
        "first_poll": seen.first_poll,
        "last_poll": seen.last_poll,
        "last_poll_age_s": now.duration_since(seen.last_poll_at).as_secs(),
        "version": seen.info.as_ref().map(|i| i.version),
        "channels": seen.info.as_ref().map(|i| i.channels.iter().map(|c| json!({
            "name": c.name,
            "proc_affinity": c.proc_affinity,
        })).collect::<Vec<_>>()),
    })
}

/// The data of the page and of `/status.json`.
pub fn snapshot(relay: &super::super::Relay) -> Value {
    let board = &relay.status;
    let records = {
        let registry = relay.registry.read().unwrap_or_else(|e| e.into_inner());
        registry.tunnels.clone()
    };
    let now = Instant::now();
    let tunnels: Vec<Value> = records
        .iter()
        .map(|r| {
            let hub = relay.hub(&r.id);
            let live = hub.instance_states();
            let mut seen = board.instances_of(&r.name);
            seen.reverse(); // newest poll first
            let instances: Vec<Value> = seen
                .iter()
                .map(|s| instance_json(s, live.iter().find(|l| l.0 == s.id), now))
                .collect();
            let connected = hub.connected();
            json!({
                "name": r.name,
                "description": r.description,
                "connector_auth": r.connector_auth.as_str(),
                "state": state_word(connected),
                "connected": connected,
                "live_instances": live.iter().filter(|l| l.1).count(),
                "queue": {"depth": hub.queued_len(), "capacity": relay.cfg.queue_capacity},
                "in_flight": hub.in_flight(),
                "instances": instances,
            })
        })
        .collect();
    let (calls, errors) = board.rings();
    json!({
        "relay": {
            "version": env!("CARGO_PKG_VERSION"),
            "started": board.started_at,
            "uptime_s": board.started.elapsed().as_secs(),
            "draining": relay.draining(),
            "store": if relay.store.is_some() { "redis" } else { "memory" },
            "generated": super::super::hub::now_rfc3339(),
        },
        "tunnels": tunnels,
        "recent_calls": calls,
        "errors": errors,
        "limits": {"recent_calls": RECENT_CALLS, "errors": RECENT_ERRORS},
    })
}

/// HTML-escapes text for an element or a quoted attribute.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as a cell's text: strings bare, null empty, the rest as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn channels_text(v: &Value) -> String {
    v.as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let name = text(&c["name"]);
                    if c["proc_affinity"] == true {
                        format!("{name} (stdio)")
                    } else {
                        name
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// One row; `state` cells get the state's class.
fn row(cells: &[String]) -> String {
    let mut out = String::from("<tr>");
    for c in cells {
        let class = match c.as_str() {
            "connected" => " class=\"ok\"",
            "no client" => " class=\"bad\"",
            _ => "",
        };
        out.push_str(&format!("<td{class}>{}</td>", esc(c)));
    }
    out.push_str("</tr>");
    out
}

/// The rows of each table, from the snapshot (`status.js` builds the same cells).
fn tunnel_rows(s: &Value) -> String {
    let empty = Vec::new();
    let tunnels = s["tunnels"].as_array().unwrap_or(&empty);
    if tunnels.is_empty() {
        return "<tr><td colspan=\"6\">no tunnels in the tunnels file</td></tr>".into();
    }
    tunnels
        .iter()
        .map(|t| {
            row(&[
                text(&t["name"]),
                text(&t["state"]),
                text(&t["live_instances"]),
                format!(
                    "{} / {}",
                    text(&t["queue"]["depth"]),
                    text(&t["queue"]["capacity"])
                ),
                text(&t["in_flight"]),
                text(&t["connector_auth"]),
            ])
        })
        .collect()
}

fn instance_rows(s: &Value) -> String {
    let empty = Vec::new();
    let mut out = String::new();
    for t in s["tunnels"].as_array().unwrap_or(&empty) {
        for i in t["instances"].as_array().unwrap_or(&empty) {
            out.push_str(&row(&[
                text(&t["name"]),
                text(&i["id_prefix"]),
                text(&i["state"]),
                text(&i["first_poll"]),
                format!(
                    "{} ({} s ago)",
                    text(&i["last_poll"]),
                    text(&i["last_poll_age_s"])
                ),
                text(&i["version"]),
                channels_text(&i["channels"]),
            ]));
        }
    }
    if out.is_empty() {
        out = "<tr><td colspan=\"7\">no client instance has polled</td></tr>".into();
    }
    out
}

/// The JSON-RPC method, else the HTTP method (a GET stream, a DELETE).
fn method_text(call: &Value) -> String {
    match text(&call["rpc_method"]) {
        m if m.is_empty() => text(&call["http_method"]),
        m => m,
    }
}

fn call_rows(calls: &Value, what: &str) -> String {
    let empty = Vec::new();
    let calls = calls.as_array().unwrap_or(&empty);
    if calls.is_empty() {
        return format!("<tr><td colspan=\"9\">no {what} yet</td></tr>");
    }
    calls
        .iter()
        .map(|c| {
            row(&[
                text(&c["ts"]),
                text(&c["tunnel"]),
                text(&c["channel"]),
                method_text(c),
                text(&c["name"]),
                text(&c["instance_prefix"]),
                text(&c["status"]),
                text(&c["outcome"]),
                text(&c["latency_ms"]),
            ])
        })
        .collect()
}

const CALL_HEAD: &str = "<tr><th>time</th><th>tunnel</th><th>channel</th><th>method</th>\
                         <th>name</th><th>instance</th><th>status</th><th>outcome</th><th>ms</th></tr>";

/// The whole page; `logout` when the viewer came with the session cookie.
pub fn page(s: &Value, logout: bool) -> String {
    let relay = &s["relay"];
    let logout = if logout {
        "<form method=\"post\" action=\"/status/logout\"><button type=\"submit\">Log out</button></form>"
    } else {
        ""
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>mcp-tunnel relay status</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>\
<link rel=\"stylesheet\" href=\"/status/assets/status.css\">\
<script src=\"/status/assets/status.js\" defer></script></head>\
<body><header><h1>mcp-tunnel relay</h1>{logout}</header>\
<p id=\"relay\">version {version} · store {store} · up since {started} · \
<span id=\"draining\">{draining}</span> · data of <span id=\"generated\">{generated}</span> \
<span id=\"live\">(reload the page to refresh)</span></p>\
<h2>Tunnels</h2><table><thead><tr><th>tunnel</th><th>state</th><th>instances</th>\
<th>queue</th><th>in flight</th><th>connector auth</th></tr></thead>\
<tbody id=\"tunnels\">{tunnels}</tbody></table>\
<h2>Client instances</h2><table><thead><tr><th>tunnel</th><th>instance</th><th>state</th>\
<th>first poll</th><th>last poll</th><th>version</th><th>channels</th></tr></thead>\
<tbody id=\"instances\">{instances}</tbody></table>\
<h2>Recent calls <small>(last {ncalls})</small></h2><table><thead>{CALL_HEAD}</thead>\
<tbody id=\"calls\">{calls}</tbody></table>\
<h2>Last errors <small>(last {nerrors})</small></h2><table><thead>{CALL_HEAD}</thead>\
<tbody id=\"errors\">{errors}</tbody></table>\
<footer>Also as JSON: <a href=\"/status.json\">/status.json</a></footer></body></html>\n",
        version = esc(&text(&relay["version"])),
        store = esc(&text(&relay["store"])),
        started = esc(&text(&relay["started"])),
        draining = if relay["draining"] == true {
            "draining"
        } else {
            "serving"
        },
        generated = esc(&text(&relay["generated"])),
        tunnels = tunnel_rows(s),
        instances = instance_rows(s),
        ncalls = RECENT_CALLS,
        calls = call_rows(&s["recent_calls"], "calls"),
        nerrors = RECENT_ERRORS,
        errors = call_rows(&s["errors"], "errors"),
    )
}

/// The login form, with a message after a refused key.
pub fn login_page(message: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"bad\" id=\"message\">{}</p>", esc(m)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>mcp-tunnel relay status: log in</title>\
<link rel=\"stylesheet\" href=\"/status/assets/status.css\"></head>\
<body><h1>mcp-tunnel relay</h1>{message}\
<form method=\"post\" action=\"/status/login\" id=\"login\">\
<label for=\"key\">Admin key</label> \
<input type=\"password\" id=\"key\" name=\"key\" autocomplete=\"current-password\" required> \
<button type=\"submit\">Log in</button></form>\
<p>Or send <code>Authorization: Bearer &lt;key&gt;</code>.</p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let s = json!({"tunnels": [{"name": "<script>", "state": "connected", "queue": {}}]});
        let page = page(&s, false);
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("<td class=\"ok\">connected</td>"));
    }
}
