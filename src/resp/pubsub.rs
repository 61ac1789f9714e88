//! Keyspace notifications: `SUBSCRIBE`/`PSUBSCRIBE` on `__keyevent@0__:del`,
//! `__keyevent@0__:expired` and `__keyspace@0__:<key>`, fed from the groups' committed events.
//!
//! - [`Hub`]: one per listener. While any connection of the node is subscribed, it follows every
//!   group's event log (the native watch: long-polls to each group's leader, resumed by log
//!   index across leader changes, so no event is skipped or repeated) from the position the
//!   first subscriber joined at, and broadcasts the Redis key deletions and expiries.
//! - [`Subscriptions`]: one connection's channels and patterns, the confirmation frames of
//!   (un)subscribing, and which messages a notification makes for it.
//!
//! Invariant: a subscriber is answered only once the hub follows every group from a position at
//! or before the answer, so every deletion or expiry committed after a `SUBSCRIBE` reply reaches
//! that subscriber (while it stays connected and keeps up). Nothing is published across nodes
//! but committed log entries: no `PUBLISH`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use crate::client::Client;
use crate::command::redis::Reply;
use crate::error::Error;
use crate::id::{GroupId, SessionId};
use crate::limits;
use crate::state::EventKind;

use super::keyspace::glob_match;

/// Notifications lost because a group's follower fell behind the retained events (its
/// position was compacted away) and restarted from the present.
pub const METRIC_KEYSPACE_FOLLOW_RESTARTS: &str = "steadfast_resp_keyspace_follow_restarts_total";

/// The flags of `notify-keyspace-events` in effect (Redis's notation): generic (`g`: `del`) and
/// expired (`x`) events, on keyspace (`K`) and keyevent (`E`) channels.
pub const NOTIFY_KEYSPACE_EVENTS: &str = "gxKE";

/// How long a `SUBSCRIBE` waits for the hub to find every group's position.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause before a follower retries after an error other than a timeout.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A Redis key deletion or expiry, as keyspace notifications carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The key's name.
    pub key: Vec<u8>,
    /// The event's name: `del` or `expired`.
    pub event: &'static str,
}

impl Notification {
    /// The notification an event makes, if any (deletions and expiries of Redis keys).
    pub fn of(kind: &EventKind) -> Option<Notification> {
        let (key, event) = match kind {
            EventKind::KeyDeleted { name, .. } => (name, "del"),
            EventKind::KeyExpired { name, .. } => (name, "expired"),
            _ => return None,
        };
        Some(Notification {
            key: key.clone(),
            event,
        })
    }

    /// The channels it is published on: `(channel, payload)`, keyspace first (as Redis does).
    fn channels(&self) -> [(Vec<u8>, Vec<u8>); 2] {
        let mut keyspace = b"__keyspace@0__:".to_vec();
        keyspace.extend_from_slice(&self.key);
        let keyevent = format!("__keyevent@0__:{}", self.event).into_bytes();
        [
            (keyspace, self.event.as_bytes().to_vec()),
            (keyevent, self.key.clone()),
        ]
    }
}

/// Channel subscriptions (`SUBSCRIBE`) or pattern subscriptions (`PSUBSCRIBE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Exact channel names.
    Channel,
    /// Glob patterns.
    Pattern,
}

/// One connection's subscriptions.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Subscribed channel names.
    channels: BTreeSet<Bytes>,
    /// Subscribed patterns.
    patterns: BTreeSet<Bytes>,
}

fn frame(parts: Vec<Reply>) -> Reply {
    Reply::Push(parts)
}

impl Subscriptions {
    /// Channels plus patterns subscribed (what the confirmations count).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    fn set(&mut self, kind: Kind) -> &mut BTreeSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }

    /// Subscribes to `names`: one confirmation frame per name. Refused as a whole (nothing
    /// changes) if a name is too long or the connection would hold too many subscriptions.
    pub fn subscribe(&mut self, kind: Kind, names: &[Bytes]) -> Result<Vec<Reply>, Reply> {
        if names
            .iter()
            .any(|n| n.len() > limits::RESP_CHANNEL_BYTES_MAX)
        {
            return Err(Reply::err(format!(
                "channel names and patterns are limited to {} bytes",
                limits::RESP_CHANNEL_BYTES_MAX
            )));
        }
        if self.count() + names.len() > limits::RESP_SUBSCRIPTIONS_MAX {
            return Err(Reply::err(format!(
                "a connection may hold at most {} subscriptions",
                limits::RESP_SUBSCRIPTIONS_MAX
            )));
        }
        let verb = match kind {
            Kind::Channel => "subscribe",
            Kind::Pattern => "psubscribe",
        };
        let mut frames = Vec::with_capacity(names.len());
        for name in names {
            self.set(kind).insert(name.clone());
            frames.push(frame(vec![
                Reply::text(verb),
                Reply::Bulk(name.to_vec()),
                Reply::Int(self.count() as i64),
            ]));
        }
        Ok(frames)
    }

    /// Unsubscribes from `names` (every subscription of the kind when empty): one frame per
    /// name, or one with a null name when there was nothing to leave.
    pub fn unsubscribe(&mut self, kind: Kind, names: &[Bytes]) -> Vec<Reply> {
        let verb = match kind {
            Kind::Channel => "unsubscribe",
            Kind::Pattern => "punsubscribe",
        };
        let names: Vec<Bytes> = if names.is_empty() {
            self.set(kind).iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            return vec![frame(vec![
                Reply::text(verb),
                Reply::Nil,
                Reply::Int(self.count() as i64),
            ])];
        }
        names
            .into_iter()
            .map(|name| {
                self.set(kind).remove(&name);
                frame(vec![
                    Reply::text(verb),
                    Reply::Bulk(name.to_vec()),
                    Reply::Int(self.count() as i64),
                ])
            })
            .collect()
    }

    /// Appends the messages `n` makes for this connection: per channel it is published on, a
    /// `message` if subscribed to it, then a `pmessage` per matching pattern.
    pub fn messages(&self, n: &Notification, out: &mut Vec<Reply>) {
        for (channel, payload) in n.channels() {
            if self.channels.contains(channel.as_slice()) {
                out.push(frame(vec![
                    Reply::text("message"),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(payload.clone()),
                ]));
            }
            for pattern in &self.patterns {
                if glob_match(pattern, &channel) {
                    out.push(frame(vec![
                        Reply::text("pmessage"),
                        Reply::Bulk(pattern.to_vec()),
                        Reply::Bulk(channel.clone()),
                        Reply::Bulk(payload.clone()),
                    ]));
                }
            }
        }
    }
}

/// Follows every group's events while some connection of this listener is subscribed.
pub struct Hub {
    /// Reads the groups' event logs (through their leaders).
    client: Client,
    /// Notifications to every subscribed connection.
    sender: broadcast::Sender<Arc<Notification>>,
    /// Per group: whether a follower task runs. Changed only under this lock together with the
    /// receiver count check, so a joining subscriber never misses a follower that is stopping.
    running: Mutex<Vec<bool>>,
    /// Per group: whether its follower knows its position (subscribers wait for all).
    ready: watch::Sender<Vec<bool>>,
}

impl Hub {
    /// A hub over `client`'s groups (nothing runs until the first subscriber joins).
    pub fn new(client: Client) -> Arc<Hub> {
        let groups = client.topology().groups as usize;
        let (sender, _) = broadcast::channel(limits::RESP_NOTIFICATIONS_BUFFERED);
        Arc::new(Hub {
            client,
            sender,
            running: Mutex::new(vec![false; groups]),
            ready: watch::Sender::new(vec![false; groups]),
        })
    }

    /// Joins as a subscriber: the notifications of every deletion or expiry committed from now
    /// on. Starts the groups' followers if needed and waits until each knows its position.
    pub async fn join(self: &Arc<Self>) -> Result<broadcast::Receiver<Arc<Notification>>, Reply> {
        let receiver = {
            let mut running = self.running.lock().expect("hub lock");
            let receiver = self.sender.subscribe();
            for (group, on) in running.iter_mut().enumerate() {
                if !*on {
                    *on = true;
                    self.ready.send_modify(|r| r[group] = false);
                    tokio::spawn(self.clone().follow(GroupId(group as u32)));
                }
            }
            receiver
        };
        let mut ready = self.ready.subscribe();
        let all_ready = ready.wait_for(|r| r.iter().all(|b| *b));
        let waited = tokio::time::timeout(JOIN_TIMEOUT, all_ready)
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(receiver),
            _ => Err(Reply::err(
                "steadfast: could not find every group's event position (is a majority up?)",
            )),
        }
    }

    /// Stops `group`'s follower if nobody is subscribed; whether it stopped.
    fn stop_if_idle(&self, group: GroupId) -> bool {
        let mut running = self.running.lock().expect("hub lock");
        if self.sender.receiver_count() > 0 {
            return false;
        }
        running[group.0 as usize] = false;
        self.ready.send_modify(|r| r[group.0 as usize] = false);
        true
    }

    /// The first event index after everything `group` has applied now (a linearizable read).
    async fn position(&self, group: GroupId) -> Result<u64, Error> {
        let probe = SessionId::generate_in(group, self.client.topology().groups);
        let read = self.client.read(probe).await?;
        Ok(crate::command::version_at(read.read_index + 1, 0))
    }

    async fn follow(self: Arc<Self>, group: GroupId) {
        'restart: loop {
            let mut next = loop {
                if self.stop_if_idle(group) {
                    return;
                }
                match self.position(group).await {
                    Ok(p) => break p,
                    Err(e) => {
                        tracing::debug!(group = group.0, error = %e, "keyspace events: no position yet");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            };
            self.ready.send_modify(|r| r[group.0 as usize] = true);
            loop {
                if self.stop_if_idle(group) {
                    return;
                }
                match self.client.watch_once(group, next).await {
                    Ok((events, resume)) => {
                        next = resume;
                        for n in events.iter().filter_map(|e| Notification::of(&e.kind)) {
                            // No receiver: everyone left meanwhile; the next check stops.
                            let _ = self.sender.send(Arc::new(n));
                        }
                    }
                    Err(Error::Timeout | Error::Unavailable(_)) => {}
                    Err(Error::Compacted { first_available }) => {
                        tracing::warn!(
                            group = group.0,
                            first_available,
                            "keyspace events: fell behind the retained events; some \
                             notifications are lost, following from the present"
                        );
                        metrics::counter!(METRIC_KEYSPACE_FOLLOW_RESTARTS).increment(1);
                        continue 'restart;
                    }
                    Err(e) => {
                        tracing::debug!(group = group.0, error = %e, "keyspace events: retrying");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(frames: &[Reply]) -> Vec<Vec<String>> {
        frames
            .iter()
            .map(|f| match f {
                Reply::Push(parts) => parts
                    .iter()
                    .map(|p| match p {
                        Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                        Reply::Int(i) => i.to_string(),
                        Reply::Nil => "nil".into(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
                other => panic!("not a push frame: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn subscriptions_count_confirm_and_match_channels_and_patterns() {
        let mut subs = Subscriptions::default();
        let confirmed = subs
            .subscribe(Kind::Channel, &[Bytes::from("__keyevent@0__:del")])
            .expect("allowed");
        assert_eq!(
            strings(&confirmed),
            [["subscribe", "__keyevent@0__:del", "1"]]
        );
        subs.subscribe(Kind::Pattern, &[Bytes::from("__key*@*__:*")])
            .expect("allowed");
        let del = Notification {
            key: b"s:1".to_vec(),
            event: "del",
        };
        let mut out = Vec::new();
        subs.messages(&del, &mut out);
        assert_eq!(
            strings(&out),
            vec![
                vec!["pmessage", "__key*@*__:*", "__keyspace@0__:s:1", "del"],
                vec!["message", "__keyevent@0__:del", "s:1"],
                vec!["pmessage", "__key*@*__:*", "__keyevent@0__:del", "s:1"],
            ]
        );
        let expired = Notification {
            key: b"s:1".to_vec(),
            event: "expired",
        };
        let left = subs.unsubscribe(Kind::Pattern, &[]);
        assert_eq!(strings(&left), [["punsubscribe", "__key*@*__:*", "1"]]);
        out.clear();
        subs.messages(&expired, &mut out);
        assert!(out.is_empty(), "{out:?}");
        subs.unsubscribe(Kind::Channel, &[]);
        assert_eq!(
            strings(&subs.unsubscribe(Kind::Channel, &[])),
            [["unsubscribe", "nil", "0"]]
        );
    }

    #[test]
    fn too_many_or_too_long_subscriptions_are_refused_whole() {
        let mut subs = Subscriptions::default();
        let long = Bytes::from(vec![b'c'; limits::RESP_CHANNEL_BYTES_MAX + 1]);
        assert!(subs
            .subscribe(Kind::Channel, &[Bytes::from("a"), long])
            .is_err());
        assert_eq!(subs.count(), 0);
        let many: Vec<Bytes> = (0..=limits::RESP_SUBSCRIPTIONS_MAX)
            .map(|i| Bytes::from(i.to_string()))
            .collect();
        assert!(subs.subscribe(Kind::Pattern, &many).is_err());
        assert_eq!(subs.count(), 0);
    }
}
