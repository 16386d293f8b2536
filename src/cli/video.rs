//! The video side of `dial` and `listen`: figures, and the simulated loss.

use super::{Output, VideoArgs, sleep_opt};
use crate::client::session::{DataSession, VideoStats};
use std::time::Duration;

/// Video figures on stdout, once a second and at the end of a session.
#[derive(Default)]
struct VideoStatsPrinter {
    last: Option<(std::time::Instant, u64, u64)>,
    first: Option<(std::time::Instant, u64, u64)>,
}

impl VideoStatsPrinter {
    fn show(&mut self, output: &Output, stats: &VideoStats, last: bool) {
        let now = std::time::Instant::now();
        let (bytes_in, bytes_out) =
            (stats.receiving.bytes, stats.sending.as_ref().map(|s| s.bytes_sent).unwrap_or(0));
        let first = *self.first.get_or_insert((now, bytes_in, bytes_out));
        // Once a second: since the last line; at the end: over the whole session.
        let (rate_in, rate_out) = match if last { Some(first) } else { self.last } {
            Some((t, i, o)) if now > t => {
                let s = (now - t).as_secs_f64();
                (bytes_in.saturating_sub(i) as f64 * 8.0 / s, bytes_out.saturating_sub(o) as f64 * 8.0 / s)
            }
            _ => (0.0, 0.0),
        };
        self.last = Some((now, bytes_in, bytes_out));
        if output.json {
            let line = serde_json::json!({
                "event": "video_stats",
                "final": last,
                "receiving": stats.receiving,
                "sending": stats.sending,
                "bitrate_in_bps": rate_in.round(),
                "bitrate_out_bps": rate_out.round(),
            });
            println!("{line}");
            return;
        }
        let r = &stats.receiving;
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "-".into());
        let mut line = format!(
            "video{} in: {}x{} {:.1} fps, {} received, {} decoded, {} dropped, latency p50 {} p95 {}, {:.2} Mbit/s, keyframe requests {}",
            if last { " (session)" } else { "" },
            r.width,
            r.height,
            r.fps,
            r.frames_received,
            r.frames_decoded,
            r.frames_dropped,
            ms(r.latency_p50_ms),
            ms(r.latency_p95_ms),
            rate_in / 1e6,
            r.keyframe_requests_sent,
        );
        if let Some(s) = &stats.sending {
            line += &format!(
                " | out: {}x{} {} sent, {} dropped, {} skipped, {:.2} Mbit/s (target {:.2}{}), encode {:.1} ms, keyframes {} ({} asked)",
                s.width,
                s.height,
                s.frames_sent,
                s.frames_dropped,
                s.frames_skipped,
                rate_out / 1e6,
                s.target_bitrate_bps as f64 / 1e6,
                if s.link_limited { ", link limited" } else { "" },
                s.encode_ms,
                s.keyframes_sent,
                s.keyframe_requests
            );
        }
        println!("{line}");
    }
}

/// The video side of `dial` and `listen`: figures once a second and at the end of each
/// session (`--video-stats`), and the simulated loss (`--simulate-video-loss`).
pub(super) struct VideoWatch {
    stats: bool,
    tick: Option<tokio::time::Interval>,
    printer: VideoStatsPrinter,
    loss_after: Option<f64>,
    loss_at: Option<tokio::time::Instant>,
}

pub(super) enum VideoDue {
    Figures,
    Loss,
}

impl VideoWatch {
    pub(super) fn new(args: &VideoArgs) -> Self {
        VideoWatch {
            stats: args.video_stats,
            tick: args.video_stats.then(|| tokio::time::interval(Duration::from_secs(1))),
            printer: VideoStatsPrinter::default(),
            loss_after: args.simulate_video_loss,
            loss_at: None,
        }
    }

    /// A session's data side started: its figures and its loss timer start from now.
    pub(super) fn session_started(&mut self) {
        self.printer = VideoStatsPrinter::default();
        self.loss_at =
            self.loss_after.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    }

    /// The session ended: its figures as a whole.
    pub(super) fn session_ended(&mut self, output: &Output, data: &DataSession) {
        if self.stats {
            self.printer.show(output, &data.video_stats(), true);
        }
        self.loss_at = None;
    }

    /// The next thing to do; never, when there is nothing.
    pub(super) async fn due(&mut self) -> VideoDue {
        let tick = async {
            match self.tick.as_mut() {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick => VideoDue::Figures,
            _ = sleep_opt(self.loss_at) => VideoDue::Loss,
        }
    }

    pub(super) fn act(&mut self, due: VideoDue, output: &Output, data: Option<&DataSession>) {
        let Some(d) = data else { return };
        match due {
            VideoDue::Figures => self.printer.show(output, &d.video_stats(), false),
            VideoDue::Loss => {
                self.loss_at = None;
                d.simulate_video_loss(8);
            }
        }
    }
}
