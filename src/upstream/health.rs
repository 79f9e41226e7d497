//! Origin health: active probes and passive ejection with rise / fall thresholds.
//!
//! Passive failures (connect failures, a new connection closed on us, and the statuses an
//! operator opts into) count toward `fall` like failed probes. A fallen origin is skipped until
//! `rise` probes succeed; without active checks it is tried again after a cool-down, and one good
//! answer brings it back. A trial whose request ends without a verdict (cancelled, or failed for
//! a reason that says nothing about the origin) is handed back, so it cannot keep the origin out
//! for good.
//!
//! Out is never "nothing to try": when every origin is out, passive verdicts are set aside (all
//! are tried in ring order, as Envoy's panic mode does), and origins that probes declared down
//! still get one trial request per [`ALL_DOWN_TRIAL_INTERVAL`] — a health-check path that breaks
//! on its own cannot take the whole service off the air.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Side;

/// With active checks and every origin down: how often one request per origin goes through.
pub const ALL_DOWN_TRIAL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    up: bool,
    fails: u32,
    oks: u32,
    down_since: Option<Instant>,
    /// Without active checks: the number of the cool-down trial in flight.
    trial: Option<u64>,
    trials: u64,
    /// With active checks: when the last all-down trial request went out.
    last_all_down_trial: Option<Instant>,
}

#[derive(Debug)]
pub struct Health {
    side: Side,
    name: String,
    state: Mutex<State>,
    rise: u32,
    fall: u32,
    active: bool,
    cooldown: Duration,
}

/// A health state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Up,
    Down,
}

impl Health {
    pub fn new(
        side: Side,
        name: &str,
        rise: u32,
        fall: u32,
        active: bool,
        cooldown: Duration,
    ) -> Health {
        crate::metrics::origin_up(side, name, true);
        Health {
            side,
            name: name.to_owned(),
            state: Mutex::new(State {
                up: true,
                fails: 0,
                oks: 0,
                down_since: None,
                trial: None,
                trials: 0,
                last_all_down_trial: None,
            }),
            rise: rise.max(1),
            fall: fall.max(1),
            active,
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go to this origin now: `None` to skip it. Keep the answer until
    /// the request has ended: when it is the cool-down trial, dropping it without a verdict
    /// (`success` / `failure`) hands the trial back.
    pub fn admit(&self) -> Option<Admitted<'_>> {
        let mut st = self.lock();
        if st.up {
            return Some(Admitted {
                health: self,
                trial: None,
            });
        }
        if self.active {
            return None;
        }
        // Passive only: after the cool-down let one request through as a trial.
        match st.down_since {
            Some(t) if t.elapsed() >= self.cooldown && st.trial.is_none() => {
                st.trials += 1;
                st.trial = Some(st.trials);
                Some(Admitted {
                    health: self,
                    trial: st.trial,
                })
            }
            _ => None,
        }
    }

    /// When no origin admits a request: whether this one takes it anyway. Passive ejection is
    /// set aside; an origin probes declared down takes one request per
    /// [`ALL_DOWN_TRIAL_INTERVAL`].
    pub fn admit_anyway(&self) -> bool {
        if !self.active {
            return true;
        }
        let mut st = self.lock();
        if st.up
            || st
                .last_all_down_trial
                .is_none_or(|t| t.elapsed() >= ALL_DOWN_TRIAL_INTERVAL)
        {
            st.last_all_down_trial = Some(Instant::now());
            return true;
        }
        false
    }

    /// Whether `admit_anyway` would say yes now.
    pub fn could_admit_anyway(&self) -> bool {
        !self.active || {
            let st = self.lock();
            st.up
                || st
                    .last_all_down_trial
                    .is_none_or(|t| t.elapsed() >= ALL_DOWN_TRIAL_INTERVAL)
        }
    }

    pub fn is_up(&self) -> bool {
        self.lock().up
    }

    /// Whether `admit` would let a request through now (without taking a trial).
    pub fn could_admit(&self) -> bool {
        let st = self.lock();
        st.up
            || (!self.active
                && st.trial.is_none()
                && st.down_since.is_some_and(|t| t.elapsed() >= self.cooldown))
    }

    /// A request or probe got a good answer.
    pub fn success(&self, probe: bool) -> Transition {
        let mut st = self.lock();
        st.fails = 0;
        if st.up {
            return Transition::None;
        }
        if probe {
            st.oks += 1;
            if st.oks < self.rise {
                return Transition::None;
            }
        } else if self.active {
            // With active checks only probes re-admit an origin.
            return Transition::None;
        }
        st.up = true;
        st.oks = 0;
        st.trial = None;
        st.down_since = None;
        drop(st);
        self.announce(Transition::Up);
        Transition::Up
    }

    /// A request or probe failed.
    pub fn failure(&self, reason: &str) -> Transition {
        let mut st = self.lock();
        st.oks = 0;
        if !st.up {
            if st.trial.take().is_some() {
                st.down_since = Some(Instant::now());
            }
            return Transition::None;
        }
        st.fails += 1;
        if st.fails < self.fall {
            return Transition::None;
        }
        st.up = false;
        st.fails = 0;
        st.down_since = Some(Instant::now());
        drop(st);
        tracing::warn!(origin = %self.name, reason, "origin marked down");
        self.announce(Transition::Down);
        Transition::Down
    }

    fn announce(&self, t: Transition) {
        match t {
            Transition::Up => {
                tracing::info!(origin = %self.name, "origin marked up");
                crate::metrics::origin_up(self.side, &self.name, true);
            }
            Transition::Down => crate::metrics::origin_up(self.side, &self.name, false),
            Transition::None => {}
        }
    }
}

/// A request admitted to an origin; see [`Health::admit`].
pub struct Admitted<'a> {
    health: &'a Health,
    trial: Option<u64>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.trial {
            let mut st = self.health.lock();
            // Still this trial: it ended without a verdict.
            if st.trial == Some(id) {
                st.trial = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn active_rise_and_fall() {
        let h = Health::new(
            Side::Origin,
            "t-active",
            2,
            3,
            true,
            Duration::from_secs(10),
        );
        assert_eq!(h.failure("x"), Transition::None);
        assert_eq!(h.failure("x"), Transition::None);
        assert_eq!(h.failure("x"), Transition::Down);
        assert!(h.admit().is_none());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(h.admit().is_none(), "no cool-down trial with active checks");
        assert_eq!(
            h.success(false),
            Transition::None,
            "requests do not re-admit"
        );
        assert_eq!(h.success(true), Transition::None);
        assert_eq!(h.success(true), Transition::Up);
        assert!(h.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_passive_verdicts_are_set_aside_and_active_ones_trickle() {
        let passive = Health::new(
            Side::Origin,
            "t-anyway-p",
            1,
            1,
            false,
            Duration::from_secs(60),
        );
        passive.failure("x");
        assert!(passive.admit().is_none());
        assert!(passive.could_admit_anyway() && passive.admit_anyway());
        assert!(passive.admit_anyway(), "every request, while all are out");

        let active = Health::new(
            Side::Origin,
            "t-anyway-a",
            1,
            1,
            true,
            Duration::from_secs(60),
        );
        active.failure("x");
        assert!(active.admit_anyway(), "a first trial");
        assert!(!active.could_admit_anyway());
        assert!(!active.admit_anyway(), "one per interval");
        tokio::time::advance(ALL_DOWN_TRIAL_INTERVAL).await;
        assert!(active.admit_anyway());
    }

    #[tokio::test(start_paused = true)]
    async fn passive_cooldown_trial() {
        let h = Health::new(
            Side::Origin,
            "t-passive",
            2,
            1,
            false,
            Duration::from_secs(10),
        );
        assert_eq!(h.failure("x"), Transition::Down);
        assert!(h.admit().is_none());
        tokio::time::advance(Duration::from_secs(11)).await;
        let trial = h.admit();
        assert!(trial.is_some(), "one trial after the cool-down");
        assert!(h.admit().is_none(), "only one trial at a time");
        assert_eq!(h.failure("x"), Transition::None);
        drop(trial);
        assert!(h.admit().is_none(), "failed trial restarts the cool-down");
        tokio::time::advance(Duration::from_secs(11)).await;
        let trial = h.admit();
        assert!(trial.is_some());
        assert_eq!(h.success(false), Transition::Up);
        drop(trial);
        assert!(h.is_up());
        assert!(h.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_without_verdict_is_handed_back() {
        let h = Health::new(Side::Origin, "t-lost", 2, 1, false, Duration::from_secs(10));
        assert_eq!(h.failure("x"), Transition::Down);
        tokio::time::advance(Duration::from_secs(11)).await;
        let lost = h.admit();
        assert!(lost.is_some());
        drop(lost);
        let trial = h.admit();
        assert!(
            trial.is_some(),
            "a cancelled trial does not keep the origin out"
        );

        // An old admission ending late leaves the current trial alone.
        let old = Admitted {
            health: &h,
            trial: Some(0),
        };
        drop(old);
        assert!(h.admit().is_none(), "still one trial at a time");
        drop(trial);
    }
}
