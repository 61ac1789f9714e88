//! `steadfast ctl session …`: create, read, change and end one session.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use steadfast::client::{CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::{Client, SessionId};

use crate::output::out;
use crate::NotFound;

#[derive(Subcommand, Debug)]
pub enum SessionCmd {
    /// Create a session; prints its id and version.
    Create {
        /// Attributes as name=value.
        attrs: Vec<String>,
        /// Use this id instead of a random one.
        #[arg(long)]
        id: Option<SessionId>,
        /// Idle timeout in milliseconds (cluster default if absent).
        #[arg(long)]
        idle_timeout_ms: Option<u64>,
        /// Absolute lifetime in milliseconds.
        #[arg(long)]
        lifetime_ms: Option<u64>,
        /// The user this session belongs to.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Move a session to a fresh id; the old id dies (session-fixation defence).
    Rotate {
        /// The session id.
        id: SessionId,
    },
    /// Log a principal in on a session: rotate it and tag it with the principal.
    Login {
        /// The session id.
        id: SessionId,
        /// The user name.
        principal: String,
    },
    /// Print a session as JSON.
    Get {
        /// The session id.
        id: SessionId,
    },
    /// Set (name=value) and remove (--remove name) attributes.
    Put {
        /// The session id.
        id: SessionId,
        /// Attributes as name=value.
        attrs: Vec<String>,
        /// Attributes to remove.
        #[arg(long)]
        remove: Vec<String>,
        /// Only if the session is at this version (compare-and-set).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Extend a session's idle deadline.
    Touch {
        /// The session id.
        id: SessionId,
    },
    /// Delete a session.
    Delete {
        /// The session id.
        id: SessionId,
        /// Only if the session is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
}

fn parse_attrs(items: &[String]) -> anyhow::Result<Attributes> {
    items
        .iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .with_context(|| format!("attribute {a:?} is not name=value"))?;
            Ok((k.to_string(), v.as_bytes().to_vec()))
        })
        .collect()
}

pub async fn run(client: &Client, cmd: SessionCmd) -> anyhow::Result<()> {
    match cmd {
        SessionCmd::Create {
            attrs,
            id,
            idle_timeout_ms,
            lifetime_ms,
            principal,
        } => {
            let options = CreateOptions {
                principal,
                idle_timeout: idle_timeout_ms.map(Duration::from_millis),
                lifetime: lifetime_ms.map(Duration::from_millis),
            };
            let attrs = parse_attrs(&attrs)?;
            let (id, w) = match id {
                Some(id) => (id, client.create_with_id(id, attrs, options).await?),
                None => client.create(attrs, options).await?,
            };
            out!("{id} version={}", w.version);
        }
        SessionCmd::Get { id } => get(client, id).await?,
        SessionCmd::Put {
            id,
            attrs,
            remove,
            if_version,
        } => {
            let update = Update {
                set: parse_attrs(&attrs)?,
                remove: remove.into_iter().collect(),
                expected_version: if_version,
                idle_timeout: None,
            };
            let w = client.update(id, update).await?;
            out!("{id} version={}", w.version);
        }
        SessionCmd::Rotate { id } => {
            let (new, w) = client.rotate(id).await?;
            out!("{id} -> {new} version={}", w.version);
        }
        SessionCmd::Login { id, principal } => {
            let (new, w) = client.login(id, &principal).await?;
            out!("{id} -> {new} principal={principal} version={}", w.version);
        }
        SessionCmd::Touch { id } => {
            let w = client.touch(id).await?;
            out!("{id} version={}", w.version);
        }
        SessionCmd::Delete { id, if_version } => {
            let w = client.delete(id, if_version).await?;
            out!("{id} deleted at version={}", w.version);
        }
    }
    Ok(())
}

async fn get(client: &Client, id: SessionId) -> anyhow::Result<()> {
    let Some(s) = client.get(id).await? else {
        return Err(NotFound(format!("session {id} not found")).into());
    };
    let attrs: serde_json::Map<String, serde_json::Value> = s
        .attributes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    let json = serde_json::json!({
        "id": id.to_string(), "version": s.version, "attributes": attrs,
        "created_ms": s.created_ms, "accessed_ms": s.accessed_ms,
        "idle_timeout_ms": s.idle_timeout_ms, "deadline_ms": s.deadline_ms,
        "expires_at_ms": s.expires_at_ms, "server_time_ms": s.server_time_ms,
    });
    out!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
