//! The bandwidth estimate: webrtc 0.21.1's GCC, with a guard on the queueing delay.
//!
//! Measured on a 1.5 Mbit/s token bucket with a 150 ms queue (`tests/it/slow_link.rs`): the
//! crate's GCC (pion's design: a Kalman filter on the delay change between packet groups,
//! against an adaptive threshold) raised its target 8 % a second to 1.87 Mbit/s while the
//! queue filled to 250 ms without ever calling it overuse; the bucket then dropped a third of
//! the packets, its loss half fell to the 100 kbit/s floor, and the picture froze for five
//! seconds. So the estimate here is GCC's, held under a cap of our own that watches the
//! standing queue directly:
//!
//! - one-way delay of each acknowledged packet (receiver's arrival minus our departure: the
//!   clocks' offset cancels out against the smallest delay of the last [`BASE_WINDOW`]);
//! - the standing queue of a feedback batch is its *smallest* extra delay (a keyframe's own
//!   burst queues behind itself; only a queue that even the batch's luckiest packet met is
//!   congestion);
//! - over [`OVERUSE`]: the cap falls to [`DECREASE`] × the rate the receiver got;
//! - under [`UNDERUSE`]: the cap rises, by [`ADDITIVE_BPS`] a second near the rate where the
//!   last overuse was found, 8 % a second (GCC's own) away from it; not beyond 1.5× what
//!   the receiver got (plus a little), so a sender that sends less than it may (its own
//!   setting, a still picture) does not claim a link it never tried.

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long the smallest one-way delay is remembered as the path's own (no queue).
const BASE_WINDOW: Duration = Duration::from_secs(10);
/// A standing queue this long is overuse.
const OVERUSE: f64 = 25.0;
/// Below this the link has room.
const UNDERUSE: f64 = 10.0;
/// The cap after overuse, as a share of what the receiver got.
const DECREASE: f64 = 0.85;
/// Rise per second near the last overuse.
const ADDITIVE_BPS: f64 = 60_000.0;
/// Rise per second away from it.
const MULTIPLICATIVE: f64 = 1.08;
/// No new decrease this soon after one (the queue needs time to drain).
const HOLD: Duration = Duration::from_millis(500);
/// The receive rate is measured over this much of the receiver's time.
const RATE_WINDOW: f64 = 1000.0;

pub(super) struct GuardedGcc {
    gcc: Gcc,
    min: f64,
    max: f64,
    cap: f64,
    /// The rate at which overuse was last found.
    ceiling: Option<f64>,
    last_decrease: Option<Instant>,
    last_update: Option<Instant>,
    epoch: Option<Instant>,
    /// (when, smallest one-way delay of a batch), for the base.
    delays: VecDeque<(Instant, f64)>,
    /// (arrival ms on the receiver's clock, bytes) of recent packets.
    arrivals: VecDeque<(f64, usize)>,
    queue_ms: f64,
}

impl GuardedGcc {
    pub(super) fn new(initial: f64, min: f64, max: f64) -> Self {
        GuardedGcc {
            gcc: Gcc::new(initial, min, max),
            min,
            max,
            cap: initial,
            ceiling: None,
            last_decrease: None,
            last_update: None,
            epoch: None,
            delays: VecDeque::new(),
            arrivals: VecDeque::new(),
            queue_ms: 0.0,
        }
    }

    /// What the receiver got over the last [`RATE_WINDOW`], bits per second.
    fn received_bps(&self) -> Option<f64> {
        let (first, last) = (self.arrivals.front()?.0, self.arrivals.back()?.0);
        let span = last - first;
        if span < RATE_WINDOW / 4.0 {
            return None;
        }
        let bytes: usize = self.arrivals.iter().map(|(_, b)| b).sum();
        Some(bytes as f64 * 8.0 / (span / 1000.0))
    }
}

impl BandwidthEstimator for GuardedGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        let epoch = *self.epoch.get_or_insert_with(|| reports.first().map_or(now, |r| r.departure));
        let mut smallest = f64::INFINITY;
        for r in reports {
            let Some(arrival) = r.arrival.filter(|_| r.arrived) else { continue };
            let arrival_ms = arrival.as_secs_f64() * 1000.0;
            let departure_ms = r.departure.saturating_duration_since(epoch).as_secs_f64() * 1000.0;
            smallest = smallest.min(arrival_ms - departure_ms);
            self.arrivals.push_back((arrival_ms, r.size));
        }
        if let Some(&(last, _)) = self.arrivals.back() {
            while self.arrivals.front().is_some_and(|(at, _)| last - at > RATE_WINDOW) {
                self.arrivals.pop_front();
            }
        }
        if !smallest.is_finite() {
            return;
        }
        while self.delays.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > BASE_WINDOW) {
            self.delays.pop_front();
        }
        self.delays.push_back((now, smallest));
        let base = self.delays.iter().map(|(_, d)| *d).fold(f64::INFINITY, f64::min);
        self.queue_ms = smallest - base;
        let received = self.received_bps();
        let elapsed =
            self.last_update.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64().min(1.0));
        self.last_update = Some(now);
        let held = self.last_decrease.is_some_and(|t| now.saturating_duration_since(t) < HOLD);
        if self.queue_ms > OVERUSE {
            if let (Some(received), false) = (received, held) {
                self.cap = (received * DECREASE).min(self.cap);
                self.ceiling = Some(received);
                self.last_decrease = Some(now);
            }
        } else if self.queue_ms < UNDERUSE && !held {
            let near = self.ceiling.is_some_and(|c| self.cap < c * 1.1);
            let grown = if near {
                self.cap + ADDITIVE_BPS * elapsed
            } else {
                self.cap * MULTIPLICATIVE.powf(elapsed)
            };
            // Grows only as far as what is sent shows the link can take: a sender below its
            // estimate (its own setting, a still picture) learns nothing about the link above.
            let bound = received.map_or(f64::INFINITY, |r| r * 1.5 + 100_000.0);
            self.cap = self.cap.max(grown.min(bound));
        }
        self.cap = self.cap.clamp(self.min, self.max);
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate().min(self.cap)
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::PacketReport;

    /// A sender following the estimate through a bottleneck of `link` bits per second with a
    /// drop-tail queue of `queue_ms`; feedback every 50 ms. Returns (estimate, queue ms) each
    /// second.
    fn simulate(link: f64, queue_ms: f64, secs: u64, cc: &mut GuardedGcc) -> Vec<(f64, f64)> {
        let t0 = Instant::now();
        let mut free_at = 0.0f64; // ms when the bottleneck is idle again
        let mut out = Vec::new();
        let mut batch = Vec::new();
        let mut seq = 0u16;
        let mut now_ms = 0.0;
        while now_ms < secs as f64 * 1000.0 {
            let rate = cc.target_bitrate();
            let size = 1200usize;
            let gap = size as f64 * 8.0 / rate * 1000.0;
            now_ms += gap;
            let queued = (free_at - now_ms).max(0.0);
            let arrived = queued <= queue_ms;
            let arrival = if arrived {
                free_at = free_at.max(now_ms) + size as f64 * 8.0 / link * 1000.0;
                Some(Duration::from_secs_f64((free_at + 10.0) / 1000.0))
            } else {
                None
            };
            seq = seq.wrapping_add(1);
            batch.push(PacketReport {
                ssrc: 1,
                id: u64::from(seq),
                rtp_sequence_number: seq,
                is_twcc: true,
                twcc_sequence_number: seq,
                size,
                arrived,
                departure: t0 + Duration::from_secs_f64(now_ms / 1000.0),
                arrival,
                ecn: Default::default(),
            });
            if batch.len() >= 10 {
                cc.on_reports(t0 + Duration::from_secs_f64(now_ms / 1000.0), &batch);
                batch.clear();
            }
            if now_ms as u64 / 1000 > out.len() as u64 {
                out.push((cc.target_bitrate(), queued));
            }
        }
        out
    }

    #[test]
    fn the_estimate_settles_under_a_slow_link_and_keeps_its_queue_short() {
        let mut cc = GuardedGcc::new(800_000.0, 100_000.0, 20_000_000.0);
        let run = simulate(1_500_000.0, 150.0, 30, &mut cc);
        let late = &run[10..];
        assert!(late.iter().all(|&(e, _)| e < 1_650_000.0), "{run:?}");
        assert!(late.iter().all(|&(e, _)| e > 1_000_000.0), "uses most of the link: {run:?}");
        assert!(late.iter().all(|&(_, q)| q < 100.0), "no standing queue: {run:?}");
    }

    #[test]
    fn the_estimate_rises_on_a_free_link() {
        let mut cc = GuardedGcc::new(800_000.0, 100_000.0, 20_000_000.0);
        let run = simulate(50_000_000.0, 150.0, 10, &mut cc);
        assert!(run.last().is_some_and(|&(e, _)| e > 1_400_000.0), "{run:?}");
    }
}
