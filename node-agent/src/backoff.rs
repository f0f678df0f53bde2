//! Crash back-off, as kubelet does it: the first restart of a failed container is
//! immediate; each later one waits a delay that starts at `initial` and doubles up to `max`,
//! counted from when the container last ended. A container that ran for `reset_after`
//! (10 minutes) before it ended starts again from `initial`. Pure: the caller passes the
//! times in.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

/// Back-off delays of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// The back-off state of every (pod, container) on the node, keyed by the caller.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    policy: BackoffPolicy,
    delays: HashMap<String, Duration>,
}

/// Why a restart has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub delay: Duration,
    pub until: Timestamp,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            delays: HashMap::new(),
        }
    }

    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }

    /// May `key`, which ended at `finished` after running `ran_for`, restart at `now`?
    pub fn check(
        &self,
        key: &str,
        finished: Timestamp,
        ran_for: Duration,
        now: Timestamp,
    ) -> Result<(), Wait> {
        if ran_for >= self.policy.reset_after {
            return Ok(());
        }
        let Some(&delay) = self.delays.get(key) else {
            return Ok(());
        };
        let until = finished.checked_add(delay).unwrap_or(Timestamp::MAX);
        if now < until {
            Err(Wait { delay, until })
        } else {
            Ok(())
        }
    }

    /// `key` is being restarted: the next restart waits longer.
    pub fn restarted(&mut self, key: &str, ran_for: Duration) {
        let next = match self.delays.get(key) {
            Some(d) if ran_for < self.policy.reset_after => (*d * 2).min(self.policy.max),
            _ => self.policy.initial.min(self.policy.max),
        };
        self.delays.insert(key.to_string(), next);
    }

    /// Forget every key that starts with `prefix` (a pod that is gone).
    pub fn forget_prefix(&mut self, prefix: &str) {
        self.delays.retain(|k, _| !k.starts_with(prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn first_restart_is_immediate_then_doubles_to_the_cap() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(40),
            reset_after: Duration::from_secs(600),
        });
        let ran = Duration::from_secs(1);
        assert_eq!(b.check("c", t(0), ran, t(0)), Ok(()));
        b.restarted("c", ran);
        let mut expected = Vec::new();
        for _ in 0..4 {
            let w = b.check("c", t(100), ran, t(100)).unwrap_err();
            expected.push(w.delay.as_secs());
            assert_eq!(w.until, t(100 + w.delay.as_secs() as i64));
            assert_eq!(
                b.check("c", t(100), ran, t(100 + w.delay.as_secs() as i64)),
                Ok(())
            );
            b.restarted("c", ran);
        }
        assert_eq!(expected, [10, 20, 40, 40]);
    }

    #[test]
    fn a_long_run_resets_the_delay() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        });
        for _ in 0..5 {
            b.restarted("c", Duration::from_secs(1));
        }
        let long = Duration::from_secs(601);
        assert_eq!(b.check("c", t(0), long, t(0)), Ok(()));
        b.restarted("c", long);
        assert_eq!(
            b.check("c", t(0), Duration::from_secs(1), t(0))
                .unwrap_err()
                .delay,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn forgetting_a_pod_forgets_its_containers_only() {
        let mut b = Backoff::new(BackoffPolicy::default());
        b.restarted("uid1/a", Duration::ZERO);
        b.restarted("uid2/a", Duration::ZERO);
        b.forget_prefix("uid1/");
        assert!(b.check("uid1/a", t(0), Duration::ZERO, t(0)).is_ok());
        assert!(b.check("uid2/a", t(0), Duration::ZERO, t(0)).is_err());
    }
}
