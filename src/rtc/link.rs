//! The interceptor chain of every connection, and what it tells the video sender about the
//! link.
//!
//! Send-side congestion control (webrtc 0.21.1's GCC over transport-wide congestion control
//! feedback, which is off by default) estimates what the path carries. The estimate leaves
//! the chain only as an attribute on the feedback packet that produced it, on its way from
//! the congestion controller (wire-most) through the pacer towards the application. Two taps
//! of ours sit around the pacer:
//!
//! - below it, [`Tap::BelowPacer`] records the estimate for the video sender, and hands the
//!   pacer the estimate times [`PACING_FACTOR`]: the crate's pacer sends at exactly the rate
//!   it is given, so a keyframe bigger than the average frame would queue behind it for
//!   seconds (libwebrtc paces at 2.5× the estimate for the same reason). It also counts the
//!   bytes the pacer releases;
//! - above it, [`Tap::AbovePacer`] counts the bytes that enter the pacer.
//!
//! The difference is the pacer's queue: the sender skips pictures while it holds more than a
//! fraction of a second (a picture queued longer would be shown late).
//!
//! Receive side: NACKs are sent every 20 ms (the crate's default is 100 ms), so a lost packet
//! comes back while the receiver still waits for it (see `media::video::receive`).

use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Gcc, Interceptor, NackGeneratorBuilder, NackResponderBuilder,
    PacerBuilder, Packet, ReceiverReportBuilder, Registry, SenderReportBuilder, Slot, StreamInfo,
    TaggedPacket, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

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
const NACK_INTERVAL: Duration = Duration::from_millis(20);

/// What the chain knows about the link, for the video sender.
#[derive(Debug)]
pub struct LinkState {
    /// Bits per second the path carries, as congestion control estimates it.
    estimate_bps: AtomicU64,
    /// Bytes that entered the pacer minus bytes it released.
    queued: AtomicI64,
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState { estimate_bps: AtomicU64::new(START_BPS), queued: AtomicI64::new(0) }
    }
}

impl LinkState {
    /// The current estimate, bits per second.
    pub fn estimate_bps(&self) -> u64 {
        self.estimate_bps.load(Ordering::Relaxed)
    }

    /// RTP bytes waiting in the pacer.
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Relaxed).max(0) as u64
    }

    /// How long the pacer needs to send what it holds.
    pub fn queue_delay(&self) -> Duration {
        let rate = self.estimate_bps() as f64 * PACING_FACTOR;
        Duration::from_secs_f64(self.queued_bytes() as f64 * 8.0 / rate.max(1.0))
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
    let gcc = Gcc::new(START_BPS as f64, MIN_BPS as f64, MAX_BPS as f64);
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
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().with_interval(NACK_INTERVAL).build())
        .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(Slot::from(14_000), KeyframeForwarder::default()))
}

/// Which side of the pacer a [`Tap`] sits on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    BelowPacer,
    AbovePacer,
}

/// Passes everything on; counts RTP bytes on the write leg and, below the pacer, reads (and
/// scales for the pacer) the congestion controller's estimate on the read leg.
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
        if self.side == Side::BelowPacer {
            for attribute in &mut msg.message.attributes {
                if let Attribute::TargetBitrateChanged { bits_per_second } = attribute {
                    self.link.estimate_bps.store(*bits_per_second as u64, Ordering::Relaxed);
                    *bits_per_second *= PACING_FACTOR;
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
            let bytes = p.marshal_size() as i64;
            match self.side {
                Side::AbovePacer => self.link.queued.fetch_add(bytes, Ordering::Relaxed),
                Side::BelowPacer => self.link.queued.fetch_sub(bytes, Ordering::Relaxed),
            };
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

/// Passes inbound keyframe requests (PLI, FIR) on to the application, which alone can answer
/// them (by making the encoder emit a keyframe); every other inbound RTCP packet stays with
/// the interceptors that act on it. Last in the chain. After the webrtc crate's
/// `rtcp-processing` example (MIT/Apache-2.0).
#[derive(Default)]
pub(super) struct KeyframeForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
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
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
