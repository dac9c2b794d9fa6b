//! Process-wide registry of free loopback ports (sozu `port_registry`).
//!
//! Every port handed out was bindable on 127.0.0.1 when it was handed out and is never handed out twice in
//! this process, so tests running on parallel threads never share a port. The scan starts at an offset
//! derived from the pid so that parallel test binaries mostly walk disjoint ranges.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::{Mutex, OnceLock};

/// First port of the range we hand out. Below it sit the lab (6391-6393), the lab's cluster (6401-6406,
/// bus 16401-16406) and the HAProxy/twemproxy comparison ports (16379-16381, 18404).
const RANGE_START: u16 = 20_000;
/// One past the last port we hand out; Linux picks ephemeral ports from 32768 upwards, and a port we
/// checked could be taken by an outgoing connection before the server binds it.
const RANGE_END: u16 = 32_000;
/// The lab's sentinels listen on 26391-26393 and people run sentinels on 26379: keep away from them.
const RESERVED: std::ops::Range<u16> = 26_300..26_500;

struct Registry {
    next: u16,
    handed_out: HashSet<u16>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let span = u32::from(RANGE_END - RANGE_START);
        // Spread by pid: 997 is prime, so consecutive pids land far apart.
        let offset = (std::process::id().wrapping_mul(997) % span) as u16;
        Mutex::new(Registry {
            next: RANGE_START + offset,
            handed_out: HashSet::new(),
        })
    })
}

/// Returns a loopback port that is free right now and that this process has not handed out before.
///
/// # Panics
/// When the whole range is exhausted, which means a test leaks far too many servers.
pub fn free_port() -> u16 {
    // Poisoning only means another test panicked while holding the lock; the set is still consistent.
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    for _ in RANGE_START..RANGE_END {
        let port = reg.next;
        reg.next = if port + 1 >= RANGE_END {
            RANGE_START
        } else {
            port + 1
        };
        if RESERVED.contains(&port) || reg.handed_out.contains(&port) {
            continue;
        }
        if is_free(port) {
            reg.handed_out.insert(port);
            return port;
        }
    }
    panic!("no free loopback port left in {RANGE_START}..{RANGE_END}");
}

/// True when a listener can bind 127.0.0.1:`port` right now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}
