//! Admission control: a bound on requests in flight, with a share reserved for
//! administration and critical traffic, and hysteresis so that a node at its limit
//! sheds decisively instead of flapping.
//!
//! Decisions may use `max_in_flight × (1 − reserved_share)` slots. When they reach
//! that, the node starts shedding: every new decision gets `429` with `Retry-After`
//! until the requests in flight drop below `resume_at` (75 % by default) of the
//! decision limit. Administration, audit, health and metrics requests, and decision
//! requests sent with `x-dynscale-priority: critical`, may use every slot, so an
//! operator can always reach a node that is shedding decisions.
//!
//! Each answer also feeds the request-time histogram and the in-flight gauges.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::metrics::{Class, Metrics};

/// The header that marks a decision request as critical.
pub const PRIORITY_HEADER: &str = "x-dynscale-priority";

/// Settings of admission control (`[admission]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSettings {
    /// The most requests served at once, of every class.
    pub max_in_flight: usize,
    /// The share of `max_in_flight` that only admin and critical requests may use.
    pub reserved_share: f64,
    /// Shedding stops once requests in flight drop below this share of the decision
    /// limit.
    pub resume_at: f64,
    /// The `Retry-After` of a shed request, in seconds.
    pub retry_after_secs: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            reserved_share: 0.1,
            resume_at: 0.75,
            retry_after_secs: 1,
        }
    }
}

/// Why admission settings are unusable; names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmissionError {
    #[error("[admission] max_in_flight must be at least 2, got {0}")]
    TooSmall(usize),
    #[error("[admission] reserved_share must be in [0, 1), got {0}")]
    ReservedShare(f64),
    #[error("[admission] resume_at must be in (0, 1], got {0}")]
    ResumeAt(f64),
}

/// The live admission state of a node.
#[derive(Debug)]
pub struct Admission {
    total_limit: usize,
    decision_limit: usize,
    resume_below: usize,
    retry_after_secs: u64,
    in_flight: AtomicUsize,
    shedding: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// Admission under `settings`, reporting to `metrics`.
    pub fn new(
        settings: &AdmissionSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AdmissionError> {
        let s = settings;
        if s.max_in_flight < 2 {
            return Err(AdmissionError::TooSmall(s.max_in_flight));
        }
        if !(0.0..1.0).contains(&s.reserved_share) {
            return Err(AdmissionError::ReservedShare(s.reserved_share));
        }
        if !(s.resume_at > 0.0 && s.resume_at <= 1.0) {
            return Err(AdmissionError::ResumeAt(s.resume_at));
        }
        // Float to integer: the settings are checked above, so these are in range.
        let decision_limit =
            ((s.max_in_flight as f64 * (1.0 - s.reserved_share)).floor() as usize).max(1);
        let resume_below = ((decision_limit as f64 * s.resume_at).ceil() as usize).max(1);
        Ok(Admission {
            total_limit: s.max_in_flight,
            decision_limit,
            resume_below,
            retry_after_secs: s.retry_after_secs,
            in_flight: AtomicUsize::new(0),
            shedding: AtomicBool::new(false),
            metrics,
        })
    }

    /// Requests in flight now, of every class.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The most requests of every class served at once.
    pub fn limit(&self) -> usize {
        self.total_limit
    }

    /// Whether decisions are being shed.
    pub fn shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// Takes a slot for a request of `class`, or says why not.
    fn enter(self: &Arc<Self>, class: Class) -> Result<Slot, ApiError> {
        let limit = match class {
            Class::Decision => self.decision_limit,
            Class::Admin => self.total_limit,
        };
        if class == Class::Decision && self.shedding.load(Ordering::Acquire) {
            if self.in_flight.load(Ordering::Acquire) < self.resume_below {
                self.shedding.store(false, Ordering::Release);
                tracing::info!(
                    in_flight = self.in_flight(),
                    "admission resumed below the hysteresis mark"
                );
            } else {
                return Err(self.refuse(class, limit));
            }
        }
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            if class == Class::Decision && !self.shedding.swap(true, Ordering::AcqRel) {
                tracing::warn!(limit, "admission limit reached; shedding decisions");
            }
            return Err(self.refuse(class, limit));
        }
        let gauge = self.metrics.in_flight(class);
        gauge.inc();
        Ok(Slot {
            admission: Arc::clone(self),
            gauge,
        })
    }

    fn refuse(&self, class: Class, limit: usize) -> ApiError {
        self.metrics.rejected(class);
        ApiError::Overloaded {
            limit,
            retry_after_secs: self.retry_after_secs,
        }
    }
}

/// One admitted request's slot, given back when the request is answered or dropped.
#[derive(Debug)]
struct Slot {
    admission: Arc<Admission>,
    gauge: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
        self.admission.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The class of a request, from its path and priority header.
fn class_of(req: &Request) -> Class {
    let path = req.uri().path();
    let decision = path.starts_with("/access/v1/evaluation") || path.starts_with("/v1/decide");
    let critical = req
        .headers()
        .get(PRIORITY_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"critical"));
    if decision && !critical {
        Class::Decision
    } else {
        Class::Admin
    }
}

/// The middleware: admit or refuse, then time the request.
pub async fn admit(State(admission): State<Arc<Admission>>, req: Request, next: Next) -> Response {
    let class = class_of(&req);
    let slot = match admission.enter(class) {
        Ok(slot) => slot,
        Err(e) => return e.into_response(),
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    admission
        .metrics
        .request_done(class, start.elapsed().as_secs_f64());
    drop(slot);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize) -> Arc<Admission> {
        let settings = AdmissionSettings {
            max_in_flight: max,
            reserved_share: 0.2,
            resume_at: 0.75,
            retry_after_secs: 2,
        };
        Arc::new(Admission::new(&settings, Arc::new(Metrics::new())).expect("valid settings"))
    }

    #[test]
    fn sheds_at_the_limit_and_resumes_only_below_three_quarters() {
        let a = admission(10); // decisions: 8 slots; resume below 6.
        let mut held: Vec<Slot> = (0..8)
            .map(|_| a.enter(Class::Decision).expect("under the limit"))
            .collect();
        let refused = a.enter(Class::Decision).expect_err("at the limit");
        assert!(matches!(
            refused,
            ApiError::Overloaded {
                limit: 8,
                retry_after_secs: 2
            }
        ));
        assert!(a.shedding());
        // Admin traffic still gets the reserved slots, and no more.
        let admin: Vec<Slot> = (0..2)
            .map(|_| a.enter(Class::Admin).expect("reserved share"))
            .collect();
        assert!(a.enter(Class::Admin).is_err());
        drop(admin);
        // 7 and 6 in flight: still shedding (hysteresis), although under the limit.
        held.pop();
        assert!(a.enter(Class::Decision).is_err());
        held.pop();
        assert!(a.enter(Class::Decision).is_err());
        // 5 in flight: below 6, admission resumes.
        held.pop();
        let again = a.enter(Class::Decision).expect("resumed");
        assert!(!a.shedding());
        assert_eq!(a.in_flight(), 6);
        drop(again);
        drop(held);
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let m = Arc::new(Metrics::new());
        let bad = |s: AdmissionSettings| Admission::new(&s, Arc::clone(&m)).expect_err("bad");
        let d = AdmissionSettings::default();
        assert!(
            bad(AdmissionSettings {
                reserved_share: 1.0,
                ..d.clone()
            })
            .to_string()
            .contains("reserved_share")
        );
        assert!(
            bad(AdmissionSettings {
                resume_at: 0.0,
                ..d.clone()
            })
            .to_string()
            .contains("resume_at")
        );
        assert!(
            bad(AdmissionSettings {
                max_in_flight: 1,
                ..d
            })
            .to_string()
            .contains("max_in_flight")
        );
    }
}
