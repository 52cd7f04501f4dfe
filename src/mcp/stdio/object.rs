//! JSON-RPC messages to and from a stdio child, rewritten member by member: every other member
//! keeps its order and its exact text, so only the request id and the progress token change.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON object whose members keep their order and their exact text; only the members we
/// rewrite (`id`, a progress token) change.
#[derive(Debug, Default, Clone)]
pub(super) struct Object(Vec<(String, Box<RawValue>)>);

impl Object {
    pub(super) fn parse(text: &str) -> Option<Object> {
        serde_json::from_str(text).ok()
    }

    pub(super) fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    pub(super) fn set(&mut self, key: &str, value: &Value) {
        let raw = RawValue::from_string(value.to_string()).expect("a Value is valid JSON");
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.0.push((key.to_string(), raw)),
        }
    }

    pub(super) fn set_raw(&mut self, key: &str, raw: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.0.push((key.to_string(), raw)),
        }
    }

    pub(super) fn to_raw(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).expect("members are valid JSON")
    }

    /// `params._meta.progressToken`, with a setter for its rewritten form.
    pub(super) fn progress_token(&self) -> Option<Value> {
        let params: Value = serde_json::from_str(self.get("params")?.get()).ok()?;
        params.get("_meta")?.get("progressToken").cloned()
    }

    pub(super) fn set_progress_token(&mut self, token: &Value) {
        let Some(mut params) = self.get("params").and_then(|p| Object::parse(p.get())) else {
            return;
        };
        let Some(mut meta) = params.get("_meta").and_then(|m| Object::parse(m.get())) else {
            return;
        };
        meta.set("progressToken", token);
        params.set_raw("_meta", meta.to_raw());
        self.set_raw("params", params.to_raw());
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((k, v));
                }
                Ok(Object(members))
            }
        }
        d.deserialize_map(Members)
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Gives a caller's request the internal id and, when it has one, an internal progress token.
/// Returns the caller's token and the internal one.
pub(super) fn rewrite_for_child(object: &mut Object, internal: u64) -> Option<(Value, String)> {
    object.set("id", &Value::from(internal));
    object.progress_token().map(|token| {
        let rewritten = format!("mcpt-progress-{internal}");
        object.set_progress_token(&Value::from(rewritten.clone()));
        (token, rewritten)
    })
}

/// Replaces the internal id of a child's answer with the caller's.
pub(in crate::mcp) fn restore_id(raw: &RawValue, original: &Value) -> Box<RawValue> {
    match Object::parse(raw.get()) {
        Some(mut object) => {
            object.set("id", original);
            object.to_raw()
        }
        None => raw.to_owned(),
    }
}
