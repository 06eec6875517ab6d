//! Cost of recording a decision into the scale windows, against the bare
//! HdrHistogram record it is built on, measured in the same run; and the cost of
//! reading the windows (what the evaluation loop and `/metrics` pay).
//!
//! `cargo bench -p dynscale-core --bench scale` (`-- --quick` for a short run).
//!
//! The baseline records the same latencies into one `hdrhistogram::Histogram` with
//! the same bounds (1 µs – 60 s, two digits). The recorder also finds the current
//! ten-second sketch of its ring, counts the decision good or bad in the one-minute
//! SLO ring and, with a pack, counts it in the per-pack tally. Time advances 1 ms
//! every 100 records (100 k decisions/s), so rings rotate as they would in service.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use dynscale_core::ids::PackId;
use dynscale_core::scale::sketch::{MAX_LATENCY_US, SIGNIFICANT_DIGITS};
use dynscale_core::scale::{
    DecisionRecorder, DecisionSample, RecorderConfig, ScaleConfig, ShardedRecorder, UnixMs,
};
use hdrhistogram::Histogram;

const T0: u64 = 1_699_999_200_000;

/// xorshift64*: a fixed, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Log-uniform latencies from 100 µs to 50 ms, and pack indices over 1000 packs.
fn workload(n: usize) -> (Vec<Duration>, Vec<usize>) {
    let mut rng = Rng(0x5eed);
    let lat = (0..n)
        .map(|_| {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            Duration::from_secs_f64(1e-4 * (500f64).powf(u))
        })
        .collect();
    let packs = (0..n).map(|_| (rng.next() % 1000) as usize).collect();
    (lat, packs)
}

/// Best ns/op of `rounds` runs of `op` over `n` operations.
fn best(rounds: usize, n: usize, mut op: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        op();
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, rounds) = if quick { (200_000, 3) } else { (2_000_000, 7) };
    let (lat, pack_idx) = workload(n);
    let packs: Vec<PackId> = (0..1000)
        .map(|i| PackId::new(format!("pack-{i}")))
        .collect();
    let config = RecorderConfig::from_scale(&ScaleConfig::default(), 0x1234);
    let now = |i: usize| UnixMs(T0 + (i / 100) as u64);

    let baseline = best(rounds, n, || {
        let mut h: Histogram<u64> =
            Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
                .expect("valid bounds");
        for d in &lat {
            h.saturating_record(d.as_micros() as u64);
        }
        black_box(&h);
    });

    let single = best(rounds, n, || {
        let mut r = DecisionRecorder::new(&config, UnixMs(T0));
        for (i, d) in lat.iter().enumerate() {
            r.record(
                now(i),
                &DecisionSample {
                    latency: *d,
                    error: false,
                    denied: false,
                    pack: None,
                },
            );
        }
        black_box(&r);
    });

    let single_pack = best(rounds, n, || {
        let mut r = DecisionRecorder::new(&config, UnixMs(T0));
        for (i, d) in lat.iter().enumerate() {
            r.record(
                now(i),
                &DecisionSample {
                    latency: *d,
                    error: false,
                    denied: i % 7 == 0,
                    pack: Some(&packs[pack_idx[i]]),
                },
            );
        }
        black_box(&r);
    });

    let sharded = |shards: usize, threads: usize| {
        best(rounds, n, || {
            let r = ShardedRecorder::new(config.clone(), shards, UnixMs(T0));
            thread::scope(|s| {
                for t in 0..threads {
                    let (r, lat, packs, pack_idx) = (&r, &lat, &packs, &pack_idx);
                    s.spawn(move || {
                        for i in (t..n).step_by(threads) {
                            r.record(
                                now(i),
                                &DecisionSample {
                                    latency: lat[i],
                                    error: false,
                                    denied: i % 7 == 0,
                                    pack: Some(&packs[pack_idx[i]]),
                                },
                            );
                        }
                    });
                }
            });
            black_box(&r);
        })
    };
    let sharded_1t = sharded(1, 1);
    let sharded_2t = sharded(2, 2);
    let contended_2t = sharded(1, 2);

    // Read cost: 4 shards, each with a full five-minute ring and a full SLO ring.
    let full = ShardedRecorder::new(config.clone(), 4, UnixMs(T0));
    let span_ms = 6 * 3600 * 1000u64;
    for i in 0..400_000u64 {
        full.record(
            UnixMs(T0 + i * span_ms / 400_000),
            &DecisionSample {
                latency: lat[i as usize % n],
                error: i % 500 == 0,
                denied: false,
                pack: None,
            },
        );
    }
    let read_at = UnixMs(T0 + span_ms);
    let reads = if quick { 20 } else { 100 };
    let read_ns = best(3, reads, || {
        for _ in 0..reads {
            black_box(full.stats(read_at));
        }
    });

    println!("scale recorder, {n} records per run, best of {rounds}");
    println!("  baseline hdrhistogram record       {baseline:8.1} ns/op");
    println!(
        "  DecisionRecorder::record           {single:8.1} ns/op  ({:.2}x baseline)",
        single / baseline
    );
    println!(
        "  DecisionRecorder::record + pack    {single_pack:8.1} ns/op  ({:.2}x baseline)",
        single_pack / baseline
    );
    println!(
        "  ShardedRecorder, 1 thread          {sharded_1t:8.1} ns/op  ({:.2}x baseline)",
        sharded_1t / baseline
    );
    println!(
        "  ShardedRecorder, 2 threads/2 shards {sharded_2t:7.1} ns/op wall ({:.2}x baseline)",
        sharded_2t / baseline
    );
    println!(
        "  ShardedRecorder, 2 threads/1 shard {contended_2t:8.1} ns/op wall ({:.2}x baseline)",
        contended_2t / baseline
    );
    println!(
        "  stats() over 4 full shards         {:8.1} µs/read",
        read_ns / 1000.0
    );
}
