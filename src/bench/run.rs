//! One load run: resolve the target, start the connections, print the live line, trigger the failover,
//! then build the report (and read tracked writes back).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::args::{FailoverKind, LoadArgs};
use super::client::{run_client, ClientResult, Plan, Target};
use super::cluster;
use super::conn::{Auth, Conn, ConnError};
use super::failover::{self, FailoverReport, Trigger};
use super::hist::{fmt_us, Percentiles};
use super::recorder::{fold_tail, Collector, Second};
use super::report::{measured_seconds, RunReport, RunSetup};
use super::sentinel;
use super::stateful::{STREAM_GROUP, STREAM_KEY};
use super::workload::{Generator, WorkloadKind, WorkloadSpec};
use crate::resp::Value;

/// How long to wait, after a failover, for the sentinel to name a new master before reading writes back.
const NEW_MASTER_WAIT: Duration = Duration::from_secs(30);

/// Runs the load `args` describe against `target` (or `args.target`), labelled `name`.
///
/// # Errors
/// Inconsistent flags, an unreachable sentinel, or a failed read-back.
pub async fn run_load(
    args: &LoadArgs,
    name: &str,
    target: Option<&str>,
) -> anyhow::Result<RunReport> {
    let auth = Auth {
        user: args.user.clone(),
        password: args.password.clone(),
    };
    let target = load_target(args, target)?;
    let triggered = args.failover.is_some() || args.failover_cmd.is_some();
    let tracked = triggered || args.track;
    let run_id = format!("{:x}", unix_nanos() % 0xffff_ffff);
    let spec = workload_spec(args, tracked.then(|| run_id.clone()));
    let old_master = sentinel_master(args).await?;
    if matches!(target, Target::Cluster(_)) && !cluster::supports(spec.kind) {
        bail!(
            "--cluster sends set, get, mixed, mget, mset, incr and ping, not {:?}",
            spec.kind
        );
    }
    let trigger = failover_trigger(args, old_master.as_deref(), &target)?;
    prepare(&spec, &target, &auth, args).await?;
    let start = Instant::now() + args.warmup;
    let collector = Collector::new(start.into_std());
    let stop = CancellationToken::new();
    let events = subscribe_sentinels(args, start, &stop);
    let clients = args.clients.max(1);
    let plan = Arc::new(plan(args, &target, &auth, clients, start, &collector));
    let tasks = spawn_clients(&plan, &spec, clients);
    let live = stop.child_token();
    let printer = (!args.quiet)
        .then(|| tokio::spawn(live_line(collector.clone(), start, plan.end, live.clone())));
    let fired =
        trigger.map(|t| spawn_trigger(t, auth.clone(), args.timeout, start, args.failover_at));
    let mut results = Vec::with_capacity(clients);
    for t in tasks {
        results.push(t.await.context("a load connection panicked")?);
    }
    live.cancel();
    if let Some(p) = printer {
        let _ = p.await;
    }
    let measured = Instant::now()
        .min(plan.end)
        .saturating_duration_since(start);
    let at_s = fired_at(fired).await;
    let collected = collector.collected();
    let setup = RunSetup {
        name: name.to_string(),
        target: describe(&target),
        workload: spec,
        clients,
        pipeline: plan.pipeline,
        rps: args.rps,
        // When measurement began (after the warm-up): what `bench merge` aligns runs on.
        started_unix: (unix_nanos() / 1_000_000_000)
            .saturating_sub(Instant::now().saturating_duration_since(start).as_secs()),
    };
    let mut report = RunReport::new(setup, measured.as_secs_f64(), &collected);
    if tracked {
        let mut f = read_back(args, &target, &auth, &run_id, old_master, at_s, &results).await?;
        f.analyse(&collected.spans, &report.timeline);
        report.failover = Some(f);
    }
    stop.cancel();
    report.events = events.lock().map(|g| g.clone()).unwrap_or_default();
    report.events.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(report)
}

/// The master the first sentinel names before the load starts, with `--sentinel`.
async fn sentinel_master(args: &LoadArgs) -> anyhow::Result<Option<String>> {
    let Some(s) = args.first_sentinel() else {
        return Ok(None);
    };
    let addr = sentinel::master_addr(s, &args.master_name, args.timeout)
        .await
        .with_context(|| format!("asking sentinel {s} for {}", args.master_name))?;
    Ok(Some(addr))
}

/// Where the load goes: `--cluster`, else `target` (or `--target`), else the master the first
/// sentinel names.
fn load_target(args: &LoadArgs, target: Option<&str>) -> anyhow::Result<Target> {
    Ok(
        match (target.or(args.target.as_deref()), args.first_sentinel()) {
            _ if !args.cluster.is_empty() => Target::Cluster(args.cluster.clone()),
            (Some(t), _) => Target::Fixed(t.to_string()),
            (None, Some(s)) => Target::Sentinel {
                sentinel: s.clone(),
                master_name: args.master_name.clone(),
            },
            (None, None) => bail!("give --target, --sentinel or --cluster HOST:PORT"),
        },
    )
}

/// The target as the report names it.
fn describe(target: &Target) -> String {
    match target {
        Target::Fixed(a) => a.clone(),
        Target::Sentinel {
            sentinel,
            master_name,
        } => format!("{master_name} via {sentinel}"),
        Target::Cluster(seeds) => format!("cluster via {}", seeds.join(",")),
    }
}

/// The events of every `--sentinel`, collected from `start` until `stop`.
fn subscribe_sentinels(
    args: &LoadArgs,
    start: Instant,
    stop: &CancellationToken,
) -> sentinel::EventLog {
    let events = sentinel::EventLog::default();
    for s in &args.sentinel {
        sentinel::subscribe(s.clone(), start.into_std(), stop.clone(), events.clone());
    }
    events
}

/// What every load connection shares.
fn plan(
    args: &LoadArgs,
    target: &Target,
    auth: &Auth,
    clients: usize,
    start: Instant,
    collector: &Arc<Collector>,
) -> Plan {
    Plan {
        target: target.clone(),
        auth: auth.clone(),
        pipeline: args.pipeline.max(1),
        rate_per_client: args.rps.map(|r| r as f64 / clients as f64),
        end: start + args.duration,
        budget: args.requests.map(AtomicU64::new),
        timeout: args.timeout,
        collector: collector.clone(),
    }
}

/// One task per load connection.
fn spawn_clients(
    plan: &Arc<Plan>,
    spec: &WorkloadSpec,
    clients: usize,
) -> Vec<tokio::task::JoinHandle<ClientResult>> {
    (0..clients)
        .map(|i| {
            // Publishers stamp messages from the collector's origin, which subscribers measure from.
            let gen = Generator::new(spec, i, clients).with_epoch(plan.collector.start());
            match &plan.target {
                Target::Cluster(seeds) => {
                    tokio::spawn(cluster::run_client(plan.clone(), seeds.clone(), i, gen))
                }
                _ => tokio::spawn(run_client(plan.clone(), i, gen)),
            }
        })
        .collect()
}

/// Fires the failover `after` the start of the measurement; the task returns when it fired,
/// in seconds from the start, if it did.
fn spawn_trigger(
    t: Trigger,
    auth: Auth,
    timeout: Duration,
    start: Instant,
    after: Duration,
) -> tokio::task::JoinHandle<Result<f64, ConnError>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(start + after).await;
        let when = Instant::now()
            .saturating_duration_since(start)
            .as_secs_f64();
        let r = failover::trigger(&t, &auth, timeout).await;
        match &r {
            Ok(what) => eprintln!("failover triggered at {when:.3}s: {what}"),
            Err(e) => eprintln!("failover trigger failed: {e}"),
        }
        r.map(|_| when)
    })
}

/// When the failover fired, in seconds from the start; `None` when it did not, or has not by
/// the end of the load (it is then given up).
async fn fired_at(fired: Option<tokio::task::JoinHandle<Result<f64, ConnError>>>) -> Option<f64> {
    match fired {
        Some(h) if h.is_finished() => h.await.ok().and_then(Result::ok),
        Some(h) => {
            h.abort();
            None
        }
        None => None,
    }
}

/// The tracked writes read back (after the failover fired at `at_s`, if it did): how many the
/// clients acknowledged and how many are lost, and the stale reads.
async fn read_back(
    args: &LoadArgs,
    target: &Target,
    auth: &Auth,
    run_id: &str,
    old_master: Option<String>,
    at_s: Option<f64>,
    results: &[ClientResult],
) -> anyhow::Result<FailoverReport> {
    let mut f = FailoverReport {
        trigger: match (args.failover, &args.failover_cmd) {
            (_, Some(_)) => "cmd".into(),
            (Some(FailoverKind::Planned), None) => "planned".into(),
            (Some(FailoverKind::Kill), None) => "kill".into(),
            (None, None) => "none".into(),
        },
        at_s,
        old_master: old_master.clone(),
        ..FailoverReport::default()
    };
    let verify = verify_addr(args, target, old_master.as_deref(), at_s.is_some()).await?;
    let (lost, sample) = failover::verify_writes(&verify, auth, run_id, results, args.timeout)
        .await
        .with_context(|| format!("reading acknowledged writes back from {verify}"))?;
    f.verified_on = Some(verify);
    f.acked_writes = results.iter().map(|r| r.acked.len() as u64).sum();
    f.lost_writes = lost;
    f.lost_sample = sample;
    f.reads = results.iter().map(|r| r.reads).sum();
    f.stale_reads = results.iter().map(|r: &ClientResult| r.stale_reads).sum();
    Ok(f)
}

/// What a workload needs before it starts: the consumer group of `stream`; two connections for the
/// producer/consumer workloads.
async fn prepare(
    spec: &WorkloadSpec,
    target: &Target,
    auth: &Auth,
    args: &LoadArgs,
) -> anyhow::Result<()> {
    let two_sided = matches!(spec.kind, WorkloadKind::Stream | WorkloadKind::Pubsub);
    if spec.tracked.is_some() || !two_sided {
        return Ok(());
    }
    if args.clients < 2 {
        bail!(
            "the {:?} workload needs at least 2 clients (producers and consumers)",
            spec.kind
        );
    }
    if spec.kind == WorkloadKind::Stream {
        let addr = target.resolve(args.timeout).await?;
        let mut conn = Conn::connect(&addr, auth, args.timeout).await?;
        let reply = conn
            .call(&[
                "XGROUP",
                "CREATE",
                STREAM_KEY,
                STREAM_GROUP,
                "$",
                "MKSTREAM",
            ])
            .await?;
        if let Value::Error(e) = reply {
            if !e.starts_with(b"BUSYGROUP") {
                bail!("XGROUP CREATE: {}", String::from_utf8_lossy(&e));
            }
        }
    }
    Ok(())
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn workload_spec(args: &LoadArgs, tracked: Option<String>) -> WorkloadSpec {
    WorkloadSpec {
        kind: args.workload,
        ratio: args.ratio,
        keys_per_command: args.keys_per_command.max(1),
        keyspace: args.keyspace.max(1),
        key_dist: args.key_dist,
        zipf_exponent: args.zipf_exponent,
        data_size: args.data_size,
        seed: args.seed,
        tracked,
    }
}

fn failover_trigger(
    args: &LoadArgs,
    old_master: Option<&str>,
    target: &Target,
) -> anyhow::Result<Option<Trigger>> {
    if let Some(cmd) = &args.failover_cmd {
        return Ok(Some(Trigger::Command(cmd.clone())));
    }
    match args.failover {
        None => Ok(None),
        Some(FailoverKind::Planned) => match args.first_sentinel() {
            Some(s) => Ok(Some(Trigger::Planned {
                sentinel: s.clone(),
                master_name: args.master_name.clone(),
            })),
            None => bail!("--failover planned needs --sentinel"),
        },
        Some(FailoverKind::Kill) => match (old_master, target) {
            (Some(m), _) => Ok(Some(Trigger::Kill {
                master: m.to_string(),
            })),
            (None, Target::Fixed(m)) => Ok(Some(Trigger::Kill { master: m.clone() })),
            (None, Target::Sentinel { .. } | Target::Cluster(_)) => {
                bail!("--failover kill needs the master's address")
            }
        },
    }
}

/// Where acknowledged writes are read back: `--verify-target`, else the master Sentinel names (after a
/// failover, once it is not the old one), else the target.
async fn verify_addr(
    args: &LoadArgs,
    target: &Target,
    old_master: Option<&str>,
    failed_over: bool,
) -> anyhow::Result<String> {
    if let Some(v) = &args.verify_target {
        return Ok(v.clone());
    }
    let Some(s) = args.first_sentinel() else {
        return target.resolve(args.timeout).await.map_err(Into::into);
    };
    let deadline = Instant::now() + NEW_MASTER_WAIT;
    loop {
        let now = sentinel::master_addr(s, &args.master_name, args.timeout).await;
        match now {
            Ok(addr) if !failed_over || Some(addr.as_str()) != old_master => return Ok(addr),
            Ok(addr) if Instant::now() >= deadline => {
                eprintln!("sentinel still names {addr} as master; reading writes back from it");
                return Ok(addr);
            }
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Prints one line per measured second (the second before last, so that connections have flushed it);
/// once stopped, the seconds not printed yet, as the report counts them (nothing past the end).
async fn live_line(
    collector: Arc<Collector>,
    start: Instant,
    end: Instant,
    stop: CancellationToken,
) {
    let mut k: usize = 0;
    loop {
        let at = start + Duration::from_secs(k as u64 + 1) + Duration::from_millis(250);
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep_until(at) => false,
        };
        if stopped {
            let measured = Instant::now().min(end).saturating_duration_since(start);
            let mut rest: Vec<Second> = (k..).map_while(|i| collector.second(i)).collect();
            fold_tail(
                &mut rest,
                measured_seconds(measured.as_secs_f64()).saturating_sub(k),
            );
            for (i, s) in rest.iter().enumerate() {
                print_second(k + i, s);
            }
            return;
        }
        print_second(k, &collector.second(k).unwrap_or_default());
        k += 1;
    }
}

fn print_second(k: usize, s: &Second) {
    let p = Percentiles::of(&s.hist);
    eprintln!(
        "[{:>4}s] {:>9} req/s  p50 {:>8}  p99 {:>8}  max {:>8}  errors {:>6}  connects {}",
        k + 1,
        s.ops,
        fmt_us(p.p50),
        fmt_us(p.p99),
        fmt_us(p.max),
        s.errors,
        s.connects
    );
}
