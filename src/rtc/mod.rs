//! The WebRTC peer: one peer connection per accepted session, with the server relaying only
//! signaling. Everything of the `webrtc` crate the project uses goes through here, so an
//! upgrade touches this file alone.
//!
//! Configuration that matters (measured on webrtc 0.21.1):
//! - UDP sockets get 4 MiB receive/send buffers (the default ~212 KB drops packets under
//!   load and SCTP stalls on retransmission timeouts), through our runtime's socket hook,
//!   which also sends a relayed connection's datagrams in GSO batches (see `runtime`).
//! - Multicast DNS is off: no extra socket per connection; peers exchange IPs anyway.
//! - The data-channel send buffer is bounded, so a fast sender blocks instead of growing
//!   memory.
//! - Every connection negotiates one H.264 video transceiver in each direction (sendrecv)
//!   from the start, whether or not video was offered: starting or stopping video later is
//!   then only a matter of writing frames, with no renegotiation. Keyframe requests (PLI/FIR)
//!   from the receiver reach the sender's application through the last of `link`'s taps.
//! - Send-side congestion control (GCC with transport-wide feedback, a pacer) is on, and
//!   the video sender follows its estimate through [`LinkState`] (see `link`).

mod estimate;
mod link;
mod runtime;

pub use link::LinkState;

use crate::protocol::{IceServer, Role, SignalData};
use bytes::{Bytes, BytesMut};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCIceTransportPolicy;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

/// Most bytes one data channel may hold unsent; `send` waits beyond this.
const SEND_BUFFER_LIMIT: usize = 4 * 1024 * 1024;
/// Label of the channel files travel on.
pub const FILES_CHANNEL: &str = "files";

#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("WebRTC: {0}")]
    Webrtc(#[from] webrtc::error::Error),
    #[error("the peer connection failed: {0}")]
    Failed(String),
    #[error("unexpected signaling: {0}")]
    Signaling(String),
}

/// RTP payload type of H.264 in our offers (an answerer may pick another: the sender uses
/// the negotiated one, see [`Peer::local_video`]).
const H264_PAYLOAD_TYPE: u8 = 102;
/// Constrained Baseline, level 3.1, packetization mode 1: what browsers and OpenH264 share.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// RTP clock of video.
const VIDEO_CLOCK_RATE: u32 = 90_000;

fn h264_codec() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback { typ: typ.into(), parameter: parameter.into() };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: VIDEO_CLOCK_RATE,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
    }
}

/// Our outgoing video track, negotiated from the start.
#[derive(Clone)]
struct LocalTrack {
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
}

async fn add_video_track(pc: &Arc<dyn PeerConnection>) -> Result<LocalTrack, RtcError> {
    let ssrc = rand::random::<u32>();
    let track = Arc::new(TrackLocalStaticSample::new(
        std::time::Instant::now(),
        MediaStreamTrack::new(
            format!("sidecall-{ssrc:08x}"),
            format!("camera-{ssrc:08x}"),
            "camera".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: h264_codec(),
                ..Default::default()
            }],
        ),
    )?);
    let sender = pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>).await?;
    Ok(LocalTrack { track, sender, ssrc })
}

/// Writes encoded video into the connection; hears the receiver's keyframe requests.
#[derive(Clone)]
pub struct LocalVideo {
    inner: LocalTrack,
    payload_type: u8,
    link: Arc<LinkState>,
}

impl LocalVideo {
    /// What congestion control knows of the link (for the encoder's bitrate and size).
    pub fn link(&self) -> Arc<LinkState> {
        self.link.clone()
    }

    /// Sends one encoded picture (Annex-B H.264) lasting `duration`.
    pub async fn write(
        &self,
        annexb: Bytes,
        captured: std::time::Instant,
        duration: Duration,
    ) -> Result<(), RtcError> {
        let sample = rtc::media::Sample { data: annexb, duration, ..rtc::media::Sample::new(captured) };
        self.inner.track.sample_writer(self.inner.ssrc, self.payload_type).write_sample(&sample).await?;
        Ok(())
    }

    /// Waits for the receiver's next keyframe request; `None` once the connection is gone.
    pub async fn keyframe_requested(&self) -> Option<()> {
        loop {
            // Only keyframe requests reach the application (see `link::Side::KeyframeRequests`).
            if let TrackLocalEvent::OnRtcpPacket(_) = self.inner.track.poll().await? {
                return Some(());
            }
        }
    }
}

/// The other side's video as it arrives: RTP packets, and a way to ask for a keyframe.
pub struct RemoteVideo {
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
}

impl std::fmt::Debug for RemoteVideo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteVideo").field("ssrc", &self.ssrc).finish_non_exhaustive()
    }
}

/// One RTP packet of the remote video, as much of it as reassembly needs.
#[derive(Clone, Debug)]
pub struct RtpVideoPacket {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

impl RemoteVideo {
    /// The next packet; `None` once the track ended.
    pub async fn next_packet(&self) -> Option<RtpVideoPacket> {
        loop {
            match self.track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(p) => {
                    return Some(RtpVideoPacket {
                        sequence: p.header.sequence_number,
                        timestamp: p.header.timestamp,
                        marker: p.header.marker,
                        payload: p.payload,
                    });
                }
                TrackRemoteEvent::OnEnded => return None,
                _ => {}
            }
        }
    }

    /// Asks the sender for a keyframe (RTCP PLI).
    pub async fn request_keyframe(&self) -> Result<(), RtcError> {
        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: self.ssrc };
        Ok(self.track.write_rtcp(vec![Box::new(pli)]).await?)
    }
}

/// What a peer reports.
#[derive(Debug)]
pub enum PeerEvent {
    /// Send this to the other side through the server.
    Signal(SignalData),
    /// The files channel is open both ways.
    ChannelOpen(Channel),
    /// The other side's video track exists (frames may follow).
    RemoteVideo(RemoteVideo),
    Connected,
    /// The connection failed or closed.
    Closed(String),
}

struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.events.send(PeerEvent::Signal(SignalData::Candidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
            }));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(PeerEvent::Signal(SignalData::EndOfCandidates));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!("peer connection {state}");
        match state {
            RTCPeerConnectionState::Connected => {
                let _ = self.events.send(PeerEvent::Connected);
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                let _ = self.events.send(PeerEvent::Closed(format!("connection {state}")));
            }
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await != RtpCodecKind::Video {
            return;
        }
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            tracing::warn!("a remote video track without SSRC: ignored");
            return;
        };
        let _ = self.events.send(PeerEvent::RemoteVideo(RemoteVideo { track, ssrc }));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // The answering side learns of the caller's channel here; it opens on its own.
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Some(ch) = Channel::start(dc).await {
                let _ = events.send(PeerEvent::ChannelOpen(ch));
            }
        });
    }
}

/// One side of a data session's peer connection.
/// Which way a connection's data goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Between the two devices (host, server-reflexive or peer-reflexive candidates).
    Direct,
    /// Through a TURN relay (the server's, or a coturn).
    Relayed,
}

pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    role: Role,
    /// Shared with the runtime: a relayed connection keeps the driver's short timer.
    relayed: Arc<std::sync::atomic::AtomicBool>,
    /// Shared with the runtime: set while a relayed connection is being set up.
    racing: Arc<std::sync::atomic::AtomicBool>,
    /// Candidates that arrived before the remote description (trickle ICE reorders freely).
    early: tokio::sync::Mutex<Option<Vec<RTCIceCandidateInit>>>,
    /// Our video track (the answerer adds it on the offer's video section).
    video: tokio::sync::Mutex<Option<LocalTrack>>,
    /// What congestion control knows of the link, for the video sender.
    link: Arc<LinkState>,
}

impl Peer {
    /// The path of the selected candidate pair, once ICE has selected one.
    pub async fn path(&self) -> Option<Path> {
        // The channel is open: the set-up race is over.
        self.racing.store(false, std::sync::atomic::Ordering::Relaxed);
        use rtc::peer_connection::transport::RTCIceCandidateType;
        let ice = self.pc.sctp().await?.transport().ice_transport();
        let pair = ice.get_selected_candidate_pair().await.ok()??;
        let relayed =
            pair.local().typ == RTCIceCandidateType::Relay || pair.remote().typ == RTCIceCandidateType::Relay;
        if relayed {
            self.relayed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Some(if relayed { Path::Relayed } else { Path::Direct })
    }

    /// Creates the peer. The caller's side creates the files channel and the offer; its first
    /// events are the offer and candidates to forward.
    pub async fn start(
        role: Role,
        ice_servers: &[IceServer],
        allow_loopback: bool,
        relay_only: bool,
    ) -> Result<(Peer, mpsc::UnboundedReceiver<PeerEvent>), RtcError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let relayed = Arc::new(std::sync::atomic::AtomicBool::new(relay_only));
        let racing = Arc::new(std::sync::atomic::AtomicBool::new(relay_only));
        let servers = ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(allow_loopback)
            // Take the first pair that works instead of waiting for a better one (the default
            // waits up to a second for a peer-reflexive pair, which loopback often is).
            .with_host_acceptance_min_wait(Some(Duration::ZERO))
            .with_srflx_acceptance_min_wait(Some(Duration::ZERO))
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // A relayed session has nothing better to wait for (the default waits 2 s).
            .with_relay_acceptance_min_wait(relay_only.then_some(Duration::ZERO))
            // A 4 MiB SCTP window (default 1 MiB) keeps more data in flight.
            .with_sctp_max_receive_buffer_size(4 * 1024 * 1024)
            // Check candidate pairs every 10 ms instead of every 200 ms, for the same
            // 1.4 s budget: the connection comes up as soon as a pair answers.
            .with_ice_connection_attempts(Some(Duration::from_millis(10)), Some(140))
            .build();
        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters { rtp_codec: h264_codec(), payload_type: H264_PAYLOAD_TYPE },
            RtpCodecKind::Video,
        )?;
        let link = Arc::new(LinkState::default());
        let registry = link::chain(&mut media, &link)?;
        let pc = PeerConnectionBuilder::new()
            .with_configuration({
                let c = RTCConfigurationBuilder::new().with_ice_servers(servers);
                // Relayed sessions use the relay's candidates only: no address of ours is offered.
                if relay_only { c.with_ice_transport_policy(RTCIceTransportPolicy::Relay) } else { c }.build()
            })
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler { events: tx.clone() }))
            .with_runtime(runtime::runtime(relayed.clone(), racing.clone())?)
            .with_udp_addrs(vec![if allow_loopback { "127.0.0.1:0" } else { "0.0.0.0:0" }.to_string()])
            .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
            // The driver on a thread of its own instead of hopping between tokio workers.
            .with_dedicated_reactor_pool_size(1)
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let mut video = None;
        if role == Role::Caller {
            video = Some(add_video_track(&pc).await?);
            let dc = pc
                .create_data_channel(
                    FILES_CHANNEL,
                    Some(RTCDataChannelInit { ordered: true, ..Default::default() }),
                )
                .await?;
            let events = tx.clone();
            tokio::spawn(async move {
                if let Some(ch) = Channel::start(dc).await {
                    let _ = events.send(PeerEvent::ChannelOpen(ch));
                }
            });
            let offer = pc.create_offer(None).await?;
            let sdp = offer.sdp.clone();
            pc.set_local_description(offer).await?;
            let _ = tx.send(PeerEvent::Signal(SignalData::Offer { sdp }));
        }
        Ok((
            Peer {
                pc,
                role,
                relayed,
                racing,
                early: tokio::sync::Mutex::new(Some(Vec::new())),
                video: tokio::sync::Mutex::new(video),
                link,
            },
            rx,
        ))
    }

    /// Applies signaling from the other side; an offer is answered through the events.
    pub async fn signal(
        &self,
        data: SignalData,
        events: &mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(), RtcError> {
        match data {
            SignalData::Offer { sdp } if self.role == Role::Callee => {
                self.pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                // On the offer's video section: ours becomes sendrecv.
                let mut video = self.video.lock().await;
                if video.is_none() {
                    *video = Some(add_video_track(&self.pc).await?);
                }
                drop(video);
                let answer = self.pc.create_answer(None).await?;
                let sdp = answer.sdp.clone();
                self.pc.set_local_description(answer).await?;
                let _ = events.send(PeerEvent::Signal(SignalData::Answer { sdp }));
                self.apply_early_candidates().await?;
            }
            SignalData::Answer { sdp } if self.role == Role::Caller => {
                self.pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                self.apply_early_candidates().await?;
            }
            SignalData::Candidate { candidate, sdp_mid, sdp_mline_index } => {
                let init = RTCIceCandidateInit { candidate, sdp_mid, sdp_mline_index, ..Default::default() };
                let mut early = self.early.lock().await;
                match early.as_mut() {
                    Some(queue) => queue.push(init),
                    None => {
                        drop(early);
                        self.pc.add_ice_candidate(init).await?;
                    }
                }
            }
            SignalData::EndOfCandidates => {}
            other => return Err(RtcError::Signaling(format!("{other:?} does not fit this side"))),
        }
        Ok(())
    }

    /// The remote description is set: add what waited for it, and from now on add at once.
    async fn apply_early_candidates(&self) -> Result<(), RtcError> {
        let queued = self.early.lock().await.take().unwrap_or_default();
        for c in queued {
            self.pc.add_ice_candidate(c).await?;
        }
        Ok(())
    }

    /// Our video track, once negotiation settled its payload type (after `Connected`).
    pub async fn local_video(&self) -> Result<LocalVideo, RtcError> {
        let inner =
            self.video.lock().await.clone().ok_or_else(|| RtcError::Failed("no video track".into()))?;
        let params = inner.sender.get_parameters().await?;
        let payload_type = params
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or_else(|| RtcError::Failed("the peer accepted no H.264 video".into()))?;
        Ok(LocalVideo { inner, payload_type, link: self.link.clone() })
    }

    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!("closing the peer connection: {e}");
        }
    }
}

/// An open data channel: send bytes, receive messages.
pub struct Channel {
    dc: Arc<dyn DataChannel>,
    incoming: mpsc::Receiver<BytesMut>,
}

/// The sending half of a [`Channel`]; cheap to clone, usable from several tasks.
#[derive(Clone)]
pub struct ChannelTx {
    dc: Arc<dyn DataChannel>,
}

impl ChannelTx {
    /// Sends one message; waits while the send buffer is full.
    pub async fn send(&self, data: BytesMut) -> Result<(), RtcError> {
        Ok(self.dc.send(data).await?)
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

impl Channel {
    /// Waits for the channel to open, then pumps its messages into a bounded queue
    /// (a slow reader slows the sender down through SCTP's window, never grows memory).
    async fn start(dc: Arc<dyn DataChannel>) -> Option<Channel> {
        loop {
            match dc.poll().await? {
                DataChannelEvent::OnOpen => break,
                DataChannelEvent::OnClose => return None,
                _ => {}
            }
        }
        let (tx, incoming) = mpsc::channel(64);
        let reader = dc.clone();
        tokio::spawn(async move {
            while let Some(ev) = reader.poll().await {
                match ev {
                    DataChannelEvent::OnMessage(msg) => {
                        if tx.send(msg.data).await.is_err() {
                            break;
                        }
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        });
        Some(Channel { dc, incoming })
    }

    /// Sends one message; waits while the send buffer is full.
    pub async fn send(&self, data: BytesMut) -> Result<(), RtcError> {
        Ok(self.dc.send(data).await?)
    }

    /// A sender for other tasks (receiving stays here).
    pub fn sender(&self) -> ChannelTx {
        ChannelTx { dc: self.dc.clone() }
    }

    /// The next message; `None` once the channel closed.
    pub async fn recv(&mut self) -> Option<BytesMut> {
        self.incoming.recv().await
    }

    pub async fn close(&self) {
        let _ = self.dc.close().await;
    }
}
