//! One link per sentinel: a command connection (`SENTINEL MASTER`, `SENTINEL REPLICAS`) and a
//! `PSUBSCRIBE *` connection; it reports the sentinel's view and its events to the manager
//! (`sentinel`), and reconnects with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backend::{ControlConn, Credentials};
use crate::resp::Value;
use crate::stats::SentinelStats;

/// What one sentinel says about our master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelView {
    /// `ip:port` of the master.
    pub master: String,
    /// The master's config epoch (`SENTINEL MASTER`), which grows with every failover.
    pub config_epoch: u64,
    /// Replicas not flagged down or disconnected.
    pub replicas: Vec<String>,
    /// Every replica the sentinel lists, down ones included: the topology's members.
    pub known: Vec<String>,
}

/// Messages from the links to the manager.
#[derive(Debug)]
pub(crate) enum LinkMsg {
    /// The sentinel's view, queried because of `cause`.
    View {
        sentinel: String,
        view: SentinelView,
        cause: String,
    },
    /// The link failed; its view no longer counts.
    Down { sentinel: String },
    /// The sentinel answers but monitors no master of our name: it has no view. The link stays
    /// up and asks again every reconcile interval (and on any event naming our master, such as
    /// the `+monitor` of an operator who fixes it).
    Unknown { sentinel: String },
    /// An event about our master, sent before the link re-queries the sentinel.
    Event {
        sentinel: String,
        channel: String,
        payload: String,
    },
}

impl LinkMsg {
    /// The sentinel it comes from.
    pub(crate) fn sentinel(&self) -> &str {
        match self {
            LinkMsg::View { sentinel, .. }
            | LinkMsg::Down { sentinel }
            | LinkMsg::Unknown { sentinel }
            | LinkMsg::Event { sentinel, .. } => sentinel,
        }
    }
}

/// One sentinel's connections.
pub(crate) struct Link {
    pub(crate) addr: String,
    pub(crate) master_name: String,
    pub(crate) creds: Credentials,
    pub(crate) reconcile: Duration,
    pub(crate) timeout: Duration,
    pub(crate) stats: Arc<SentinelStats>,
    pub(crate) tx: mpsc::UnboundedSender<LinkMsg>,
}

impl Link {
    /// Serves the link until `token` is cancelled, reconnecting with backoff.
    pub(crate) async fn run(self, token: tokio_util::sync::CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let mut answered = false;
            let result = tokio::select! {
                _ = token.cancelled() => return,
                r = self.serve(&mut answered) => r,
            };
            self.stats.set_connected(false);
            let _ = self.tx.send(LinkMsg::Down {
                sentinel: self.addr.clone(),
            });
            tracing::warn!(sentinel.addr = %self.addr, error = %result, "sentinel link down");
            // A link that answered was a working one: come back quickly. Without this a link
            // that drops packets a second at a time (flapping) had its backoff grow to a second,
            // long enough for writes to be fenced on every cut.
            if answered || started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            // Capped at a second: after a partition heals, the sentinels count again within one.
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Serves until a connection fails; returns why. `answered` is set once the sentinel has
    /// answered its first query.
    async fn serve(&self, answered: &mut bool) -> String {
        let mut cmd = match ControlConn::connect(&self.addr, &self.creds, self.timeout).await {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        let mut events = match ControlConn::connect(&self.addr, &self.creds, self.timeout).await {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        if let Err(e) = events.send(&["PSUBSCRIBE", "*"]).await {
            return e.to_string();
        }
        self.stats.set_connected(true);
        tracing::info!(sentinel.addr = %self.addr, "sentinel link up");
        if let Err(e) = self.report(&mut cmd, "connected").await {
            return e;
        }
        *answered = true;
        let mut tick = tokio::time::interval(self.reconcile);
        tick.reset();
        loop {
            tokio::select! {
                msg = events.read_value() => {
                    let msg = match msg { Ok(m) => m, Err(e) => return e.to_string() };
                    if let Some((channel, payload)) = pubsub_message(&msg) {
                        if concerns_master(&channel, &payload, &self.master_name) {
                            self.stats.event(&channel);
                            tracing::info!(sentinel.addr = %self.addr, %channel, %payload, "sentinel event");
                            let _ = self.tx.send(LinkMsg::Event {
                                sentinel: self.addr.clone(),
                                channel: channel.clone(),
                                payload: payload.clone(),
                            });
                            if let Err(e) = self.report(&mut cmd, &channel).await {
                                return e;
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.report(&mut cmd, "reconcile").await {
                        return e;
                    }
                }
            }
        }
    }

    /// Queries the sentinel and sends its view to the manager.
    async fn report(&self, cmd: &mut ControlConn, cause: &str) -> Result<(), String> {
        let master = cmd
            .call(&["SENTINEL", "MASTER", &self.master_name])
            .await
            .map_err(|e| e.to_string())?;
        if knows_no_such_master(&master) {
            tracing::debug!(sentinel.addr = %self.addr, master_name = %self.master_name, reply = ?master, "the sentinel monitors no master of this name");
            return self.send(LinkMsg::Unknown {
                sentinel: self.addr.clone(),
            });
        }
        if let Value::Error(e) = &master {
            return Err(format!(
                "SENTINEL MASTER {}: {}",
                self.master_name,
                String::from_utf8_lossy(e)
            ));
        }
        let fields = pairs(&master);
        let (Some(ip), Some(port)) = (fields.get("ip"), fields.get("port")) else {
            return Err("SENTINEL MASTER reply without ip/port".into());
        };
        let config_epoch = fields
            .get("config-epoch")
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        let replicas = cmd
            .call(&["SENTINEL", "REPLICAS", &self.master_name])
            .await
            .map_err(|e| e.to_string())?;
        let listed: Vec<_> = replicas
            .as_array()
            .unwrap_or_default()
            .iter()
            .map(pairs)
            .collect();
        let addr =
            |r: &HashMap<String, String>| Some(format!("{}:{}", r.get("ip")?, r.get("port")?));
        let mut replicas: Vec<String> = listed
            .iter()
            .filter(|r| {
                let flags = r.get("flags").map(String::as_str).unwrap_or("");
                !flags
                    .split(',')
                    .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
            })
            .filter_map(addr)
            .collect();
        replicas.sort();
        let known = listed.iter().filter_map(addr).collect();
        let view = SentinelView {
            master: format!("{ip}:{port}"),
            config_epoch,
            replicas,
            known,
        };
        self.send(LinkMsg::View {
            sentinel: self.addr.clone(),
            view,
            cause: cause.to_string(),
        })
    }

    fn send(&self, msg: LinkMsg) -> Result<(), String> {
        self.tx.send(msg).map_err(|_| "manager gone".to_string())
    }
}

/// Whether a sentinel's answer about our master says that it monitors none of that name:
/// `-ERR No such master with that name` (`SENTINEL MASTER`, `SENTINEL REPLICAS`), `-IDONTKNOW`,
/// or a null reply (`SENTINEL GET-MASTER-ADDR-BY-NAME`). The connection itself is fine.
fn knows_no_such_master(reply: &Value) -> bool {
    match reply {
        Value::Nil => true,
        Value::Error(e) => {
            let e = String::from_utf8_lossy(e).to_ascii_lowercase();
            e.starts_with("idontknow") || e.contains("no such master")
        }
        _ => false,
    }
}

/// A flat `[k, v, k, v, ...]` reply as a map.
fn pairs(v: &Value) -> HashMap<String, String> {
    let items = v.as_array().unwrap_or_default();
    items
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((k.as_str()?.to_string(), v.as_str()?.to_string())),
            _ => None,
        })
        .collect()
}

/// `pmessage pattern channel payload` (or `message channel payload`) as (channel, payload).
fn pubsub_message(v: &Value) -> Option<(String, String)> {
    let items = v.as_array()?;
    let kind = items.first()?.as_str()?;
    let (channel, payload) = match kind {
        "pmessage" => (items.get(2)?, items.get(3)?),
        "message" => (items.get(1)?, items.get(2)?),
        _ => return None,
    };
    Some((channel.as_str()?.to_string(), payload.as_str()?.to_string()))
}

/// Whether a Sentinel event is about our master: `+switch-master <name> ...`,
/// `master <name> ip port`, or `... @ <name> ip port`.
pub fn concerns_master(channel: &str, payload: &str, name: &str) -> bool {
    let words: Vec<&str> = payload.split_whitespace().collect();
    if channel == "+switch-master" {
        return words.first() == Some(&name);
    }
    if words.first() == Some(&"master") && words.get(1) == Some(&name) {
        return true;
    }
    words
        .windows(2)
        .any(|w| matches!(w, ["@", n] if *n == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_about_our_master_are_recognised() {
        assert!(concerns_master(
            "+switch-master",
            "mymaster 127.0.0.1 6380 127.0.0.1 6379",
            "mymaster"
        ));
        assert!(!concerns_master(
            "+switch-master",
            "other 127.0.0.1 6380 127.0.0.1 6379",
            "mymaster"
        ));
        assert!(concerns_master(
            "+odown",
            "master mymaster 127.0.0.1 6379 #quorum 3/2",
            "mymaster"
        ));
        assert!(concerns_master(
            "+promoted-slave",
            "slave 127.0.0.1:6379 127.0.0.1 6379 @ mymaster 127.0.0.1 6380",
            "mymaster"
        ));
        assert!(!concerns_master("+new-epoch", "8", "mymaster"));
    }

    #[test]
    fn a_sentinel_without_our_master_is_told_from_a_failing_one() {
        let error = |e: &str| Value::Error(bytes::Bytes::copy_from_slice(e.as_bytes()));
        assert!(knows_no_such_master(&error(
            "ERR No such master with that name"
        )));
        assert!(knows_no_such_master(&error("IDONTKNOW I don't know")));
        assert!(knows_no_such_master(&Value::Nil));
        assert!(!knows_no_such_master(&error(
            "NOAUTH Authentication required."
        )));
        assert!(!knows_no_such_master(&Value::Array(vec![])));
    }
}
