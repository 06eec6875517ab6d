//! The open-loop engine: requests are due at a constant rate from the start of the
//! run, whatever the node's answers do; `connections` workers, each holding one
//! keep-alive HTTP/1.1 connection, take the next due request from a shared counter,
//! wait until it is due and send it. Latency is measured from when a request was
//! due, not when it went out, so a node that falls behind shows its queue in the
//! latency instead of quietly slowing the generator (coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::mix::{Fleet, Mix};
use super::record::{Answer, Outcome, Recorder};

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The node's base URL.
    pub url: Url,
    pub mix: Arc<Mix>,
    pub fleet: Fleet,
    /// Decisions per second offered.
    pub rps: f64,
    pub duration: Duration,
    /// Decisions per request; above 1 requests go to `/v1/decide/batch`.
    pub batch: usize,
    pub connections: usize,
    /// How long one request may take before it counts as an error.
    pub timeout: Duration,
    /// After the schedule ends, how long requests still due may go out; what is
    /// still unsent then counts as unsent.
    pub grace: Duration,
    /// Seeds the choice of template and agent of every request.
    pub seed: u64,
}

/// The offset from the start of the run at which request `n` is due, for a run of
/// `per_second` requests per second.
pub fn due_offset(n: u64, per_second: f64) -> Duration {
    Duration::from_secs_f64(n as f64 / per_second)
}

/// How many requests a run sends, and at what rate, given decisions per second and
/// the batch size: `(requests, requests per second)`.
pub fn schedule(rps: f64, duration: Duration, batch: usize) -> (u64, f64) {
    let per_second = rps / batch.max(1) as f64;
    let requests = (per_second * duration.as_secs_f64()).floor() as u64;
    (requests.max(1), per_second)
}

/// What the run shares between workers.
#[derive(Debug)]
pub struct Shared {
    pub recorder: Mutex<Recorder>,
    next: AtomicU64,
    sent: AtomicU64,
}

impl Shared {
    /// Reads the recorder, even if a worker panicked while holding it.
    pub fn with<T>(&self, f: impl FnOnce(&Recorder) -> T) -> T {
        f(&self.recorder.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Runs the load and returns what it measured and the elapsed time from the start
/// to the last answer. `on_start` receives the shared state, e.g. for a progress bar.
pub async fn run(
    config: &RunConfig,
    on_start: impl FnOnce(Arc<Shared>, Instant),
) -> anyhow::Result<(Recorder, Duration)> {
    let http = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(config.connections)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(config.timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("dynscale-loadgen/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let endpoint = endpoint(&config.url, config.batch)?;
    let (requests, per_second) = schedule(config.rps, config.duration, config.batch);
    let seconds = config.duration.as_secs_f64().ceil() as usize;
    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder::new(seconds)),
        next: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    });
    // Start a little ahead so every worker is waiting when the first request is due.
    let start = Instant::now() + Duration::from_millis(50);
    let deadline = start + config.duration + config.grace;
    on_start(shared.clone(), start);
    let mut workers = Vec::with_capacity(config.connections);
    for _ in 0..config.connections.max(1) {
        let worker = Worker {
            http: http.clone(),
            endpoint: endpoint.clone(),
            config: config.clone(),
            shared: shared.clone(),
            requests,
            per_second,
            start,
            deadline,
        };
        workers.push(tokio::spawn(worker.run()));
    }
    for w in workers {
        w.await?;
    }
    let elapsed = Instant::now().saturating_duration_since(start);
    let sent = shared.sent.load(Ordering::Relaxed);
    let mut recorder = std::mem::replace(
        &mut *shared
            .recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
        Recorder::new(1),
    );
    recorder.unsent = requests.saturating_sub(sent) * config.batch as u64;
    Ok((recorder, elapsed))
}

fn endpoint(base: &Url, batch: usize) -> anyhow::Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{base} cannot be used as a base URL"))?
        .pop_if_empty()
        .extend(if batch > 1 {
            &["v1", "decide", "batch"][..]
        } else {
            &["v1", "decide"][..]
        });
    Ok(url)
}

struct Worker {
    http: reqwest::Client,
    endpoint: Url,
    config: RunConfig,
    shared: Arc<Shared>,
    requests: u64,
    per_second: f64,
    start: Instant,
    deadline: Instant,
}

impl Worker {
    async fn run(self) {
        loop {
            let n = self.shared.next.fetch_add(1, Ordering::Relaxed);
            if n >= self.requests || Instant::now() >= self.deadline {
                return;
            }
            let due_in = due_offset(n, self.per_second);
            let due = self.start + due_in;
            tokio::time::sleep_until(due).await;
            let body = self.body(n);
            self.shared.sent.fetch_add(1, Ordering::Relaxed);
            let answer = self.send(body).await;
            let latency = Instant::now().saturating_duration_since(due);
            let second = due_in.as_secs() as usize;
            self.shared
                .recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(second, self.config.batch as u64, latency, &answer);
        }
    }

    fn body(&self, n: u64) -> Vec<u8> {
        let mix = &self.config.mix;
        let batch = self.config.batch as u64;
        let value = if batch > 1 {
            let requests: Vec<Value> = (0..batch)
                .map(|i| mix.request(&mix.pick(self.config.seed, n * batch + i, self.config.fleet)))
                .collect();
            serde_json::json!({ "requests": requests })
        } else {
            mix.request(&mix.pick(self.config.seed, n, self.config.fleet))
        };
        value.to_string().into_bytes()
    }

    async fn send(&self, body: Vec<u8>) -> Answer {
        let response = self
            .http
            .post(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return failed(transport_kind(&e)),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return failed(transport_kind(&e)),
        };
        if !status.is_success() {
            return failed(format!("status {}", status.as_u16()));
        }
        decode(&bytes, self.config.batch > 1)
            .unwrap_or_else(|reason| failed(format!("undecodable answer ({reason})")))
    }
}

fn failed(kind: String) -> Answer {
    Answer::Failed { kind }
}

fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

#[derive(Deserialize)]
struct One {
    outcome: String,
}

#[derive(Deserialize)]
struct Batch {
    results: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    outcome: Option<String>,
}

/// Reads the outcomes of a `/v1/decide` (or batch) answer.
pub fn decode(bytes: &[u8], batch: bool) -> Result<Answer, String> {
    if batch {
        let b: Batch = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut outcomes = Vec::with_capacity(b.results.len());
        let mut item_errors = 0;
        for item in b.results {
            match item.outcome {
                Some(o) => outcomes.push(Outcome::parse(&o)),
                None => item_errors += 1,
            }
        }
        Ok(Answer::Decided {
            outcomes,
            item_errors,
        })
    } else {
        let one: One = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Answer::Decided {
            outcomes: vec![Outcome::parse(&one.outcome)],
            item_errors: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_a_constant_rate() {
        assert_eq!(due_offset(0, 100.0), Duration::ZERO);
        assert_eq!(due_offset(250, 100.0), Duration::from_millis(2500));
        assert_eq!(
            schedule(5000.0, Duration::from_secs(60), 1),
            (300_000, 5000.0)
        );
        // A batch of 50 sends 50 decisions per request.
        assert_eq!(schedule(5000.0, Duration::from_secs(2), 50), (200, 100.0));
        assert_eq!(schedule(0.1, Duration::from_secs(1), 1).0, 1);
    }

    #[test]
    fn endpoints_keep_the_base_path() {
        let base = Url::parse("http://127.0.0.1:8470/").expect("url");
        assert_eq!(
            endpoint(&base, 1).expect("url").as_str(),
            "http://127.0.0.1:8470/v1/decide"
        );
        let base = Url::parse("http://proxy/dynscale").expect("url");
        assert_eq!(
            endpoint(&base, 10).expect("url").as_str(),
            "http://proxy/dynscale/v1/decide/batch"
        );
    }

    #[test]
    fn answers_decode_into_outcomes() {
        assert_eq!(
            decode(br#"{"allowed": true, "outcome": "warn", "x": 1}"#, false),
            Ok(Answer::Decided {
                outcomes: vec![Outcome::Warn],
                item_errors: 0
            })
        );
        assert_eq!(
            decode(
                br#"{"results": [{"outcome": "deny"}, {"error": {"status": 422}}, {"outcome": "allow"}]}"#,
                true
            ),
            Ok(Answer::Decided {
                outcomes: vec![Outcome::Deny, Outcome::Allow],
                item_errors: 1
            })
        );
        assert!(decode(b"{}", false).is_err());
        assert!(decode(b"not json", true).is_err());
    }
}
