//! Following the link: the encoder's bitrate and picture size from congestion control's
//! estimate, bounded by the user's own bitrate setting.
//!
//! - The bitrate is the estimate, at most the setting. It changes in place (no keyframe).
//! - The picture size steps down by half (720p → 360p → 180p) when the bitrate leaves fewer
//!   than [`DOWN_BPP`] bits per pixel per frame for half a second — a blurred 720p looks
//!   worse than a sharp 360p, and its keyframes take long to cross a slow link — and steps
//!   back up when the bigger size would get [`UP_BPP`] for [`UP_AFTER`]. The first picture
//!   already has the size that suits the starting estimate.
//! - While the pacer holds more than [`MAX_QUEUE_DELAY`] of video, pictures are skipped: one
//!   sent now would be shown late.

use crate::media::pattern::I420;
use std::time::{Duration, Instant};

/// What the video sender learns of the link (implemented by the connection).
pub trait LinkFeedback: Send + Sync {
    /// Bits per second the path carries, as congestion control estimates it.
    fn estimate_bps(&self) -> u64;
    /// How long the connection needs to send the video it holds.
    fn queue_delay(&self) -> Duration;
}

/// Pictures are skipped while the connection holds this much video.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(150);
/// Bits per pixel per frame below which the picture gets smaller (720p at 30 fps: 550 kbit/s).
pub const DOWN_BPP: f64 = 0.02;
/// Bits per pixel per frame the bigger size must get to come back (720p: 830 kbit/s).
pub const UP_BPP: f64 = 0.03;
/// How long the bitrate must be too low before the picture gets smaller.
pub const DOWN_AFTER: Duration = Duration::from_millis(500);
/// How long the bitrate must suit the bigger size before it comes back.
pub const UP_AFTER: Duration = Duration::from_secs(3);
/// Smaller than this (in width) is not worth watching (and the test pattern's marks need it).
const MIN_WIDTH: usize = 320;
/// The picture is never made smaller than a quarter (in each direction).
const MAX_DIVISOR: u32 = 4;

/// What to encode the next picture with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Bits per second asked of the encoder.
    pub bitrate: u32,
    /// The picture is encoded at 1/divisor of its width and height (1, 2 or 4).
    pub divisor: u32,
    /// The link, not the user's setting, limits the bitrate.
    pub link_limited: bool,
}

/// Chooses bitrate and picture size from the estimate, with hysteresis.
#[derive(Debug)]
pub struct Adapter {
    /// The user's setting: the most ever asked of the encoder.
    max_bps: u32,
    width: usize,
    height: usize,
    fps: u32,
    divisor: u32,
    low_since: Option<Instant>,
    high_since: Option<Instant>,
    started: bool,
}

impl Adapter {
    /// For pictures of `width`×`height` at `fps`, at most `max_bps`.
    pub fn new(max_bps: u32, width: usize, height: usize, fps: u32) -> Self {
        Adapter {
            max_bps,
            width,
            height,
            fps: fps.max(1),
            divisor: 1,
            low_since: None,
            high_since: None,
            started: false,
        }
    }

    /// The picture size it was made for.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The user changed the setting.
    pub fn set_max(&mut self, max_bps: u32) {
        self.max_bps = max_bps;
    }

    /// Bits per pixel per frame at `bps` with the picture divided by `divisor`.
    fn bpp(&self, bps: u32, divisor: u32) -> f64 {
        let d = divisor as usize;
        f64::from(bps) / ((self.width / d) * (self.height / d)).max(1) as f64 / f64::from(self.fps)
    }

    fn can_shrink(&self) -> bool {
        self.divisor < MAX_DIVISOR && self.width / (self.divisor as usize * 2) >= MIN_WIDTH
    }

    /// The plan for a picture captured at `now`, with the link's estimate (`None`: no
    /// congestion control, the setting alone counts).
    pub fn plan(&mut self, now: Instant, estimate: Option<u64>) -> Plan {
        let link_limited = estimate.is_some_and(|e| e < u64::from(self.max_bps));
        let bitrate = estimate.map_or(self.max_bps, |e| e.min(u64::from(self.max_bps)) as u32);
        if !self.started {
            // The first picture: start at the size the bitrate suits.
            self.started = true;
            while self.can_shrink() && self.bpp(bitrate, self.divisor) < DOWN_BPP {
                self.divisor *= 2;
            }
            return Plan { bitrate, divisor: self.divisor, link_limited };
        }
        if self.can_shrink() && self.bpp(bitrate, self.divisor) < DOWN_BPP {
            let since = *self.low_since.get_or_insert(now);
            if now.duration_since(since) >= DOWN_AFTER {
                self.divisor *= 2;
                self.low_since = None;
                self.high_since = None;
            }
        } else {
            self.low_since = None;
        }
        if self.divisor > 1 && self.bpp(bitrate, self.divisor / 2) >= UP_BPP {
            let since = *self.high_since.get_or_insert(now);
            if now.duration_since(since) >= UP_AFTER {
                self.divisor /= 2;
                self.high_since = None;
                self.low_since = None;
            }
        } else {
            self.high_since = None;
        }
        Plan { bitrate, divisor: self.divisor, link_limited }
    }
}

/// `src` made `divisor` times smaller in each direction (each output pixel the mean of the
/// block it covers), into `out` (its buffers are reused).
pub fn shrink(src: &I420, divisor: u32, out: &mut I420) {
    let d = divisor.max(1) as usize;
    let (w, h) = ((src.width / d) & !1, (src.height / d) & !1);
    let (cw, ch) = (w / 2, h / 2);
    out.width = w;
    out.height = h;
    out.y.resize(w * h, 0);
    out.u.resize(cw * ch, 0);
    out.v.resize(cw * ch, 0);
    shrink_plane(&src.y, src.width, &mut out.y, w, h, d);
    let scw = src.width.div_ceil(2);
    shrink_plane(&src.u, scw, &mut out.u, cw, ch, d);
    shrink_plane(&src.v, scw, &mut out.v, cw, ch, d);
}

fn shrink_plane(src: &[u8], stride: usize, out: &mut [u8], w: usize, h: usize, d: usize) {
    let area = (d * d) as u32;
    let mut sums = vec![0u32; w];
    for (y, row_out) in out.chunks_exact_mut(w).take(h).enumerate() {
        sums.fill(0);
        for row in src.chunks_exact(stride).skip(y * d).take(d) {
            for (sum, block) in sums.iter_mut().zip(row.chunks_exact(d)) {
                *sum += block.iter().map(|&p| u32::from(p)).sum::<u32>();
            }
        }
        for (o, sum) in row_out.iter_mut().zip(&sums) {
            *o = ((sum + area / 2) / area) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::pattern::{TestPattern, read_marks};

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_picture_gets_the_size_the_start_rate_suits() {
        let t = Instant::now();
        let mut a = Adapter::new(2_000_000, 1280, 720, 30);
        assert_eq!(a.plan(t, Some(800_000)), Plan { bitrate: 800_000, divisor: 1, link_limited: true });
        let mut a = Adapter::new(2_000_000, 1280, 720, 30);
        assert_eq!(a.plan(t, Some(300_000)).divisor, 2, "300 kbit/s is too little for 720p");
        let mut a = Adapter::new(2_000_000, 1280, 720, 30);
        assert_eq!(a.plan(t, Some(100_000)).divisor, 4);
        let mut a = Adapter::new(2_000_000, 640, 480, 30);
        assert_eq!(a.plan(t, Some(50_000)).divisor, 2, "never narrower than 320");
        let mut a = Adapter::new(1_000_000, 1280, 720, 30);
        assert_eq!(
            a.plan(t, Some(5_000_000)),
            Plan { bitrate: 1_000_000, divisor: 1, link_limited: false },
            "the user's setting bounds the bitrate"
        );
        assert_eq!(Adapter::new(1_000_000, 1280, 720, 30).plan(t, None).bitrate, 1_000_000);
    }

    #[test]
    fn the_size_steps_down_after_half_a_second_and_up_after_three() {
        let t = Instant::now();
        let mut a = Adapter::new(2_500_000, 1280, 720, 30);
        assert_eq!(a.plan(t, Some(1_400_000)).divisor, 1);
        // A dip shorter than half a second changes nothing.
        assert_eq!(a.plan(t + SEC, Some(400_000)).divisor, 1);
        assert_eq!(a.plan(t + SEC * 13 / 10, Some(400_000)).divisor, 1);
        assert_eq!(a.plan(t + SEC * 14 / 10, Some(1_400_000)).divisor, 1);
        // A lasting one halves the picture.
        assert_eq!(a.plan(t + SEC * 2, Some(400_000)).divisor, 1);
        assert_eq!(a.plan(t + SEC * 25 / 10, Some(400_000)).divisor, 2);
        // Between the thresholds nothing moves (hysteresis).
        assert_eq!(a.plan(t + SEC * 10, Some(700_000)).divisor, 2);
        assert_eq!(a.plan(t + SEC * 20, Some(700_000)).divisor, 2);
        // Enough for 720p again: back after three seconds of it.
        assert_eq!(a.plan(t + SEC * 21, Some(1_200_000)).divisor, 2);
        assert_eq!(a.plan(t + SEC * 23, Some(1_200_000)).divisor, 2);
        let p = a.plan(t + SEC * 24, Some(1_200_000));
        assert_eq!((p.divisor, p.bitrate), (1, 1_200_000));
    }

    #[test]
    fn a_shrunk_pattern_keeps_its_marks_readable() {
        let p = TestPattern::new(1280, 720).noisy(6);
        let f = p.frame(77, 4_000_123);
        for d in [1, 2, 4] {
            let mut out = I420::new(2, 2);
            shrink(&f, d, &mut out);
            assert_eq!((out.width, out.height), (1280 / d as usize, 720 / d as usize));
            assert_eq!(out.u.len(), out.width * out.height / 4);
            assert_eq!(
                read_marks(&out.y, out.width, out.width, out.height),
                Some((77, 4_000_123)),
                "divisor {d}"
            );
        }
    }

    #[test]
    fn shrinking_averages_blocks() {
        let mut f = I420::new(4, 4);
        f.y = (0..16).collect();
        let mut out = I420::new(2, 2);
        shrink(&f, 2, &mut out);
        // (0+1+4+5)/4 = 2.5 → 3, (2+3+6+7)/4 = 4.5 → 5, …
        assert_eq!(out.y, vec![3, 5, 11, 13]);
    }
}
