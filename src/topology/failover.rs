//! Reading a failover from Sentinel's events: which events mean the master is being replaced
//! (writes are fenced from the first of them), and which name the replica being promoted.
//!
//! Only the leading sentinel publishes `+try-failover`, `+selected-slave`, `+promoted-slave` and
//! the `+failover-state-*` events; the others see `+odown`, `-role-change` and `+switch-master`
//! (`shared/reference/sentinel-failover-timeline.md`), so every sentinel is listened to.

/// What one Sentinel event says about the master `master_addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSign {
    /// The replica being promoted, when the event names it.
    pub candidate: Option<String>,
}

/// Whether `channel`/`payload` says that the master at `master_addr` (`ip:port`) is being
/// replaced, and the candidate if it names one. `None` for events that do not.
pub fn failover_sign(channel: &str, payload: &str, master_addr: &str) -> Option<FailoverSign> {
    let words: Vec<&str> = payload.split_whitespace().collect();
    match channel {
        // `<name> <old-ip> <old-port> <new-ip> <new-port>`
        "+switch-master" => {
            let old = format!("{}:{}", words.get(1)?, words.get(2)?);
            let new = format!("{}:{}", words.get(3)?, words.get(4)?);
            (old == master_addr).then_some(FailoverSign {
                candidate: Some(new),
            })
        }
        // `master <name> <ip> <port> ...`
        "+odown"
        | "+try-failover"
        | "+elected-leader"
        | "+failover-state-select-slave"
        | "+failover-state-reconf-slaves"
        | "+failover-end" => {
            (instance_addr(&words)? == master_addr).then_some(FailoverSign { candidate: None })
        }
        // `slave <ip:port> <ip> <port> @ <name> <master-ip> <master-port>`
        "+selected-slave"
        | "+promoted-slave"
        | "+failover-state-send-slaveof-noone"
        | "+failover-state-wait-promotion" => promotion(&words, master_addr),
        // Not `-role-change ... new reported role is master`: Sentinel reports it both for the
        // promoted replica and for the old master that still calls itself master after the
        // switch, so it can name the wrong instance.
        _ => None,
    }
}

/// Whether the event says a failover of `master_addr` was given up (the master stays).
pub fn failover_aborted(channel: &str, payload: &str, master_addr: &str) -> bool {
    let words: Vec<&str> = payload.split_whitespace().collect();
    (channel.starts_with("-failover-abort") || channel == "-odown")
        && instance_addr(&words).is_some_and(|a| a == master_addr)
}

/// A replica event `slave <name> <ip> <port> @ <master-name> <mip> <mport>` about our master.
fn promotion(words: &[&str], master_addr: &str) -> Option<FailoverSign> {
    let at = words.iter().position(|w| *w == "@")?;
    let master = format!("{}:{}", words.get(at + 2)?, words.get(at + 3)?);
    if master != master_addr || words.first() != Some(&"slave") {
        return None;
    }
    let candidate = format!("{}:{}", words.get(2)?, words.get(3)?);
    Some(FailoverSign {
        candidate: Some(candidate),
    })
}

/// `<type> <name> <ip> <port> ...` as `ip:port`.
fn instance_addr(words: &[&str]) -> Option<String> {
    Some(format!("{}:{}", words.get(2)?, words.get(3)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "127.0.0.1:6380";

    #[test]
    fn the_planned_timeline_fences_from_the_first_event() {
        // From shared/reference/sentinel-failover-timeline.md (leader's view).
        let s = failover_sign("+try-failover", "master mymaster 127.0.0.1 6380", M);
        assert_eq!(s, Some(FailoverSign { candidate: None }));
        let s = failover_sign(
            "+selected-slave",
            "slave 127.0.0.1:6379 127.0.0.1 6379 @ mymaster 127.0.0.1 6380",
            M,
        );
        assert_eq!(s.unwrap().candidate.as_deref(), Some("127.0.0.1:6379"));
        let s = failover_sign(
            "+promoted-slave",
            "slave 127.0.0.1:6379 127.0.0.1 6379 @ mymaster 127.0.0.1 6380",
            M,
        );
        assert_eq!(s.unwrap().candidate.as_deref(), Some("127.0.0.1:6379"));
        let s = failover_sign(
            "+switch-master",
            "mymaster 127.0.0.1 6380 127.0.0.1 6379",
            M,
        );
        assert_eq!(s.unwrap().candidate.as_deref(), Some("127.0.0.1:6379"));
    }

    #[test]
    fn the_kill_timeline_of_a_follower_fences_on_odown_and_learns_the_candidate_from_the_switch() {
        let m = "127.0.0.1:6379";
        let s = failover_sign("+odown", "master mymaster 127.0.0.1 6379 #quorum 3/2", m);
        assert_eq!(s, Some(FailoverSign { candidate: None }));
        let s = failover_sign(
            "+switch-master",
            "mymaster 127.0.0.1 6379 127.0.0.1 6380",
            m,
        );
        assert_eq!(s.unwrap().candidate.as_deref(), Some("127.0.0.1:6380"));
    }

    #[test]
    fn events_about_other_instances_or_harmless_ones_do_not_fence() {
        // The old master, still calling itself master after the switch (seen in a test run).
        assert!(failover_sign(
            "-role-change",
            "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379 new reported role is master",
            M,
        )
        .is_none());
        assert!(failover_sign("+sdown", "master mymaster 127.0.0.1 6380", M).is_none());
        assert!(failover_sign(
            "+slave",
            "slave 127.0.0.1:6381 127.0.0.1 6381 @ mymaster 127.0.0.1 6380",
            M
        )
        .is_none());
        assert!(failover_sign("+odown", "master mymaster 10.0.0.1 6380 #quorum 2/2", M).is_none());
        assert!(failover_sign("+switch-master", "mymaster 10.0.0.1 1 10.0.0.2 2", M).is_none());
        assert!(failover_sign("+switch-master", "garbage", M).is_none());
    }

    #[test]
    fn aborts_and_recoveries_are_recognised() {
        assert!(failover_aborted(
            "-failover-abort-no-good-slave",
            "master mymaster 127.0.0.1 6380",
            M
        ));
        assert!(failover_aborted(
            "-odown",
            "master mymaster 127.0.0.1 6380",
            M
        ));
        assert!(!failover_aborted(
            "-odown",
            "master mymaster 127.0.0.1 9",
            M
        ));
    }
}
