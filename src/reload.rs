//! Reloading the configuration without dropping anyone (`SIGHUP`, `POST /reload`).
//!
//! The file is read again, with the command line's flags and variables laid over it as at start,
//! and checked whole: a config that does not read or validate is refused, and the running one
//! stays as it is. Otherwise what can change live is applied: a new client context (the users,
//! their rules, the command policy, the limits and timeouts, the read policy, the hold) that new
//! clients start with and connected ones take between two requests (see `Session::adopt_reload`),
//! keeping their connections, transactions and subscriptions; and what the topology task follows
//! (the sentinels and the master name, the static servers, the cluster seeds: one
//! [`Followed`] value on one watch channel), the listeners' certificate and the log filter, each
//! where it is used. What cannot change live (the
//! addresses listened on, the thread count, the backends' connection settings...) is reported and
//! left as it is until a restart. Each outcome is counted on the stats page and in `/metrics`.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::acl::Security;
use crate::client::live::LiveContext;
use crate::client::{ProxyContext, Settings};
use crate::config::{AuthMode, Config, ConfigError};
use crate::stats::{ReloadRecord, ReloadRequest, Stats};
use crate::tls::ServerTls;
use crate::topology::Followed;

/// Reads the config again: the file with the command line laid over it, as at start.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What a new config changes, by key, in the running one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Applied now.
    pub live: Vec<&'static str>,
    /// Left as they run until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Sorts what differs between `old` and `new` into what a reload applies and what waits for a
/// restart.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();
    // Static mode before and after: its task follows the servers (a change of mode waits for a
    // restart).
    let both_static = [old, new]
        .iter()
        .all(|c| c.sentinel.is_none() && c.cluster.is_none());
    let mut live = |key, same: bool| {
        if !same {
            plan.live.push(key);
        }
    };
    live("max_pipeline", old.max_pipeline == new.max_pipeline);
    live(
        "client_timeout_secs",
        old.client_timeout_secs == new.client_timeout_secs,
    );
    live(
        "client_output_buffer_limit_bytes",
        old.client_output_buffer_limit_bytes == new.client_output_buffer_limit_bytes,
    );
    live(
        "client_query_buffer_limit",
        old.client_query_buffer_limit == new.client_query_buffer_limit,
    );
    live("routing", old.routing == new.routing);
    live(
        "failover.hold_ms",
        old.failover.hold_ms == new.failover.hold_ms,
    );
    live(
        "failover.max_held_bytes",
        old.failover.max_held_bytes == new.failover.max_held_bytes,
    );
    live(
        "failover.min_replicas_to_ack",
        old.failover.min_replicas_to_ack == new.failover.min_replicas_to_ack
            && old.failover.min_replicas_max_lag_secs == new.failover.min_replicas_max_lag_secs,
    );
    let auth_mode_same = auth_mode(old) == auth_mode(new);
    // The backend mode's checker is a task started with the proxy: a change into or out of it
    // waits for a restart, and so does the rest of `[auth]` then.
    let backend_involved = !auth_mode_same
        && (auth_mode(old) == AuthMode::Backend || auth_mode(new) == AuthMode::Backend);
    if !backend_involved {
        live("auth", old.auth == new.auth);
    }
    live("commands", old.commands == new.commands);
    live("log", old.log == new.log);
    if both_static {
        live("servers", old.servers == new.servers);
    }
    let cluster_rest_same = match (&old.cluster, &new.cluster) {
        (Some(a), Some(b)) => {
            live("cluster.seeds", a.seeds == b.seeds);
            let mut a = a.clone();
            a.seeds.clone_from(&b.seeds);
            a == *b
        }
        (a, b) => a == b,
    };
    let sentinel_rest_same = match (&old.sentinel, &new.sentinel) {
        (Some(a), Some(b)) => {
            live("sentinel.addrs", a.addrs == b.addrs);
            live("sentinel.master_name", a.master_name == b.master_name);
            // The rest of the table, compared without what the Sentinel task follows.
            let mut a = a.clone();
            a.addrs.clone_from(&b.addrs);
            a.master_name.clone_from(&b.master_name);
            a == *b
        }
        (a, b) => a == b,
    };

    let mut restart = |key, same: bool| {
        if !same {
            plan.needs_restart.push(key);
        }
    };
    restart("listen", old.listen == new.listen);
    restart("read_listen", old.read_listen == new.read_listen);
    restart("stats", old.stats == new.stats);
    restart("admin_token", old.admin_token == new.admin_token);
    restart(
        "stats_forget_after_secs",
        old.stats_forget_after_secs == new.stats_forget_after_secs,
    );
    restart("threads", old.threads == new.threads);
    restart("max_clients", old.max_clients == new.max_clients);
    restart(
        "max_output_bytes_total",
        old.max_output_bytes_total == new.max_output_bytes_total,
    );
    restart("sentinel", sentinel_rest_same);
    if !both_static {
        restart("servers", old.servers == new.servers);
    }
    restart("cluster", cluster_rest_same);
    restart("backend", old.backend == new.backend);
    restart(
        "failover",
        old.failover.write_durability == new.failover.write_durability
            && old.failover.durability_timeout_ms == new.failover.durability_timeout_ms
            && old.failover.on_sentinel_loss == new.failover.on_sentinel_loss
            && old.failover.sentinel_loss_fence_ms == new.failover.sentinel_loss_fence_ms,
    );
    if backend_involved {
        restart("auth.mode", false);
    }
    // The files, the client CA and `client_auth` are read again by every reload (see
    // `Reloader::reload`); turning TLS on or off, and the handshake timeout, wait for a restart.
    restart(
        "tls",
        old.tls.as_ref().map(|t| t.handshake_timeout_ms)
            == new.tls.as_ref().map(|t| t.handshake_timeout_ms),
    );
    restart(
        "shutdown_grace_ms",
        old.shutdown_grace_ms == new.shutdown_grace_ms,
    );
    restart("upgrade", old.upgrade == new.upgrade);
    // Whatever else differs (a key added to the config and not sorted above) waits for a
    // restart rather than being dropped unseen.
    if plan.needs_restart.is_empty() && running_after(old, new, &plan) != *new {
        plan.needs_restart.push("(other settings)");
    }
    plan
}

/// The auth mode in force (both configs passed validation, where a contradiction is refused).
fn auth_mode(cfg: &Config) -> AuthMode {
    cfg.auth
        .resolved_mode(cfg.backend.password.is_some())
        .unwrap_or(AuthMode::None)
}

/// The config that runs once `plan` is applied: `old`, with what `plan` applies live taken from
/// `new`.
pub fn running_after(old: &Config, new: &Config, plan: &Plan) -> Config {
    let mut run = old.clone();
    if let (Some(r), Some(n)) = (run.tls.as_mut(), new.tls.as_ref()) {
        let handshake_timeout_ms = r.handshake_timeout_ms;
        *r = n.clone();
        r.handshake_timeout_ms = handshake_timeout_ms;
    }
    for key in &plan.live {
        match *key {
            "max_pipeline" => run.max_pipeline = new.max_pipeline,
            "client_timeout_secs" => run.client_timeout_secs = new.client_timeout_secs,
            "client_output_buffer_limit_bytes" => {
                run.client_output_buffer_limit_bytes = new.client_output_buffer_limit_bytes;
            }
            "client_query_buffer_limit" => {
                run.client_query_buffer_limit = new.client_query_buffer_limit;
            }
            "routing" => run.routing = new.routing.clone(),
            "failover.hold_ms" => run.failover.hold_ms = new.failover.hold_ms,
            "failover.max_held_bytes" => run.failover.max_held_bytes = new.failover.max_held_bytes,
            "failover.min_replicas_to_ack" => {
                run.failover.min_replicas_to_ack = new.failover.min_replicas_to_ack;
                run.failover.min_replicas_max_lag_secs = new.failover.min_replicas_max_lag_secs;
            }
            "auth" => run.auth = new.auth.clone(),
            "commands" => run.commands = new.commands.clone(),
            "log" => run.log.clone_from(&new.log),
            "servers" => run.servers.clone_from(&new.servers),
            "cluster.seeds" => {
                if let (Some(r), Some(n)) = (run.cluster.as_mut(), new.cluster.as_ref()) {
                    r.seeds.clone_from(&n.seeds);
                }
            }
            "sentinel.addrs" => {
                if let (Some(r), Some(n)) = (run.sentinel.as_mut(), new.sentinel.as_ref()) {
                    r.addrs.clone_from(&n.addrs);
                }
            }
            "sentinel.master_name" => {
                if let (Some(r), Some(n)) = (run.sentinel.as_mut(), new.sentinel.as_ref()) {
                    r.master_name.clone_from(&n.master_name);
                }
            }
            _ => {}
        }
    }
    run
}

/// Keys applied live that the client context does not hold: a change of them alone leaves the
/// sessions' context as it is.
const OUTSIDE_THE_CONTEXT: &[&str] = &[
    "sentinel.addrs",
    "sentinel.master_name",
    "servers",
    "cluster.seeds",
    "log",
];

/// The task that applies reloads, one at a time.
pub struct Reloader {
    /// Reads the config again.
    pub source: ConfigSource,
    /// The config running now (what earlier reloads applied included).
    pub running: Config,
    /// Where the new client context goes.
    pub live: Arc<LiveContext>,
    /// Where outcomes are counted.
    pub stats: Arc<Stats>,
    /// What the mode's topology task follows (the sentinels and the master name, the servers,
    /// the cluster seeds).
    pub followed: tokio::sync::watch::Sender<Followed>,
    /// The client listeners' TLS, whose certificate a reload may replace.
    pub server_tls: Option<Arc<ServerTls>>,
}

impl Reloader {
    /// Applies each request in turn until `token`.
    pub async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<ReloadRequest>,
        token: CancellationToken,
    ) {
        loop {
            let request = tokio::select! {
                _ = token.cancelled() => return,
                r = requests.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
            };
            let record = self.reload();
            if let Some(reply) = request.reply {
                let _ = reply.send(record);
            }
        }
    }

    /// One reload: read, check, apply what can change live.
    pub fn reload(&mut self) -> ReloadRecord {
        let reloads = self.stats.reloads();
        let server_tls = self.server_tls.clone();
        let (new, security, tls_files) = match (self.source)().and_then(|new| {
            new.validate()?;
            let security = Security::from_config(&new.auth, &new.commands, &new.backend)?;
            let tls_files = match (&server_tls, &new.tls) {
                (Some(tls), Some(c)) => tls.reread(c)?,
                _ => None,
            };
            Ok((new, security, tls_files))
        }) {
            Ok(checked) => checked,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the running config stays");
                return reloads.refused(e.to_string());
            }
        };
        let mut plan = plan(&self.running, &new);
        if let (Some(files), Some(tls)) = (tls_files, &self.server_tls) {
            tls.install(files);
            plan.live.push("tls (certificate files)");
        }
        let running = running_after(&self.running, &new, &plan);
        let (old, _) = self.live.load();
        let followed = Followed::of(&running);
        self.followed.send_if_modified(|f| {
            let changed = *f != followed;
            *f = followed;
            changed
        });
        if plan.live.contains(&"log") {
            if let Err(e) = crate::logging::set_filter(&running.log) {
                tracing::warn!(error = %e, "reload: the log filter stays");
            }
        }
        // What the topology follows, the certificate and the log filter went where they are used
        // above and before.
        let context_changed = plan
            .live
            .iter()
            .any(|k| !k.starts_with("tls") && !OUTSIDE_THE_CONTEXT.contains(k));
        if context_changed {
            let ctx = reloaded_context(&old, &running, security, &self.stats);
            self.live.store(Arc::new(ctx));
        }
        if plan.live.is_empty() {
            tracing::info!(needs_restart = ?plan.needs_restart, "reload: nothing to change live");
        } else {
            tracing::info!(changed = ?plan.live, needs_restart = ?plan.needs_restart, "reload applied");
        }
        if !plan.needs_restart.is_empty() {
            tracing::warn!(
                keys = ?plan.needs_restart,
                "reload: these settings changed in the config and take effect at the next restart"
            );
        }
        self.running = running;
        reloads.applied(plan.live, plan.needs_restart)
    }
}

/// `old`'s shared parts with `cfg`'s settings and `security` (taking over the backend mode's
/// checker, which a reload keeps).
fn reloaded_context(
    old: &ProxyContext,
    cfg: &Config,
    security: Security,
    stats: &Stats,
) -> ProxyContext {
    let mut security = security.with_counters(stats.auth());
    if let Some(backend) = old.security.backend() {
        security = security.with_backend(backend.clone());
    }
    stats
        .auth()
        .set_mode(security.mode().as_str(), cfg.backend.password.is_some());
    ProxyContext::new(old.shared(), Settings::from_config(cfg), security)
}

/// Asks for a reload on every `SIGHUP` until `token` (the binary's; outcomes are logged and
/// counted, nobody waits for them).
pub async fn on_sighup(reloads: crate::stats::ReloadSender, token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload only by POST /reload");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading the config");
                if reloads.send(ReloadRequest { reply: None }).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaskedString;

    fn base() -> Config {
        Config {
            servers: vec!["127.0.0.1:6379".into()],
            ..Config::default()
        }
    }

    #[test]
    fn live_settings_apply_and_the_rest_waits_for_a_restart() {
        let old = base();
        let mut new = base();
        new.max_pipeline = 10;
        new.routing.max_replica_lag_secs += 1;
        new.commands.deny = vec!["keys".into()];
        new.log = "haproxy_rs=debug".into();
        new.listen = "127.0.0.1:7000".into();
        new.threads = 3;
        let p = plan(&old, &new);
        assert_eq!(p.live, ["max_pipeline", "routing", "commands", "log"]);
        assert_eq!(p.needs_restart, ["listen", "threads"]);
        let run = running_after(&old, &new, &p);
        assert_eq!((run.max_pipeline, run.commands.deny.len()), (10, 1));
        assert_eq!(run.log, "haproxy_rs=debug");
        assert_eq!(
            (run.listen.as_str(), run.threads),
            (old.listen.as_str(), old.threads)
        );
        assert_eq!(plan(&run, &run), Plan::default());
    }

    #[test]
    fn proxy_users_change_live_but_the_backend_mode_needs_a_restart() {
        let old = base();
        let mut proxy_users = base();
        proxy_users.auth.requirepass = Some(MaskedString::new("secret"));
        assert_eq!(plan(&old, &proxy_users).live, ["auth"]);
        let mut backend = base();
        backend.auth.mode = Some(AuthMode::Backend);
        let p = plan(&old, &backend);
        assert!(p.live.is_empty(), "{p:?}");
        assert_eq!(p.needs_restart, ["auth.mode"]);
    }

    #[test]
    fn what_the_topology_follows_changes_live_and_the_rest_of_its_table_waits() {
        let old = Config::for_sentinels(vec!["127.0.0.1:26379".into()], "one");
        let mut new = old.clone();
        if let Some(s) = new.sentinel.as_mut() {
            s.addrs = vec!["127.0.0.1:26380".into()];
            s.master_name = "two".into();
            s.reconcile_interval_ms += 1;
        }
        let p = plan(&old, &new);
        assert_eq!(p.live, ["sentinel.addrs", "sentinel.master_name"]);
        assert_eq!(p.needs_restart, ["sentinel"]);
        let run = running_after(&old, &new, &p);
        let s = run.sentinel.as_ref().unwrap();
        assert_eq!(
            (s.addrs.as_slice(), s.master_name.as_str()),
            (&["127.0.0.1:26380".to_string()][..], "two")
        );
        assert_eq!(
            s.reconcile_interval_ms,
            old.sentinel.as_ref().unwrap().reconcile_interval_ms
        );
        assert_eq!(
            Followed::of(&run),
            Followed::Sentinel {
                addrs: vec!["127.0.0.1:26380".into()],
                master_name: "two".into()
            }
        );
    }

    #[test]
    fn static_servers_change_live_but_a_change_of_mode_waits() {
        let old = base();
        let mut new = base();
        new.servers = vec!["127.0.0.1:6380".into()];
        let p = plan(&old, &new);
        assert_eq!(
            (p.live.as_slice(), p.needs_restart.len()),
            (&["servers"][..], 0)
        );
        let run = running_after(&old, &new, &p);
        assert_eq!(
            Followed::of(&run),
            Followed::Static {
                servers: new.servers.clone()
            }
        );
        let sentinel = Config::for_sentinels(vec!["127.0.0.1:26379".into()], "m");
        let p = plan(&old, &sentinel);
        assert!(p.live.is_empty(), "{p:?}");
        assert_eq!(p.needs_restart, ["sentinel", "servers"]);
    }

    #[test]
    fn cluster_seeds_change_live_and_the_rest_of_the_table_waits() {
        let old = Config::for_cluster(vec!["127.0.0.1:7000".into()]);
        let mut new = old.clone();
        if let Some(c) = new.cluster.as_mut() {
            c.seeds = vec!["127.0.0.1:7001".into()];
            c.refresh_interval_ms += 1;
        }
        let p = plan(&old, &new);
        assert_eq!(p.live, ["cluster.seeds"]);
        assert_eq!(p.needs_restart, ["cluster"]);
        let run = running_after(&old, &new, &p);
        assert_eq!(
            Followed::of(&run),
            Followed::Cluster {
                seeds: vec!["127.0.0.1:7001".into()]
            }
        );
        assert_eq!(
            run.cluster.map(|c| c.refresh_interval_ms),
            old.cluster.map(|c| c.refresh_interval_ms)
        );
    }

    #[test]
    fn failover_settings_split_between_live_and_restart() {
        let old = base();
        let mut new = base();
        new.failover.hold_ms += 1;
        new.failover.durability_timeout_ms += 1;
        let p = plan(&old, &new);
        assert_eq!(p.live, ["failover.hold_ms"]);
        assert_eq!(p.needs_restart, ["failover"]);
    }
}
