//! Test hosts in network namespaces, and partitions between them.
//!
//! A [`Net`] is a hub namespace that routes between hosts: each host is a namespace of its own
//! with one veth to the hub (`10.P.k.2`, the hub `10.P.k.1`), and the test process itself is a
//! host too ([`Net::me`], `10.P.0.2`, in the root namespace), so an in-process proxy and the
//! test's clients sit on a side of a partition like any server. [`Net::cut`] makes the hub drop
//! every packet between two groups of hosts (`ip rule ... blackhole`): both ends see silence, as
//! across a failed link, not a refused connection. Needs root (tests and CI run as root); the
//! namespaces, links and rules are removed on drop.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Where a server process runs: a network namespace (`None`: the test's own) and the address it
/// binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The namespace, for `ip netns exec`.
    pub netns: Option<String>,
    /// Its address.
    pub ip: String,
    /// The /24 its address is in (what a cut names).
    subnet: String,
}

impl Host {
    /// The test process on loopback: where every other test runs its servers.
    pub fn loopback() -> Host {
        Host {
            netns: None,
            ip: "127.0.0.1".to_owned(),
            subnet: "127.0.0.0/8".to_owned(),
        }
    }
}

/// Partitions of one test; the second octet of its addresses tells them apart.
static NEXT_NET: AtomicU8 = AtomicU8::new(0);

/// A hub and its hosts.
#[derive(Debug)]
pub struct Net {
    prefix: u8,
    hub: String,
    namespaces: Mutex<Vec<String>>,
    /// The root namespace's end of its veth to the hub.
    root_link: String,
    next_host: AtomicU8,
    rules: Mutex<Vec<String>>,
}

/// Runs `ip args...` (in namespace `ns` when given); panics with its output if it fails.
fn ip(ns: Option<&str>, args: &[&str]) {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["netns", "exec", ns, "ip"]);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} in {ns:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Best-effort cleanup (what a crashed earlier run may have left).
fn quietly(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Net {
    /// A hub namespace, and the test process's link to it.
    ///
    /// # Panics
    /// When namespaces cannot be made (not root, no iproute2).
    pub fn new() -> Net {
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed) % 50;
        let prefix = 200 + n;
        let tag = format!("hrs{prefix}");
        let hub = format!("{tag}hub");
        let root_link = format!("{tag}r");
        quietly(&["link", "del", &root_link]);
        quietly(&["netns", "del", &hub]);
        ip(None, &["netns", "add", &hub]);
        let net = Net {
            prefix,
            hub: hub.clone(),
            namespaces: Mutex::new(vec![hub.clone()]),
            root_link: root_link.clone(),
            next_host: AtomicU8::new(1),
            rules: Mutex::new(Vec::new()),
        };
        ip(Some(&hub), &["link", "set", "lo", "up"]);
        let forward = Command::new("ip")
            .args(["netns", "exec", &hub, "sh", "-c"])
            .arg("echo 1 > /proc/sys/net/ipv4/ip_forward")
            .status()
            .expect("run sh");
        assert!(forward.success(), "enable forwarding in {hub}");
        let hub_end = format!("{tag}v0");
        ip(
            None,
            &[
                "link", "add", &root_link, "type", "veth", "peer", "name", &hub_end,
            ],
        );
        ip(None, &["link", "set", &hub_end, "netns", &hub]);
        let (me, gw, all) = (
            format!("10.{prefix}.0.2/24"),
            format!("10.{prefix}.0.1"),
            format!("10.{prefix}.0.0/16"),
        );
        ip(
            Some(&hub),
            &["addr", "add", &format!("{gw}/24"), "dev", &hub_end],
        );
        ip(Some(&hub), &["link", "set", &hub_end, "up"]);
        ip(None, &["addr", "add", &me, "dev", &root_link]);
        ip(None, &["link", "set", &root_link, "up"]);
        ip(None, &["route", "add", &all, "via", &gw]);
        net
    }

    /// The test process, as a host of this net.
    pub fn me(&self) -> Host {
        let p = self.prefix;
        Host {
            netns: None,
            ip: format!("10.{p}.0.2"),
            subnet: format!("10.{p}.0.0/24"),
        }
    }

    /// A new host: a namespace linked to the hub.
    pub fn host(&self) -> Host {
        let k = self.next_host.fetch_add(1, Ordering::Relaxed);
        let p = self.prefix;
        let ns = format!("hrs{p}h{k}");
        quietly(&["netns", "del", &ns]);
        ip(None, &["netns", "add", &ns]);
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ns.clone());
        let (hub_end, host_end) = (format!("hrs{p}v{k}"), format!("hrs{p}e{k}"));
        ip(
            None,
            &[
                "link", "add", &hub_end, "type", "veth", "peer", "name", &host_end,
            ],
        );
        ip(None, &["link", "set", &hub_end, "netns", &self.hub]);
        ip(None, &["link", "set", &host_end, "netns", &ns]);
        let (addr, gw) = (format!("10.{p}.{k}.2"), format!("10.{p}.{k}.1"));
        ip(
            Some(&self.hub),
            &["addr", "add", &format!("{gw}/24"), "dev", &hub_end],
        );
        ip(Some(&self.hub), &["link", "set", &hub_end, "up"]);
        ip(Some(&ns), &["link", "set", "lo", "up"]);
        ip(
            Some(&ns),
            &["addr", "add", &format!("{addr}/24"), "dev", &host_end],
        );
        ip(Some(&ns), &["link", "set", &host_end, "up"]);
        ip(Some(&ns), &["route", "add", "default", "via", &gw]);
        Host {
            netns: Some(ns),
            ip: addr,
            subnet: format!("10.{p}.{k}.0/24"),
        }
    }

    /// From now on the hub drops every packet between a host of `a` and one of `b`, both ways.
    pub fn cut(&self, a: &[&Host], b: &[&Host]) {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for x in a {
            for y in b {
                for (from, to) in [(&x.subnet, &y.subnet), (&y.subnet, &x.subnet)] {
                    let rule = format!("from {from} to {to} blackhole priority 100");
                    let args: Vec<&str> = std::iter::once("rule")
                        .chain(std::iter::once("add"))
                        .chain(rule.split(' '))
                        .collect();
                    ip(Some(&self.hub), &args);
                    rules.push(rule);
                }
            }
        }
    }

    /// Every cut is mended.
    pub fn heal(&self) {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for rule in rules.drain(..) {
            let args: Vec<&str> = std::iter::once("rule")
                .chain(std::iter::once("del"))
                .chain(rule.split(' '))
                .collect();
            ip(Some(&self.hub), &args);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        quietly(&["link", "del", &self.root_link]);
        let namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        for ns in namespaces.iter() {
            quietly(&["netns", "del", ns]);
        }
    }
}
