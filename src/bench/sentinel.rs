//! Talking to Sentinel for the bench: find the master, trigger a failover, record the published events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::conn::{Auth, Conn, ConnError};
use crate::backend::control::info_field;
use crate::resp::{parse_value, Value};

/// One message a sentinel published, with its time since measurement began.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SentinelEvent {
    /// Seconds since measurement began (negative: during the warm-up).
    pub t: f64,
    /// The sentinel that published it.
    #[serde(default)]
    pub sentinel: String,
    /// The channel, e.g. `+switch-master`.
    pub channel: String,
    /// The payload.
    pub payload: String,
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME`, as `HOST:PORT`.
///
/// # Errors
/// The sentinel cannot be reached or does not know `master_name`.
pub async fn master_addr(
    sentinel: &str,
    master_name: &str,
    timeout: Duration,
) -> Result<String, ConnError> {
    let mut conn = Conn::connect(sentinel, &Auth::default(), timeout).await?;
    let reply = conn
        .call_ok(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name])
        .await?;
    match reply.as_array() {
        Some([host, port]) => match (host.as_str(), port.as_str()) {
            (Some(h), Some(p)) => Ok(format!("{h}:{p}")),
            _ => Err(ConnError::Reply(format!(
                "ERR odd master address for {master_name}"
            ))),
        },
        _ => Err(ConnError::Reply(format!(
            "ERR sentinel {sentinel} does not know master {master_name}"
        ))),
    }
}

/// `SENTINEL FAILOVER <master_name>`.
///
/// # Errors
/// The sentinel refuses (e.g. `NOGOODSLAVE`) or cannot be reached.
pub async fn planned_failover(
    sentinel: &str,
    master_name: &str,
    timeout: Duration,
) -> Result<(), ConnError> {
    let mut conn = Conn::connect(sentinel, &Auth::default(), timeout).await?;
    conn.call_ok(&["SENTINEL", "FAILOVER", master_name])
        .await
        .map(drop)
}

/// The `process_id` a Redis server reports in `INFO server`.
///
/// # Errors
/// The server cannot be reached or its INFO has no process_id.
pub async fn server_pid(addr: &str, auth: &Auth, timeout: Duration) -> Result<u32, ConnError> {
    let mut conn = Conn::connect(addr, auth, timeout).await?;
    let info = conn.call_ok(&["INFO", "server"]).await?;
    info.as_str()
        .and_then(|s| info_field(s, "process_id"))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ConnError::Reply(format!("ERR no process_id in INFO of {addr}")))
}

/// Events recorded by [`subscribe`].
pub type EventLog = Arc<Mutex<Vec<SentinelEvent>>>;

/// Subscribes to every channel of `sentinel` (`PSUBSCRIBE *`) and appends each message to `out` until
/// `stop`; times are counted from `start`. Reconnects (every 200 ms at most) if the link drops.
pub fn subscribe(sentinel: String, start: Instant, stop: CancellationToken, out: EventLog) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = listen(&sentinel, start, &out) => {
                    if let Err(e) = r {
                        tracing::debug!(sentinel = %sentinel, error = %e, "sentinel events link lost");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
}

async fn listen(sentinel: &str, start: Instant, log: &EventLog) -> Result<(), ConnError> {
    let mut conn = Conn::connect(sentinel, &Auth::default(), Duration::from_secs(2)).await?;
    conn.send(&crate::resp::encode_command(&["PSUBSCRIBE", "*"]))
        .await?;
    loop {
        conn.fill().await?;
        while let Some(raw) = conn.buffered_reply()? {
            if let Some(ev) = event_of(&parse_value(raw)?, sentinel, start) {
                if let Ok(mut g) = log.lock() {
                    g.push(ev);
                }
            }
        }
    }
}

/// A `pmessage` push as an event; other pushes (the subscribe confirmation) are `None`.
fn event_of(v: &Value, sentinel: &str, start: Instant) -> Option<SentinelEvent> {
    match v.as_array()? {
        [kind, _pattern, channel, payload] if kind.as_bytes() == Some(b"pmessage") => {
            let now = Instant::now();
            let t = match now.checked_duration_since(start) {
                Some(d) => d.as_secs_f64(),
                None => -start.duration_since(now).as_secs_f64(),
            };
            Some(SentinelEvent {
                t,
                sentinel: sentinel.to_string(),
                channel: channel.as_str()?.to_string(),
                payload: payload.as_str()?.to_string(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn pmessages_become_events() {
        let bulk = |s: &str| Value::Bulk(Bytes::from(s.to_string()));
        let msg = Value::Array(vec![
            bulk("pmessage"),
            bulk("*"),
            bulk("+switch-master"),
            bulk("mymaster 127.0.0.1 6391 127.0.0.1 6392"),
        ]);
        let ev = event_of(&msg, "127.0.0.1:26391", Instant::now()).unwrap();
        assert_eq!(ev.sentinel, "127.0.0.1:26391");
        assert_eq!(ev.channel, "+switch-master");
        assert!(ev.t >= 0.0 && ev.t < 1.0);
        let confirm = Value::Array(vec![bulk("psubscribe"), bulk("*"), Value::Int(1)]);
        assert_eq!(event_of(&confirm, "s", Instant::now()), None);
    }
}
