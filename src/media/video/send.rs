//! Sending: a capture thread takes pictures from the camera or the test pattern, encodes
//! them to H.264 and hands the encoded frames to the connection.

use super::adapt::{Adapter, LinkFeedback, MAX_QUEUE_DELAY, shrink};
use super::params::{VideoParams, VideoSource};
use super::slot::{SlotWriter, i420_to_rgba};
use crate::media::camera::{Camera, CameraError};
use crate::media::codec::{H264Encoder, has_keyframe};
use crate::media::pattern::{I420, TestPattern};
use crate::media::source::{PatternSource, Source};

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// My own picture is shown small (picture-in-picture): pictures wider than this are
/// shrunk for the preview on the capture thread, which saves converting and uploading
/// pixels nobody sees.
pub(super) const PREVIEW_MAX_WIDTH: usize = 640;

/// The picture shrunk by a whole factor to at most [`PREVIEW_MAX_WIDTH`] wide; `None` when
/// it is small enough already.
pub(super) fn preview_size(f: &I420) -> Option<I420> {
    let k = f.width.div_ceil(PREVIEW_MAX_WIDTH);
    if k <= 1 {
        return None;
    }
    let (w, h) = ((f.width / k) & !1, (f.height / k) & !1);
    let (sw, scw) = (f.width, f.width.div_ceil(2));
    let mut out = I420::new(w, h);
    for y in 0..h {
        let src = &f.y[y * k * sw..];
        for (x, d) in out.y[y * w..(y + 1) * w].iter_mut().enumerate() {
            *d = src[x * k];
        }
    }
    let cw = w / 2;
    for y in 0..h / 2 {
        for x in 0..cw {
            out.u[y * cw + x] = f.u[y * k * scw + x * k];
            out.v[y * cw + x] = f.v[y * k * scw + x * k];
        }
    }
    Some(out)
}

/// One encoded picture on its way to the connection.
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    pub data: Bytes,
    pub captured: Instant,
    pub duration: Duration,
    pub keyframe: bool,
}

/// Figures of the sending side.
#[derive(Debug, Default)]
pub struct SendStats {
    pub frames_captured: AtomicU64,
    pub frames_sent: AtomicU64,
    /// Dropped because the connection did not keep up (the next one is a keyframe).
    pub frames_dropped: AtomicU64,
    /// Not encoded because the connection still held earlier pictures (a slow link).
    pub frames_skipped: AtomicU64,
    /// The bitrate asked of the encoder now.
    pub target_bps: AtomicU64,
    /// The link (not the user's setting) limits the bitrate.
    pub link_limited: AtomicBool,
    /// What congestion control estimates the link carries (0: no estimate).
    pub estimate_bps: AtomicU64,
    /// The picture is sent smaller than captured (1: as captured).
    pub divisor: AtomicU32,
    pub bytes_sent: AtomicU64,
    pub keyframes_sent: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub encode_us: AtomicU64,
    /// Size of the pictures sent (after shrinking for the link).
    pub width: AtomicU32,
    pub height: AtomicU32,
}

/// Shared between the capture thread and whoever controls it.
#[derive(Debug, Default)]
pub struct SendControl {
    keyframe: AtomicBool,
    bitrate: AtomicU32,
    stop: AtomicBool,
    pub stats: SendStats,
}

impl SendControl {
    /// The next picture is a keyframe (the receiver asked).
    pub fn request_keyframe(&self) {
        self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.keyframe.store(true, Ordering::Release);
    }

    /// A new bitrate setting (bits per second, the most asked of the encoder) from the next
    /// picture on.
    pub fn set_bitrate(&self, bps: u32) {
        self.bitrate.store(bps.clamp(50_000, 20_000_000), Ordering::Release);
    }
}

/// Why our video stopped by itself.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum VideoFailure {
    /// The camera could not be found, opened or read.
    #[error(transparent)]
    Source(#[from] CameraError),
    #[error("cannot start the H.264 encoder: {0}")]
    Encoder(String),
}

/// What the capture thread says about itself.
#[derive(Clone, Debug, PartialEq)]
pub enum CaptureEvent {
    /// Pictures flow; `what` describes the source ("test pattern 1280x720 at 30 fps").
    Started { what: String },
    /// The source or the encoder failed (could not open, unplugged); no more pictures.
    Failed(VideoFailure),
}

/// Where the capture thread's output goes.
pub(super) struct Sink {
    pub out: mpsc::Sender<EncodedFrame>,
    /// Each captured picture, for our own preview.
    pub preview: Option<SlotWriter>,
    pub events: mpsc::UnboundedSender<CaptureEvent>,
    pub link: Option<Arc<dyn LinkFeedback>>,
}

/// A running capture thread; stops when dropped.
pub struct Capture {
    pub control: Arc<SendControl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    /// Opens the source on a thread of its own and starts encoding into `out`. `preview`
    /// receives each captured picture (converted there, not on the UI thread).
    /// `link`, when the connection has congestion control, sets the bitrate and picture size
    /// below the setting (see [`super::adapt`]).
    pub fn start(
        params: VideoParams,
        out: mpsc::Sender<EncodedFrame>,
        preview: Option<SlotWriter>,
        events: mpsc::UnboundedSender<CaptureEvent>,
        link: Option<Arc<dyn LinkFeedback>>,
    ) -> Capture {
        let (fps, bitrate) = (params.fps.clamp(1, 60), params.effective_bitrate());
        let sink = Sink { out, preview, events, link };
        Self::start_with(move || open_source(&params), fps, bitrate, sink)
    }

    /// [`Self::start`] with the source opened by `open` (on the capture thread).
    pub(super) fn start_with(
        open: impl FnOnce() -> Result<(Box<dyn Source>, String), CameraError> + Send + 'static,
        fps: u32,
        bitrate: u32,
        sink: Sink,
    ) -> Capture {
        let control = Arc::new(SendControl::default());
        control.set_bitrate(bitrate);
        control.keyframe.store(true, Ordering::Release);
        let c = control.clone();
        let thread = std::thread::Builder::new()
            .name("sidecall-capture".into())
            .spawn(move || capture_loop(open, fps, sink, c))
            .ok();
        Capture { control, thread }
    }
}

impl Drop for Capture {
    /// Stops the thread without waiting: it notices within one picture's time and ends
    /// (a camera read blocks at most that long).
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Release);
        drop(self.thread.take());
    }
}

fn open_source(params: &VideoParams) -> Result<(Box<dyn Source>, String), CameraError> {
    let fps = params.fps.clamp(1, 60);
    match params.source {
        VideoSource::TestPattern | VideoSource::NoisyTestPattern => {
            let mut pattern = TestPattern::new(params.size.width as usize, params.size.height as usize);
            if params.source == VideoSource::NoisyTestPattern {
                pattern = pattern.noisy(6);
            }
            let what = format!("test pattern {}x{} at {fps} fps", pattern.width, pattern.height);
            let src = PatternSource {
                pattern,
                n: 0,
                start: Instant::now(),
                interval: Duration::from_secs_f64(1.0 / f64::from(fps)),
            };
            Ok((Box::new(src), what))
        }
        VideoSource::Camera(index) => {
            let cam = Camera::open(index, params.size, fps)?;
            let what = cam.describe();
            Ok((Box::new(cam), what))
        }
    }
}

fn capture_loop(
    open: impl FnOnce() -> Result<(Box<dyn Source>, String), CameraError>,
    fps: u32,
    sink: Sink,
    control: Arc<SendControl>,
) {
    let Sink { out, preview, events, link } = sink;
    let (mut source, what) = match open() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("video source: {e}");
            let _ = events.send(CaptureEvent::Failed(VideoFailure::Source(e)));
            return;
        }
    };
    tracing::info!("video: sending {what}");
    // The preview goes blank when this thread ends, however it ends.
    struct ClearOnExit(Option<SlotWriter>);
    impl Drop for ClearOnExit {
        fn drop(&mut self) {
            if let Some(s) = &self.0 {
                s.clear();
            }
        }
    }
    let _clear = ClearOnExit(preview.clone());
    let _ = events.send(CaptureEvent::Started { what });
    let duration = Duration::from_secs_f64(1.0 / f64::from(fps));
    let mut setting = control.bitrate.load(Ordering::Acquire);
    let mut encoder = match H264Encoder::new(setting, fps as f32) {
        Ok(e) => e,
        Err(e) => {
            let _ = events.send(CaptureEvent::Failed(VideoFailure::Encoder(e.to_string())));
            return;
        }
    };
    // Made for the first picture's size.
    let mut adapter: Option<Adapter> = None;
    let mut divisor = 1;
    let mut small = I420::new(2, 2);
    let mut spare: Option<Vec<u8>> = None;
    let stats = &control.stats;
    while !control.stop.load(Ordering::Acquire) {
        let pic = match source.next() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("video source stopped: {e}");
                let _ = events.send(CaptureEvent::Failed(VideoFailure::Source(e)));
                return;
            }
        };
        let captured = Instant::now();
        stats.frames_captured.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = &preview {
            let shown = preview_size(&pic);
            spare = slot.put(i420_to_rgba(shown.as_ref().unwrap_or(&pic), spare.take().unwrap_or_default()));
        }
        if link.as_ref().is_some_and(|l| l.queue_delay() > MAX_QUEUE_DELAY) {
            // Still sending earlier pictures: this one would be shown late.
            stats.frames_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if adapter.as_ref().is_some_and(|a| a.size() != (pic.width, pic.height)) {
            // The source changed its size: start over from it.
            adapter = None;
            divisor = 0;
        }
        let adapter = adapter.get_or_insert_with(|| Adapter::new(setting, pic.width, pic.height, fps));
        let want = control.bitrate.load(Ordering::Acquire);
        if want != setting {
            setting = want;
            adapter.set_max(setting);
        }
        let estimate = link.as_ref().map(|l| l.estimate_bps());
        stats.estimate_bps.store(estimate.unwrap_or(0), Ordering::Relaxed);
        let plan = adapter.plan(captured, estimate);
        if plan.divisor != divisor {
            // Another size: a fresh encoder (its first picture is a keyframe).
            match H264Encoder::new(plan.bitrate, fps as f32) {
                Ok(e) => {
                    tracing::info!(
                        "video: sending {}x{} at {} kbit/s",
                        pic.width / plan.divisor as usize,
                        pic.height / plan.divisor as usize,
                        plan.bitrate / 1000
                    );
                    encoder = e;
                    divisor = plan.divisor;
                }
                Err(e) => tracing::warn!("cannot change the picture size: {e}"),
            }
        } else if plan.bitrate.abs_diff(encoder.bitrate()) > encoder.bitrate() / 32
            && let Err(e) = encoder.set_bitrate(plan.bitrate)
        {
            tracing::warn!("cannot change the bitrate: {e}");
        }
        stats.target_bps.store(u64::from(encoder.bitrate()), Ordering::Relaxed);
        stats.link_limited.store(plan.link_limited, Ordering::Relaxed);
        stats.divisor.store(divisor, Ordering::Relaxed);
        let pic = if divisor > 1 {
            shrink(&pic, divisor, &mut small);
            &small
        } else {
            &pic
        };
        stats.width.store(pic.width as u32, Ordering::Relaxed);
        stats.height.store(pic.height as u32, Ordering::Relaxed);
        if control.keyframe.swap(false, Ordering::AcqRel) {
            encoder.request_keyframe();
        }
        let t = Instant::now();
        let data = match encoder.encode(pic) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("encoding a picture failed: {e}");
                control.keyframe.store(true, Ordering::Release);
                continue;
            }
        };
        stats.encode_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        if data.is_empty() {
            continue; // rate control skipped this one
        }
        let keyframe = has_keyframe(&data);
        let len = data.len() as u64;
        match out.try_send(EncodedFrame { data: Bytes::from(data), captured, duration, keyframe }) {
            Ok(()) => {
                stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                if keyframe {
                    stats.keyframes_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The next pictures depend on this one: start over with a keyframe.
                stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                control.keyframe.store(true, Ordering::Release);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
