//! Recording decisions on the hot path: latency sketches, SLO good/bad counts and
//! per-pack deny counts in sliding windows.
//!
//! [`DecisionRecorder`] is one single-owner recorder (`record(&mut self)`).
//! [`ShardedRecorder`] is what the server shares between threads: a fixed set of
//! recorders, each behind its own mutex on its own cache line; a thread always uses
//! the same shard (picked round-robin at its first record), so with at least as many
//! shards as threads a lock is uncontended and costs two atomic operations. Reads
//! lock each shard in turn and merge; they are meant for the evaluation loop and
//! `/metrics`, seconds apart. No lock is held across anything but the record or the
//! merge itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::anomaly::PackTally;
use super::burn::{BurnTier, EventCounts};
use super::config::ScaleConfig;
use super::ring::TimeRing;
use super::sketch::{LatencySketch, LatencySummary};
use super::time::UnixMs;
use crate::ids::PackId;

/// Window lengths and bounds of a recorder, derived from [`ScaleConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderConfig {
    pub bucket: Duration,
    pub level_window: Duration,
    pub long_window: Duration,
    pub slo_bucket: Duration,
    /// (long, short) window of each burn tier: page, then ticket.
    pub burn_windows: [(Duration, Duration); 2],
    pub latency_objective: Duration,
    pub max_packs: usize,
    /// Seed of the per-pack hash table; secret and random (the server draws it).
    pub hash_seed: u64,
}

impl RecorderConfig {
    /// The recorder settings of a (validated) scale configuration.
    pub fn from_scale(config: &ScaleConfig, hash_seed: u64) -> Self {
        let window = |t: BurnTier| {
            let c = config.slo.tier(t);
            (c.long_window, c.short_window)
        };
        RecorderConfig {
            bucket: config.bucket,
            level_window: config.level_window,
            long_window: config.long_window,
            slo_bucket: config.slo.bucket,
            burn_windows: [window(BurnTier::Page), window(BurnTier::Ticket)],
            latency_objective: config.slo.latency_objective(),
            max_packs: config.anomaly.max_packs,
            hash_seed,
        }
    }

    fn slo_retention(&self) -> Duration {
        self.burn_windows
            .iter()
            .map(|&(long, short)| long.max(short))
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// One decision as the recorder sees it.
#[derive(Debug, Clone, Copy)]
pub struct DecisionSample<'a> {
    /// From request received to answer ready.
    pub latency: Duration,
    /// The decision failed (5xx, evaluation error, audit refused); denies are not
    /// errors.
    pub error: bool,
    /// The decision was a deny (for the pack's deny rate).
    pub denied: bool,
    /// The requesting agent's pack, when known.
    pub pack: Option<&'a PackId>,
}

/// The SLO counts of both windows of both burn tiers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SloCounts {
    /// (long, short) of the page tier.
    pub page: (EventCounts, EventCounts),
    /// (long, short) of the ticket tier.
    pub ticket: (EventCounts, EventCounts),
}

impl SloCounts {
    /// (long, short) of `tier`.
    pub fn tier(&self, tier: BurnTier) -> &(EventCounts, EventCounts) {
        match tier {
            BurnTier::Page => &self.page,
            BurnTier::Ticket => &self.ticket,
        }
    }
}

/// What the recorder says at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecisionStats {
    /// The window of the latency and throughput levels (default 1 min).
    pub level_window: LatencySummary,
    /// The long window (default 5 min).
    pub long_window: LatencySummary,
    pub slo: SloCounts,
    /// Every decision recorded since start (a Prometheus counter).
    pub total: u64,
    /// Every bad decision (slow or failed) since start.
    pub total_bad: u64,
    /// Samples dropped as older than the windows (clock skew between threads).
    pub late: u64,
}

/// A single-owner decision recorder.
#[derive(Debug, Clone)]
pub struct DecisionRecorder {
    latency: TimeRing<LatencySketch>,
    slo: TimeRing<EventCounts>,
    packs: PackTally,
    objective: Duration,
    total: u64,
    total_bad: u64,
}

impl DecisionRecorder {
    /// An empty recorder; `now` is when recording starts.
    pub fn new(config: &RecorderConfig, now: UnixMs) -> Self {
        DecisionRecorder {
            latency: TimeRing::new(config.bucket, config.long_window, now, LatencySketch::new),
            slo: TimeRing::new(
                config.slo_bucket,
                config.slo_retention(),
                now,
                EventCounts::default,
            ),
            packs: PackTally::new(config.max_packs, config.hash_seed),
            objective: config.latency_objective,
            total: 0,
            total_bad: 0,
        }
    }

    /// Records one decision answered at `now`.
    #[inline]
    pub fn record(&mut self, now: UnixMs, sample: &DecisionSample<'_>) {
        let good = !sample.error && sample.latency <= self.objective;
        self.total += 1;
        self.total_bad += u64::from(!good);
        if let Some(sketch) = self.latency.bucket_mut(now) {
            sketch.record(sample.latency);
        }
        if let Some(counts) = self.slo.bucket_mut(now) {
            counts.record(good);
        }
        if let Some(pack) = sample.pack {
            self.packs.record(pack, sample.denied);
        }
    }

    fn merge_latency(&self, now: UnixMs, span: Duration, into: &mut LatencySketch) -> Duration {
        let (sketches, covered) = self.latency.window(now, span);
        for s in sketches {
            into.merge(s);
        }
        covered
    }

    fn add_slo(&self, now: UnixMs, span: Duration, into: &mut EventCounts) {
        let (counts, _) = self.slo.window(now, span);
        for c in counts {
            into.add(c);
        }
    }
}

/// Accumulates the reads of several recorders.
struct StatsBuilder<'a> {
    config: &'a RecorderConfig,
    now: UnixMs,
    level: LatencySketch,
    long: LatencySketch,
    covered: (Duration, Duration),
    slo: SloCounts,
    total: u64,
    total_bad: u64,
    late: u64,
}

impl<'a> StatsBuilder<'a> {
    fn new(config: &'a RecorderConfig, now: UnixMs) -> Self {
        StatsBuilder {
            config,
            now,
            level: LatencySketch::new(),
            long: LatencySketch::new(),
            covered: (Duration::ZERO, Duration::ZERO),
            slo: SloCounts::default(),
            total: 0,
            total_bad: 0,
            late: 0,
        }
    }

    fn add(&mut self, r: &DecisionRecorder) {
        let (now, c) = (self.now, self.config);
        let level = r.merge_latency(now, c.level_window, &mut self.level);
        let long = r.merge_latency(now, c.long_window, &mut self.long);
        self.covered = (self.covered.0.max(level), self.covered.1.max(long));
        let [(page_long, page_short), (ticket_long, ticket_short)] = c.burn_windows;
        r.add_slo(now, page_long, &mut self.slo.page.0);
        r.add_slo(now, page_short, &mut self.slo.page.1);
        r.add_slo(now, ticket_long, &mut self.slo.ticket.0);
        r.add_slo(now, ticket_short, &mut self.slo.ticket.1);
        self.total += r.total;
        self.total_bad += r.total_bad;
        self.late += r.latency.late();
    }

    fn finish(self) -> DecisionStats {
        DecisionStats {
            level_window: self.level.summary(self.covered.0),
            long_window: self.long.summary(self.covered.1),
            slo: self.slo,
            total: self.total,
            total_bad: self.total_bad,
            late: self.late,
        }
    }
}

impl DecisionRecorder {
    /// The windows at `now` (with the windows of `config`, which made this recorder).
    pub fn stats(&self, config: &RecorderConfig, now: UnixMs) -> DecisionStats {
        let mut b = StatsBuilder::new(config, now);
        b.add(self);
        b.finish()
    }

    /// Moves the per-pack counts since the last drain into `into`.
    pub fn drain_packs(&mut self, into: &mut PackTally) {
        self.packs.drain_into(into);
    }
}

/// A shard padded to its own cache lines, so two threads' locks never share one.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<DecisionRecorder>);

/// Decision recorders shared between threads; see the module documentation.
#[derive(Debug)]
pub struct ShardedRecorder {
    config: RecorderConfig,
    shards: Box<[Shard]>,
}

/// Hands out shard indices to threads in turn.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's turn number; its shard is this modulo the shard count.
    static THREAD_TURN: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl ShardedRecorder {
    /// `shards` recorders (at least one). The server typically uses one per worker
    /// thread.
    pub fn new(config: RecorderConfig, shards: usize, now: UnixMs) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Shard(Mutex::new(DecisionRecorder::new(&config, now))))
            .collect();
        ShardedRecorder { config, shards }
    }

    fn lock(shard: &Shard) -> MutexGuard<'_, DecisionRecorder> {
        // A panic while recording leaves counters at worst one sample off; the
        // data stays usable, so a poisoned lock is taken over, not propagated.
        shard.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one decision answered at `now`, in this thread's shard.
    #[inline]
    pub fn record(&self, now: UnixMs, sample: &DecisionSample<'_>) {
        let turn = THREAD_TURN.with(|t| *t);
        let shard = &self.shards[turn % self.shards.len()];
        Self::lock(shard).record(now, sample);
    }

    /// The windows at `now`, merged over all shards.
    pub fn stats(&self, now: UnixMs) -> DecisionStats {
        let mut b = StatsBuilder::new(&self.config, now);
        for shard in self.shards.iter() {
            b.add(&Self::lock(shard));
        }
        b.finish()
    }

    /// The per-pack counts since the last drain, merged over all shards, bounded by
    /// the configured number of packs (the rest counted as overflow).
    pub fn drain_packs(&self) -> PackTally {
        let mut into = PackTally::new(self.config.max_packs, self.config.hash_seed);
        for shard in self.shards.iter() {
            Self::lock(shard).drain_packs(&mut into);
        }
        into
    }

    /// The settings in force.
    pub fn config(&self) -> &RecorderConfig {
        &self.config
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::anomaly::PackCount;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn config() -> RecorderConfig {
        RecorderConfig::from_scale(&ScaleConfig::default(), 42)
    }

    fn sample(ms: u64, error: bool) -> DecisionSample<'static> {
        DecisionSample {
            latency: Duration::from_millis(ms),
            error,
            denied: false,
            pack: None,
        }
    }

    /// A whole hour, so minute and ten-second intervals start on it.
    const T0: u64 = 1_699_999_200_000;

    #[test]
    fn windows_latency_throughput_and_slo() {
        let c = config();
        let mut r = DecisionRecorder::new(&c, UnixMs(T0));
        // 10 minutes, 10 decisions a second: 5 ms normally, 300 ms in minute 8,
        // errors in minute 9.
        for s in 0..600u64 {
            for _ in 0..10 {
                let slow = (480..540).contains(&s);
                let failed = s >= 540;
                r.record(
                    UnixMs(T0 + s * 1000),
                    &sample(if slow { 300 } else { 5 }, failed),
                );
            }
        }
        let now = UnixMs(T0 + 599_999);
        let stats = r.stats(&c, now);
        // The last minute: 600 fast (but failed) decisions over 59.999 s.
        assert_eq!(stats.level_window.count, 600);
        assert!((stats.level_window.throughput_per_s - 10.0).abs() < 0.01);
        assert!(stats.level_window.p99 < Duration::from_millis(6));
        // The last five minutes include the slow minute: p99 is 300 ms.
        assert_eq!(stats.long_window.count, 3000);
        let p99 = stats.long_window.p99.as_millis();
        assert!((297..=303).contains(&p99), "{p99}");
        // Page short window (5 min): 600 slow + 600 failed of 3000.
        assert_eq!(
            stats.slo.page.1,
            EventCounts {
                good: 1800,
                bad: 1200
            }
        );
        // Page long window (1 h) holds everything since start.
        assert_eq!(stats.slo.page.0.total(), 6000);
        assert_eq!((stats.total, stats.total_bad), (6000, 1200));
    }

    #[test]
    fn shards_merge_to_the_single_recorder() {
        let c = config();
        let sharded = Arc::new(ShardedRecorder::new(c.clone(), 4, UnixMs(T0)));
        let packs = [PackId::new("billing"), PackId::new("search")];
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let sharded = &sharded;
                let packs = &packs;
                scope.spawn(move || {
                    for i in 0..1000u64 {
                        sharded.record(
                            UnixMs(T0 + i * 10),
                            &DecisionSample {
                                latency: Duration::from_micros(100 + t * 1000 + i),
                                error: i % 100 == 0,
                                denied: i % 4 == 0,
                                pack: Some(&packs[(i % 2) as usize]),
                            },
                        );
                    }
                });
            }
        });
        let mut single = DecisionRecorder::new(&c, UnixMs(T0));
        for t in 0..4u64 {
            for i in 0..1000u64 {
                single.record(
                    UnixMs(T0 + i * 10),
                    &DecisionSample {
                        latency: Duration::from_micros(100 + t * 1000 + i),
                        error: i % 100 == 0,
                        denied: i % 4 == 0,
                        pack: Some(&packs[(i % 2) as usize]),
                    },
                );
            }
        }
        let now = UnixMs(T0 + 10_000);
        assert_eq!(sharded.stats(now), single.stats(&c, now));
        let tally = sharded.drain_packs();
        assert_eq!(
            tally.total(),
            PackCount {
                decisions: 4000,
                denies: 1000
            }
        );
        assert_eq!(tally.len(), 2);
        assert!(
            sharded.drain_packs().is_empty(),
            "draining empties the shards"
        );
    }

    proptest! {
        /// Splitting any sample sequence across shards in any way reads the same as
        /// one recorder.
        #[test]
        fn any_split_reads_the_same(
            samples in proptest::collection::vec((0u64..2_000, 1u64..400_000, any::<bool>(), 0usize..3), 1..300),
        ) {
            let c = config();
            let shards: Vec<_> = (0..3).map(|_| DecisionRecorder::new(&c, UnixMs(T0))).collect();
            let mut shards = shards;
            let mut single = DecisionRecorder::new(&c, UnixMs(T0));
            let mut t = T0;
            for (gap, us, error, shard) in samples {
                t += gap;
                let s = DecisionSample { latency: Duration::from_micros(us), error, denied: false, pack: None };
                shards[shard].record(UnixMs(t), &s);
                single.record(UnixMs(t), &s);
            }
            let mut b = StatsBuilder::new(&c, UnixMs(t));
            for s in &shards {
                b.add(s);
            }
            prop_assert_eq!(b.finish(), single.stats(&c, UnixMs(t)));
        }
    }
}
