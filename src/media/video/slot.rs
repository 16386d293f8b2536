//! The latest picture of a stream, for the window: one slot, replaced in place, owned by
//! one session at a time.

use crate::media::pattern::I420;
use parking_lot::Mutex;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
