//! A circuit breaker per service endpoint: after `breaker_threshold` consecutive failures the
//! endpoint fails fast for `breaker_cooldown`, then lets one probe through; a probe that never
//! reports (its caller was dropped) counts as lost after the request timeout, so a circuit
//! can never stay open for good.

use std::time::{Duration, Instant};

use super::OpenStack;
use crate::error::Service;

/// Consecutive failures of one endpoint, and whether its circuit is open.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// When the one request let through an open circuit (the probe) was sent.
    probe_sent: Option<Instant>,
}

impl Breaker {
    /// Whether a request may go now. An open circuit lets one probe through after its
    /// cooldown; a probe that never reports (its caller was dropped mid-request) counts as
    /// lost after `probe_timeout`, and another is let through, so the circuit cannot stay
    /// open for good.
    fn allows(&mut self, now: Instant, probe_timeout: Duration) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if self.probe_sent.is_some_and(|sent| now < sent + probe_timeout) => false,
            Some(_) => {
                self.probe_sent = Some(now);
                true
            }
        }
    }

    /// Takes an outcome; returns whether the circuit opened (`Some(true)`) or closed
    /// (`Some(false)`) because of it.
    fn record(&mut self, healthy: bool, now: Instant, threshold: u32, cooldown: Duration) -> Option<bool> {
        if healthy {
            let was_open = self.open_until.is_some();
            *self = Self::default();
            return was_open.then_some(false);
        }
        self.failures += 1;
        let probing = self.probe_sent.is_some();
        if !probing && self.failures < threshold {
            return None;
        }
        let opened = self.open_until.is_none() || probing;
        self.open_until = Some(now + cooldown);
        self.probe_sent = None;
        opened.then_some(true)
    }
}

impl OpenStack {
    /// Whether the endpoint's circuit lets a request through now.
    pub(super) fn breaker_allows(&self, key: &str) -> bool {
        let limits = &self.inner.config.limits;
        let mut breakers = self.inner.breakers.lock().expect("breaker lock");
        let breaker = breakers.entry(key.to_owned()).or_default();
        breaker.allows(Instant::now(), limits.request_timeout)
    }

    pub(super) fn breaker_record(&self, key: &str, healthy: bool) {
        let limits = &self.inner.config.limits;
        let mut breakers = self.inner.breakers.lock().expect("breaker lock");
        let breaker = breakers.entry(key.to_owned()).or_default();
        match breaker.record(
            healthy,
            Instant::now(),
            limits.breaker_threshold,
            limits.breaker_cooldown,
        ) {
            Some(true) => {
                tracing::warn!(endpoint = key, failures = breaker.failures, "circuit opened");
                metrics::gauge!("openstack_circuit_open", "endpoint" => key.to_owned()).set(1.0);
            }
            Some(false) => {
                tracing::info!(endpoint = key, "circuit closed");
                metrics::gauge!("openstack_circuit_open", "endpoint" => key.to_owned()).set(0.0);
            }
            None => {}
        }
    }
}

/// Breakers are per service endpoint: scheme, host, port and service.
pub(super) fn endpoint_key(url: &str, service: Service) -> String {
    let parsed = url::Url::parse(url).ok();
    let origin = parsed.map(|url| url.origin().ascii_serialization()).unwrap_or_default();
    format!("{service}@{origin}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);
    const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

    fn opened(now: Instant) -> Breaker {
        let mut breaker = Breaker::default();
        for _ in 0..4 {
            assert_eq!(breaker.record(false, now, 5, COOLDOWN), None);
        }
        assert_eq!(breaker.record(false, now, 5, COOLDOWN), Some(true));
        breaker
    }

    #[test]
    fn a_circuit_opens_after_the_threshold_and_lets_one_probe_through_after_the_cooldown() {
        let now = Instant::now();
        let mut breaker = opened(now);
        assert!(!breaker.allows(now + Duration::from_secs(1), PROBE_TIMEOUT));
        let later = now + COOLDOWN;
        assert!(breaker.allows(later, PROBE_TIMEOUT), "the probe");
        assert!(!breaker.allows(later, PROBE_TIMEOUT), "only one");
        assert_eq!(
            breaker.record(true, later, 5, COOLDOWN),
            Some(false),
            "a healthy probe closes it"
        );
        assert!(breaker.allows(later, PROBE_TIMEOUT));
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let now = Instant::now();
        let mut breaker = opened(now);
        let later = now + COOLDOWN;
        assert!(breaker.allows(later, PROBE_TIMEOUT));
        assert_eq!(breaker.record(false, later, 5, COOLDOWN), Some(true));
        assert!(!breaker.allows(later + Duration::from_secs(1), PROBE_TIMEOUT));
        assert!(breaker.allows(later + COOLDOWN, PROBE_TIMEOUT), "the next probe");
    }

    #[test]
    fn a_probe_that_never_reports_does_not_keep_the_circuit_open_for_good() {
        let now = Instant::now();
        let mut breaker = opened(now);
        let probe = now + COOLDOWN;
        assert!(breaker.allows(probe, PROBE_TIMEOUT));
        // Its caller was dropped: no record ever comes.
        assert!(!breaker.allows(probe + Duration::from_secs(30), PROBE_TIMEOUT));
        assert!(
            breaker.allows(probe + PROBE_TIMEOUT, PROBE_TIMEOUT),
            "after the request timeout the probe counts as lost"
        );
    }
}
