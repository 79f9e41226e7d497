//! Origin health: active probes and passive ejection with rise / fall thresholds.
//!
//! Passive failures (connect errors, timeouts, configured 5xx) count toward `fall` like failed
//! probes. A fallen origin is skipped until `rise` probes succeed; without active checks it is
//! tried again after a cool-down, and one good answer brings it back.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct State {
    up: bool,
    fails: u32,
    oks: u32,
    down_since: Option<Instant>,
    /// Without active checks: a cool-down trial is in flight.
    trial: bool,
}

#[derive(Debug)]
pub struct Health {
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
    pub fn new(name: &str, rise: u32, fall: u32, active: bool, cooldown: Duration) -> Health {
        crate::metrics::origin_up(name, true);
        Health {
            name: name.to_owned(),
            state: Mutex::new(State {
                up: true,
                fails: 0,
                oks: 0,
                down_since: None,
                trial: false,
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

    /// Whether requests may go to this origin now.
    pub fn is_available(&self) -> bool {
        let mut st = self.lock();
        if st.up {
            return true;
        }
        if self.active {
            return false;
        }
        // Passive only: after the cool-down let one request through as a trial.
        match st.down_since {
            Some(t) if t.elapsed() >= self.cooldown && !st.trial => {
                st.trial = true;
                true
            }
            _ => false,
        }
    }

    pub fn is_up(&self) -> bool {
        self.lock().up
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
        st.trial = false;
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
            if st.trial {
                st.trial = false;
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
                crate::metrics::origin_up(&self.name, true);
            }
            Transition::Down => crate::metrics::origin_up(&self.name, false),
            Transition::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn active_rise_and_fall() {
        let h = Health::new("t-active", 2, 3, true, Duration::from_secs(10));
        assert_eq!(h.failure("x"), Transition::None);
        assert_eq!(h.failure("x"), Transition::None);
        assert_eq!(h.failure("x"), Transition::Down);
        assert!(!h.is_available());
        assert_eq!(
            h.success(false),
            Transition::None,
            "requests do not re-admit"
        );
        assert_eq!(h.success(true), Transition::None);
        assert_eq!(h.success(true), Transition::Up);
        assert!(h.is_available());
    }

    #[tokio::test(start_paused = true)]
    async fn passive_cooldown_trial() {
        let h = Health::new("t-passive", 2, 1, false, Duration::from_secs(10));
        assert_eq!(h.failure("x"), Transition::Down);
        assert!(!h.is_available());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(h.is_available(), "one trial after the cool-down");
        assert!(!h.is_available(), "only one trial at a time");
        assert_eq!(h.failure("x"), Transition::None);
        assert!(!h.is_available(), "failed trial restarts the cool-down");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(h.is_available());
        assert_eq!(h.success(false), Transition::Up);
    }
}
