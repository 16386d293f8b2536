//! The data side of an accepted session: a WebRTC peer whose signaling goes through the
//! server connection, and the file transfers on its channel. Used by the CLI and the app.

use crate::client::transfer::{self, ReceiveConfig, TransferCmd, TransferEvent, Way};
use crate::client::{ClientHandle, Event};
use crate::media::video::{
    Capture, CaptureEvent, EncodedFrame, FrameSlot, LinkFeedback, Receiver, RecvControl, RecvSnapshot,
    SendControl, SendSnapshot, SlotWriter, VideoFailure, VideoParams,
};
use crate::protocol::{IceServer, Role, SessionId, SignalData};
use crate::rtc::{LocalVideo, Peer, PeerEvent, RemoteVideo};
use parking_lot::Mutex;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What a data session reports.
#[derive(Clone, Debug, PartialEq)]
pub enum DataEvent {
    /// The peer-to-peer channel is open; files can flow. `open_ms`: since the session started.
    ChannelOpen {
        open_ms: u64,
        /// Direct or through a relay (`None`: not known).
        path: Option<crate::rtc::Path>,
    },
    Transfer(TransferEvent),
    Video(VideoEvent),
    /// The peer connection could not be made or broke.
    Failed(String),
}

/// What happens to the video of a session.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "video", rename_all = "snake_case")]
pub enum VideoEvent {
    /// Our pictures go out; `what` names the source.
    SendingStarted { what: String },
    /// We stopped sending (by choice).
    SendingStopped,
    /// Our source failed (no camera, unplugged…); nothing is sent, files are unaffected.
    /// `camera`: the camera was the problem (the test pattern would work).
    SendingFailed { reason: String, camera: bool },
    /// The other side started sending pictures.
    RemoteStarted,
    /// The other side stopped sending pictures.
    RemoteStopped,
}

/// Where a session's pictures are shown: the other side's, and our own preview.
#[derive(Clone, Debug, Default)]
pub struct VideoDisplay {
    pub remote: Option<Arc<FrameSlot>>,
    pub local: Option<Arc<FrameSlot>>,
}

/// Both directions' video figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VideoStats {
    /// `None` when we are not sending.
    pub sending: Option<SendSnapshot>,
    pub receiving: RecvSnapshot,
}

/// Video state shared with whoever holds the session.
#[derive(Debug, Default)]
struct VideoShared {
    recv: Arc<RecvControl>,
    send: Mutex<Option<Arc<SendControl>>>,
}

impl VideoShared {
    fn figures(&self) -> VideoStats {
        VideoStats {
            sending: self.send.lock().as_ref().map(|c| c.stats.snapshot()),
            receiving: self.recv.stats.snapshot(),
        }
    }
}

/// Reads a session's video figures whenever asked, from any thread.
#[derive(Clone, Debug)]
pub struct VideoStatsHandle(Arc<VideoShared>);

impl VideoStatsHandle {
    pub fn now(&self) -> VideoStats {
        self.0.figures()
    }
}

enum VideoCmd {
    Start(VideoParams),
    Stop,
}

/// Whether WebRTC should use loopback only (tests and demos on one machine):
/// `SIDECALL_RTC_LOOPBACK=1`.
pub fn loopback_from_env() -> bool {
    std::env::var("SIDECALL_RTC_LOOPBACK").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Handle to a running data session; dropping it closes the peer connection.
pub struct DataSession {
    pub session_id: SessionId,
    signals: mpsc::UnboundedSender<SignalData>,
    transfers: mpsc::UnboundedSender<TransferCmd>,
    video_cmds: mpsc::UnboundedSender<VideoCmd>,
    video: Arc<VideoShared>,
    close: Option<tokio::sync::oneshot::Sender<()>>,
}

pub struct DataConfig {
    pub role: Role,
    pub ice_servers: Vec<IceServer>,
    pub receive: ReceiveConfig,
    pub loopback: bool,
    /// Through the server's relay only (ICE policy relay, addresses scrubbed from signals).
    pub relayed: bool,
    /// Send video from the start (as soon as the connection is up).
    pub video: Option<VideoParams>,
    pub display: VideoDisplay,
}

impl DataSession {
    /// Starts the peer for `session_id` on the current tokio runtime.
    pub fn start(
        client: ClientHandle,
        session_id: SessionId,
        cfg: DataConfig,
        events: mpsc::UnboundedSender<DataEvent>,
    ) -> DataSession {
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        let (tr_tx, tr_rx) = mpsc::unbounded_channel();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let (video_tx, video_rx) = mpsc::unbounded_channel();
        let video = Arc::new(VideoShared::default());
        let chans = Channels { signals: sig_rx, transfers: tr_rx, video: video_rx, close: close_rx };
        tokio::spawn(drive(client, session_id.clone(), cfg, chans, video.clone(), events));
        DataSession {
            session_id,
            signals: sig_tx,
            transfers: tr_tx,
            video_cmds: video_tx,
            video,
            close: Some(close_tx),
        }
    }

    /// Starts sending video (or switches source); reported through [`VideoEvent`]s.
    pub fn start_video(&self, params: VideoParams) {
        let _ = self.video_cmds.send(VideoCmd::Start(params));
    }

    pub fn stop_video(&self) {
        let _ = self.video_cmds.send(VideoCmd::Stop);
    }

    /// A new target bitrate for the video we send (bits per second).
    pub fn set_video_bitrate(&self, bps: u32) {
        if let Some(c) = self.video.send.lock().as_ref() {
            c.set_bitrate(bps);
        }
    }

    /// Figures of both directions now.
    pub fn video_stats(&self) -> VideoStats {
        self.video.figures()
    }

    /// A handle that reads this session's video figures on demand (for the window).
    pub fn video_stats_handle(&self) -> VideoStatsHandle {
        VideoStatsHandle(self.video.clone())
    }

    /// Drops the next `packets` video packets on arrival, as a lossy network would (tests
    /// and demonstrations of keyframe recovery).
    pub fn simulate_video_loss(&self, packets: u32) {
        self.video.recv.simulate_loss(packets);
    }

    /// Signaling from the peer, as relayed by the server.
    pub fn signal(&self, data: SignalData) {
        let _ = self.signals.send(data);
    }

    /// Offers files (queued until the channel is open).
    pub fn send_files(&self, paths: Vec<PathBuf>) {
        let _ = self.transfers.send(TransferCmd::Send(paths));
    }

    pub fn accept_file(&self, id: u32) {
        let _ = self.transfers.send(TransferCmd::Accept(id));
    }

    pub fn reject_file(&self, id: u32) {
        let _ = self.transfers.send(TransferCmd::Reject(id));
    }

    pub fn cancel_file(&self, id: u32, way: Way) {
        let _ = self.transfers.send(TransferCmd::Cancel { id, way });
    }

    pub fn close(&mut self) {
        if let Some(c) = self.close.take() {
            let _ = c.send(());
        }
    }
}

impl Drop for DataSession {
    fn drop(&mut self) {
        self.close();
    }
}

/// Owns the data side of the current session and routes its signaling. Every user of the
/// client core (the app, each CLI command) feeds the core's events through
/// [`SessionController::observe`] and starts data sides with [`SessionController::start`];
/// nothing else handles [`Event::Signal`].
pub struct SessionController {
    client: ClientHandle,
    ice_servers: Vec<IceServer>,
    loopback: bool,
    events: mpsc::UnboundedSender<DataEvent>,
    current: Option<DataSession>,
    /// Sessions the server said are relayed, until their data side starts.
    relayed: std::collections::HashSet<SessionId>,
}

impl SessionController {
    /// Data events of every session go to `events`; `loopback` keeps WebRTC on loopback.
    pub fn new(client: ClientHandle, loopback: bool, events: mpsc::UnboundedSender<DataEvent>) -> Self {
        SessionController {
            client,
            ice_servers: Vec::new(),
            loopback,
            events,
            current: None,
            relayed: Default::default(),
        }
    }

    /// The ICE servers to use, if `Online` was seen before the controller was made.
    pub fn with_ice_servers(mut self, ice_servers: Vec<IceServer>) -> Self {
        self.ice_servers = ice_servers;
        self
    }

    /// Every event of the client core goes through here first: it learns the ICE servers,
    /// hands signals to the data side of their session, and gives back the data side of a
    /// session that ended (to read its last figures; dropping it closes the connection).
    pub fn observe(&mut self, ev: &Event) -> Option<DataSession> {
        match ev {
            Event::Online { ice_servers, .. } | Event::IceServers { ice_servers } => {
                self.ice_servers = ice_servers.clone();
                None
            }
            Event::Signal { session_id, data } => {
                match self.current.as_ref().filter(|d| d.session_id == *session_id) {
                    Some(d) => d.signal(data.clone()),
                    None => tracing::debug!(%session_id, "signal for a session without a data side"),
                }
                None
            }
            Event::SessionStarted { session_id, relayed: true, .. } => {
                self.relayed.insert(session_id.clone());
                None
            }
            Event::SessionEnded { session_id, .. } => {
                self.relayed.remove(session_id);
                self.current.take_if(|d| d.session_id == *session_id)
            }
            Event::Stopped | Event::LoggedOut { .. } => self.current.take(),
            _ => None,
        }
    }

    /// Starts the peer-to-peer side of the accepted session `session_id` (replacing any
    /// earlier one).
    pub fn start(
        &mut self,
        session_id: SessionId,
        role: Role,
        receive: ReceiveConfig,
        video: Option<VideoParams>,
        display: VideoDisplay,
    ) -> &DataSession {
        let cfg = DataConfig {
            role,
            ice_servers: self.ice_servers.clone(),
            receive,
            loopback: self.loopback,
            relayed: self.relayed.remove(&session_id),
            video,
            display,
        };
        let d = DataSession::start(self.client.clone(), session_id, cfg, self.events.clone());
        self.current.insert(d)
    }

    /// The running data side, if any.
    pub fn current(&self) -> Option<&DataSession> {
        self.current.as_ref()
    }

    /// Closes the running data side (if any).
    pub fn close(&mut self) {
        self.current = None;
    }
}

struct Channels {
    signals: mpsc::UnboundedReceiver<SignalData>,
    transfers: mpsc::UnboundedReceiver<TransferCmd>,
    video: mpsc::UnboundedReceiver<VideoCmd>,
    close: tokio::sync::oneshot::Receiver<()>,
}

/// Our outgoing video while it runs.
struct Sending {
    /// Held for its lifetime: dropping it stops the capture thread.
    #[allow(dead_code)]
    capture: Capture,
    writer: tokio::task::JoinHandle<()>,
    /// This capture's own reports: a replaced capture's late words never reach the drive.
    events: mpsc::UnboundedReceiver<CaptureEvent>,
}

/// Starts sending `params` on the connection's video track; `None` (and said why) if the
/// track cannot take it.
async fn start_sending(
    peer: &Peer,
    params: VideoParams,
    preview: Option<SlotWriter>,
    shared: &VideoShared,
    events: &mpsc::UnboundedSender<DataEvent>,
) -> Option<Sending> {
    match peer.local_video().await {
        Ok(lv) => {
            let (tx, rx) = mpsc::channel(8);
            let (cap_tx, cap_rx) = mpsc::unbounded_channel();
            let link: Arc<dyn LinkFeedback> = lv.link();
            let capture = Capture::start(params, tx, preview, cap_tx, Some(link));
            *shared.send.lock() = Some(capture.control.clone());
            let writer = tokio::spawn(write_video(lv, rx, capture.control.clone()));
            Some(Sending { capture, writer, events: cap_rx })
        }
        Err(e) => {
            *shared.send.lock() = None;
            let _ = events
                .send(DataEvent::Video(VideoEvent::SendingFailed { reason: e.to_string(), camera: false }));
            None
        }
    }
}

/// The next report of the capture running now (never, when none runs).
async fn capture_event(sending: &mut Option<Sending>) -> Option<CaptureEvent> {
    match sending {
        Some(s) => s.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        // Dropping the capture stops its thread within a picture's time.
        self.writer.abort();
    }
}

/// Writes encoded pictures into the connection and passes keyframe requests back.
async fn write_video(video: LocalVideo, mut frames: mpsc::Receiver<EncodedFrame>, control: Arc<SendControl>) {
    let mut requests_open = true;
    loop {
        tokio::select! {
            f = frames.recv() => {
                let Some(f) = f else { break };
                if let Err(e) = video.write(f.data, f.captured, f.duration).await {
                    tracing::debug!("writing video: {e}");
                }
            }
            r = video.keyframe_requested(), if requests_open => match r {
                Some(()) => control.request_keyframe(),
                None => requests_open = false,
            },
        }
    }
}

/// Reads the other side's video packets, reassembles and decodes them.
async fn read_video(remote: RemoteVideo, display: Option<SlotWriter>, control: Arc<RecvControl>) {
    let mut receiver = Receiver::start(display, control);
    // While a packet is missing, the wait for it ends on time even if nothing else arrives.
    const TICK: std::time::Duration = std::time::Duration::from_millis(20);
    loop {
        let request = if receiver.waiting() {
            match tokio::time::timeout(TICK, remote.next_packet()).await {
                Ok(Some(p)) => receiver.packet(p),
                Ok(None) => break,
                Err(_) => receiver.tick(),
            }
        } else {
            match remote.next_packet().await {
                Some(p) => receiver.packet(p),
                None => break,
            }
        };
        if request && let Err(e) = remote.request_keyframe().await {
            tracing::debug!("keyframe request: {e}");
        }
    }
}

async fn drive(
    client: ClientHandle,
    session_id: SessionId,
    cfg: DataConfig,
    chans: Channels,
    video: Arc<VideoShared>,
    events: mpsc::UnboundedSender<DataEvent>,
) {
    let Channels { mut signals, transfers, video: mut video_cmds, mut close } = chans;
    let started = Instant::now();
    // This session owns the pictures now: writers of an earlier one are refused.
    let remote_slot = cfg.display.remote.as_ref().map(|s| s.take_over());
    let local_slot = cfg.display.local.as_ref().map(|s| s.take_over());
    let relayed = cfg.relayed;
    // In a relayed session our signals show no address but the relay's.
    let out = |data: SignalData| if relayed { crate::server::relay::sdp::scrub(data) } else { data };
    let (peer, mut peer_events) = match Peer::start(cfg.role, &cfg.ice_servers, cfg.loopback, relayed).await {
        Ok(p) => p,
        Err(e) => {
            let _ = events.send(DataEvent::Failed(format!("cannot start the peer connection: {e}")));
            return;
        }
    };
    // Answers created from incoming offers come back through here.
    let (own_tx, mut own_rx) = mpsc::unbounded_channel::<PeerEvent>();
    let mut transfers = Some(transfers);
    let (tev_tx, mut tev_rx) = mpsc::unbounded_channel::<TransferEvent>();
    let mut connected = false;
    // What to send once connected, and what is being sent.
    let mut want_video = cfg.video.clone();
    let mut sending: Option<Sending> = None;
    let mut readers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // Our video stopped (by choice or failure): the other side clears its picture.
    let stopped = |sending: &mut Option<Sending>| {
        if sending.take().is_some() {
            *video.send.lock() = None;
            client.signal(&session_id, SignalData::Video { sending: false });
        }
    };
    loop {
        tokio::select! {
            s = signals.recv() => {
                let Some(s) = s else { break };
                if let SignalData::Video { sending: on } = s {
                    tracing::info!(%session_id, "the other side's video is {}", if on { "on" } else { "off" });
                    // Pictures still in flight when it stopped must not stay on screen.
                    if let Some(slot) = &remote_slot {
                        if on { slot.open() } else { slot.close() }
                    }
                    if !on {
                        video.recv.stats.reset_recent();
                    }
                    let _ = events.send(DataEvent::Video(if on { VideoEvent::RemoteStarted } else { VideoEvent::RemoteStopped }));
                } else if let Err(e) = peer.signal(s, &own_tx).await {
                    tracing::warn!(%session_id, "signaling: {e}");
                }
            }
            ev = peer_events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    PeerEvent::Signal(s) => client.signal(&session_id, out(s)),
                    PeerEvent::ChannelOpen(ch) => {
                        let open_ms = started.elapsed().as_millis() as u64;
                        let path = peer.path().await;
                        tracing::info!(%session_id, open_ms, ?path, "data channel open");
                        let _ = events.send(DataEvent::ChannelOpen { open_ms, path });
                        if let Some(cmds) = transfers.take() {
                            tokio::spawn(transfer::run(ch, cfg.receive.clone(), cmds, tev_tx.clone()));
                        }
                    }
                    PeerEvent::RemoteVideo(rv) => {
                        readers.push(tokio::spawn(read_video(rv, remote_slot.clone(), video.recv.clone())));
                    }
                    PeerEvent::Connected => {
                        connected = true;
                        if let Some(params) = want_video.take() {
                            sending = start_sending(&peer, params, local_slot.clone(), &video, &events).await;
                        }
                    }
                    PeerEvent::Closed(why) => {
                        let _ = events.send(DataEvent::Failed(why));
                    }
                }
            }
            Some(cmd) = video_cmds.recv() => match cmd {
                VideoCmd::Start(params) if connected => {
                    // A new source replaces the old one.
                    let was_sending = sending.take().is_some();
                    sending = start_sending(&peer, params, local_slot.clone(), &video, &events).await;
                    if was_sending && sending.is_none() {
                        client.signal(&session_id, SignalData::Video { sending: false });
                    }
                }
                VideoCmd::Start(params) => want_video = Some(params),
                VideoCmd::Stop => {
                    tracing::info!(%session_id, sending = sending.is_some(), "stop my video");
                    want_video = None;
                    if sending.is_some() {
                        stopped(&mut sending);
                        let _ = events.send(DataEvent::Video(VideoEvent::SendingStopped));
                    }
                }
            },
            Some(ev) = capture_event(&mut sending) => match ev {
                CaptureEvent::Started { what } => {
                    client.signal(&session_id, SignalData::Video { sending: true });
                    let _ = events.send(DataEvent::Video(VideoEvent::SendingStarted { what }));
                }
                CaptureEvent::Failed(why) => {
                    stopped(&mut sending);
                    let camera = matches!(why, VideoFailure::Source(_));
                    let _ = events.send(DataEvent::Video(VideoEvent::SendingFailed { reason: why.to_string(), camera }));
                }
            },
            Some(ev) = own_rx.recv() => {
                if let PeerEvent::Signal(s) = ev {
                    client.signal(&session_id, out(s));
                }
            }
            Some(t) = tev_rx.recv() => {
                let _ = events.send(DataEvent::Transfer(t));
            }
            _ = &mut close => break,
        }
    }
    drop(sending);
    for r in readers {
        r.abort();
    }
    if let Some(slot) = &remote_slot {
        slot.close();
    }
    if let Some(slot) = &local_slot {
        slot.clear();
    }
    peer.close().await;
    // Report what the transfer engine says as it winds down.
    while let Ok(t) = tev_rx.try_recv() {
        let _ = events.send(DataEvent::Transfer(t));
    }
}
