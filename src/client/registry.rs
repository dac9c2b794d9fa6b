//! Every client session of this proxy, as `CLIENT LIST` shows them and `CLIENT KILL`,
//! `CLIENT UNBLOCK` and `CLIENT PAUSE` reach them.
//!
//! One registry per proxy, shared by the session threads. Each session registers an entry when it
//! starts and removes it when it ends (or a `CLIENT KILL` removes it first), so the registry holds
//! as many entries as there are clients. A session writes what `CLIENT LIST` shows into its entry
//! as it goes (one uncontended lock per command); the lock is never held across an `.await`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::BlockedOn;

/// The proxy's client sessions, by id (`CLIENT LIST` lists them in that order, oldest first).
#[derive(Debug)]
pub struct Clients {
    entries: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    /// The proxy's shutdown: each entry's kill token is a child of it, so that a session (and its
    /// subscriber mode) watches one token for both.
    shutdown: CancellationToken,
    /// `CLIENT PAUSE` in force, if any; sessions watch it.
    pause: tokio::sync::watch::Sender<Option<Pause>>,
}

/// A `CLIENT PAUSE`: what waits, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// `ALL` (else `WRITE`).
    pub all: bool,
    /// When it ends.
    pub until: tokio::time::Instant,
}

impl Pause {
    /// Whether a command (flagged `write`/`may_replicate` when `writes`) waits now.
    pub fn holds(&self, writes: bool) -> bool {
        (self.all || writes) && tokio::time::Instant::now() < self.until
    }
}

/// One client session, as the others see it.
#[derive(Debug)]
pub struct ClientEntry {
    /// The proxy's id for the client (`CLIENT ID`), unique in the process.
    pub id: u64,
    since: Instant,
    state: Mutex<EntryState>,
    /// Cancelled by `CLIENT KILL`: the session ends at once, its pending replies dropped (as
    /// Redis's `freeClient`). A child of the proxy's shutdown token.
    killed: CancellationToken,
    /// Where the client's blocking command waits, for `CLIENT UNBLOCK`: set by the dispatcher
    /// when it sends one, cleared when it is answered (before its connection can serve another
    /// client).
    blocked_on: Mutex<Option<BlockedOn>>,
    /// Where invalidations of clients tracking with `REDIRECT` to this one go, while its session
    /// takes them (in subscriber mode).
    invalidations: Mutex<Option<mpsc::Sender<Invalidation>>>,
    /// Some could not be queued: the client must drop everything it caches.
    invalidations_lost: AtomicBool,
}

/// The keys of an invalidation message; `None`: every key (`FLUSHALL`, or what the proxy cannot
/// vouch for).
pub type Invalidation = Option<Vec<Bytes>>;

/// What `CLIENT LIST` shows of a client; the session keeps it current.
#[derive(Debug, Clone)]
pub struct EntryState {
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The proxy's address it connected to.
    pub local: Option<SocketAddr>,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// The selected database.
    pub db: u8,
    /// Who the client authenticated as.
    pub user: String,
    /// The last command's full name as Redis prints it (`client|list`), `NULL` before any.
    pub cmd: String,
    /// When the client last sent a command.
    pub last: Instant,
    /// Inside `MULTI`: commands queued so far.
    pub multi: Option<usize>,
    /// Waiting in a blocking command (or postponed by `CLIENT PAUSE`).
    pub blocked: bool,
    /// In subscriber mode: channels, patterns, shard channels.
    pub subscribed: Option<[usize; 3]>,
    /// In `MONITOR`.
    pub monitor: bool,
    /// Speaks RESP3.
    pub resp3: bool,
}

impl EntryState {
    fn new(now: Instant) -> EntryState {
        EntryState {
            peer: None,
            local: None,
            name: None,
            db: 0,
            user: "default".to_string(),
            cmd: "NULL".to_string(),
            last: now,
            multi: None,
            blocked: false,
            subscribed: None,
            monitor: false,
            resp3: false,
        }
    }

    /// Redis's client type (`getClientType`): a monitor is a normal client.
    fn kind(&self) -> ClientType {
        if self.subscribed.is_some() {
            ClientType::PubSub
        } else {
            ClientType::Normal
        }
    }

    /// Redis 7.0's flag letters, in its order (`N` for none).
    fn flags(&self) -> String {
        let mut f = String::new();
        for (on, c) in [
            (self.monitor, 'O'),
            (self.subscribed.is_some(), 'P'),
            (self.multi.is_some(), 'x'),
            (self.blocked, 'b'),
        ] {
            if on {
                f.push(c);
            }
        }
        if f.is_empty() {
            f.push('N');
        }
        f
    }
}

/// Redis's client types (`CLIENT LIST TYPE`, `CLIENT KILL TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    /// Neither a replica, a master nor a subscriber.
    Normal,
    /// A replica's link (never one of the proxy's clients).
    Replica,
    /// A master's link (never one of the proxy's clients).
    Master,
    /// In subscriber mode.
    PubSub,
}

impl ClientType {
    /// The type named `name` (`slave` and `replica` alike), or Redis's error.
    ///
    /// # Errors
    /// `-ERR Unknown client type '...'`.
    pub fn parse(name: &[u8]) -> Result<ClientType, String> {
        let lower = name.to_ascii_lowercase();
        match &lower[..] {
            b"normal" => Ok(ClientType::Normal),
            b"slave" | b"replica" => Ok(ClientType::Replica),
            b"master" => Ok(ClientType::Master),
            b"pubsub" => Ok(ClientType::PubSub),
            _ => Err(format!(
                "ERR Unknown client type '{}'",
                String::from_utf8_lossy(name)
            )),
        }
    }
}

impl ClientEntry {
    /// The entry's state, for the session to update.
    pub fn state(&self) -> MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancelled when the client is killed (or the proxy stops).
    pub fn killed(&self) -> &CancellationToken {
        &self.killed
    }

    /// The client's blocking command waits on `on` (`None`: no longer).
    pub fn set_blocked_on(&self, on: Option<BlockedOn>) {
        *self.blocked_on.lock().unwrap_or_else(|e| e.into_inner()) = on;
    }

    /// Where the client's blocking command waits, if it is blocked in one.
    pub fn blocked_on(&self) -> Option<BlockedOn> {
        if !self.state().blocked {
            return None;
        }
        self.blocked_on
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The client's session takes redirected invalidations on `to` from now (`None`: no longer;
    /// Redis drops them then too).
    pub fn take_invalidations(&self, to: Option<mpsc::Sender<Invalidation>>) {
        *self.invalidations.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }

    /// An invalidation redirected to this client: queued for its session if it takes them. One
    /// that does not fit in the queue is remembered as lost (see [`Self::lost_invalidations`]).
    pub fn invalidate(&self, keys: Invalidation) {
        let to = self.invalidations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = to.as_ref() {
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(keys) {
                self.invalidations_lost.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Whether invalidations were lost since last asked (the client then drops its whole cache).
    pub fn lost_invalidations(&self) -> bool {
        self.invalidations_lost.swap(false, Ordering::Relaxed)
    }

    /// Seconds since the client connected.
    pub fn age(&self) -> u64 {
        self.since.elapsed().as_secs()
    }

    /// The client's `CLIENT LIST` line, as Redis 7.0 writes it, ending in `\n` (buffer and memory
    /// figures are the proxy's business and read 0).
    pub fn line(&self, out: &mut String) {
        let s = self.state().clone();
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let name = s
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let [sub, psub, ssub] = s.subscribed.unwrap_or_default();
        let multi = s.multi.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let _ = writeln!(
            out,
            "id={} addr={} laddr={} fd=0 name={name} age={} idle={} flags={} db={} sub={sub} psub={psub} ssub={ssub} multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={}",
            self.id,
            addr(s.peer),
            addr(s.local),
            self.age(),
            s.last.elapsed().as_secs(),
            s.flags(),
            s.db,
            s.cmd,
            s.user,
            if s.resp3 { 3 } else { 2 },
        );
    }
}

/// Which clients a `CLIENT LIST` or `CLIENT KILL` names; every condition given must hold.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `ID id ...` (any of them).
    pub ids: Option<Vec<u64>>,
    /// `TYPE type`.
    pub kind: Option<ClientType>,
    /// `ADDR ip:port` (or the old form's address).
    pub addr: Option<String>,
    /// `LADDR ip:port`.
    pub laddr: Option<String>,
    /// `USER name`.
    pub user: Option<String>,
    /// `MAXAGE secs`: connected longer than this.
    pub max_age: Option<u64>,
}

impl Filter {
    fn matches(&self, e: &ClientEntry) -> bool {
        if self.ids.as_ref().is_some_and(|ids| !ids.contains(&e.id)) {
            return false;
        }
        if self.max_age.is_some_and(|max| e.age() <= max) {
            return false;
        }
        let s = e.state();
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        self.kind.is_none_or(|k| k == s.kind())
            && self.addr.as_ref().is_none_or(|a| *a == addr(s.peer))
            && self.laddr.as_ref().is_none_or(|a| *a == addr(s.local))
            && self.user.as_ref().is_none_or(|u| *u == s.user)
    }
}

impl Clients {
    fn entries(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ClientEntry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty registry for a proxy stopped by `shutdown`.
    pub fn new(shutdown: CancellationToken) -> Clients {
        Clients {
            entries: Mutex::default(),
            shutdown,
            pause: tokio::sync::watch::Sender::new(None),
        }
    }

    /// `CLIENT PAUSE`: as Redis, the stricter of the kinds in force and the later end win.
    pub fn pause(&self, all: bool, until: tokio::time::Instant) {
        self.pause.send_modify(|p| {
            let now = tokio::time::Instant::now();
            *p = Some(match p.filter(|p| p.until > now) {
                Some(old) => Pause {
                    all: old.all || all,
                    until: old.until.max(until),
                },
                None => Pause { all, until },
            });
        });
    }

    /// `CLIENT UNPAUSE`.
    pub fn unpause(&self) {
        self.pause.send_replace(None);
    }

    /// The pause, for a session to watch.
    pub fn pauses(&self) -> tokio::sync::watch::Receiver<Option<Pause>> {
        self.pause.subscribe()
    }

    /// Registers client `id`.
    pub fn register(&self, id: u64) -> Arc<ClientEntry> {
        let now = Instant::now();
        let entry = Arc::new(ClientEntry {
            id,
            since: now,
            state: Mutex::new(EntryState::new(now)),
            killed: self.shutdown.child_token(),
            blocked_on: Mutex::new(None),
            invalidations: Mutex::new(None),
            invalidations_lost: AtomicBool::new(false),
        });
        self.entries().insert(id, entry.clone());
        entry
    }

    /// The session of client `id` ended.
    pub fn remove(&self, id: u64) {
        self.entries().remove(&id);
    }

    /// Client `id`, if connected.
    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.entries().get(&id).cloned()
    }

    /// How many clients are connected.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// No client is connected.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// The clients `filter` names, oldest first.
    pub fn matching(&self, filter: &Filter) -> Vec<Arc<ClientEntry>> {
        // Copied out first: an entry's own lock is never taken under the registry's.
        let all: Vec<Arc<ClientEntry>> = self.entries().values().cloned().collect();
        all.into_iter().filter(|e| filter.matches(e)).collect()
    }

    /// Kills the clients `kill` names, on behalf of client `me`: their sessions end at once,
    /// their replies still owed dropped, as Redis frees a client. Returns how many were killed and
    /// whether `me` was among them (it gets its reply, then is closed).
    pub fn kill(&self, kill: &Kill, me: u64) -> (usize, bool) {
        let (mut killed, mut me_too) = (0, false);
        for e in self.matching(&kill.filter) {
            if e.id == me {
                if kill.skip_me {
                    continue;
                }
                me_too = true;
            } else {
                // Out of the registry now, as Redis's `freeClient`: a `CLIENT LIST` right after
                // no longer shows it.
                self.remove(e.id);
                e.killed.cancel();
            }
            killed += 1;
        }
        (killed, me_too)
    }

    /// `CLIENT LIST`'s text for the clients `filter` names.
    pub fn list(&self, filter: &Filter) -> String {
        let mut out = String::new();
        for e in self.matching(filter) {
            e.line(&mut out);
        }
        out
    }
}

/// A parsed `CLIENT KILL`.
#[derive(Debug, Clone)]
pub struct Kill {
    /// Which clients.
    pub filter: Filter,
    /// The client that sent it is spared (`SKIPME yes`, the new form's default).
    pub skip_me: bool,
    /// The old form, `CLIENT KILL addr:port`: `+OK` or `-ERR No such client` instead of a count.
    pub old_form: bool,
}

impl Kill {
    /// Parses the arguments after `CLIENT KILL` as Redis 7.0 does (plus Redis 7.4's `MAXAGE`);
    /// `known_user` says whether a `USER` exists.
    ///
    /// # Errors
    /// Redis's words for what is wrong.
    pub fn parse(args: &[&[u8]], known_user: impl Fn(&str) -> bool) -> Result<Kill, String> {
        let syntax = || "ERR syntax error".to_string();
        if let [addr] = args {
            return Ok(Kill {
                filter: Filter {
                    addr: Some(String::from_utf8_lossy(addr).into_owned()),
                    ..Filter::default()
                },
                skip_me: false,
                old_form: true,
            });
        }
        let mut kill = Kill {
            filter: Filter::default(),
            skip_me: true,
            old_form: false,
        };
        let f = &mut kill.filter;
        for pair in args.chunks(2) {
            let [opt, value] = pair else {
                return Err(syntax());
            };
            let text = || String::from_utf8_lossy(value).into_owned();
            match &opt.to_ascii_lowercase()[..] {
                b"id" => match parse_i64(value) {
                    Some(id) if id > 0 => f.ids = Some(vec![id.unsigned_abs()]),
                    _ => return Err("ERR client-id should be greater than 0".to_string()),
                },
                b"type" => f.kind = Some(ClientType::parse(value)?),
                b"addr" => f.addr = Some(text()),
                b"laddr" => f.laddr = Some(text()),
                b"user" if known_user(&text()) => f.user = Some(text()),
                b"user" => return Err(format!("ERR No such user '{}'", text())),
                b"skipme" if value.eq_ignore_ascii_case(b"yes") => kill.skip_me = true,
                b"skipme" if value.eq_ignore_ascii_case(b"no") => kill.skip_me = false,
                b"maxage" => match parse_i64(value) {
                    Some(age) if age > 0 => f.max_age = Some(age.unsigned_abs()),
                    Some(_) => return Err("ERR maxage should be greater than 0".to_string()),
                    None => return Err("ERR value is not an integer or out of range".to_string()),
                },
                _ => return Err(syntax()),
            }
        }
        Ok(kill)
    }
}

/// `CLIENT LIST [TYPE type | ID id ...]` (Redis 7.0 takes one of the two): the filter, or Redis's
/// error.
///
/// # Errors
/// Redis's words for a bad type, id or option.
pub fn list_filter<'a>(mut args: impl Iterator<Item = &'a [u8]>) -> Result<Filter, String> {
    let syntax = || "ERR syntax error".to_string();
    let Some(opt) = args.next() else {
        return Ok(Filter::default());
    };
    let rest: Vec<&[u8]> = args.collect();
    if opt.eq_ignore_ascii_case(b"type") && rest.len() == 1 {
        let kind = ClientType::parse(rest.first().copied().unwrap_or_default())?;
        return Ok(Filter {
            kind: Some(kind),
            ..Filter::default()
        });
    }
    if opt.eq_ignore_ascii_case(b"id") && !rest.is_empty() {
        let mut ids = Vec::with_capacity(rest.len().min(64));
        for a in rest {
            match parse_i64(a) {
                // Ids are positive: 0 or a negative one matches nobody.
                Some(n) => ids.push(u64::try_from(n).unwrap_or(0)),
                None => return Err("ERR Invalid client ID".to_string()),
            }
        }
        return Ok(Filter {
            ids: Some(ids),
            ..Filter::default()
        });
    }
    Err(syntax())
}

/// An integer argument as Redis reads one.
pub fn parse_i64(a: &[u8]) -> Option<i64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<&[u8]> {
        s.split_whitespace().map(str::as_bytes).collect()
    }

    #[test]
    fn lines_are_redis_7_0_lines() {
        let clients = Clients::new(CancellationToken::new());
        let e = clients.register(7);
        {
            let mut s = e.state();
            s.peer = Some("127.0.0.1:5000".parse().unwrap());
            s.local = Some("127.0.0.1:6379".parse().unwrap());
            s.name = Some(Bytes::from_static(b"w1"));
            s.cmd = "client|list".into();
            s.multi = Some(2);
        }
        let text = clients.list(&Filter::default());
        assert_eq!(
            text,
            "id=7 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=0 name=w1 age=0 idle=0 flags=x db=0 sub=0 psub=0 ssub=0 multi=2 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|list user=default redir=-1 resp=2\n"
        );
        e.state().subscribed = Some([1, 0, 0]);
        let pubsub = list_filter(args("TYPE pubsub").into_iter()).unwrap();
        assert_eq!(clients.matching(&pubsub).len(), 1);
        let normal = list_filter(args("type NORMAL").into_iter()).unwrap();
        assert!(clients.matching(&normal).is_empty());
        clients.remove(7);
        assert!(clients.is_empty());
    }

    #[test]
    fn list_filters_are_parsed_as_redis_does() {
        let err = |s: &str| list_filter(args(s).into_iter()).unwrap_err();
        assert_eq!(err("type foo"), "ERR Unknown client type 'foo'");
        assert_eq!(err("id abc"), "ERR Invalid client ID");
        assert_eq!(err("id"), "ERR syntax error");
        assert_eq!(err("foo"), "ERR syntax error");
        assert_eq!(err("type normal id 1"), "ERR syntax error");
        let f = list_filter(args("ID 3 -1 0").into_iter()).unwrap();
        assert_eq!(f.ids, Some(vec![3, 0, 0]));
    }

    #[test]
    fn kill_arguments_are_parsed_as_redis_does() {
        let parse = |s: &str| Kill::parse(&args(s), |u| u == "default");
        let err = |s: &str| parse(s).unwrap_err();
        assert_eq!(err("id 0"), "ERR client-id should be greater than 0");
        assert_eq!(err("id x"), "ERR client-id should be greater than 0");
        assert_eq!(err("foo bar"), "ERR syntax error");
        assert_eq!(err("id 1 type"), "ERR syntax error");
        assert_eq!(err("skipme maybe"), "ERR syntax error");
        assert_eq!(err("type foo"), "ERR Unknown client type 'foo'");
        assert_eq!(err("user nobody"), "ERR No such user 'nobody'");
        assert_eq!(err("maxage 0"), "ERR maxage should be greater than 0");
        let old = parse("1.2.3.4:5").unwrap();
        assert!(old.old_form && !old.skip_me);
        assert_eq!(old.filter.addr.as_deref(), Some("1.2.3.4:5"));
        let new = parse("ID 4 SKIPME no USER default").unwrap();
        assert!(!new.old_form && !new.skip_me);
        assert_eq!(new.filter.ids, Some(vec![4]));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_combine_as_in_redis() {
        let clients = Clients::new(CancellationToken::new());
        let rx = clients.pauses();
        let now = tokio::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        clients.pause(true, now + ms(100));
        clients.pause(false, now + ms(50));
        let p = rx.borrow().unwrap();
        assert!(p.all && p.until == now + ms(100));
        assert!(p.holds(false));
        tokio::time::advance(ms(100)).await;
        assert!(!p.holds(true), "over");
        clients.pause(false, tokio::time::Instant::now() + ms(10));
        assert!(!rx.borrow().unwrap().all, "an expired pause does not count");
        clients.unpause();
        assert!(rx.borrow().is_none());
    }

    #[test]
    fn a_killed_client_leaves_the_registry_and_its_token_is_cancelled() {
        let clients = Clients::new(CancellationToken::new());
        let (a, b) = (clients.register(1), clients.register(2));
        let all = Kill::parse(&args("TYPE normal"), |_| true).unwrap();
        assert_eq!(clients.kill(&all, 1), (1, false));
        assert!(b.killed().is_cancelled() && !a.killed().is_cancelled());
        assert_eq!(clients.len(), 1);
        let me = Kill::parse(&args("ID 1 SKIPME no"), |_| true).unwrap();
        assert_eq!(clients.kill(&me, 1), (1, true));
    }
}
