//! The interceptor chain of every connection, and what it tells the video sender about the
//! link.
//!
//! Send-side congestion control (webrtc 0.21.1's GCC over transport-wide congestion control
//! feedback, which is off by default, with a queueing-delay guard of ours: see `estimate`)
//! estimates what the path carries. The estimate leaves
//! the chain only as an attribute on the feedback packet that produced it, on its way from
//! the congestion controller (wire-most) through the pacer towards the application. Two taps
//! of ours sit around the pacer:
//!
//! - below it, [`Tap::BelowPacer`] records the estimate for the video sender, and hands the
//!   pacer the estimate times [`PACING_FACTOR`]: the crate's pacer sends at exactly the rate
//!   it is given, so a keyframe bigger than the average frame would queue behind it for
//!   seconds (libwebrtc paces at 2.5× the estimate for the same reason). It also notes which
//!   packets the pacer releases;
//! - above it, [`Tap::AbovePacer`] notes when each packet enters the pacer.
//!
//! The age of the oldest packet still in the pacer is its queue delay: the sender skips
//! pictures while it is more than a fraction of a second (a picture queued longer would be
//! shown late). Time rather than a byte count, so a packet the pacer drops (its queue is
//! bounded) cannot leave a count that never returns to zero: a released packet clears every
//! older one, and nothing is older than [`FORGET_AFTER`].
//!
//! Receive side: NACKs are sent every 40 ms (the crate's default is 100 ms), at most
//! [`NACKS_PER_PACKET`] times for one packet (the default is without end, which on a slow
//! link turns a burst of loss into a storm of retransmissions), so a lost packet comes back
//! while the receiver still waits for it (see `media::video::receive`).

use parking_lot::Mutex;
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, NackGeneratorBuilder, NackResponderBuilder,
    PacerBuilder, Packet, ReceiverReportBuilder, Registry, SenderReportBuilder, Slot, StreamInfo,
    TaggedPacket, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The estimate a connection starts from, before the first feedback: 720p at 30 fps is
/// watchable at this rate, and a link slower than this is found within a second.
pub const START_BPS: u64 = 800_000;
/// The least the estimate falls to.
pub const MIN_BPS: u64 = 100_000;
/// The most it rises to (the video sender never asks for more than its own setting anyway).
pub const MAX_BPS: u64 = 20_000_000;
/// The pacer sends this much faster than the estimate, so that a keyframe leaves quickly.
pub const PACING_FACTOR: f64 = 2.5;
/// Packets the pacer holds at most (the video sender stops long before: see the module).
const PACER_QUEUE_PACKETS: usize = 2048;
/// How often the receiver repeats its NACKs for packets still missing.
const NACK_INTERVAL: Duration = Duration::from_millis(40);
/// How many times one missing packet is asked for.
const NACKS_PER_PACKET: u16 = 4;
/// A packet noted as entering the pacer this long ago is taken as dropped by it.
const FORGET_AFTER: Duration = Duration::from_secs(1);
/// Packets noted at most (a bound whatever the pacer does).
const PENDING_LIMIT: usize = 4096;

/// What the chain knows about the link, for the video sender.
#[derive(Debug)]
pub struct LinkState {
    /// Bits per second the path carries, as congestion control estimates it.
    estimate_bps: AtomicU64,
    /// Packets in the pacer, oldest first: (SSRC, sequence number, when it entered).
    pending: Mutex<VecDeque<(u32, u16, Instant)>>,
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState { estimate_bps: AtomicU64::new(START_BPS), pending: Mutex::default() }
    }
}

impl LinkState {
    /// The current estimate, bits per second.
    pub fn estimate_bps(&self) -> u64 {
        self.estimate_bps.load(Ordering::Relaxed)
    }

    /// How long the oldest packet in the pacer has waited.
    pub fn queue_delay(&self) -> Duration {
        let now = Instant::now();
        let mut pending = self.pending.lock();
        while pending.front().is_some_and(|(_, _, at)| now.duration_since(*at) > FORGET_AFTER) {
            pending.pop_front();
        }
        pending.front().map_or(Duration::ZERO, |(_, _, at)| now.duration_since(*at))
    }

    fn entered(&self, ssrc: u32, seq: u16, at: Instant) {
        let mut pending = self.pending.lock();
        if pending.len() >= PENDING_LIMIT {
            pending.pop_front();
        }
        pending.push_back((ssrc, seq, at));
    }

    fn released(&self, ssrc: u32, seq: u16) {
        let mut pending = self.pending.lock();
        // The pacer keeps order: everything before this one left (or was dropped) already.
        if let Some(i) = pending.iter().position(|&(s, q, _)| s == ssrc && q == seq) {
            pending.drain(..=i);
        }
    }
}

impl crate::media::video::LinkFeedback for LinkState {
    fn estimate_bps(&self) -> u64 {
        LinkState::estimate_bps(self)
    }

    fn queue_delay(&self) -> Duration {
        LinkState::queue_delay(self)
    }
}

/// The chain of every connection: NACK both ways, RTCP reports, transport-wide congestion
/// control feedback both ways, GCC with a pacer for what we send, our taps around the pacer,
/// and the keyframe requests handed to the application.
pub(super) fn chain(
    media: &mut MediaEngine,
    link: &Arc<LinkState>,
) -> Result<Registry, rtc::shared::error::Error> {
    for (typ, parameter) in [("nack", ""), ("nack", "pli")] {
        media.register_feedback(
            RTCPFeedback { typ: typ.into(), parameter: parameter.into() },
            RtpCodecKind::Video,
        );
    }
    // Transport-wide sequence numbers on what we send, feedback on what we receive (the
    // other side's estimator needs it, and Chromium sends it when this is offered).
    media.register_feedback(
        RTCPFeedback { typ: "transport-cc".into(), parameter: String::new() },
        RtpCodecKind::Video,
    );
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned() },
        RtpCodecKind::Video,
        None,
    )?;
    configure_simulcast_extension_headers(media)?;
    let gcc = super::estimate::GuardedGcc::new(START_BPS as f64, MIN_BPS as f64, MAX_BPS as f64);
    Ok(Registry::new()
        .with(Slot::CongestionControl, CongestionControlBuilder::new(gcc).build())
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(Slot::from(2_500), Tap::new(Side::BelowPacer, link.clone()))
        .with(
            Slot::Pacer,
            PacerBuilder::new()
                .with_target_bitrate(START_BPS as f64 * PACING_FACTOR)
                .with_queue_limit(PACER_QUEUE_PACKETS)
                .build(),
        )
        .with(Slot::from(3_500), Tap::new(Side::AbovePacer, link.clone()))
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_interval(NACK_INTERVAL)
                .with_max_nacks_per_packet(NACKS_PER_PACKET)
                .build(),
        )
        .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(Slot::from(14_000), Tap::new(Side::KeyframeRequests, link.clone())))
}

/// Where a [`Tap`] sits, and so what it does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    /// Wire-ward of the pacer: reads (and scales for the pacer) the estimate on the read leg,
    /// notes what the pacer released on the write leg.
    BelowPacer,
    /// Application-ward of the pacer: notes what enters it.
    AbovePacer,
    /// Last in the chain: passes inbound keyframe requests (PLI, FIR) on to the application,
    /// which alone can answer them (by making the encoder emit a keyframe); every other
    /// inbound RTCP packet stays with the interceptors that act on it. After the webrtc
    /// crate's `rtcp-processing` example (MIT/Apache-2.0).
    KeyframeRequests,
}

/// Passes everything on, doing what its [`Side`] says on the way.
struct Tap {
    side: Side,
    link: Arc<LinkState>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Tap {
    fn new(side: Side, link: Arc<LinkState>) -> Self {
        Tap { side, link, read: VecDeque::new(), write: VecDeque::new() }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Tap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        match self.side {
            Side::BelowPacer => {
                for attribute in &mut msg.message.attributes {
                    if let Attribute::TargetBitrateChanged { bits_per_second } = attribute {
                        self.link.estimate_bps.store(*bits_per_second as u64, Ordering::Relaxed);
                        *bits_per_second *= PACING_FACTOR;
                    }
                }
            }
            Side::AbovePacer => {}
            Side::KeyframeRequests => {
                if let Packet::Rtcp(packets) = &msg.message.packet {
                    let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                        .iter()
                        .filter(|p| {
                            let any = p.as_any();
                            any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                        })
                        .cloned()
                        .collect();
                    if requests.is_empty() {
                        return Ok(());
                    }
                    msg.message.packet = Packet::Rtcp(requests);
                    msg.message.add(Attribute::DeliverToApplication);
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &msg.message.packet {
            let (ssrc, seq) = (p.header.ssrc, p.header.sequence_number);
            match self.side {
                Side::AbovePacer => self.link.entered(ssrc, seq, Instant::now()),
                Side::BelowPacer => self.link.released(ssrc, seq),
                Side::KeyframeRequests => {}
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for Tap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
