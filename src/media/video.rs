//! Video pipelines, both off the UI thread and off the async runtime's workers:
//!
//! - sending: a capture thread takes pictures from the camera or the test pattern, encodes
//!   them to H.264 and hands the encoded frames to the connection; keyframe requests and
//!   bitrate changes reach it through [`SendControl`];
//! - receiving: RTP packets are put back together into whole frames ([`Assembler`]), a
//!   decoder thread decodes them and publishes only the latest picture ([`FrameSlot`]); a
//!   lost packet makes the receiver drop frames up to the next keyframe and ask for one.
//!
//! Both sides keep figures ([`SendStats`], [`RecvStats`]) for the app, the CLI and the
//! benchmark.

use super::codec::{H264Decoder, H264Encoder, has_keyframe};
use super::pattern::{I420, TestPattern, read_marks};
use crate::rtc::RtpVideoPacket;
use bytes::Bytes;
use parking_lot::Mutex;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Where the pictures we send come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoSource {
    /// The built-in moving test picture with frame counter and capture time.
    TestPattern,
    /// The test picture with camera-like sensor noise (the encoder works as with a camera).
    NoisyTestPattern,
    /// A camera by index (`None`: the first one).
    Camera(Option<u32>),
}

impl fmt::Display for VideoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoSource::TestPattern => f.write_str("test-pattern"),
            VideoSource::NoisyTestPattern => f.write_str("test-pattern:noisy"),
            VideoSource::Camera(None) => f.write_str("camera"),
            VideoSource::Camera(Some(i)) => write!(f, "camera:{i}"),
        }
    }
}

impl FromStr for VideoSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "test-pattern" | "pattern" | "test" => Ok(VideoSource::TestPattern),
            "test-pattern:noisy" => Ok(VideoSource::NoisyTestPattern),
            "camera" => Ok(VideoSource::Camera(None)),
            other => match other.strip_prefix("camera:").map(str::parse::<u32>) {
                Some(Ok(i)) => Ok(VideoSource::Camera(Some(i))),
                _ => Err(format!(
                    "unknown video source {s:?}: use test-pattern, test-pattern:noisy, camera or camera:N (N from `sidecall cameras`)"
                )),
            },
        }
    }
}

/// A picture size such as `1280x720`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad picture size {s:?}: write it as WIDTHxHEIGHT, e.g. 1280x720");
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let (width, height) = (w.parse::<u32>().map_err(|_| bad())?, h.parse::<u32>().map_err(|_| bad())?);
        if !(160..=3840).contains(&width) || !(120..=2160).contains(&height) {
            return Err(format!("picture size {s} is out of range (160x120 to 3840x2160)"));
        }
        Ok(Size { width, height })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// What to send: source, size, frame rate, bitrate.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoParams {
    pub source: VideoSource,
    pub size: Size,
    pub fps: u32,
    /// Bits per second; 0 picks one for the size and frame rate.
    pub bitrate: u32,
}

impl Default for VideoParams {
    fn default() -> Self {
        VideoParams {
            source: VideoSource::TestPattern,
            size: Size { width: 1280, height: 720 },
            fps: 30,
            bitrate: 0,
        }
    }
}

impl VideoParams {
    /// The bitrate asked of the encoder: the given one, or ~0.07 bits per pixel per frame
    /// (720p30 ≈ 1.9 Mbit/s, 640×480 at 30 ≈ 0.65 Mbit/s).
    pub fn effective_bitrate(&self) -> u32 {
        if self.bitrate > 0 {
            return self.bitrate.clamp(50_000, 20_000_000);
        }
        let px = u64::from(self.size.width) * u64::from(self.size.height) * u64::from(self.fps.max(1));
        (px * 7 / 100).clamp(150_000, 8_000_000) as u32
    }
}

/// Milliseconds since the Unix epoch: the clock the test pattern stamps on each frame.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A picture ready for display, RGBA.
#[derive(Clone, Debug)]
pub struct RgbaFrame {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

type Notify = Arc<dyn Fn() + Send + Sync>;

/// The latest picture of one stream: replaced in place, never queued. The UI reads it when
/// it paints; producers write through a [`SlotWriter`] and wake the UI through the notify
/// hook.
///
/// Each session takes the slot over ([`FrameSlot::take_over`]); writers of an earlier owner
/// are refused from then on, so a decoder or camera thread of a session that just ended can
/// never leave its last picture on the next session's screen.
#[derive(Default)]
pub struct FrameSlot {
    /// The picture, and the owner generation and open/closed state it is guarded by.
    inner: Mutex<SlotInner>,
    seq: AtomicU64,
    notify: Mutex<Option<Notify>>,
}

#[derive(Default)]
struct SlotInner {
    frame: Option<Arc<RgbaFrame>>,
    generation: u64,
    /// The stream stopped: pictures still in flight must not reappear.
    closed: bool,
}

impl fmt::Debug for FrameSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSlot").field("seq", &self.seq.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// The right to put pictures into a [`FrameSlot`], for one owner (a session).
#[derive(Clone)]
pub struct SlotWriter {
    slot: Arc<FrameSlot>,
    generation: u64,
}

impl fmt::Debug for SlotWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotWriter").field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl FrameSlot {
    pub fn new() -> Arc<Self> {
        Arc::new(FrameSlot::default())
    }

    /// Called after every change (e.g. `egui::Context::request_repaint`).
    pub fn set_notify(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.notify.lock() = Some(Arc::new(f));
    }

    /// A new owner: the slot is emptied and open, and earlier writers are refused.
    pub fn take_over(self: &Arc<Self>) -> SlotWriter {
        let generation = {
            let mut inner = self.inner.lock();
            inner.generation += 1;
            inner.closed = false;
            inner.frame = None;
            inner.generation
        };
        self.changed();
        SlotWriter { slot: self.clone(), generation }
    }

    fn changed(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        if let Some(n) = self.notify.lock().clone() {
            n();
        }
    }

    /// The number of changes so far and the picture now shown.
    pub fn latest(&self) -> (u64, Option<Arc<RgbaFrame>>) {
        let f = self.inner.lock().frame.clone();
        (self.seq.load(Ordering::Acquire), f)
    }
}

impl SlotWriter {
    /// Runs `f` on the slot's state if this writer still owns it; `None` otherwise.
    fn with<R>(&self, f: impl FnOnce(&mut SlotInner) -> R) -> Option<R> {
        let mut inner = self.slot.inner.lock();
        (inner.generation == self.generation).then(|| f(&mut inner))
    }

    /// Publishes a picture; gives back the buffer it replaced (or this one, if refused) when
    /// nobody else holds it, so the producer can reuse it.
    pub fn put(&self, frame: RgbaFrame) -> Option<Vec<u8>> {
        let mut frame = Some(frame);
        let old = self.with(|inner| {
            if inner.closed {
                return None;
            }
            inner.frame.replace(Arc::new(frame.take()?))
        });
        match frame {
            Some(refused) => Some(refused.rgba),
            None => {
                self.slot.changed();
                old.flatten().and_then(|a| Arc::try_unwrap(a).ok()).map(|f| f.rgba)
            }
        }
    }

    /// Empties the slot and refuses pictures until [`Self::open`].
    pub fn close(&self) {
        if self
            .with(|inner| {
                inner.closed = true;
                inner.frame = None;
            })
            .is_some()
        {
            self.slot.changed();
        }
    }

    /// Takes pictures again.
    pub fn open(&self) {
        self.with(|inner| inner.closed = false);
    }

    /// Empties the slot (it stays open).
    pub fn clear(&self) {
        if self.with(|inner| inner.frame.take().is_some()).unwrap_or(false) {
            self.slot.changed();
        }
    }
}

/// Converts a picture to RGBA into `buf` (reused when it has the right size).
pub fn i420_to_rgba(f: &I420, mut buf: Vec<u8>) -> RgbaFrame {
    let cw = f.width.div_ceil(2) as u32;
    let img = yuvutils_rs::YuvPlanarImage {
        y_plane: &f.y,
        y_stride: f.width as u32,
        u_plane: &f.u,
        u_stride: cw,
        v_plane: &f.v,
        v_stride: cw,
        width: f.width as u32,
        height: f.height as u32,
    };
    buf.resize(f.width * f.height * 4, 0);
    if let Err(e) = yuvutils_rs::yuv420_to_rgba(
        &img,
        &mut buf,
        f.width as u32 * 4,
        yuvutils_rs::YuvRange::Limited,
        yuvutils_rs::YuvStandardMatrix::Bt601,
    ) {
        tracing::debug!("colour conversion: {e}");
    }
    RgbaFrame { width: f.width, height: f.height, rgba: buf }
}

/// My own picture is shown small (picture-in-picture): pictures wider than this are
/// shrunk for the preview on the capture thread, which saves converting and uploading
/// pixels nobody sees.
const PREVIEW_MAX_WIDTH: usize = 640;

/// The picture shrunk by a whole factor to at most [`PREVIEW_MAX_WIDTH`] wide; `None` when
/// it is small enough already.
fn preview_size(f: &I420) -> Option<I420> {
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

/// A picture source the capture thread reads from.
trait Source {
    /// The next picture; blocks until it is due.
    fn next(&mut self) -> Result<I420, String>;
}

struct PatternSource {
    pattern: TestPattern,
    n: u64,
    start: Instant,
    interval: Duration,
}

impl Source for PatternSource {
    fn next(&mut self) -> Result<I420, String> {
        let due = self.start + self.interval * self.n as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > self.interval * 5 {
            // Fell far behind (machine busy): skip ahead instead of bursting.
            self.n = ((now - self.start).as_nanos() / self.interval.as_nanos().max(1)) as u64;
        }
        let f = self.pattern.frame(self.n, wall_ms());
        self.n += 1;
        Ok(f)
    }
}

impl Source for super::camera::Camera {
    fn next(&mut self) -> Result<I420, String> {
        self.frame()
    }
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
    pub bytes_sent: AtomicU64,
    pub keyframes_sent: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub encode_us: AtomicU64,
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

    /// A new target bitrate (bits per second) from the next picture on.
    pub fn set_bitrate(&self, bps: u32) {
        self.bitrate.store(bps.clamp(50_000, 20_000_000), Ordering::Release);
    }
}

/// What the capture thread says about itself.
#[derive(Clone, Debug, PartialEq)]
pub enum CaptureEvent {
    /// Pictures flow; `what` describes the source ("test pattern 1280x720 at 30 fps").
    Started { what: String },
    /// The source failed (could not open, unplugged); no more pictures.
    Failed(String),
}

/// A running capture thread; stops when dropped.
pub struct Capture {
    pub control: Arc<SendControl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    /// Opens the source on a thread of its own and starts encoding into `out`. `preview`
    /// receives each captured picture (converted there, not on the UI thread).
    pub fn start(
        params: VideoParams,
        out: mpsc::Sender<EncodedFrame>,
        preview: Option<SlotWriter>,
        events: mpsc::UnboundedSender<CaptureEvent>,
    ) -> Capture {
        let (fps, bitrate) = (params.fps.clamp(1, 60), params.effective_bitrate());
        Self::start_with(move || open_source(&params), fps, bitrate, out, preview, events)
    }

    /// [`Self::start`] with the source opened by `open` (on the capture thread).
    fn start_with(
        open: impl FnOnce() -> Result<(Box<dyn Source>, String), String> + Send + 'static,
        fps: u32,
        bitrate: u32,
        out: mpsc::Sender<EncodedFrame>,
        preview: Option<SlotWriter>,
        events: mpsc::UnboundedSender<CaptureEvent>,
    ) -> Capture {
        let control = Arc::new(SendControl::default());
        control.set_bitrate(bitrate);
        control.keyframe.store(true, Ordering::Release);
        let c = control.clone();
        let thread = std::thread::Builder::new()
            .name("sidecall-capture".into())
            .spawn(move || capture_loop(open, fps, out, preview, events, c))
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

fn open_source(params: &VideoParams) -> Result<(Box<dyn Source>, String), String> {
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
            let cam = super::camera::Camera::open(index, params.size, fps)?;
            let what = cam.describe();
            Ok((Box::new(cam), what))
        }
    }
}

fn capture_loop(
    open: impl FnOnce() -> Result<(Box<dyn Source>, String), String>,
    fps: u32,
    out: mpsc::Sender<EncodedFrame>,
    preview: Option<SlotWriter>,
    events: mpsc::UnboundedSender<CaptureEvent>,
    control: Arc<SendControl>,
) {
    let (mut source, what) = match open() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("video source: {e}");
            let _ = events.send(CaptureEvent::Failed(e));
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
    let mut bitrate = control.bitrate.load(Ordering::Acquire);
    let mut encoder = match H264Encoder::new(bitrate, fps as f32) {
        Ok(e) => e,
        Err(e) => {
            let _ = events.send(CaptureEvent::Failed(format!("cannot start the H.264 encoder: {e}")));
            return;
        }
    };
    let mut spare: Option<Vec<u8>> = None;
    let stats = &control.stats;
    while !control.stop.load(Ordering::Acquire) {
        let pic = match source.next() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("video source stopped: {e}");
                let _ = events.send(CaptureEvent::Failed(e));
                return;
            }
        };
        let captured = Instant::now();
        stats.frames_captured.fetch_add(1, Ordering::Relaxed);
        stats.width.store(pic.width as u32, Ordering::Relaxed);
        stats.height.store(pic.height as u32, Ordering::Relaxed);
        let want = control.bitrate.load(Ordering::Acquire);
        if want != bitrate {
            match H264Encoder::new(want, fps as f32) {
                Ok(e) => {
                    encoder = e;
                    bitrate = want;
                }
                Err(e) => tracing::warn!("cannot change the bitrate: {e}"),
            }
        }
        if control.keyframe.swap(false, Ordering::AcqRel) {
            encoder.request_keyframe();
        }
        let t = Instant::now();
        let data = match encoder.encode(&pic) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("encoding a picture failed: {e}");
                control.keyframe.store(true, Ordering::Release);
                continue;
            }
        };
        stats.encode_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        if let Some(slot) = &preview {
            let small = preview_size(&pic);
            spare = slot.put(i420_to_rgba(small.as_ref().unwrap_or(&pic), spare.take().unwrap_or_default()));
        }
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

/// What the assembler made of a packet.
#[derive(Debug, PartialEq)]
pub enum Assembled {
    /// A whole picture, Annex-B.
    Frame { data: Bytes, keyframe: bool },
    /// A picture that cannot be decoded (a packet of it or before it is missing); the
    /// sender should be asked for a keyframe.
    Dropped,
}

/// Puts RTP packets of H.264 back together into whole pictures (RFC 6184, single NAL,
/// STAP-A, FU-A). Strict: after any gap it drops pictures until the next keyframe, which
/// is what the decoder could use anyway.
#[derive(Debug)]
pub struct Assembler {
    depacketizer: H264Packet,
    expected: Option<u16>,
    timestamp: Option<u32>,
    parts: Vec<Bytes>,
    /// A packet of the picture being collected is missing.
    broken: bool,
    /// Pictures are dropped until a keyframe comes.
    need_keyframe: bool,
    pub lost_packets: u64,
    /// Pictures whose last packet never came (counted here: no packet completes them).
    pub incomplete_frames: u64,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler {
            depacketizer: H264Packet::default(),
            expected: None,
            timestamp: None,
            parts: Vec::new(),
            broken: false,
            need_keyframe: true,
            lost_packets: 0,
            incomplete_frames: 0,
        }
    }
}

impl Assembler {
    /// Whether pictures are being dropped until a keyframe.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.need_keyframe
    }

    /// The decoder lost track: drop pictures until the next keyframe.
    pub fn resync(&mut self) {
        self.need_keyframe = true;
    }

    pub fn push(&mut self, p: RtpVideoPacket) -> Option<Assembled> {
        if let Some(exp) = self.expected {
            let ahead = p.sequence.wrapping_sub(exp) as i16;
            if ahead < 0 {
                return None; // a duplicate or a late retransmission: already given up on
            }
            if ahead > 0 {
                self.lost_packets += ahead as u64;
                self.broken = true;
                self.need_keyframe = true;
            }
        }
        self.expected = Some(p.sequence.wrapping_add(1));
        if self.timestamp != Some(p.timestamp) {
            if !self.parts.is_empty() {
                // The previous picture's last packet never came.
                self.incomplete_frames += 1;
                self.need_keyframe = true;
            }
            self.parts.clear();
            self.broken = false;
            self.timestamp = Some(p.timestamp);
        }
        self.parts.push(p.payload);
        if !p.marker {
            return None;
        }
        let parts = std::mem::take(&mut self.parts);
        self.timestamp = None;
        if std::mem::take(&mut self.broken) {
            self.depacketizer = H264Packet::default();
            return Some(Assembled::Dropped);
        }
        let mut data = Vec::with_capacity(parts.iter().map(Bytes::len).sum::<usize>() + 64);
        for part in &parts {
            if !stap_a_well_formed(part) {
                self.depacketizer = H264Packet::default();
                self.need_keyframe = true;
                return Some(Assembled::Dropped);
            }
            match self.depacketizer.depacketize(part) {
                Ok(b) => data.extend_from_slice(&b),
                Err(e) => {
                    tracing::debug!("unreadable H.264 packet: {e}");
                    self.depacketizer = H264Packet::default();
                    self.need_keyframe = true;
                    return Some(Assembled::Dropped);
                }
            }
        }
        let keyframe = has_keyframe(&data);
        if self.need_keyframe && !keyframe {
            return Some(Assembled::Dropped);
        }
        self.need_keyframe = false;
        Some(Assembled::Frame { data: Bytes::from(data), keyframe })
    }
}

/// Whether a STAP-A payload's length fields fit the packet. Checked before the depacketizer
/// sees it: rtc-rtp 0.21.1 indexes past the end (a panic) on a truncated length field.
fn stap_a_well_formed(payload: &[u8]) -> bool {
    const STAP_A: u8 = 24;
    if payload.first().map(|b| b & 0x1f) != Some(STAP_A) {
        return true;
    }
    let mut at = 1;
    while at < payload.len() {
        let Some(len) = payload.get(at..at + 2) else { return false };
        at += 2 + (usize::from(len[0]) << 8 | usize::from(len[1]));
        if at > payload.len() {
            return false;
        }
    }
    true
}

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
    pub last_counter: Option<u64>,
    pub counter_stalls: u64,
}

/// A copy of the sending figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SendSnapshot {
    pub frames_captured: u64,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    pub bytes_sent: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub width: u32,
    pub height: u32,
    /// Mean encode time per picture.
    pub encode_ms: f64,
}

impl SendStats {
    pub fn snapshot(&self) -> SendSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let frames = l(&self.frames_captured);
        SendSnapshot {
            frames_captured: frames,
            frames_sent: l(&self.frames_sent),
            frames_dropped: l(&self.frames_dropped),
            bytes_sent: l(&self.bytes_sent),
            keyframes_sent: l(&self.keyframes_sent),
            keyframe_requests: l(&self.keyframe_requests),
            width: self.width.load(Ordering::Relaxed),
            height: self.height.load(Ordering::Relaxed),
            encode_ms: if frames == 0 { 0.0 } else { l(&self.encode_us) as f64 / frames as f64 / 1000.0 },
        }
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
        let (fps, mut lat) = {
            let mut r = self.recent.lock();
            let cutoff = Instant::now().checked_sub(Duration::from_secs(1));
            while let (Some(front), Some(cut)) = (r.decoded_at.front(), cutoff) {
                if *front < cut {
                    r.decoded_at.pop_front();
                } else {
                    break;
                }
            }
            (r.decoded_at.len() as f64, r.latency_ms.iter().copied().collect::<Vec<_>>())
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
            last_counter: (decoded > 0 && l(&self.counter_stalls) < decoded).then(|| l(&self.last_counter)),
            counter_stalls: l(&self.counter_stalls),
        }
    }

    /// Forgets the recent window (after the stream paused).
    pub fn reset_recent(&self) {
        let mut r = self.recent.lock();
        r.decoded_at.clear();
        r.latency_ms.clear();
    }

    fn decoded(&self, pic: &openh264::decoder::DecodedYUV<'_>) {
        use openh264::formats::YUVSource;
        let (w, h) = pic.dimensions();
        self.width.store(w as u32, Ordering::Relaxed);
        self.height.store(h as u32, Ordering::Relaxed);
        self.frames_decoded.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut r = self.recent.lock();
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
                if r.latency_ms.len() > LATENCY_WINDOW {
                    r.latency_ms.pop_front();
                }
            }
        }
    }
}

/// Shared between the receiving task and the decoder thread.
#[derive(Debug, Default)]
pub struct RecvControl {
    pub stats: RecvStats,
    /// The decoder failed: the receiving task resyncs and asks for a keyframe.
    decoder_lost: AtomicBool,
    /// Test hook: drop this many of the next packets as if the network had lost them.
    drop_packets: AtomicU32,
}

impl RecvControl {
    /// Simulates the loss of the next `n` packets (tests, demos).
    pub fn simulate_loss(&self, n: u32) {
        self.drop_packets.store(n, Ordering::Release);
    }
}

/// The least time between two keyframe requests.
const KEYFRAME_REQUEST_GAP: Duration = Duration::from_millis(250);

/// The receiving pipeline for one remote track: feed it packets; it decodes on its own
/// thread and shows the latest picture in `display` (if any).
pub struct Receiver {
    pub control: Arc<RecvControl>,
    assembler: Assembler,
    decoder_tx: Option<std::sync::mpsc::SyncSender<Bytes>>,
    last_request: Option<Instant>,
}

impl Receiver {
    pub fn start(display: Option<SlotWriter>, control: Arc<RecvControl>) -> Receiver {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
        let c = control.clone();
        let spawned = std::thread::Builder::new()
            .name("sidecall-decode".into())
            .spawn(move || decode_loop(rx, display, c));
        if let Err(e) = &spawned {
            tracing::warn!("cannot start the video decoder thread: {e}");
        }
        Receiver {
            control,
            assembler: Assembler::default(),
            decoder_tx: spawned.ok().map(|_| tx),
            last_request: None,
        }
    }

    /// Takes one packet; `true` when a keyframe should be requested now.
    pub fn packet(&mut self, p: RtpVideoPacket) -> bool {
        let stats = &self.control.stats;
        stats.packets.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
        let dropping = self.control.drop_packets.load(Ordering::Acquire);
        if dropping > 0 {
            self.control.drop_packets.store(dropping - 1, Ordering::Release);
            return false;
        }
        if self.control.decoder_lost.load(Ordering::Relaxed)
            && self.control.decoder_lost.swap(false, Ordering::AcqRel)
        {
            self.assembler.resync();
        }
        let before = (self.assembler.lost_packets, self.assembler.incomplete_frames);
        let result = self.assembler.push(p);
        let lost = self.assembler.lost_packets - before.0;
        if lost > 0 {
            stats.lost_packets.fetch_add(lost, Ordering::Relaxed);
        }
        let incomplete = self.assembler.incomplete_frames - before.1;
        if incomplete > 0 {
            stats.frames_received.fetch_add(incomplete, Ordering::Relaxed);
            stats.frames_dropped.fetch_add(incomplete, Ordering::Relaxed);
        }
        match result {
            Some(Assembled::Frame { data, keyframe }) => {
                stats.frames_received.fetch_add(1, Ordering::Relaxed);
                if keyframe {
                    stats.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                let sent = self.decoder_tx.as_ref().map(|tx| tx.try_send(data));
                if !matches!(sent, Some(Ok(()))) {
                    // The decoder is behind: what follows depends on this picture.
                    stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                    self.assembler.resync();
                }
            }
            Some(Assembled::Dropped) => {
                stats.frames_received.fetch_add(1, Ordering::Relaxed);
                stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        self.assembler.waiting_for_keyframe() && self.keyframe_request_due()
    }

    /// Whether a keyframe request may go out now (they are spaced out).
    fn keyframe_request_due(&mut self) -> bool {
        let now = Instant::now();
        if self.last_request.is_some_and(|t| now - t < KEYFRAME_REQUEST_GAP) {
            return false;
        }
        self.last_request = Some(now);
        self.control.stats.keyframe_requests_sent.fetch_add(1, Ordering::Relaxed);
        true
    }
}

fn decode_loop(rx: std::sync::mpsc::Receiver<Bytes>, display: Option<SlotWriter>, control: Arc<RecvControl>) {
    use openh264::formats::YUVSource;
    let mut decoder = match H264Decoder::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("cannot start the H.264 decoder: {e}");
            return;
        }
    };
    let mut spare: Vec<u8> = Vec::new();
    while let Ok(data) = rx.recv() {
        match decoder.decode_in_place(&data) {
            Ok(Some(pic)) => {
                control.stats.decoded(&pic);
                if let Some(slot) = &display {
                    let (w, h) = pic.dimensions();
                    spare.resize(w * h * 4, 0);
                    pic.write_rgba8(&mut spare);
                    let frame = RgbaFrame { width: w, height: h, rgba: std::mem::take(&mut spare) };
                    spare = slot.put(frame).unwrap_or_default();
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!("H.264 decode error: {e}");
                control.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                control.decoder_lost.store(true, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::packetizer::Payloader;

    /// Packetizes encoded pictures like the sending side does.
    fn packets(frames: &[Vec<u8>]) -> Vec<RtpVideoPacket> {
        let mut pay = H264Payloader::default();
        let mut out = Vec::new();
        let mut seq = 65_500u16; // wraps during the test
        for (i, f) in frames.iter().enumerate() {
            let parts = pay.payload(1200, &Bytes::from(f.clone())).expect("payload");
            let n = parts.len();
            for (j, payload) in parts.into_iter().enumerate() {
                out.push(RtpVideoPacket {
                    sequence: seq,
                    timestamp: 3000 * i as u32,
                    marker: j + 1 == n,
                    payload,
                });
                seq = seq.wrapping_add(1);
            }
        }
        out
    }

    /// A camera that delivers a few pictures, then is unplugged.
    struct Unplugged {
        left: u32,
    }

    impl Source for Unplugged {
        fn next(&mut self) -> Result<I420, String> {
            std::thread::sleep(Duration::from_millis(5));
            match self.left.checked_sub(1) {
                Some(l) => {
                    self.left = l;
                    Ok(TestPattern::new(320, 240).frame(u64::from(l), 0))
                }
                None => Err("the camera stopped delivering pictures: No such device".into()),
            }
        }
    }

    #[test]
    fn an_unplugged_camera_ends_the_video_with_its_reason_and_a_blank_preview() {
        let (tx, mut frames) = mpsc::channel(64);
        let (ev_tx, mut events) = mpsc::unbounded_channel();
        let preview = FrameSlot::new();
        let writer = preview.take_over();
        let open = || Ok((Box::new(Unplugged { left: 5 }) as Box<dyn Source>, "Fake camera".to_owned()));
        let _capture = Capture::start_with(open, 30, 300_000, tx, Some(writer), ev_tx);
        assert_eq!(events.blocking_recv(), Some(CaptureEvent::Started { what: "Fake camera".into() }));
        match events.blocking_recv() {
            Some(CaptureEvent::Failed(why)) => assert!(why.contains("No such device"), "{why}"),
            other => panic!("expected the failure, got {other:?}"),
        }
        let mut sent = 0;
        while let Ok(f) = frames.try_recv() {
            assert!(sent > 0 || f.keyframe, "the first picture is a keyframe");
            sent += 1;
        }
        // Rate control may skip one; the pictures before the unplug went out.
        assert!((1..=5).contains(&sent), "{sent} pictures sent");
        // The thread is gone and took the preview with it.
        for _ in 0..100 {
            if preview.latest().1.is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the preview still shows the last picture");
    }

    #[test]
    fn the_preview_of_a_large_picture_is_shrunk() {
        let p = TestPattern::new(1280, 720).frame(7, 1234);
        let small = preview_size(&p).expect("shrunk");
        assert_eq!((small.width, small.height), (640, 360));
        assert_eq!(small.y[small.width * 100 + 50], p.y[p.width * 200 + 100]);
        assert!(preview_size(&TestPattern::new(640, 480).frame(0, 0)).is_none());
        let odd = I420::new(1922, 1082);
        let s = preview_size(&odd).expect("shrunk");
        assert_eq!((s.width, s.height), (480, 270), "a whole factor (4) keeps it within 640");
    }

    #[test]
    fn sources_and_sizes_parse() {
        assert_eq!("test-pattern".parse::<VideoSource>(), Ok(VideoSource::TestPattern));
        assert_eq!("camera:2".parse::<VideoSource>(), Ok(VideoSource::Camera(Some(2))));
        assert!("webcam".parse::<VideoSource>().is_err());
        assert_eq!("1280x720".parse::<Size>(), Ok(Size { width: 1280, height: 720 }));
        assert!("1280".parse::<Size>().is_err());
        assert!("99999x1".parse::<Size>().is_err());
    }

    #[test]
    fn pictures_survive_packetization_and_loss_waits_for_a_keyframe() {
        let p = TestPattern::new(640, 480);
        let mut enc = H264Encoder::new(1_000_000, 30.0).expect("encoder");
        let mut frames = Vec::new();
        for n in 0..30u64 {
            if n == 20 {
                enc.request_keyframe();
            }
            frames.push(enc.encode(&p.frame(n, n * 33)).expect("encode"));
        }
        // Rate control may skip a picture (no output); count only those that exist.
        let present: Vec<u32> = (0..30).filter(|&n| !frames[n as usize].is_empty()).collect();
        assert!(present.contains(&20), "the requested keyframe is there");
        let pkts = packets(&frames);
        assert!(pkts.len() > frames.len(), "pictures span several packets");
        // Lose one packet of the first picture from 10 on.
        let first = *present.iter().find(|&&n| n >= 10).expect("a picture after 10");
        let lost = pkts.iter().position(|p| p.timestamp == 3000 * first).expect("its packets");
        // A picture of one packet vanishes whole: nothing of it arrives to be dropped.
        let whole = pkts.iter().filter(|p| p.timestamp == 3000 * first).count() == 1;
        let mut asm = Assembler::default();
        let mut dec = H264Decoder::new().expect("decoder");
        let mut counters = Vec::new();
        let mut dropped = 0;
        for (i, p) in pkts.into_iter().enumerate() {
            if i == lost {
                continue;
            }
            match asm.push(p) {
                Some(Assembled::Frame { data, .. }) => {
                    if let Some(pic) = dec.decode(&data).expect("decodes") {
                        counters.push(read_marks(&pic.y, pic.width, pic.width, pic.height).expect("marks").0);
                    }
                }
                Some(Assembled::Dropped) => dropped += 1,
                None => {}
            }
        }
        assert_eq!(asm.lost_packets, 1);
        let (waiting, shown): (Vec<u32>, Vec<u32>) = present.iter().partition(|&&n| (first..20).contains(&n));
        assert_eq!(
            dropped,
            waiting.len() - usize::from(whole),
            "pictures {waiting:?} are dropped until the keyframe at 20"
        );
        assert_eq!(counters, shown);
    }

    /// A hostile or broken peer: mutated packets of real pictures go through reassembly and
    /// the decoder without a panic (a light fuzz run; `fuzz/` has the libFuzzer target).
    #[test]
    fn mutated_packets_never_panic() {
        let p = TestPattern::new(320, 240);
        let mut enc = H264Encoder::new(300_000, 30.0).expect("encoder");
        let frames: Vec<Vec<u8>> = (0..8u64).map(|n| enc.encode(&p.frame(n, n)).expect("encode")).collect();
        let clean = packets(&frames);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut dec = H264Decoder::new().expect("decoder");
        let mut asm = Assembler::default();
        for round in 0..3000 {
            let mut pk = clean[round % clean.len()].clone();
            let mut payload = pk.payload.to_vec();
            for _ in 0..(rnd() % 4) {
                let pos = (rnd() as usize) % (payload.len() + 1);
                match rnd() % 4 {
                    0 if pos < payload.len() => payload[pos] = rnd() as u8,
                    1 => payload.insert(pos, rnd() as u8),
                    2 => payload.truncate(pos),
                    _ => pk.sequence = pk.sequence.wrapping_add(rnd() as u16 % 3),
                }
            }
            pk.payload = Bytes::from(payload);
            pk.marker ^= rnd() % 7 == 0;
            if let Some(Assembled::Frame { data, .. }) = asm.push(pk) {
                let _ = dec.decode(&data);
            }
        }
        // Damaged pictures straight into the decoder (what a peer could send as one frame).
        for round in 0..1500 {
            let mut f = frames[round % frames.len()].clone();
            for _ in 0..(1 + rnd() % 8) {
                let pos = (rnd() as usize) % f.len().max(1);
                if let Some(b) = f.get_mut(pos) {
                    *b = rnd() as u8;
                }
            }
            let _ = dec.decode(&f);
        }
    }

    #[test]
    fn garbage_packets_are_dropped_not_fatal() {
        let mut asm = Assembler::default();
        for (i, payload) in
            [&[][..], &[0x1c][..], &[0x18, 0xff, 0xff][..], &[0x7c, 0x85, 1, 2][..]].iter().enumerate()
        {
            let r = asm.push(RtpVideoPacket {
                sequence: i as u16,
                timestamp: i as u32,
                marker: true,
                payload: Bytes::copy_from_slice(payload),
            });
            assert_eq!(r, Some(Assembled::Dropped));
        }
    }

    #[test]
    fn slot_keeps_only_the_latest_picture_of_its_current_owner() {
        let slot = FrameSlot::new();
        let woke = Arc::new(AtomicU64::new(0));
        let w = woke.clone();
        slot.set_notify(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        let pic = |v: u8| RgbaFrame { width: 1, height: 1, rgba: vec![v, 0, 0, 255] };
        let first = slot.take_over();
        for i in 0..5u8 {
            first.put(pic(i));
        }
        let (seq, f) = slot.latest();
        assert_eq!(seq, 6, "taken over, then five pictures");
        assert_eq!(f.expect("a picture").rgba[0], 4);
        assert_eq!(woke.load(Ordering::Relaxed), 6);
        first.clear();
        assert!(slot.latest().1.is_none());
        first.put(pic(9));
        first.close();
        first.put(pic(10));
        assert!(slot.latest().1.is_none(), "a closed slot refuses late pictures");
        first.open();
        first.put(pic(11));
        assert_eq!(slot.latest().1.expect("open again").rgba[0], 11);
        // The next session takes over: the old writer can neither show nor clear anything.
        let second = slot.take_over();
        assert!(slot.latest().1.is_none());
        first.put(pic(12));
        assert!(slot.latest().1.is_none(), "a writer of an ended session is refused");
        second.put(pic(13));
        first.clear();
        first.close();
        assert_eq!(slot.latest().1.expect("the new owner's picture").rgba[0], 13);
    }
}
