//! Sentinel mode: the manager that turns the links' views and events (`sentinel_link`) into
//! routing tables.
//!
//! Each link reports a [`SentinelView`] on connect, on every event about our master, and every
//! reconcile interval, and forwards the events themselves. The manager fences writes at the
//! first sign of a failover, follows the master a majority of the configured sentinels name once
//! it answers `ROLE` as master, and runs switchovers (see `docs/failover.md`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::failover::{failover_aborted, failover_sign};
pub use super::sentinel_link::SentinelView;
use super::sentinel_link::{Link, LinkMsg};
use super::sentinel_loss::LossFence;
use super::switchover::{ask_sentinel_failover, wait_caught_up};
use super::{probe_role, Followed, FollowedReceiver, TopologyState};
use crate::backend::Credentials;
use crate::config::{FailoverConfig, SentinelConfig};
use crate::router::Fence;
use crate::stats::switchover::{SwitchoverReport, SwitchoverRequest, SwitchoverResult};
use crate::stats::{HoldSnapshot, Role, Stats};

/// A failover seen in progress: writes are fenced off `old_master` since `since`.
#[derive(Debug)]
struct Failover {
    old_master: String,
    since: Instant,
    first_sign: String,
    events: Vec<String>,
    /// For a switchover the proxy drives: who asked, and how long the replicas took to catch up.
    switchover: Option<(oneshot::Sender<SwitchoverResult>, Duration)>,
    /// The held-request counters when it began (the record shows what this failover added).
    holds_before: HoldSnapshot,
}

impl Failover {
    /// Ends it without a new master; a switchover's requester learns why.
    fn give_up(self, why: &str) {
        if let Some((reply, _)) = self.switchover {
            let _ = reply.send(Err(why.to_string()));
        }
    }
}

/// Starts one link per sentinel and runs the manager until shutdown. `failover.hold_ms` lifts a
/// fence whose failover never came (the sentinels still name the old master and it still
/// answers as master). `tls` is the connector to the sentinels (`[sentinel] tls`), built at start.
///
/// `followed` gets what reloads name: links to the sentinels no longer listed end (their views
/// stop counting), links to new ones start, the others go on undisturbed; another master name
/// restarts every link under it, and the old group's servers leave the routing table at once
/// (writes are held until the sentinels name the new group's master and it answers as one).
#[allow(clippy::too_many_arguments)]
pub async fn run_sentinel(
    mut cfg: SentinelConfig,
    tls: Option<Arc<crate::tls::ClientTls>>,
    state: Arc<TopologyState>,
    mut changes: mpsc::UnboundedReceiver<String>,
    failover_cfg: FailoverConfig,
    mut switchovers: mpsc::UnboundedReceiver<SwitchoverRequest>,
    mut followed: FollowedReceiver,
) {
    let fence_timeout = Duration::from_millis(failover_cfg.hold_ms);
    let mut loss = LossFence::new(
        failover_cfg.on_sentinel_loss,
        Duration::from_millis(failover_cfg.sentinel_loss_fence_ms),
    );
    state
        .stats
        .set_sentinel_loss_policy(failover_cfg.on_sentinel_loss.as_str());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let creds = Credentials {
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        tls,
    };
    let mut links = Links {
        tokens: HashMap::new(),
        master_name: cfg.master_name.clone(),
        creds: creds.clone(),
        reconcile: loss.heartbeat(Duration::from_millis(cfg.reconcile_interval_ms)),
        tx,
    };
    links.follow(&cfg.addrs, &state);
    let mut total = cfg.addrs.len();
    let mut views: HashMap<String, SentinelView> = HashMap::new();
    let mut unknown = UnknownMaster::new(&cfg.master_name, &cfg.addrs);
    let mut failover: Option<Failover> = None;
    // After a release: the counters when the fence began, and when the release happened.
    let mut settling: Option<(HoldSnapshot, Instant)> = None;
    let mut retry = tokio::time::interval(Duration::from_millis(100));
    loop {
        let cause = tokio::select! {
            _ = state.token.cancelled() => return,
            Ok(()) = followed.changed() => {
                let Followed::Sentinel { addrs: new, master_name } =
                    followed.borrow_and_update().clone()
                else {
                    continue; // another mode's: that waits for a restart
                };
                if master_name != cfg.master_name {
                    tracing::info!(old = %cfg.master_name, new = %master_name, "reload: following another master group");
                    rx = links.rename(&master_name, &new, &state);
                    views.clear();
                    if let Some(f) = failover.take() {
                        f.give_up("a reload named another master group");
                    }
                    settling = None;
                    state.stats.set_master_name(&master_name);
                    state.stats.set_topology_problem(None);
                    state.publish(None, &[]);
                    cfg.master_name = master_name;
                }
                if new != cfg.addrs {
                    tracing::info!(sentinels = ?new, "reload: the sentinels to follow changed");
                }
                links.follow(&new, &state);
                views.retain(|s, _| new.contains(s));
                cfg.addrs = new;
                total = cfg.addrs.len();
                unknown = UnknownMaster::new(&cfg.master_name, &cfg.addrs);
                "sentinels reloaded".to_string()
            }
            m = rx.recv() => match m {
                // A link of a sentinel no longer listed, before it saw its end.
                Some(msg) if !links.has(msg.sentinel()) => continue,
                Some(LinkMsg::View { sentinel, view, cause }) => {
                    loss.heard(&sentinel);
                    views.insert(sentinel.clone(), view);
                    unknown.heard(&sentinel, false, &views, &state.stats);
                    format!("sentinel {sentinel}: {cause}")
                }
                Some(LinkMsg::Down { sentinel }) => {
                    // Its view no longer routes; for the fence it counts until the window ends.
                    views.remove(&sentinel);
                    unknown.heard(&sentinel, false, &views, &state.stats);
                    continue;
                }
                Some(LinkMsg::Unknown { sentinel }) => {
                    views.remove(&sentinel);
                    unknown.heard(&sentinel, true, &views, &state.stats);
                    continue;
                }
                Some(LinkMsg::Event { sentinel, channel, payload }) => {
                    loss.heard(&sentinel);
                    on_event(&state, &mut failover, &sentinel, &channel, &payload);
                    advance(&state, &mut failover, fence_timeout, &views, total).await;
                    continue;
                }
                None => return,
            },
            Some(req) = switchovers.recv() => {
                start_switchover(&state, &cfg, &creds, &mut failover, req).await;
                continue;
            }
            // Health transitions and a periodic retry re-evaluate an unconfirmed master.
            _ = changes.recv() => "health change".to_string(),
            _ = retry.tick() => "retry".to_string(),
        };
        loss.check(&state, &mut views, total);
        advance(&state, &mut failover, fence_timeout, &views, total).await;
        settle_holds(&state, &mut settling);
        reconcile(
            &state,
            &views,
            total,
            &mut failover,
            &mut loss,
            &mut settling,
            &cause,
        )
        .await;
    }
}

/// The running links, by sentinel, each with the token that ends it, and what a new one needs.
struct Links {
    tokens: HashMap<String, tokio_util::sync::CancellationToken>,
    master_name: String,
    creds: Credentials,
    reconcile: Duration,
    tx: mpsc::UnboundedSender<LinkMsg>,
}

impl Links {
    /// Links to exactly `addrs`: the others end (their stats rows go), missing ones start.
    fn follow(&mut self, addrs: &[String], state: &TopologyState) {
        self.tokens.retain(|addr, token| {
            let keep = addrs.contains(addr);
            if !keep {
                token.cancel();
                state.stats.forget_sentinel(addr);
            }
            keep
        });
        for addr in addrs {
            if self.tokens.contains_key(addr) {
                continue;
            }
            let token = state.token.child_token();
            let link = Link {
                addr: addr.clone(),
                master_name: self.master_name.clone(),
                creds: self.creds.clone(),
                reconcile: self.reconcile,
                timeout: state.health.timeout,
                stats: state.stats.sentinel(addr),
                tx: self.tx.clone(),
            };
            state.tracker.spawn(link.run(token.clone()));
            self.tokens.insert(addr.clone(), token);
        }
    }

    /// Ends every link, to follow the group named `master_name` from now on (the next
    /// [`Links::follow`] starts the links again; the stats rows of the sentinels not in `keep`
    /// go); returns where the new links report, so that nothing the old ones sent counts.
    fn rename(
        &mut self,
        master_name: &str,
        keep: &[String],
        state: &TopologyState,
    ) -> mpsc::UnboundedReceiver<LinkMsg> {
        for (addr, token) in self.tokens.drain() {
            token.cancel();
            if !keep.contains(&addr) {
                state.stats.forget_sentinel(&addr);
            }
        }
        master_name.clone_into(&mut self.master_name);
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx = tx;
        rx
    }

    fn has(&self, sentinel: &str) -> bool {
        self.tokens.contains_key(sentinel)
    }
}

/// The sentinels that answer but monitor no master of our name, the sign of a wrong
/// `master_name`. While they are all the sentinels that answer, the stats page's topology status
/// says so (the proxy keeps the last known topology: none, at start); the error is logged once
/// when that begins, as soon as every sentinel has been heard from (so that it names them all),
/// and the end once. The links keep asking at their reconcile interval, not in a loop.
#[derive(Debug)]
struct UnknownMaster {
    name: String,
    sentinels: usize,
    heard: HashSet<String>,
    asked: BTreeSet<String>,
    logged: bool,
}

impl UnknownMaster {
    fn new(name: &str, addrs: &[String]) -> Self {
        UnknownMaster {
            name: name.to_owned(),
            sentinels: addrs.iter().collect::<HashSet<_>>().len(),
            heard: HashSet::new(),
            asked: BTreeSet::new(),
            logged: false,
        }
    }

    /// Records that `sentinel` answered with a view, went down, or (`no_such_master`) answered
    /// that it monitors no master of our name; `views` are the views known after it.
    fn heard(
        &mut self,
        sentinel: &str,
        no_such_master: bool,
        views: &HashMap<String, SentinelView>,
        stats: &Stats,
    ) {
        self.heard.insert(sentinel.to_owned());
        if no_such_master {
            self.asked.insert(sentinel.to_owned());
        } else {
            self.asked.remove(sentinel);
        }
        if !views.is_empty() || self.asked.is_empty() {
            stats.set_topology_problem(None);
            if std::mem::take(&mut self.logged) && !views.is_empty() {
                tracing::info!(master_name = %self.name, "a sentinel knows the master now");
            }
            return;
        }
        let asked = self.asked.iter().map(String::as_str).collect::<Vec<_>>();
        let asked = asked.join(", ");
        let name = &self.name;
        stats.set_topology_problem(Some(format!(
            "NO SENTINEL KNOWS A MASTER NAMED '{name}' (asked {asked}): check --master-name / \
             [sentinel] master_name"
        )));
        if !self.logged && self.heard.len() >= self.sentinels {
            self.logged = true;
            tracing::error!(
                "no sentinel knows a master named '{name}' (asked {asked}); check --master-name / \
                 [sentinel] master_name"
            );
        }
    }
}

/// Fences writes at the first sign that the current master is being replaced, and records the
/// events of a failover in progress (and lifts the fence when it is given up).
fn on_event(
    state: &TopologyState,
    failover: &mut Option<Failover>,
    sentinel: &str,
    channel: &str,
    payload: &str,
) {
    if let Some(f) = failover.as_mut() {
        let ms = f.since.elapsed().as_millis();
        if f.events.len() < 64 {
            f.events
                .push(format!("+{ms}ms {sentinel} {channel} {payload}"));
        }
        if failover_aborted(channel, payload, &f.old_master) {
            tracing::warn!(master = %f.old_master, %channel, "failover given up; writes resume to the master");
            state.set_fence(None);
            if let Some(f) = failover.take() {
                f.give_up(&format!(
                    "Sentinel gave the failover up ({channel}); writes resume to the old master"
                ));
            }
            return;
        }
        return;
    }
    let table = state.table.load_full();
    let Some(master) = table.master.as_ref().map(|m| m.addr().to_string()) else {
        return; // no master to fence: writes are held anyway
    };
    let Some(sign) = failover_sign(channel, payload, &master) else {
        return;
    };
    let first_sign = format!("sentinel {sentinel}: {channel}");
    tracing::warn!(%master, event = %first_sign, candidate = ?sign.candidate, "failover under way: holding writes");
    state.set_fence(Some(Fence {
        since: std::time::Instant::now(),
        cause: first_sign.clone(),
    }));
    *failover = Some(Failover {
        old_master: master,
        since: Instant::now(),
        holds_before: state.stats.hold().snapshot(),
        first_sign,
        events: vec![format!("+0ms {sentinel} {channel} {payload}")],
        switchover: None,
    });
}

/// Keeps the newest failover record's held-request counts current until its held requests are
/// all released or expired (at most 30 s after the release).
fn settle_holds(state: &TopologyState, settling: &mut Option<(HoldSnapshot, Instant)>) {
    let Some((before, released_at)) = settling.as_ref() else {
        return;
    };
    let now = state.stats.hold().snapshot();
    state.stats.update_last_failover_holds(now.since(before));
    if now.held_now == 0 || released_at.elapsed() > Duration::from_secs(30) {
        *settling = None;
    }
}

/// Starts a switchover: fence writes, wait until the healthy replicas have caught up with the
/// master, then ask a sentinel to fail over. The requester hears back when the writes are
/// released to the new master (or at once, if it cannot start).
async fn start_switchover(
    state: &TopologyState,
    cfg: &SentinelConfig,
    creds: &Credentials,
    failover: &mut Option<Failover>,
    req: SwitchoverRequest,
) {
    let refuse = |why: &str| {
        tracing::warn!(reason = why, "switchover refused");
        why.to_string()
    };
    if failover.is_some() {
        let _ = req
            .reply
            .send(Err(refuse("a failover is already in progress")));
        return;
    }
    let table = state.table.load_full();
    let Some(master) = table.master.as_ref().map(|m| m.addr().to_string()) else {
        let _ = req.reply.send(Err(refuse("no master is known")));
        return;
    };
    let replicas: Vec<String> = table
        .replicas
        .iter()
        .filter(|r| r.health.serves_reads())
        .map(|r| r.addr().to_string())
        .collect();
    if replicas.is_empty() {
        let _ = req
            .reply
            .send(Err(refuse("no healthy replica to switch to")));
        return;
    }
    let since = Instant::now();
    state.set_fence(Some(Fence {
        since: std::time::Instant::now(),
        cause: "switchover".to_string(),
    }));
    tracing::info!(%master, ?replicas, "switchover: writes held, waiting for the replicas to catch up");
    let started = async {
        let catch_up = wait_caught_up(state, &master, &replicas).await?;
        let via = ask_sentinel_failover(&cfg.addrs, &cfg.master_name, creds, state.health.timeout)
            .await?;
        Ok::<_, String>((catch_up, via))
    };
    match started.await {
        Ok((catch_up, via)) => {
            tracing::info!(%master, catch_up_ms = catch_up.as_millis() as u64, sentinel = %via, "switchover: SENTINEL FAILOVER sent");
            *failover = Some(Failover {
                old_master: master,
                since,
                holds_before: state.stats.hold().snapshot(),
                first_sign: format!("switchover (SENTINEL FAILOVER via {via})"),
                events: Vec::new(),
                switchover: Some((req.reply, catch_up)),
            });
        }
        Err(e) => {
            state.set_fence(None);
            let _ = req.reply.send(Err(refuse(&e)));
        }
    }
}

/// Lifts a fence when no failover came within `fence_timeout`: a majority of the sentinels
/// still name the old master and it still answers as master.
async fn advance(
    state: &TopologyState,
    failover: &mut Option<Failover>,
    fence_timeout: Duration,
    views: &HashMap<String, SentinelView>,
    total: usize,
) {
    let Some(f) = failover.as_mut() else {
        return;
    };
    if f.since.elapsed() < fence_timeout {
        return;
    }
    let still_named = majority_master(views, total).is_some_and(|v| v.master == f.old_master);
    if still_named && probe_role(&f.old_master, state).await == Some(Role::Master) {
        tracing::warn!(master = %f.old_master, "no failover followed its first sign; writes resume to the master");
        state.set_fence(None);
        if let Some(f) = failover.take() {
            f.give_up("the failover did not complete within failover.hold_ms; writes resume to the old master");
        }
    }
}

/// The master named by a majority of the `total` configured sentinels (their view with the
/// highest config epoch), if there is one.
///
/// Why a majority and not the first sentinel that names a new master, nor the promoted replica
/// as soon as it answers `ROLE` as master: until the new configuration has reached a majority,
/// the failover can still be undone. Seen in a test run: the leading sentinel stalled right after
/// promoting a replica, the others never learnt of it and turned the replica back into a replica
/// ten seconds later; writes it had acknowledged in between were gone.
fn majority_master(views: &HashMap<String, SentinelView>, total: usize) -> Option<&SentinelView> {
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for v in views.values() {
        *votes.entry(v.master.as_str()).or_default() += 1;
    }
    let (winner, _) = votes.into_iter().find(|(_, n)| *n * 2 > total)?;
    views
        .values()
        .filter(|v| v.master == winner)
        .max_by_key(|v| v.config_epoch)
}

async fn reconcile(
    state: &TopologyState,
    views: &HashMap<String, SentinelView>,
    total: usize,
    failover: &mut Option<Failover>,
    loss: &mut LossFence,
    settling: &mut Option<(HoldSnapshot, Instant)>,
    cause: &str,
) {
    let current = state.table.load_full();
    let current_master = current.master.as_ref().map(|b| b.addr().to_string());
    let Some(view) = majority_master(views, total) else {
        // No majority reachable (or they disagree mid-failover): keep the last known topology.
        return;
    };
    state.members(&members(views));
    if loss.fenced() && current_master.as_deref() == Some(view.master.as_str()) {
        // Back on the majority's side, with the same master: released once it answers as one.
        if probe_role(&view.master, state).await == Some(Role::Master) {
            loss.lift(state, failover.is_some());
        }
    }
    if current_master.as_deref() != Some(view.master.as_str()) {
        // Confirm before routing writes to it: the promotion may not be done yet.
        match probe_role(&view.master, state).await {
            Some(Role::Master) => {}
            other => {
                tracing::debug!(candidate = %view.master, role = ?other, "sentinels name a master that does not answer ROLE as master yet");
                // Still publish replica changes under the current master.
                if let Some(m) = current_master.as_deref() {
                    state.publish(Some(m), &without(&view.replicas, &[m]));
                }
                return;
            }
        }
        tracing::info!(old = ?current_master, new = %view.master, epoch = view.config_epoch, %cause, "master changed");
        loss.released();
        match (failover.take(), current_master.as_deref()) {
            (Some(f), _) => {
                let held = f.since.elapsed();
                if let Some((reply, catch_up)) = f.switchover {
                    let _ = reply.send(Ok(SwitchoverReport {
                        old_master: f.old_master.clone(),
                        new_master: view.master.clone(),
                        writes_held_ms: u64::try_from(held.as_millis()).unwrap_or(u64::MAX),
                        catch_up_ms: u64::try_from(catch_up.as_millis()).unwrap_or(u64::MAX),
                    }));
                }
                tracing::info!(old = %f.old_master, new = %view.master, held_ms = held.as_millis() as u64, "a majority of the sentinels names the new master and it answers ROLE as master: releasing writes");
                let now = state.stats.hold().snapshot();
                state.stats.record_fenced_failover(
                    &f.old_master,
                    &view.master,
                    &f.first_sign,
                    held,
                    f.events,
                    now.since(&f.holds_before),
                );
                *settling = Some((f.holds_before, Instant::now()));
            }
            (None, Some(old)) => state.stats.record_failover(Some(old), &view.master, cause),
            (None, None) => {}
        }
    }
    state.publish(Some(&view.master), &view.replicas);
}

/// Every server a sentinel names (masters and replicas, down ones included): what the proxy
/// keeps (with the servers [`TopologyState::members`] adds).
fn members(views: &HashMap<String, SentinelView>) -> Vec<&str> {
    let mut out: Vec<&str> = views
        .values()
        .flat_map(|v| std::iter::once(&v.master).chain(&v.known))
        .map(String::as_str)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `replicas` minus the addresses in `exclude`.
fn without(replicas: &[String], exclude: &[&str]) -> Vec<String> {
    replicas
        .iter()
        .filter(|r| !exclude.contains(&r.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(master: &str, epoch: u64) -> SentinelView {
        SentinelView {
            master: master.into(),
            config_epoch: epoch,
            replicas: vec![],
            known: vec![],
        }
    }

    #[test]
    fn members_are_every_server_a_sentinel_lists_down_ones_included() {
        let mut views = HashMap::new();
        let mut v = view("a:1", 3);
        v.replicas = vec!["b:1".into()];
        v.known = vec!["b:1".into(), "c:1".into()];
        views.insert("s1".to_string(), v);
        let mut v = view("a:1", 3);
        v.known = vec!["d:1".into()];
        views.insert("s2".to_string(), v);
        assert_eq!(members(&views), ["a:1", "b:1", "c:1", "d:1"]);
    }

    #[test]
    fn only_a_master_named_by_a_majority_of_the_configured_sentinels_counts() {
        let mut views = HashMap::new();
        views.insert("s1".to_string(), view("a:1", 3));
        views.insert("s2".to_string(), view("a:1", 3));
        // The leader alone names the promoted replica (with a newer epoch): not yet.
        views.insert("s3".to_string(), view("b:1", 4));
        assert_eq!(majority_master(&views, 3).unwrap().master, "a:1");
        views.insert("s2".to_string(), view("b:1", 4));
        assert_eq!(majority_master(&views, 3).unwrap().master, "b:1");
        // Two of five reachable sentinels agreeing are not a majority of the five.
        views.remove("s1");
        assert!(majority_master(&views, 5).is_none());
        assert_eq!(majority_master(&views, 3).unwrap().config_epoch, 4);
    }
}
