//! How `ctl` prints answers: a table for people (the default) or JSON for scripts
//! (`-w json`, as `etcdctl -w json`). Every printer here has both forms; `watch` prints one
//! line per event in either (JSON lines for scripts).

use steadfast::state::{Event, EventKind, SessionView};
use steadfast::wire::GroupStatus;
use steadfast::SessionId;

/// `-w table|json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns and readable lines.
    #[default]
    Table,
    /// JSON (one document; one object per line for `watch`).
    Json,
}

/// Replicated time (ms since the Unix epoch) as UTC, e.g. `2025-01-31T12:00:00.250Z`.
pub fn utc(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

fn ids(list: &[SessionId]) -> Vec<String> {
    list.iter().map(|id| id.to_string()).collect()
}

/// One event as one line: `index  time  kind  ids`.
pub fn event_line(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::Created(id) => format!("created  {id}"),
        EventKind::Updated(id) => format!("updated  {id}"),
        EventKind::Expired(id) => format!("expired  {id}"),
        EventKind::Deleted(id) => format!("deleted  {id}"),
        EventKind::Rotated { from, to } => format!("rotated  {from} -> {to}"),
        EventKind::TouchedInBatch(list) => format!("touched  {}", ids(list).join(" ")),
        EventKind::KeyDeleted { id, name } => {
            format!("deleted  {id} (key {:?})", String::from_utf8_lossy(name))
        }
        EventKind::KeyExpired { id, name } => {
            format!("expired  {id} (key {:?})", String::from_utf8_lossy(name))
        }
    };
    format!("{:<8} {}  {what}", e.index, utc(e.at_ms))
}

/// A Redis key's id and name (invalid UTF-8 replaced).
fn key_json(id: &SessionId, name: &[u8]) -> serde_json::Value {
    serde_json::json!({ "id": id.to_string(), "key": String::from_utf8_lossy(name) })
}

/// One event as a JSON object (`kind` in lower case, ids as hex strings).
pub fn event_json(e: &Event) -> serde_json::Value {
    let mut v = serde_json::json!({ "index": e.index, "at_ms": e.at_ms });
    let (kind, extra) = match &e.kind {
        EventKind::Created(id) => ("created", serde_json::json!({ "id": id.to_string() })),
        EventKind::Updated(id) => ("updated", serde_json::json!({ "id": id.to_string() })),
        EventKind::Expired(id) => ("expired", serde_json::json!({ "id": id.to_string() })),
        EventKind::Deleted(id) => ("deleted", serde_json::json!({ "id": id.to_string() })),
        EventKind::Rotated { from, to } => (
            "rotated",
            serde_json::json!({ "from": from.to_string(), "to": to.to_string() }),
        ),
        EventKind::TouchedInBatch(list) => ("touched", serde_json::json!({ "ids": ids(list) })),
        EventKind::KeyDeleted { id, name } => ("deleted", key_json(id, name)),
        EventKind::KeyExpired { id, name } => ("expired", key_json(id, name)),
    };
    v["kind"] = kind.into();
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

/// A session as JSON (values as text, invalid UTF-8 replaced).
pub fn session_json(s: &SessionView) -> serde_json::Value {
    let attrs: serde_json::Map<String, serde_json::Value> = s
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
        .collect();
    serde_json::json!({
        "id": s.id.to_string(), "version": s.version, "attributes": attrs,
        "principal": s.principal,
        "created_ms": s.created_ms, "accessed_ms": s.accessed_ms,
        "idle_timeout_ms": s.idle_timeout_ms, "deadline_ms": s.deadline_ms,
        "expires_at_ms": s.expires_at_ms, "server_time_ms": s.server_time_ms,
    })
}

/// A session as `field  value` lines, attributes last (one per line, escaped).
pub fn session_table(s: &SessionView) -> Vec<String> {
    let left = s.expires_at_ms.saturating_sub(s.server_time_ms);
    let mut lines = vec![
        format!("{:<12} {}", "id", s.id),
        format!("{:<12} {}", "version", s.version),
        format!(
            "{:<12} {}",
            "principal",
            s.principal.as_deref().unwrap_or("-")
        ),
        format!("{:<12} {}", "created", utc(s.created_ms)),
        format!("{:<12} {}", "accessed", utc(s.accessed_ms)),
        format!("{:<12} {} ms", "idle timeout", s.idle_timeout_ms),
        format!(
            "{:<12} {}",
            "deadline",
            s.deadline_ms.map_or("-".to_string(), utc)
        ),
        format!(
            "{:<12} {} (in {:.1} s)",
            "expires",
            utc(s.expires_at_ms),
            left as f64 / 1000.0
        ),
    ];
    if s.attributes.is_empty() {
        lines.push(format!("{:<12} -", "attributes"));
    }
    for (k, v) in &s.attributes {
        let value = String::from_utf8_lossy(v);
        lines.push(format!(
            "{:<12} {}={}",
            "attribute",
            k.escape_debug(),
            value.escape_debug()
        ));
    }
    lines
}

/// `ctl status` columns.
pub fn status_header() -> String {
    format!(
        "{:<6} {:<5} {:<10} {:<7} {:<6} {:<9} {:<9} {:<9} members",
        "group", "node", "role", "leader", "term", "last_log", "applied", "sessions"
    )
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

fn joined(list: &[u64]) -> String {
    let parts: Vec<String> = list.iter().map(|n| n.to_string()).collect();
    parts.join(",")
}

/// One group on one node, under [`status_header`].
pub fn status_row(g: &GroupStatus) -> String {
    let mut members = joined(&g.members);
    if !g.learners.is_empty() {
        members = format!("{members} (learners {})", joined(&g.learners));
    }
    format!(
        "{:<6} {:<5} {:<10} {:<7} {:<6} {:<9} {:<9} {:<9} {members}",
        g.group.0,
        g.node,
        g.role,
        opt(g.leader),
        g.term,
        opt(g.last_log_index),
        opt(g.applied_index),
        g.sessions,
    )
}

/// One group on one node as JSON.
pub fn status_json(g: &GroupStatus) -> serde_json::Value {
    serde_json::json!({
        "group": g.group.0, "node": g.node, "role": g.role, "leader": g.leader,
        "term": g.term, "last_log_index": g.last_log_index, "applied_index": g.applied_index,
        "members": g.members, "learners": g.learners, "sessions": g.sessions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_words_not_debug_output() {
        let id = SessionId::from_bytes([0xab; 16]);
        let e = Event {
            index: 42,
            at_ms: 1_700_000_000_250,
            kind: EventKind::Created(id),
        };
        let line = event_line(&e);
        assert_eq!(
            line,
            format!("42       2023-11-14T22:13:20.250Z  created  {id}")
        );
        assert!(!line.contains("Created("), "{line}");
        let json = event_json(&e);
        assert_eq!(json["kind"], "created");
        assert_eq!(json["id"], id.to_string());
    }
}
