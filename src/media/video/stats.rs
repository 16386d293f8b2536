//! Figures of both directions, for the app, the CLI and the benchmark.

use super::send::SendStats;
use crate::media::pattern::read_marks;
use crate::media::source::wall_ms;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many recent latency figures are kept for percentiles.
const LATENCY_WINDOW: usize = 600;

/// Figures of the receiving side.
#[derive(Debug, Default)]
pub struct RecvStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Whole pictures put together from packets.
    pub frames_received: AtomicU64,
    pub frames_decoded: AtomicU64,
    /// Pictures that could not be used (loss, waiting for a keyframe, decoder busy).
    pub frames_dropped: AtomicU64,
    pub keyframes: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    pub lost_packets: AtomicU64,
    pub decode_errors: AtomicU64,
    pub width: AtomicU32,
    pub height: AtomicU32,
    /// The test pattern's frame counter in the last picture (when the sender sends one).
    pub last_counter: AtomicU64,
    /// Decoded pictures whose frame counter did not go up (frozen or reordered stream).
    pub counter_stalls: AtomicU64,
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    decoded_at: VecDeque<Instant>,
    latency_ms: VecDeque<f64>,
    /// Latency of the pictures decoded in the last second.
    last_second: VecDeque<(Instant, f64)>,
    /// The longest time between two decoded pictures since the stream (re)started.
    longest_gap: Duration,
    last_decoded: Option<Instant>,
}

/// A copy of the receiving figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecvSnapshot {
    pub packets: u64,
    pub bytes: u64,
    pub frames_received: u64,
    pub frames_decoded: u64,
    pub frames_dropped: u64,
    pub keyframes: u64,
    pub keyframe_requests_sent: u64,
    pub lost_packets: u64,
    pub decode_errors: u64,
    pub width: u32,
    pub height: u32,
    /// Pictures decoded in the last second.
    pub fps: f64,
    /// Capture-to-decoded delay from the test pattern's timestamp (same clock on both
    /// sides: one machine, or synchronised clocks), over the recent pictures.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// The oldest picture shown in the last second.
    pub latency_max_ms: Option<f64>,
    /// The longest time the picture stood still (between two decoded pictures), since the
    /// other side's video started.
    pub longest_stall_ms: f64,
    pub last_counter: Option<u64>,
    pub counter_stalls: u64,
}

/// A copy of the sending figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SendSnapshot {
    pub frames_captured: u64,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    /// Not encoded while the connection still held earlier pictures (a slow link).
    pub frames_skipped: u64,
    pub bytes_sent: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    /// Size sent (smaller than captured when the link is slow).
    pub width: u32,
    pub height: u32,
    /// Mean encode time per picture.
    pub encode_ms: f64,
    /// The bitrate asked of the encoder now: the link's estimate, at most the setting.
    pub target_bitrate_bps: u64,
    /// The link, not the setting, limits the bitrate.
    pub link_limited: bool,
    /// What congestion control estimates the link carries (0: none).
    pub link_estimate_bps: u64,
    /// The picture is sent 1/`divisor` of its captured width and height.
    pub divisor: u32,
}

impl SendSnapshot {
    /// Why the picture is smaller than captured, if it is.
    pub fn smaller_because(&self) -> Option<&'static str> {
        (self.divisor > 1).then_some(if self.link_limited { "link limited" } else { "bitrate setting" })
    }
}

impl SendStats {
    pub fn snapshot(&self) -> SendSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let frames = l(&self.frames_captured);
        SendSnapshot {
            frames_captured: frames,
            frames_sent: l(&self.frames_sent),
            frames_dropped: l(&self.frames_dropped),
            frames_skipped: l(&self.frames_skipped),
            bytes_sent: l(&self.bytes_sent),
            keyframes_sent: l(&self.keyframes_sent),
            keyframe_requests: l(&self.keyframe_requests),
            width: self.width.load(Ordering::Relaxed),
            height: self.height.load(Ordering::Relaxed),
            encode_ms: if frames == 0 { 0.0 } else { l(&self.encode_us) as f64 / frames as f64 / 1000.0 },
            target_bitrate_bps: l(&self.target_bps),
            link_limited: self.link_limited.load(Ordering::Relaxed),
            link_estimate_bps: l(&self.estimate_bps),
            divisor: self.divisor.load(Ordering::Relaxed).max(1),
        }
    }
}

/// Drops the entries from before `cut` off the front of a window kept in time order.
fn trim_before<T>(window: &mut VecDeque<T>, cut: Instant, at: impl Fn(&T) -> Instant) {
    while window.front().is_some_and(|e| at(e) < cut) {
        window.pop_front();
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

impl RecvStats {
    pub fn snapshot(&self) -> RecvSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (fps, mut lat, max, stall) = {
            let mut r = self.recent.lock();
            let cutoff = Instant::now().checked_sub(Duration::from_secs(1));
            if let Some(cut) = cutoff {
                trim_before(&mut r.decoded_at, cut, |t| *t);
                trim_before(&mut r.last_second, cut, |(t, _)| *t);
            }
            let max = r.last_second.iter().map(|(_, l)| *l).max_by(f64::total_cmp);
            (r.decoded_at.len() as f64, r.latency_ms.iter().copied().collect::<Vec<_>>(), max, r.longest_gap)
        };
        lat.sort_by(|a, b| a.total_cmp(b));
        let decoded = l(&self.frames_decoded);
        RecvSnapshot {
            packets: l(&self.packets),
            bytes: l(&self.bytes),
            frames_received: l(&self.frames_received),
            frames_decoded: decoded,
            frames_dropped: l(&self.frames_dropped),
            keyframes: l(&self.keyframes),
            keyframe_requests_sent: l(&self.keyframe_requests_sent),
            lost_packets: l(&self.lost_packets),
            decode_errors: l(&self.decode_errors),
            width: self.width.load(Ordering::Relaxed),
            height: self.height.load(Ordering::Relaxed),
            fps,
            latency_p50_ms: percentile(&lat, 0.5),
            latency_p95_ms: percentile(&lat, 0.95),
            latency_max_ms: max,
            longest_stall_ms: stall.as_secs_f64() * 1000.0,
            last_counter: (decoded > 0 && l(&self.counter_stalls) < decoded).then(|| l(&self.last_counter)),
            counter_stalls: l(&self.counter_stalls),
        }
    }

    /// Forgets the recent window (after the stream paused).
    pub fn reset_recent(&self) {
        let mut r = self.recent.lock();
        r.decoded_at.clear();
        r.latency_ms.clear();
        r.last_second.clear();
        r.longest_gap = Duration::ZERO;
        r.last_decoded = None;
    }

    pub(super) fn decoded(&self, pic: &openh264::decoder::DecodedYUV<'_>) {
        use openh264::formats::YUVSource;
        let (w, h) = pic.dimensions();
        self.width.store(w as u32, Ordering::Relaxed);
        self.height.store(h as u32, Ordering::Relaxed);
        self.frames_decoded.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut r = self.recent.lock();
        if let Some(last) = r.last_decoded.replace(now) {
            r.longest_gap = r.longest_gap.max(now.duration_since(last));
        }
        r.decoded_at.push_back(now);
        if r.decoded_at.len() > 240 {
            r.decoded_at.pop_front();
        }
        if let Some((counter, ms)) = read_marks(pic.y(), pic.strides().0, w, h) {
            let previous = self.last_counter.swap(u64::from(counter), Ordering::Relaxed);
            if self.frames_decoded.load(Ordering::Relaxed) > 1 && u64::from(counter) <= previous {
                self.counter_stalls.fetch_add(1, Ordering::Relaxed);
            }
            // The pattern carries the low 32 bits of the sender's wall clock.
            let delay = (wall_ms() as u32).wrapping_sub(ms);
            if delay < 10_000 {
                r.latency_ms.push_back(f64::from(delay));
                r.last_second.push_back((now, f64::from(delay)));
                if r.last_second.len() > 240 {
                    r.last_second.pop_front();
                }
                if r.latency_ms.len() > LATENCY_WINDOW {
                    r.latency_ms.pop_front();
                }
            }
        }
    }
}
