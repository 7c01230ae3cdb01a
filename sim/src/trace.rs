//! The event trace: JSON lines, one event each, with simulated time, node and kind. Written to a
//! file with `--trace`, kept in memory (and hashed) for determinism checks, and not produced at
//! all otherwise, so an untraced run pays nothing for it.

use serde_json::{json, Map, Value};
use std::time::Duration;

/// FNV-1a 64: a stable hash of trace bytes, the same on every build and platform.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Trace events, serialized as they happen.
#[derive(Default)]
pub struct Trace {
    bytes: Vec<u8>,
}

impl Trace {
    /// Appends one event. `fields` must be a JSON object; its keys follow `time`, `node`, `kind`.
    pub fn record(&mut self, time: Duration, node: Option<u64>, kind: &str, fields: Value) {
        let mut line = Map::new();
        line.insert("time".into(), json!(time.as_nanos() as u64));
        line.insert(
            "node".into(),
            node.map_or(Value::Null, |n| json!(format!("n{n}"))),
        );
        line.insert("kind".into(), json!(kind));
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        serde_json::to_writer(&mut self.bytes, &Value::Object(line)).expect("JSON to memory");
        self.bytes.push(b'\n');
    }

    /// The trace so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The last `count` lines about `node` (or about any node, if none is given), together
    /// with the faults injected among them: the slice of the trace a violation report shows.
    pub fn tail(&self, count: usize, node: Option<u64>) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let tag = node.map(|n| format!("\"node\":\"n{n}\""));
        let relevant = |line: &&str| {
            let about_node = tag.as_ref().is_none_or(|tag| line.contains(tag.as_str()));
            about_node || line.contains("\"kind\":\"nemesis\"")
        };
        let lines: Vec<&str> = text.lines().filter(relevant).collect();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }
}
