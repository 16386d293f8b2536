//! Receiving: RTP packets put back in order ([`Reorder`]: a missing packet is waited for while
//! the connection's NACKs ask the sender for it again), put back together into whole frames
//! ([`Assembler`]), decoded on a thread of their own, the latest picture published
//! ([`super::FrameSlot`]); a packet that stays lost makes the receiver drop frames up to the
//! next keyframe and ask for one.

use super::slot::{RgbaFrame, SlotWriter};
use super::stats::RecvStats;
use crate::media::codec::{H264Decoder, has_keyframe};
use crate::rtc::RtpVideoPacket;
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a missing packet is waited for before the pictures it belongs to are given up:
/// the connection asks for it again every 40 ms, up to four times (`rtc::link`), so on any
/// path worth a video call it is back well within this.
pub const LOSS_WAIT: Duration = Duration::from_millis(200);
/// Packets held at most while one is missing (a longer hole is given up at once).
const REORDER_LIMIT: usize = 512;

/// Hands packets on in sequence order: one that arrives after a gap is held until the gap is
/// filled (a retransmission, or a packet that overtook another) or [`LOSS_WAIT`] has passed
/// since it arrived; then the gap is given up and the [`Assembler`] sees it as a loss.
#[derive(Debug, Default)]
pub struct Reorder {
    next: Option<u16>,
    held: HashMap<u16, (RtpVideoPacket, Instant)>,
}

impl Reorder {
    /// Takes a packet that arrived at `now`; what may be handed on is appended to `out`.
    pub fn push(&mut self, p: RtpVideoPacket, now: Instant, out: &mut VecDeque<RtpVideoPacket>) {
        let next = *self.next.get_or_insert(p.sequence);
        let ahead = p.sequence.wrapping_sub(next) as i16;
        if ahead < 0 || self.held.contains_key(&p.sequence) {
            return; // a duplicate, or a retransmission that came after we gave up on it
        }
        if ahead == 0 {
            out.push_back(p);
            self.next = Some(next.wrapping_add(1));
            self.drain(out);
            return;
        }
        self.held.insert(p.sequence, (p, now));
        if self.held.len() > REORDER_LIMIT {
            self.skip_all(out);
        }
    }

    /// Gives up the gaps that have been waited for long enough.
    pub fn expire(&mut self, now: Instant, out: &mut VecDeque<RtpVideoPacket>) {
        while let Some(seq) = self.first_held() {
            let waited = self.held.get(&seq).is_some_and(|(_, at)| now.duration_since(*at) >= LOSS_WAIT);
            if !waited {
                break;
            }
            self.next = Some(seq);
            self.drain(out);
        }
    }

    /// Whether a packet is missing now.
    pub fn waiting(&self) -> bool {
        !self.held.is_empty()
    }

    fn skip_all(&mut self, out: &mut VecDeque<RtpVideoPacket>) {
        while let Some(seq) = self.first_held() {
            self.next = Some(seq);
            self.drain(out);
        }
    }

    /// The held packet nearest after the gap.
    fn first_held(&self) -> Option<u16> {
        let next = self.next?;
        self.held.keys().copied().min_by_key(|s| s.wrapping_sub(next))
    }

    fn drain(&mut self, out: &mut VecDeque<RtpVideoPacket>) {
        let Some(mut next) = self.next else { return };
        while let Some((p, _)) = self.held.remove(&next) {
            out.push_back(p);
            next = next.wrapping_add(1);
        }
        self.next = Some(next);
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
    reorder: Reorder,
    ready: VecDeque<RtpVideoPacket>,
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
            reorder: Reorder::default(),
            ready: VecDeque::new(),
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
        let now = Instant::now();
        self.reorder.expire(now, &mut self.ready);
        self.reorder.push(p, now, &mut self.ready);
        self.assemble()
    }

    /// Gives up packets missing too long (call it while no packets arrive, every few tens of
    /// milliseconds); `true` when a keyframe should be requested now.
    pub fn tick(&mut self) -> bool {
        if !self.reorder.waiting() {
            return false;
        }
        self.reorder.expire(Instant::now(), &mut self.ready);
        self.assemble()
    }

    /// Whether a missing packet is being waited for.
    pub fn waiting(&self) -> bool {
        self.reorder.waiting()
    }

    fn assemble(&mut self) -> bool {
        while let Some(p) = self.ready.pop_front() {
            self.assemble_one(p);
        }
        self.assembler.waiting_for_keyframe() && self.keyframe_request_due()
    }

    fn assemble_one(&mut self, p: RtpVideoPacket) {
        let stats = &self.control.stats;
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
