//! The desktop app's headless core: login and hosting, the call state the window shows,
//! history, settings, and the ring. It runs on its own thread with its own tokio runtime;
//! the window sends [`AppCommand`]s and receives [`AppEvent`]s, and every event wakes it.
//! Nothing here knows about egui, so it is driven the same way by the UI and by tests.

use crate::client::config::{self, Profile};
use crate::client::session::{
    DataConfig, DataEvent, DataSession, VideoDisplay, VideoEvent, VideoStats, VideoStatsHandle,
};
use crate::client::transfer::{self, ReceiveConfig, TransferEvent, Way};
use crate::client::{self, ClientConfig, ClientHandle, Event, StopReason, Waker, api};
use crate::media::camera::CameraInfo;
use crate::media::ring::Ringer;
use crate::media::video::{FrameSlot, Size, VideoParams, VideoSource};
use crate::protocol::{
    LoginRequest, Offer, Outcome, Party, PeerInfo, RegisterRequest, Role, SessionId, Settings,
};
use crate::server::{self, RunningServer, ServerConfig};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Where one profile keeps its files.
#[derive(Clone, Debug)]
pub struct AppPaths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub profile: String,
}

impl AppPaths {
    /// The platform's folders (or `SIDECALL_CONFIG_DIR` / `SIDECALL_DATA_DIR`).
    pub fn for_profile(profile: &str) -> Result<Self, config::ConfigError> {
        let config_dir = config::config_dir()?;
        let data_dir = config::data_dir().ok_or(config::ConfigError::NoConfigDir)?;
        Ok(AppPaths { config_dir, data_dir, profile: profile.to_string() })
    }

    fn profile_file(&self) -> Result<PathBuf, config::ConfigError> {
        config::profile_path(&self.config_dir, &self.profile)
    }

    fn settings_file(&self) -> PathBuf {
        self.config_dir.join("profiles").join(format!("{}.settings.toml", self.profile))
    }

    fn history_file(&self) -> PathBuf {
        self.data_dir.join("history").join(format!("{}.json", self.profile))
    }

    fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }
}

/// Settings kept on this computer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSettings {
    /// Country national numbers are read in (two letters).
    pub region: String,
    /// 0.0 … 1.0
    pub ring_volume: f32,
    pub ring_muted: bool,
    /// Requests from these numbers (E.164) are accepted without asking.
    pub auto_accept: Vec<String>,
    /// Start the registry server inside the app.
    pub host_server: bool,
    pub host_port: u16,
    /// Where received files go (default: Downloads/Sidecall).
    pub save_dir: Option<PathBuf>,
    /// Receive files the peer sends during a session without asking.
    pub auto_accept_files: bool,
    /// What to do when the phone places a call the watchers report.
    pub on_call: OnCall,
    /// End the data session when the phone call ends.
    pub end_with_call: bool,
    /// Area code local numbers are read in (call monitors report numbers as dialed).
    pub area_code: String,
    pub fritz: FritzSettings,
    pub ami: AmiSettings,
    pub phone: PhoneSettings,
    pub video: VideoSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VideoSettings {
    /// `camera` (the first), `camera:N` or `test-pattern`.
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// 0: chosen from size and frame rate.
    pub bitrate_kbps: u32,
    /// Show my own picture mirrored, as in a mirror.
    pub mirror_preview: bool,
    /// Turn my camera on when I accept a caller who offers video.
    pub camera_on_video_offer: bool,
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            source: "camera".into(),
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 0,
            mirror_preview: true,
            camera_on_video_offer: true,
        }
    }
}

impl VideoSettings {
    /// What to send, with `source` instead of the saved one if given.
    pub fn params(&self, source: Option<VideoSource>) -> VideoParams {
        let d = VideoParams::default();
        let size = Size { width: self.width, height: self.height };
        VideoParams {
            source: source.or_else(|| self.source.parse().ok()).unwrap_or(VideoSource::Camera(None)),
            size: if format!("{size}").parse::<Size>().is_ok() { size } else { d.size },
            fps: self.fps.clamp(1, 60),
            bitrate: self.bitrate_kbps.saturating_mul(1000),
        }
    }
}

/// Our video in the current session.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum VideoSending {
    #[default]
    Off,
    /// Opening the camera (or waiting for the connection).
    Starting,
    On {
        what: String,
    },
    /// The source failed: no camera, could not open, unplugged. Files go on.
    Failed(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct VideoState {
    pub sending: VideoSending,
    /// The other side sends pictures.
    pub remote_on: bool,
    /// The cameras found when last asked (`Err`: listing failed).
    pub cameras: Option<Result<Vec<CameraInfo>, String>>,
}

/// The pictures of the current session and their figures, shared with the window without
/// going through [`AppState`] (they change 30 times a second).
#[derive(Debug, Default)]
pub struct VideoView {
    pub remote: Arc<FrameSlot>,
    pub local: Arc<FrameSlot>,
    /// The running session's figures, read when asked (no polling while nothing runs).
    stats: parking_lot::Mutex<Option<VideoStatsHandle>>,
}

impl VideoView {
    /// The running session's video figures now.
    pub fn stats(&self) -> Option<VideoStats> {
        self.stats.lock().as_ref().map(|h| h.now())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCall {
    /// Request the session at once.
    #[default]
    Automatic,
    /// Ask in the window first.
    Ask,
    Off,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FritzSettings {
    pub enabled: bool,
    /// `fritz.box` or `192.168.178.1` (port 1012 unless given).
    pub host: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AmiSettings {
    pub enabled: bool,
    /// `pbx.local` (port 5038 unless given).
    pub host: String,
    pub username: String,
    pub secret: String,
    pub extension: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhoneSettings {
    pub enabled: bool,
    /// Where the action URLs are served.
    pub listen: String,
    /// Only this address may call them.
    pub phone_ip: String,
}

impl Default for PhoneSettings {
    fn default() -> Self {
        PhoneSettings { enabled: false, listen: "0.0.0.0:7481".into(), phone_ip: String::new() }
    }
}

fn with_port(host: &str, port: u16) -> String {
    let h = host.trim();
    if h.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        h.to_string()
    } else {
        format!("{h}:{port}")
    }
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            region: "DE".into(),
            ring_volume: 0.8,
            ring_muted: false,
            auto_accept: Vec::new(),
            host_server: false,
            host_port: server::DEFAULT_PORT,
            save_dir: None,
            auto_accept_files: true,
            on_call: OnCall::Automatic,
            end_with_call: true,
            area_code: String::new(),
            fritz: FritzSettings::default(),
            ami: AmiSettings::default(),
            phone: PhoneSettings::default(),
            video: VideoSettings::default(),
        }
    }
}

impl AppSettings {
    fn load(path: &Path) -> AppSettings {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("{} is damaged ({}); using defaults", path.display(), e.message());
                AppSettings::default()
            }),
            Err(_) => AppSettings::default(),
        }
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| std::io::Error::other(e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// How a past request or session went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HistoryOutcome {
    /// Accepted; lasted this many seconds.
    Completed {
        seconds: u64,
    },
    Declined,
    /// Incoming, never answered here.
    Missed,
    /// Outgoing, never answered there.
    NoAnswer,
    Unavailable,
    Cancelled,
    Failed {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Unix seconds.
    pub at: u64,
    pub direction: Direction,
    pub number: String,
    pub name: Option<String>,
    pub outcome: HistoryOutcome,
}

/// Most history entries kept.
const HISTORY_LIMIT: usize = 500;

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A login form's content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credentials {
    /// Ignored when `host_server` is set.
    pub server: String,
    pub number: String,
    pub display_name: String,
    pub password: String,
    pub region: String,
    pub device_ip: Option<IpAddr>,
    pub host_server: bool,
}

/// Which field of the login form an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Server,
    Number,
    DisplayName,
    Password,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LoginStatus {
    Idle,
    Busy(String),
    Failed { field: Option<Field>, message: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Connection {
    /// Not logged in.
    LoggedOut,
    Connecting {
        attempt: u32,
    },
    Online,
    Offline {
        reason: String,
        retry_in_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum OutgoingStatus {
    Dialing,
    Ringing,
    Accepted,
    Declined,
    NoAnswer,
    Unavailable,
    InvalidNumber(String),
    Cancelled,
    Failed(String),
}

impl OutgoingStatus {
    pub fn is_final(&self) -> bool {
        !matches!(self, OutgoingStatus::Dialing | OutgoingStatus::Ringing)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub req_id: u64,
    pub target: String,
    pub offer: Offer,
    pub session_id: Option<SessionId>,
    pub status: OutgoingStatus,
    /// The phone call that started it, if a watcher did.
    pub call_ref: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ringing {
    pub session_id: SessionId,
    pub caller: Party,
    pub offer: Offer,
    pub deadline: Instant,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Active {
    pub session_id: SessionId,
    pub role: Role,
    pub peer: PeerInfo,
    pub offer: Offer,
    pub since: Instant,
    pub call_ref: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FileStatus {
    /// Offered by the peer; waiting for Accept / Decline here.
    Offered,
    /// Being hashed before it is offered.
    Preparing,
    /// Offered to the peer; waiting for their answer.
    Waiting,
    Active,
    Done {
        path: Option<PathBuf>,
    },
    Failed(String),
    Rejected(String),
    Cancelled(String),
}

impl FileStatus {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            FileStatus::Done { .. }
                | FileStatus::Failed(_)
                | FileStatus::Rejected(_)
                | FileStatus::Cancelled(_)
        )
    }
}

/// One file of the session, either way.
#[derive(Clone, Debug, PartialEq)]
pub struct FileRow {
    pub id: u32,
    pub way: Way,
    pub name: String,
    pub size: u64,
    pub bytes: u64,
    /// Bytes per second, recent.
    pub speed: f64,
    pub status: FileStatus,
    pub(crate) last: (Instant, u64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hosting {
    /// What this app itself connects to.
    pub local_url: String,
    /// What others on the network use, if an address was found.
    pub lan_url: Option<String>,
}

/// Everything the window shows; sent whole after every change.
#[derive(Clone, Debug, PartialEq)]
pub struct AppState {
    /// The saved login, if any (pre-fills the login form).
    pub profile: Option<Profile>,
    pub login: LoginStatus,
    pub connection: Connection,
    pub account: Option<Party>,
    pub server_settings: Settings,
    pub blocked: Vec<String>,
    pub settings: AppSettings,
    pub outgoing: Option<Outgoing>,
    pub incoming: Vec<Ringing>,
    pub active: Option<Active>,
    /// How the last session ended, for a line in the window.
    pub last_ended: Option<StopReason>,
    /// Files of the current session, oldest first.
    pub files: Vec<FileRow>,
    /// The peer-to-peer channel of the session is open.
    pub channel_open: bool,
    pub video: VideoState,
    /// How each call watcher is doing.
    pub watchers: Vec<(crate::calls::Source, crate::calls::WatcherStatus)>,
    /// The phone dialed this number; start a session? (`on_call = ask`): (call_ref, E.164).
    pub call_prompt: Option<(String, String)>,
    pub history: Vec<HistoryEntry>,
    pub hosting: Option<Hosting>,
    /// The address of the interface that routes to the server being typed.
    pub detected_ip: Option<IpAddr>,
    /// Something the user should know (problems that are not a field's).
    pub notice: Option<String>,
}

impl AppState {
    pub fn new(settings: AppSettings) -> Self {
        AppState {
            profile: None,
            login: LoginStatus::Idle,
            connection: Connection::LoggedOut,
            account: None,
            server_settings: Settings::default(),
            blocked: Vec::new(),
            settings,
            outgoing: None,
            incoming: Vec::new(),
            active: None,
            last_ended: None,
            files: Vec::new(),
            channel_open: false,
            video: VideoState::default(),
            watchers: Vec::new(),
            call_prompt: None,
            history: Vec::new(),
            hosting: None,
            detected_ip: None,
            notice: None,
        }
    }

    /// Logged in (with a token), whether or not the connection is up right now.
    pub fn logged_in(&self) -> bool {
        self.connection != Connection::LoggedOut
    }
}

/// What the window asks of the core.
#[derive(Clone, Debug)]
pub enum AppCommand {
    Register(Credentials),
    Login(Credentials),
    Logout,
    /// Work out this device's address as seen on the way to `server`.
    DetectIp {
        server: String,
    },
    Dial {
        target: String,
        offer: Offer,
    },
    Answer {
        session_id: SessionId,
        accept: bool,
    },
    /// Accept a request that offers video, keeping my own camera off.
    AcceptWithoutVideo(SessionId),
    End {
        session_id: SessionId,
    },
    SetAccepting(bool),
    SetDoNotDisturb(bool),
    /// Local settings, and the block list (kept by the server).
    SaveSettings {
        settings: Box<AppSettings>,
        blocked: Vec<String>,
    },
    WindowFocused(bool),
    DismissNotice,
    /// Send these files in the current session.
    SendFiles(Vec<PathBuf>),
    /// Open the system's file picker, then send what was picked.
    PickFiles,
    AcceptFile(u32),
    RejectFile(u32),
    CancelFile {
        id: u32,
        way: Way,
    },
    /// Show a received file in the file manager.
    ShowInFolder(PathBuf),
    /// Answer the call prompt: start the session for the phone call, or not.
    CallPrompt(bool),
    /// A number handed over by a `tel:` link (a later launch or this one's own argument).
    TelLink(String),
    /// Try a watcher's connection with these settings once and say how it went.
    TestWatcher {
        source: crate::calls::Source,
        settings: Box<AppSettings>,
    },
    /// Play the ring once at this volume and say on which device (or why not).
    /// Start sending video in the session (`None`: the source in the settings).
    StartVideo(Option<VideoSource>),
    StopVideo,
    /// Look for cameras (the answer lands in `state.video.cameras`).
    ListCameras,
    /// Use this source from now on (`camera`, `camera:N`, `test-pattern`); switches a
    /// running video over.
    SetVideoSource(String),
    SetMirrorPreview(bool),
    /// The cameras found (sent by the core to itself).
    CamerasFound(Result<Vec<CameraInfo>, String>),
    TestRing {
        volume: f32,
    },
    Shutdown,
}

#[derive(Clone, Debug)]
pub enum AppEvent {
    State(Box<AppState>),
    /// A new request started ringing: the window should ask for attention.
    Ring {
        caller: Party,
    },
}

/// The window's side of the channels.
#[derive(Clone)]
pub struct AppHandle {
    tx: mpsc::UnboundedSender<AppCommand>,
    /// The session's pictures, for the window to draw.
    pub video: Arc<VideoView>,
}

impl AppHandle {
    pub fn send(&self, cmd: AppCommand) {
        if self.tx.send(cmd).is_err() {
            tracing::warn!("the core has stopped; command dropped");
        }
    }

    /// A handle whose commands go to `tx` (for tests of the window alone).
    pub fn from_sender(tx: mpsc::UnboundedSender<AppCommand>) -> Self {
        AppHandle { tx, video: Arc::default() }
    }
}

/// Starts the core on its own thread.
pub fn start(paths: AppPaths, wake: Waker) -> (AppHandle, std::sync::mpsc::Receiver<AppEvent>) {
    start_with(paths, wake, crate::client::session::loopback_from_env())
}

/// [`start`], choosing whether WebRTC uses loopback only.
pub fn start_with(
    paths: AppPaths,
    wake: Waker,
    loopback: bool,
) -> (AppHandle, std::sync::mpsc::Receiver<AppEvent>) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let own_tx = cmd_tx.clone();
    let (ev_tx, ev_rx) = std::sync::mpsc::channel();
    let video = Arc::new(VideoView::default());
    // One repaint per remote picture; my own preview wakes the window only while there is
    // no remote picture (otherwise it is drawn with the next remote one).
    let w = wake.clone();
    video.remote.set_notify(move || w());
    let w = wake.clone();
    let remote = Arc::downgrade(&video.remote);
    video.local.set_notify(move || {
        if remote.upgrade().is_none_or(|r| r.latest().1.is_none()) {
            w();
        }
    });
    let view = video.clone();
    let spawned = std::thread::Builder::new().name("sidecall-core".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("cannot start the core runtime: {e}");
                return;
            }
        };
        let mut core = Core::new(paths, ev_tx, wake, own_tx);
        core.loopback = loopback;
        core.video = view;
        rt.block_on(core.run(cmd_rx));
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the core thread: {e}");
    }
    (AppHandle { tx: cmd_tx, video }, ev_rx)
}

struct Core {
    paths: AppPaths,
    events: std::sync::mpsc::Sender<AppEvent>,
    wake: Waker,
    state: AppState,
    /// What the window was last sent.
    published: Option<AppState>,
    client: Option<ClientHandle>,
    client_events: Option<mpsc::UnboundedReceiver<Event>>,
    hosted: Option<RunningServer>,
    ringer: Ringer,
    focused: bool,
    ice_servers: Vec<crate::protocol::IceServer>,
    data: Option<DataSession>,
    data_tx: mpsc::UnboundedSender<DataEvent>,
    data_rx: mpsc::UnboundedReceiver<DataEvent>,
    /// Use loopback only for WebRTC (tests, demos on one machine).
    pub loopback: bool,
    /// Commands to itself (results of work done in the background).
    own: mpsc::UnboundedSender<AppCommand>,
    watcher_tasks: Vec<tokio::task::AbortHandle>,
    watcher_rx: Option<mpsc::UnboundedReceiver<crate::calls::WatcherEvent>>,
    /// A call to request as soon as the connection is up: (call_ref, E.164).
    pending_call: Option<(String, String)>,
    video: Arc<VideoView>,
    /// A session accepted with my camera off, although video was offered.
    camera_off_for: Option<SessionId>,
    /// The phone call (call_ref) ended before its request's session id was known.
    call_ended_early: Option<String>,
}

impl Core {
    fn new(
        paths: AppPaths,
        events: std::sync::mpsc::Sender<AppEvent>,
        wake: Waker,
        own: mpsc::UnboundedSender<AppCommand>,
    ) -> Self {
        let settings = AppSettings::load(&paths.settings_file());
        let mut state = AppState::new(settings);
        state.history = load_history(&paths.history_file());
        state.profile = paths.profile_file().ok().and_then(|p| match Profile::load(&p) {
            Ok(p) => p,
            Err(e) => {
                state.notice = Some(e.to_string());
                None
            }
        });
        let (data_tx, data_rx) = mpsc::unbounded_channel();
        Core {
            paths,
            events,
            wake,
            state,
            published: None,
            client: None,
            client_events: None,
            hosted: None,
            ringer: Ringer::new(),
            focused: true,
            ice_servers: Vec::new(),
            data: None,
            data_tx,
            data_rx,
            loopback: crate::client::session::loopback_from_env(),
            own,
            watcher_tasks: Vec::new(),
            watcher_rx: None,
            pending_call: None,
            video: Arc::default(),
            camera_off_for: None,
            call_ended_early: None,
        }
    }

    /// Sends the state to the window if it changed (signaling and other events that change
    /// nothing visible cost neither a copy nor a repaint).
    fn publish(&mut self) {
        if self.published.as_ref() == Some(&self.state) {
            return;
        }
        let snapshot = self.state.clone();
        let _ = self.events.send(AppEvent::State(Box::new(snapshot.clone())));
        self.published = Some(snapshot);
        (self.wake)();
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<AppCommand>) {
        self.resume().await;
        self.start_watchers();
        self.publish();
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None | Some(AppCommand::Shutdown) => break,
                    Some(cmd) => self.command(cmd).await,
                },
                ev = next_event(&mut self.client_events) => match ev {
                    Some(ev) => self.client_event(ev),
                    None => self.client_events = None,
                },
                Some(dev) = self.data_rx.recv() => self.data_event(dev),
                Some(wev) = next_watcher(&mut self.watcher_rx) => self.watcher_event(wev),
            }
            self.publish();
        }
        self.ringer.stop();
        for w in self.watcher_tasks.drain(..) {
            w.abort();
        }
        let _ = std::fs::remove_file(crate::calls::tel::socket_path(&self.paths.profile));
        if let Some(c) = self.client.take() {
            c.shutdown();
        }
        if let Some(s) = self.hosted.take() {
            s.shutdown().await;
        }
    }

    /// On start: host the server again if asked to, and go online with the saved token.
    async fn resume(&mut self) {
        let Some(profile) = self.state.profile.clone() else { return };
        let Some(token) = profile.token.clone() else { return };
        let mut server_url = profile.server.clone();
        if self.state.settings.host_server {
            match self.host().await {
                Ok(url) => server_url = url,
                Err(message) => self.state.notice = Some(message),
            }
        }
        self.go_online(&server_url, &token, profile.device_ip);
    }

    /// Starts the in-app server (once); returns the URL this app uses for it.
    async fn host(&mut self) -> Result<String, String> {
        if let Some(h) = &self.state.hosting {
            return Ok(h.local_url.clone());
        }
        self.state.login = LoginStatus::Busy("Starting the server on this computer…".into());
        self.publish();
        let port = self.state.settings.host_port;
        let mut cfg = ServerConfig::new(SocketAddr::from(([0, 0, 0, 0], port)), self.paths.server_dir());
        cfg.hub.default_region = self.state.settings.region.clone();
        let running = server::start(cfg).await.map_err(|e| match e {
            server::ServerError::Bind { .. } => format!(
                "cannot host a server: port {port} is in use (is another Sidecall hosting here?). \
                 Connect to that one instead, or free the port."
            ),
            other => format!("cannot host a server: {other}"),
        })?;
        let port = running.addr.port();
        let local_url = format!("http://127.0.0.1:{port}");
        // The address of the interface a LAN peer would reach (no packet is sent).
        let lan_url = api::local_ip_towards("http://192.0.2.1:80")
            .filter(|ip| !ip.is_loopback())
            .map(|ip| format!("http://{ip}:{port}"));
        tracing::info!(%local_url, ?lan_url, "hosting a server");
        self.state.hosting = Some(Hosting { local_url: local_url.clone(), lan_url });
        self.hosted = Some(running);
        Ok(local_url)
    }

    fn go_online(&mut self, server: &str, token: &str, device_ip: Option<IpAddr>) {
        if let Some(old) = self.client.take() {
            old.shutdown();
        }
        let mut cfg = ClientConfig::new(server, token);
        cfg.device_ip = device_ip;
        let wake = self.wake.clone();
        let (handle, events) = client::spawn(cfg, Some(wake));
        self.client = Some(handle);
        self.client_events = Some(events);
        self.state.connection = Connection::Connecting { attempt: 1 };
    }

    async fn command(&mut self, cmd: AppCommand) {
        match cmd {
            AppCommand::Register(c) => self.login(c, true).await,
            AppCommand::Login(c) => self.login(c, false).await,
            AppCommand::Logout => self.logout().await,
            AppCommand::DetectIp { server } => {
                // Name resolution may block: keep it off this task's thread.
                let ip =
                    tokio::task::spawn_blocking(move || api::local_ip_towards(&server)).await.ok().flatten();
                self.state.detected_ip = ip;
            }
            AppCommand::Dial { target, offer } => self.dial(target, offer),
            AppCommand::AcceptWithoutVideo(session_id) => {
                self.camera_off_for = Some(session_id.clone());
                if let Some(c) = &self.client {
                    c.answer(&session_id, true);
                }
                self.stop_ringing_for(&session_id, None);
            }
            AppCommand::Answer { session_id, accept } => {
                if let Some(c) = &self.client {
                    c.answer(&session_id, accept);
                }
                self.stop_ringing_for(
                    &session_id,
                    if accept { None } else { Some(HistoryOutcome::Declined) },
                );
            }
            AppCommand::End { session_id } => {
                if let Some(c) = &self.client {
                    c.end(&session_id);
                }
            }
            AppCommand::SetAccepting(on) => {
                if let Some(c) = &self.client {
                    c.update_settings(Some(on), None);
                }
            }
            AppCommand::SetDoNotDisturb(on) => {
                if let Some(c) = &self.client {
                    c.update_settings(None, Some(on));
                }
            }
            AppCommand::SaveSettings { settings, blocked } => self.save_settings(*settings, blocked),
            AppCommand::WindowFocused(f) => self.focused = f,
            AppCommand::StartVideo(source) => match &self.data {
                Some(d) => {
                    d.start_video(self.state.settings.video.params(source));
                    self.state.video.sending = VideoSending::Starting;
                }
                None => self.state.notice = Some("Video can be started during a session.".into()),
            },
            AppCommand::StopVideo => {
                if let Some(d) = &self.data {
                    d.stop_video();
                }
                self.state.video.sending = VideoSending::Off;
            }
            AppCommand::ListCameras => {
                let own = self.own.clone();
                tokio::spawn(async move {
                    let found = tokio::task::spawn_blocking(crate::media::camera::list)
                        .await
                        .unwrap_or_else(|e| Err(format!("listing cameras failed: {e}")));
                    let _ = own.send(AppCommand::CamerasFound(found));
                });
            }
            AppCommand::CamerasFound(found) => self.state.video.cameras = Some(found),
            AppCommand::SetVideoSource(source) => match source.parse::<VideoSource>() {
                Ok(s) => {
                    self.change_settings(|v| v.video.source = s.to_string());
                    let running =
                        matches!(self.state.video.sending, VideoSending::On { .. } | VideoSending::Starting);
                    if let (Some(d), true) = (&self.data, running) {
                        d.start_video(self.state.settings.video.params(Some(s)));
                        self.state.video.sending = VideoSending::Starting;
                    }
                }
                Err(e) => self.state.notice = Some(e),
            },
            AppCommand::SetMirrorPreview(on) => self.change_settings(|v| v.video.mirror_preview = on),
            AppCommand::DismissNotice => self.state.notice = None,
            AppCommand::SendFiles(paths) => match &self.data {
                Some(d) if !paths.is_empty() => d.send_files(paths),
                Some(_) => {}
                None => self.state.notice = Some("Files can be sent during a session.".into()),
            },
            AppCommand::PickFiles => {
                let own = self.own.clone();
                tokio::spawn(async move {
                    if let Some(files) =
                        rfd::AsyncFileDialog::new().set_title("Send files").pick_files().await
                    {
                        let paths = files.iter().map(|f| f.path().to_path_buf()).collect();
                        let _ = own.send(AppCommand::SendFiles(paths));
                    }
                });
            }
            AppCommand::AcceptFile(id) => {
                if let Some(d) = &self.data {
                    d.accept_file(id);
                }
            }
            AppCommand::RejectFile(id) => {
                if let Some(d) = &self.data {
                    d.reject_file(id);
                }
            }
            AppCommand::CancelFile { id, way } => {
                if let Some(d) = &self.data {
                    d.cancel_file(id, way);
                }
            }
            AppCommand::TestWatcher { source, settings } => {
                use crate::calls::{self, Source};
                let result = match source {
                    Source::Fritz => calls::fritz::probe(&with_port(&settings.fritz.host, 1012)).await,
                    Source::Ami => {
                        let cfg = calls::ami::AmiConfig {
                            addr: with_port(&settings.ami.host, 5038),
                            username: settings.ami.username.clone(),
                            secret: settings.ami.secret.clone(),
                            extension: settings.ami.extension.clone(),
                        };
                        calls::ami::probe(&cfg).await
                    }
                    Source::Phone | Source::Tel => Ok(()),
                };
                self.state.notice = Some(match result {
                    Ok(()) => format!("{}: connection works.", source.label()),
                    Err(e) => format!("{}: {e}", source.label()),
                });
            }
            AppCommand::CallPrompt(yes) => {
                if let Some((call_ref, number)) = self.state.call_prompt.take()
                    && yes
                {
                    self.dial_for_call(number, Offer { files: true, video: false }, Some(call_ref));
                }
            }
            AppCommand::TelLink(number) => {
                self.watcher_event(crate::calls::WatcherEvent::Call(
                    crate::calls::Source::Tel,
                    crate::calls::CallEvent::Outgoing { call_ref: "tel:launch".into(), number },
                ));
            }
            AppCommand::ShowInFolder(path) => {
                if let Err(e) = show_in_folder(&path) {
                    self.state.notice = Some(format!("cannot open the folder: {e}"));
                }
            }
            AppCommand::TestRing { volume } => {
                let d = std::time::Duration::from_millis(1600);
                let played =
                    tokio::task::spawn_blocking(move || crate::media::ring::sound_check(d, volume)).await;
                self.state.notice = Some(match played {
                    Ok(Ok(device)) => format!("Played the ring on {device}."),
                    Ok(Err(e)) => format!("No sound for the ring: {e}. Requests still show in the window."),
                    Err(e) => format!("The sound check failed: {e}"),
                });
            }
            AppCommand::Shutdown => {}
        }
    }

    /// Saves the settings with one change (the block list as it is).
    fn change_settings(&mut self, change: impl FnOnce(&mut AppSettings)) {
        let mut settings = self.state.settings.clone();
        change(&mut settings);
        let blocked = self.state.blocked.clone();
        self.save_settings(settings, blocked);
    }

    fn save_settings(&mut self, mut settings: AppSettings, blocked: Vec<String>) {
        let region = settings.region.clone();
        let mut bad = Vec::new();
        settings.auto_accept = settings
            .auto_accept
            .iter()
            .filter(|n| !n.trim().is_empty())
            .filter_map(|n| match crate::number::normalize(n, Some(&region)) {
                Ok(e) => Some(e.to_string()),
                Err(e) => {
                    bad.push(e.to_string());
                    None
                }
            })
            .collect();
        settings.ring_volume = settings.ring_volume.clamp(0.0, 1.0);
        if let Err(e) = settings.save(&self.paths.settings_file()) {
            self.state.notice = Some(format!("could not save the settings: {e}"));
        } else if !bad.is_empty() {
            self.state.notice = Some(format!("not added to auto-accept: {}", bad.join("; ")));
        }
        let watchers_changed = (&settings.fritz, &settings.ami, &settings.phone)
            != (&self.state.settings.fritz, &self.state.settings.ami, &self.state.settings.phone);
        if settings.video.bitrate_kbps != self.state.settings.video.bitrate_kbps
            && let Some(d) = &self.data
        {
            // Takes effect at once for the video being sent.
            d.set_video_bitrate(settings.video.params(None).effective_bitrate());
        }
        self.state.settings = settings;
        if watchers_changed {
            self.start_watchers();
        }
        let blocked: Vec<String> = blocked.into_iter().filter(|n| !n.trim().is_empty()).collect();
        if blocked != self.state.blocked
            && let Some(c) = &self.client
        {
            c.set_blocked(blocked);
        }
    }

    async fn login(&mut self, c: Credentials, register: bool) {
        let fail = |field, message: String| LoginStatus::Failed { field, message };
        let server_url = if c.host_server {
            match self.host().await {
                Ok(url) => url,
                Err(message) => {
                    self.state.login = fail(Some(Field::Server), message);
                    return;
                }
            }
        } else {
            match api::normalize_server_url(&c.server) {
                Ok(u) => u,
                Err(e) => {
                    self.state.login = fail(Some(Field::Server), e.to_string());
                    return;
                }
            }
        };
        let region = (!c.region.is_empty()).then(|| c.region.clone());
        if register {
            self.state.login = LoginStatus::Busy("Creating your account…".into());
            self.publish();
            let req = RegisterRequest {
                number: c.number.clone(),
                display_name: c.display_name.clone(),
                password: c.password.clone(),
                region: region.clone(),
            };
            if let Err(e) = api::register(&server_url, &req).await {
                self.state.login = fail(field_of(&e), e.to_string());
                return;
            }
        }
        self.state.login = LoginStatus::Busy("Logging in…".into());
        self.publish();
        let req = LoginRequest {
            number: c.number.clone(),
            password: c.password.clone(),
            region: region.clone(),
            device_ip: c.device_ip,
            device_name: std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()),
        };
        let resp = match api::login(&server_url, &req).await {
            Ok(r) => r,
            Err(e) => {
                self.state.login = fail(field_of(&e), e.to_string());
                return;
            }
        };
        let profile = Profile {
            server: server_url.clone(),
            number: resp.number.clone(),
            display_name: resp.display_name.clone(),
            region: region.clone(),
            device_ip: c.device_ip,
            token: Some(resp.token.clone()),
            device_id: Some(resp.device_id),
        };
        match self.paths.profile_file().and_then(|p| profile.save(&p)) {
            Ok(()) => {}
            Err(e) => self.state.notice = Some(format!("logged in, but the login was not saved: {e}")),
        }
        let mut settings = self.state.settings.clone();
        settings.host_server = c.host_server;
        if let Some(r) = region {
            settings.region = r;
        }
        if settings != self.state.settings {
            if let Err(e) = settings.save(&self.paths.settings_file()) {
                self.state.notice = Some(format!("could not save the settings: {e}"));
            }
            self.state.settings = settings;
        }
        self.state.profile = Some(profile);
        self.state.login = LoginStatus::Idle;
        self.go_online(&server_url, &resp.token, c.device_ip);
    }

    async fn logout(&mut self) {
        if let Some(c) = self.client.take() {
            c.shutdown();
        }
        self.client_events = None;
        self.ringer.stop();
        if let Some(mut profile) = self.state.profile.take() {
            if let Some(token) = profile.token.take()
                && let Err(e) = api::logout(&profile.server, &token).await
            {
                tracing::warn!("logout on the server failed (the token stays revoked locally): {e}");
            }
            profile.device_id = None;
            if let Err(e) = self.paths.profile_file().and_then(|p| profile.save(&p)) {
                self.state.notice = Some(e.to_string());
            }
            self.state.profile = Some(profile);
        }
        self.state.connection = Connection::LoggedOut;
        self.state.account = None;
        self.state.outgoing = None;
        self.state.incoming.clear();
        self.state.active = None;
    }

    fn dial(&mut self, target: String, offer: Offer) {
        self.dial_for_call(target, offer, None);
    }

    fn dial_for_call(&mut self, target: String, offer: Offer, call_ref: Option<String>) {
        let Some(c) = &self.client else { return };
        if self.state.outgoing.as_ref().is_some_and(|o| !o.status.is_final()) {
            self.state.notice = Some("a request is already ringing: cancel it first".into());
            return;
        }
        let req_id = c.dial_with(&target, offer, Some(self.state.settings.region.clone()), call_ref.clone());
        self.state.outgoing = Some(Outgoing {
            req_id,
            target,
            offer,
            session_id: None,
            status: OutgoingStatus::Dialing,
            call_ref,
        });
    }

    /// (Re)starts the call watchers the settings ask for.
    fn start_watchers(&mut self) {
        use crate::calls::{self, Emitter, Source};
        for w in self.watcher_tasks.drain(..) {
            w.abort();
        }
        self.state.watchers.clear();
        let (tx, rx) = mpsc::unbounded_channel();
        self.watcher_rx = Some(rx);
        let s = self.state.settings.clone();
        let spawn = |tasks: &mut Vec<tokio::task::AbortHandle>,
                     f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            tasks.push(tokio::spawn(f).abort_handle());
        };
        if s.fritz.enabled && !s.fritz.host.trim().is_empty() {
            let em = Emitter::new(Source::Fritz, tx.clone());
            spawn(&mut self.watcher_tasks, Box::pin(calls::fritz::run(with_port(&s.fritz.host, 1012), em)));
        }
        if s.ami.enabled && !s.ami.host.trim().is_empty() {
            let cfg = calls::ami::AmiConfig {
                addr: with_port(&s.ami.host, 5038),
                username: s.ami.username.clone(),
                secret: s.ami.secret.clone(),
                extension: s.ami.extension.trim().to_string(),
            };
            spawn(
                &mut self.watcher_tasks,
                Box::pin(calls::ami::run(cfg, Emitter::new(Source::Ami, tx.clone()))),
            );
        }
        if s.phone.enabled {
            match (s.phone.listen.trim().parse::<SocketAddr>(), s.phone.phone_ip.trim().parse::<IpAddr>()) {
                (Ok(listen), Ok(phone)) => {
                    let em = Emitter::new(Source::Phone, tx.clone());
                    spawn(&mut self.watcher_tasks, Box::pin(calls::action_url::run(listen, phone, em)));
                }
                _ => self.state.watchers.push((
                    Source::Phone,
                    calls::WatcherStatus::Failed {
                        reason: "set the listen address and the phone's IP address".into(),
                    },
                )),
            }
        }
        let path = calls::tel::socket_path(&self.paths.profile);
        spawn(&mut self.watcher_tasks, Box::pin(calls::tel::serve(path, Emitter::new(Source::Tel, tx))));
    }

    fn watcher_event(&mut self, ev: crate::calls::WatcherEvent) {
        use crate::calls::{CallEvent, WatcherEvent};
        match ev {
            WatcherEvent::Status(src, st) => match self.state.watchers.iter_mut().find(|(s, _)| *s == src) {
                Some(slot) => slot.1 = st,
                None => self.state.watchers.push((src, st)),
            },
            WatcherEvent::Call(_, CallEvent::Outgoing { call_ref, number }) => {
                self.phone_dialed(call_ref, &number)
            }
            WatcherEvent::Call(_, CallEvent::Ended { call_ref }) => {
                if self.state.call_prompt.as_ref().is_some_and(|(r, _)| *r == call_ref) {
                    self.state.call_prompt = None;
                }
                if !self.state.settings.end_with_call {
                    return;
                }
                let Some(c) = self.client.clone() else { return };
                if let Some(a) =
                    self.state.active.as_ref().filter(|a| a.call_ref.as_deref() == Some(call_ref.as_str()))
                {
                    tracing::info!(%call_ref, "the phone call ended: ending the session");
                    c.end(&a.session_id);
                } else if let Some(o) = self
                    .state
                    .outgoing
                    .as_ref()
                    .filter(|o| {
                        o.call_ref.as_deref() == Some(call_ref.as_str())
                            // Still ringing, or accepted with the start not yet seen here.
                            && matches!(o.status, OutgoingStatus::Dialing | OutgoingStatus::Ringing | OutgoingStatus::Accepted)
                    })
                {
                    match &o.session_id {
                        Some(id) => c.end(id),
                        // The request is out but its session id has not arrived yet (events
                        // from the phone and from the server race): end it when it does.
                        None => self.call_ended_early = Some(call_ref),
                    }
                }
            }
            WatcherEvent::Call(..) => {}
        }
    }

    /// The phone placed a call to `raw` (as dialed).
    fn phone_dialed(&mut self, call_ref: String, raw: &str) {
        let s = &self.state.settings;
        let area = (!s.area_code.trim().is_empty()).then_some(s.area_code.as_str());
        let number = match crate::number::normalize_dialed(raw, &s.region, area) {
            Ok(n) => n.to_string(),
            Err(e) => {
                self.state.notice = Some(format!("The phone dialed {raw}, which Sidecall cannot use: {e}"));
                return;
            }
        };
        match s.on_call {
            OnCall::Off => tracing::info!(%number, "the phone dialed; automatic sessions are off"),
            OnCall::Ask => self.state.call_prompt = Some((call_ref, number)),
            OnCall::Automatic if self.state.connection != Connection::Online => {
                // Just started (a tel: link opened the app): dial once online.
                self.pending_call = Some((call_ref, number));
            }
            OnCall::Automatic => {
                if self.state.active.is_none() {
                    self.dial_for_call(number, Offer { files: true, video: false }, Some(call_ref));
                }
            }
        }
    }

    fn record(&mut self, entry: HistoryEntry) {
        self.state.history.insert(0, entry);
        self.state.history.truncate(HISTORY_LIMIT);
        if let Err(e) = save_history(&self.paths.history_file(), &self.state.history) {
            tracing::warn!("cannot save the history: {e}");
        }
    }

    /// An incoming request stopped ringing here; `outcome` goes to the history if given.
    fn stop_ringing_for(&mut self, id: &SessionId, outcome: Option<HistoryOutcome>) {
        if let Some(pos) = self.state.incoming.iter().position(|r| r.session_id == *id) {
            let r = self.state.incoming.remove(pos);
            if let Some(outcome) = outcome {
                self.record(HistoryEntry {
                    at: now_unix(),
                    direction: Direction::Incoming,
                    number: r.caller.number,
                    name: Some(r.caller.display_name),
                    outcome,
                });
            }
        }
        if self.state.incoming.is_empty() {
            self.ringer.stop();
        }
    }

    fn outgoing_done(&mut self, status: OutgoingStatus, outcome: HistoryOutcome) {
        let Some(o) = self.state.outgoing.as_mut() else { return };
        o.status = status;
        let target = o.target.clone();
        if !matches!(outcome, HistoryOutcome::Completed { .. }) {
            self.record(HistoryEntry {
                at: now_unix(),
                direction: Direction::Outgoing,
                number: target,
                name: None,
                outcome,
            });
        }
    }

    fn client_event(&mut self, ev: Event) {
        match ev {
            Event::Connecting { attempt } => self.state.connection = Connection::Connecting { attempt },
            Event::Online { account, settings, ice_servers, .. } => {
                self.ice_servers = ice_servers;
                self.state.connection = Connection::Online;
                self.state.account = Some(account);
                self.state.server_settings = settings;
                if let Some((call_ref, number)) = self.pending_call.take() {
                    self.dial_for_call(number, Offer { files: true, video: false }, Some(call_ref));
                }
            }
            Event::Offline { reason, retry_in_ms } => {
                self.state.connection = Connection::Offline { reason, retry_in_ms }
            }
            Event::LoggedOut { reason } => {
                self.state.connection = Connection::LoggedOut;
                self.state.account = None;
                self.state.login = LoginStatus::Failed {
                    field: Some(Field::Password),
                    message: format!("{reason}: log in again"),
                };
                if let Some(p) = self.state.profile.as_mut() {
                    p.token = None;
                }
            }
            Event::Settings { settings } => self.state.server_settings = settings,
            Event::Blocked { numbers } => self.state.blocked = numbers,
            Event::Incoming { session_id, caller, offer, expires_in_ms, .. } => {
                if self.state.settings.auto_accept.contains(&caller.number)
                    && let Some(c) = &self.client
                {
                    tracing::info!(caller = %caller.number, "auto-accepting");
                    c.answer(&session_id, true);
                    return;
                }
                let deadline = Instant::now() + std::time::Duration::from_millis(expires_in_ms);
                self.state.incoming.push(Ringing { session_id, caller: caller.clone(), offer, deadline });
                if !self.state.settings.ring_muted {
                    self.ringer.start(self.state.settings.ring_volume);
                }
                if !self.focused {
                    notify_incoming(&caller, offer);
                }
                let _ = self.events.send(AppEvent::Ring { caller });
            }
            Event::IncomingClosed { session_id, reason } => {
                let outcome = match reason {
                    StopReason::AnsweredElsewhere => None,
                    StopReason::DeclinedElsewhere => Some(HistoryOutcome::Declined),
                    _ => Some(HistoryOutcome::Missed),
                };
                self.stop_ringing_for(&session_id, outcome);
            }
            Event::DialPending { req_id, session_id } => {
                if let Some(o) = self.state.outgoing.as_mut().filter(|o| o.req_id == req_id) {
                    if o.call_ref.is_some()
                        && o.call_ref == self.call_ended_early.take()
                        && let Some(c) = &self.client
                    {
                        tracing::info!("the phone call ended while the request went out: cancelling it");
                        c.end(&session_id);
                    }
                    o.session_id = Some(session_id);
                    o.status = OutgoingStatus::Ringing;
                }
            }
            Event::DialResult { req_id, outcome, .. } => {
                if self.state.outgoing.as_ref().is_none_or(|o| o.req_id != req_id) {
                    return;
                }
                let (status, hist) = match outcome {
                    Outcome::Accepted => (OutgoingStatus::Accepted, HistoryOutcome::Completed { seconds: 0 }),
                    Outcome::Declined => (OutgoingStatus::Declined, HistoryOutcome::Declined),
                    Outcome::TimedOut => (OutgoingStatus::NoAnswer, HistoryOutcome::NoAnswer),
                    Outcome::Unavailable => (OutgoingStatus::Unavailable, HistoryOutcome::Unavailable),
                    Outcome::InvalidNumber { reason } => {
                        (OutgoingStatus::InvalidNumber(reason.clone()), HistoryOutcome::Failed { reason })
                    }
                    Outcome::Cancelled => (OutgoingStatus::Cancelled, HistoryOutcome::Cancelled),
                };
                self.outgoing_done(status, hist);
            }
            Event::DialFailed { req_id, message, .. } => {
                if self.state.outgoing.as_ref().is_some_and(|o| o.req_id == req_id) {
                    self.outgoing_done(
                        OutgoingStatus::Failed(message.clone()),
                        HistoryOutcome::Failed { reason: message },
                    );
                }
            }
            Event::SessionStarted { session_id, role, offer, peer } => {
                self.stop_ringing_for(&session_id, None);
                self.state.last_ended = None;
                self.state.files.clear();
                self.state.channel_open = false;
                self.state.video =
                    VideoState { cameras: self.state.video.cameras.take(), ..Default::default() };
                // Video from the start when it was offered: the caller asked for it, and the
                // callee accepted it (if the setting says so).
                let camera_off = self.camera_off_for.take().is_some_and(|s| s == session_id);
                let video = (offer.video
                    && !camera_off
                    && (role == Role::Caller || self.state.settings.video.camera_on_video_offer))
                    .then(|| self.state.settings.video.params(None));
                if video.is_some() {
                    self.state.video.sending = VideoSending::Starting;
                }
                if let Some(c) = &self.client {
                    let cfg = DataConfig {
                        role,
                        ice_servers: self.ice_servers.clone(),
                        receive: ReceiveConfig {
                            dir: self
                                .state
                                .settings
                                .save_dir
                                .clone()
                                .unwrap_or_else(transfer::default_save_dir),
                            auto_accept: self.state.settings.auto_accept_files,
                        },
                        loopback: self.loopback,
                        video,
                        display: VideoDisplay {
                            remote: Some(self.video.remote.clone()),
                            local: Some(self.video.local.clone()),
                        },
                    };
                    let d = DataSession::start(c.clone(), session_id.clone(), cfg, self.data_tx.clone());
                    *self.video.stats.lock() = Some(d.video_stats_handle());
                    self.data = Some(d);
                }
                let call_ref = self
                    .state
                    .outgoing
                    .as_ref()
                    .filter(|o| o.session_id.as_ref() == Some(&session_id))
                    .and_then(|o| o.call_ref.clone());
                self.state.active =
                    Some(Active { session_id, role, peer, offer, since: Instant::now(), call_ref });
            }
            Event::SessionEnded { session_id, reason } => {
                if self.data.as_ref().is_some_and(|d| d.session_id == session_id) {
                    self.data = None;
                    self.state.channel_open = false;
                    self.state.video.sending = VideoSending::Off;
                    self.state.video.remote_on = false;
                    *self.video.stats.lock() = None;
                }
                if let Some(a) = self.state.active.take_if(|a| a.session_id == session_id) {
                    self.record(HistoryEntry {
                        at: now_unix(),
                        direction: match a.role {
                            Role::Caller => Direction::Outgoing,
                            Role::Callee => Direction::Incoming,
                        },
                        number: a.peer.number,
                        name: Some(a.peer.display_name),
                        outcome: HistoryOutcome::Completed { seconds: a.since.elapsed().as_secs() },
                    });
                    self.state.last_ended = Some(reason);
                    if self
                        .state
                        .outgoing
                        .as_ref()
                        .is_some_and(|o| o.session_id.as_ref() == Some(&session_id))
                    {
                        self.state.outgoing = None;
                    }
                }
            }
            Event::Error { message, .. } => self.state.notice = Some(message),
            Event::Signal { session_id, data } => {
                if let Some(d) = self.data.as_ref().filter(|d| d.session_id == session_id) {
                    d.signal(data);
                }
            }
            Event::Stopped => {}
        }
    }
}

impl Core {
    fn data_event(&mut self, ev: DataEvent) {
        match ev {
            DataEvent::ChannelOpen { .. } => self.state.channel_open = true,
            DataEvent::Failed(why) => {
                if self.state.active.is_some() {
                    self.state.notice = Some(format!("The peer-to-peer connection failed: {why}"));
                }
            }
            DataEvent::Transfer(t) => self.transfer_event(t),
            DataEvent::Video(v) => match v {
                VideoEvent::SendingStarted { what } => self.state.video.sending = VideoSending::On { what },
                VideoEvent::SendingStopped => self.state.video.sending = VideoSending::Off,
                VideoEvent::SendingFailed { reason } => {
                    self.state.video.sending = VideoSending::Failed(reason)
                }
                VideoEvent::RemoteStarted => self.state.video.remote_on = true,
                VideoEvent::RemoteStopped => self.state.video.remote_on = false,
            },
        }
    }

    fn row(&mut self, id: u32, way: Way) -> Option<&mut FileRow> {
        self.state.files.iter_mut().rev().find(|r| r.id == id && r.way == way)
    }

    fn transfer_event(&mut self, t: TransferEvent) {
        let new_row = |id, way, name: String, size, status| FileRow {
            id,
            way,
            name,
            size,
            bytes: 0,
            speed: 0.0,
            status,
            last: (Instant::now(), 0),
        };
        match t {
            TransferEvent::Preparing { name, size } => {
                self.state.files.push(new_row(0, Way::Sending, name, size, FileStatus::Preparing))
            }
            TransferEvent::Offered { id, name, size } => {
                // The row of the file being prepared gets its id now.
                match self
                    .state
                    .files
                    .iter_mut()
                    .find(|r| r.id == 0 && r.status == FileStatus::Preparing && r.name == name)
                {
                    Some(r) => {
                        r.id = id;
                        r.size = size;
                        r.status = FileStatus::Waiting;
                    }
                    None => self.state.files.push(new_row(id, Way::Sending, name, size, FileStatus::Waiting)),
                }
            }
            TransferEvent::Incoming { id, name, size, .. } => {
                let status = if self.state.settings.auto_accept_files {
                    FileStatus::Active
                } else {
                    FileStatus::Offered
                };
                self.state.files.push(new_row(id, Way::Receiving, name, size, status));
            }
            TransferEvent::Started { id, way, offset, .. } => {
                if let Some(r) = self.row(id, way) {
                    r.status = FileStatus::Active;
                    r.bytes = offset;
                    r.last = (Instant::now(), offset);
                }
            }
            TransferEvent::Progress { id, way, bytes, .. } => {
                if let Some(r) = self.row(id, way) {
                    let dt = r.last.0.elapsed().as_secs_f64();
                    if dt >= 0.5 {
                        r.speed = bytes.saturating_sub(r.last.1) as f64 / dt;
                        r.last = (Instant::now(), bytes);
                    }
                    r.bytes = bytes;
                }
            }
            TransferEvent::Completed { id, way, path, size, .. } => {
                if let Some(r) = self.row(id, way) {
                    r.bytes = size;
                    r.status = FileStatus::Done { path };
                }
            }
            TransferEvent::Failed { id, way, name, reason } => match self.row(id, way) {
                Some(r) => r.status = FileStatus::Failed(reason),
                None => {
                    self.state.files.push(new_row(id, way, name, 0, FileStatus::Failed(reason)));
                }
            },
            TransferEvent::Rejected { id, way, reason, .. } => {
                if let Some(r) = self.row(id, way) {
                    r.status = FileStatus::Rejected(reason);
                }
            }
            TransferEvent::Cancelled { id, way, reason, .. } => {
                if let Some(r) = self.row(id, way) {
                    r.status = FileStatus::Cancelled(reason);
                }
            }
            TransferEvent::ChannelClosed => {
                for r in self.state.files.iter_mut().filter(|r| !r.status.is_final()) {
                    r.status = FileStatus::Failed("the connection closed (a later try resumes)".into());
                }
            }
        }
    }
}

/// Opens the folder holding `path` in the file manager (never the file itself).
fn show_in_folder(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(path);
    #[cfg(target_os = "macos")]
    let mut cmd = {
        let mut c = std::process::Command::new("open");
        c.arg("-R").arg(path);
        c
    };
    #[cfg(target_os = "windows")]
    let mut cmd = {
        let mut c = std::process::Command::new("explorer");
        c.arg(format!("/select,{}", path.display()));
        c
    };
    #[cfg(not(any(target_os = "macos", target_os = "windows")))]
    let mut cmd = {
        let mut c = std::process::Command::new("xdg-open");
        c.arg(dir);
        c
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.spawn().map(|_| ())
}

async fn next_watcher(
    rx: &mut Option<mpsc::UnboundedReceiver<crate::calls::WatcherEvent>>,
) -> Option<crate::calls::WatcherEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_event(rx: &mut Option<mpsc::UnboundedReceiver<Event>>) -> Option<Event> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn field_of(e: &api::ApiError) -> Option<Field> {
    use crate::protocol::ErrorCode;
    match e {
        api::ApiError::BadUrl(_) | api::ApiError::Unreachable { .. } | api::ApiError::Unexpected { .. } => {
            Some(Field::Server)
        }
        api::ApiError::Refused { code, message, .. } => match code {
            ErrorCode::InvalidNumber | ErrorCode::AccountExists => Some(Field::Number),
            ErrorCode::WrongCredentials | ErrorCode::RateLimited => Some(Field::Password),
            ErrorCode::InvalidField if message.contains("display name") => Some(Field::DisplayName),
            ErrorCode::InvalidField => Some(Field::Password),
            _ => None,
        },
    }
}

fn load_history(path: &Path) -> Vec<HistoryEntry> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!("{} is damaged ({e}); starting a new history", path.display());
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

fn save_history(path: &Path, history: &[HistoryEntry]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(history).map_err(|e| std::io::Error::other(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// A desktop notification; failures (no notification service) are logged once.
fn notify_incoming(caller: &Party, offer: Offer) {
    let summary = format!("{} wants a data session", caller.display_name);
    let body = format!("{} offers {offer}. Open Sidecall to accept or decline.", caller.number);
    std::thread::spawn(move || {
        static WARNED: std::sync::Once = std::sync::Once::new();
        if let Err(e) =
            notify_rust::Notification::new().appname("Sidecall").summary(&summary).body(&body).show()
        {
            WARNED.call_once(|| tracing::warn!("desktop notifications are unavailable: {e}"));
        }
    });
}
