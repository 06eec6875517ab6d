//! Quota check ns/op: dynscale's `QuotaLimiter` against the `governor` crate's keyed
//! (DashMap) rate limiter, on the same keys, the same Zipf-like key sequence and the
//! same fake clock, in the same run. Prints both and the ratio (target ≤ 1.5×).
//!
//! `cargo bench -p dynscale-core --bench quota` (`-- --quick` for a short run).
//!
//! Both sides hash the agent id on every call and share the rule `100/s, burst 10`.
//! dynscale additionally hashes the policy and rule ids into the key (it keeps many
//! rules in one limiter), honours a per-request cost and bounds its memory; governor
//! does neither. governor is measured with its default hasher (SipHash, what a
//! `RateLimiter::dashmap` user gets) and, for reference, with foldhash as ours uses.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::thread;
use std::time::{Duration, Instant};

use dynscale_core::document::Rate;
use dynscale_core::ids::{AgentId, PolicyName, RuleId};
use dynscale_core::quota::{Gcra, KeyHasher, LimiterConfig, Nanos, QuotaKey, QuotaLimiter};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};

const KEYS: usize = 100_000;
const OPS: usize = 1_000_000;
/// Time advances by this much after each chunk of operations, on both sides.
const CHUNK: usize = 1_000;
const CHUNK_ADVANCE: Duration = Duration::from_millis(1);

/// xorshift64*: a fixed, dependency-free generator for the key sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `OPS` key indices drawn from a Zipf(1.0) law over `KEYS` ranks: a few hot agents
/// and a long tail, as a fleet's traffic looks.
fn zipf_sequence(seed: u64) -> Vec<usize> {
    let weights: Vec<f64> = (1..=KEYS).map(|rank| 1.0 / rank as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(KEYS);
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut rng = Rng(seed);
    (0..OPS)
        .map(|_| {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|&c| c < u).min(KEYS - 1)
        })
        .collect()
}

/// Runs `op` over the sequence `rounds` times and returns the best ns/op and the
/// number of allowed requests in the last round.
fn measure(
    rounds: usize,
    sequence: &[usize],
    mut op: impl FnMut(usize, u64) -> bool,
) -> (f64, usize) {
    let mut best = f64::INFINITY;
    let mut allowed = 0;
    let mut now_ns = 0u64;
    for _ in 0..rounds {
        allowed = 0;
        let start = Instant::now();
        for chunk in sequence.chunks(CHUNK) {
            for &key in chunk {
                allowed += usize::from(op(key, now_ns));
            }
            now_ns += CHUNK_ADVANCE.as_nanos() as u64;
        }
        let ns = start.elapsed().as_nanos() as f64 / sequence.len() as f64;
        best = best.min(ns);
    }
    (best, allowed)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 2 } else { 7 };
    let agents: Vec<AgentId> = (0..KEYS)
        .map(|i| AgentId::new(format!("agent-{i:06}")))
        .collect();
    let sequence = zipf_sequence(0x5EED_F00D);

    let burst = 10u32;
    let rule = Gcra::new(
        Rate {
            count: 100,
            per: Duration::from_secs(1),
        },
        u64::from(burst),
    )
    .expect("valid rule");
    let quota = Quota::per_second(NonZeroU32::new(100).expect("non-zero"))
        .allow_burst(NonZeroU32::new(burst).expect("non-zero"));

    // dynscale: the string is hashed with the rule identity, then checked.
    let limiter = QuotaLimiter::new(LimiterConfig::default()).expect("valid config");
    let hasher = KeyHasher::new(0x1234_5678);
    let (policy, rule_id) = (PolicyName::new("payments-guard"), RuleId::new("agent-rate"));
    let (ours, ours_allowed) = measure(rounds, &sequence, |i, now| {
        let key = hasher.hash(&policy, &rule_id, &QuotaKey::Agent(&agents[i]));
        limiter.check(&rule, key, 1, Nanos(now)).is_allow()
    });

    // governor, default hasher. Its fake clock is advanced in step with ours.
    let clock = FakeRelativeClock::default();
    let gov = RateLimiter::dashmap_with_clock(quota, clock.clone());
    let mut last = 0u64;
    let (theirs, theirs_allowed) = measure(rounds, &sequence, |i, now| {
        if now != last {
            clock.advance(Duration::from_nanos(now - last));
            last = now;
        }
        gov.check_key(black_box(&agents[i])).is_ok()
    });

    // governor with foldhash, for reference.
    let clock = FakeRelativeClock::default();
    let gov_fold = RateLimiter::dashmap_with_clock_and_hasher(
        quota,
        clock.clone(),
        foldhash::fast::FixedState::with_seed(0x1234_5678),
    );
    let mut last = 0u64;
    let (theirs_fold, _) = measure(rounds, &sequence, |i, now| {
        if now != last {
            clock.advance(Duration::from_nanos(now - last));
            last = now;
        }
        gov_fold.check_key(black_box(&agents[i])).is_ok()
    });

    // Two threads on the same limiter, each over half of the sequence.
    let two_threads = |check: &(dyn Fn(usize, u64) -> bool + Sync)| {
        let halves: Vec<&[usize]> = sequence.chunks(OPS / 2).collect();
        let start = Instant::now();
        thread::scope(|s| {
            for half in &halves {
                s.spawn(|| {
                    for (n, &i) in half.iter().enumerate() {
                        black_box(check(i, (n / CHUNK) as u64 * 1_000_000));
                    }
                });
            }
        });
        start.elapsed().as_nanos() as f64 / OPS as f64
    };
    let ours_mt = two_threads(&|i, now| {
        let key = hasher.hash(&policy, &rule_id, &QuotaKey::Agent(&agents[i]));
        limiter.check(&rule, key, 1, Nanos(now)).is_allow()
    });
    let gov_mt = two_threads(&|i, _| gov.check_key(&agents[i]).is_ok());

    let stats = limiter.stats();
    println!("quota check: {KEYS} keys, Zipf(1.0), {OPS} ops per round, best of {rounds} rounds");
    println!("  dynscale QuotaLimiter        {ours:7.1} ns/op  (allowed {ours_allowed})");
    println!("  governor keyed (SipHash)     {theirs:7.1} ns/op  (allowed {theirs_allowed})");
    println!("  governor keyed (foldhash)    {theirs_fold:7.1} ns/op");
    println!(
        "  ratio dynscale / governor    {:7.2}  (target <= 1.50; vs foldhash governor {:.2})",
        ours / theirs,
        ours / theirs_fold
    );
    println!(
        "  2 threads, wall ns/op: dynscale {ours_mt:.1}, governor {gov_mt:.1}, ratio {:.2}",
        ours_mt / gov_mt
    );
    println!(
        "  dynscale limiter: {} keys, {} bytes ({:.1} B/key)",
        stats.keys,
        stats.memory_bytes,
        stats.memory_bytes as f64 / stats.keys.max(1) as f64
    );
}
