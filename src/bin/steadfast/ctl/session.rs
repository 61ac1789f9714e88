//! `steadfast ctl session …`: create, read, change and end one session.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use steadfast::client::{CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::{Client, SessionId};

use super::format::{self, Format};
use crate::output::out;
use crate::NotFound;

/// Attribute values read from files or stdin (`--value-file NAME=PATH`, `-` for stdin): a value
/// too large for a command line (the kernel caps one argument at 128 KiB).
#[derive(clap::Args, Debug, Default)]
pub struct ValueFiles {
    /// Set attribute NAME to the contents of PATH (`NAME=-` reads stdin); repeatable.
    #[arg(long = "value-file", value_name = "NAME=PATH")]
    files: Vec<String>,
}

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
        #[command(flatten)]
        values: ValueFiles,
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
    /// Print a session (a table, or JSON with `-w json`).
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
        #[command(flatten)]
        values: ValueFiles,
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

/// `name=value` items plus `--value-file`s, each name once, none empty, within the session size
/// limit (checked here for a clear line; the cluster checks again).
fn attributes(items: &[String], files: &ValueFiles) -> anyhow::Result<Attributes> {
    let mut out = Attributes::new();
    let mut add = |name: &str, value: Vec<u8>, from: &str| -> anyhow::Result<()> {
        anyhow::ensure!(!name.is_empty(), "attribute name is empty in {from:?}");
        let fresh = out.insert(name.to_string(), value).is_none();
        anyhow::ensure!(fresh, "attribute {name:?} is given twice");
        Ok(())
    };
    for a in items {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("attribute {a:?} is not name=value"))?;
        add(k, v.as_bytes().to_vec(), a)?;
    }
    let mut stdin_used = false;
    for item in &files.files {
        let (name, path) = item
            .split_once('=')
            .with_context(|| format!("--value-file {item:?} is not NAME=PATH"))?;
        if path == "-" {
            anyhow::ensure!(!stdin_used, "only one --value-file can read stdin (-)");
            stdin_used = true;
        }
        add(name, read_value(path)?, item)?;
    }
    let bytes = steadfast::session::Session::encoded_bytes(&out);
    anyhow::ensure!(
        bytes <= steadfast::limits::SESSION_BYTES_MAX,
        "these attributes take {bytes} bytes, over the session limit of {} bytes",
        steadfast::limits::SESSION_BYTES_MAX
    );
    Ok(out)
}

/// The contents of `path` (`-`: stdin), refused beyond the session size limit without reading
/// more than one byte past it.
fn read_value(path: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let limit = steadfast::limits::SESSION_BYTES_MAX as u64;
    let source: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("reading {path}"))?)
    };
    let mut value = Vec::new();
    source
        .take(limit + 1)
        .read_to_end(&mut value)
        .with_context(|| format!("reading {path}"))?;
    let shown = if path == "-" { "stdin" } else { path };
    anyhow::ensure!(
        value.len() as u64 <= limit,
        "the value in {shown} is over the session limit of {limit} bytes"
    );
    Ok(value)
}

pub async fn run(client: &Client, cmd: SessionCmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        SessionCmd::Create {
            attrs,
            id,
            idle_timeout_ms,
            lifetime_ms,
            principal,
            values,
        } => {
            let options = CreateOptions {
                principal,
                idle_timeout: idle_timeout_ms.map(Duration::from_millis),
                lifetime: lifetime_ms.map(Duration::from_millis),
            };
            let attrs = attributes(&attrs, &values)?;
            let (id, w) = match id {
                Some(id) => (id, client.create_with_id(id, attrs, options).await?),
                None => client.create(attrs, options).await?,
            };
            out!("{id} version={}", w.version);
        }
        SessionCmd::Get { id } => get(client, id, format).await?,
        SessionCmd::Put {
            id,
            attrs,
            remove,
            if_version,
            values,
        } => {
            if let Some(empty) = remove.iter().find(|r| r.is_empty()) {
                anyhow::bail!("--remove {empty:?}: attribute name is empty");
            }
            let update = Update {
                set: attributes(&attrs, &values)?,
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

async fn get(client: &Client, id: SessionId, format: Format) -> anyhow::Result<()> {
    let Some(s) = client.get(id).await? else {
        return Err(NotFound(format!("session {id} not found")).into());
    };
    match format {
        Format::Json => out!(
            "{}",
            serde_json::to_string_pretty(&format::session_json(&s))?
        ),
        Format::Table => {
            for line in format::session_table(&s) {
                out!("{line}");
            }
        }
    }
    Ok(())
}
