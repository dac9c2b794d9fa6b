//! A switchover the proxy drives, for maintenance: hold writes, wait until the replicas have
//! everything the master acknowledged, ask Sentinel to fail over, release the held writes to the
//! new master. Unlike a failover Sentinel starts by itself, no acknowledged write can be lost:
//! nothing is written while the replicas catch up.
//!
//! Asked for with `POST /switchover` on the stats port, or `haproxy-rs switchover`; the request
//! and its report are the stats listener's ([`crate::stats::switchover`]).

use std::time::Duration;

use tokio::time::Instant;

use super::TopologyState;
use crate::backend::control::info_field;
use crate::backend::{ControlConn, Credentials};
use crate::resp::Value;

/// Longest the replicas get to catch up with the master before the switchover is abandoned.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits (bounded by [`CATCH_UP_TIMEOUT`]) until every replica in `replicas` has replicated at
/// least the master's current offset. Writes must already be held. Returns how long it took.
///
/// # Errors
/// The master cannot be asked, or a replica stays behind.
pub async fn wait_caught_up(
    state: &TopologyState,
    master: &str,
    replicas: &[String],
) -> Result<Duration, String> {
    let started = Instant::now();
    let creds = &state.health.creds;
    let timeout = state.health.timeout;
    loop {
        // Re-read every round: writes in flight before the fence may still be landing.
        let target = offset(master, creds, timeout, "master_repl_offset").await?;
        let mut behind = Vec::new();
        for r in replicas {
            match offset(r, creds, timeout, "slave_repl_offset").await {
                Ok(o) if o >= target => {}
                Ok(o) => behind.push(format!("{r} at {o} of {target}")),
                Err(e) => behind.push(format!("{r}: {e}")),
            }
        }
        if behind.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= CATCH_UP_TIMEOUT {
            return Err(format!(
                "replicas did not catch up with the master within {CATCH_UP_TIMEOUT:?}: {}",
                behind.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks the sentinels in turn for `SENTINEL FAILOVER <name>` until one accepts.
///
/// # Errors
/// Every sentinel refused or was unreachable (the replies, joined).
pub async fn ask_sentinel_failover(
    sentinels: &[String],
    master_name: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<String, String> {
    let mut refusals = Vec::new();
    for s in sentinels {
        let reply = match ControlConn::connect(s, creds, timeout).await {
            Ok(mut c) => c
                .call(&["SENTINEL", "FAILOVER", master_name])
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match reply {
            Ok(Value::Error(e)) => refusals.push(format!("{s}: {}", String::from_utf8_lossy(&e))),
            Ok(_) => return Ok(s.clone()),
            Err(e) => refusals.push(format!("{s}: {e}")),
        }
    }
    Err(format!(
        "no sentinel started the failover: {}",
        refusals.join("; ")
    ))
}

async fn offset(
    addr: &str,
    creds: &Credentials,
    timeout: Duration,
    field: &str,
) -> Result<u64, String> {
    let mut c = ControlConn::connect(addr, creds, timeout)
        .await
        .map_err(|e| e.to_string())?;
    match c.call(&["INFO", "replication"]).await {
        Ok(Value::Bulk(b)) => info_field(&String::from_utf8_lossy(&b), field)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {field} in INFO replication")),
        Ok(other) => Err(format!("INFO replication: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
