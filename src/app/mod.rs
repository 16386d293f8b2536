//! The desktop app's headless core: login and hosting, the call state the window shows,
//! history, settings, and the ring. It runs on its own thread with its own tokio runtime;
//! the window sends [`AppCommand`]s and receives [`AppEvent`]s, and every event wakes it.
//! Nothing here knows about egui, so it is driven the same way by the UI and by tests.
//!
//! - [`settings`]: settings kept on this computer, and where a profile keeps its files;
//! - [`history`]: past requests and sessions (capped);
//! - [`state`]: what the window shows;
//! - [`reduce`]: the logic, a pure function from the model and one input to effects;
//! - `runtime`: performs the effects (server connection, data side, ring, files, hosting);
//! - [`watchers`]: the call watchers as one group.

pub mod history;
mod platform;
pub mod reduce;
mod runtime;
pub mod settings;
pub mod state;
pub mod watchers;

pub use history::{Direction, HistoryEntry, HistoryOutcome};
pub use settings::{
    AmiSettings, AppPaths, AppSettings, FritzSettings, OnCall, PhoneSettings, StartWhen, VideoSettings,
};
pub use state::{
    Active, AppState, Connection, Credentials, Field, FileRow, FileStatus, Hosting, LoginStatus, Marks,
    Outgoing, OutgoingStatus, Ringing, VerifyView, VideoSending, VideoState,
};

use crate::client::Waker;
use crate::client::session::{VideoStats, VideoStatsHandle};
use crate::client::transfer::Way;
use crate::media::video::{FrameSlot, VideoSource};
use crate::protocol::{Offer, Party, SessionId};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

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

/// What the window asks of the core.
#[derive(Clone, Debug)]
pub enum AppCommand {
    Register(Credentials),
    Login(Credentials),
    /// Trust the self-signed certificate shown (its fingerprint), and go on logging in.
    TrustServer {
        fingerprint: String,
    },
    /// Do not trust it: the login stops.
    DistrustServer,
    /// The code of a registration waiting for one (typed, or read from the caller ID).
    SubmitCode(String),
    /// Stop the registration waiting for its code.
    CancelVerification,
    Logout,
    /// Work out this device's address as seen on the way to `server`.
    DetectIp {
        server: String,
    },
    Dial {
        target: String,
        offer: Offer,
    },
    /// Click-to-call: the server places the phone call, then rings the session.
    Call {
        target: String,
        offer: Offer,
    },
    /// This user's extension on the server's PBX (`None` clears it).
    SetExtension(Option<String>),
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
    /// Hide my address: a setting the server keeps (every session relayed).
    SetHideAddress(bool),
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
    /// A call watcher reported a call (for `sidecall watch`; the window shows the state).
    Call {
        source: crate::calls::Source,
        call: crate::calls::CallEvent,
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
        let core = runtime::Core::new(paths, ev_tx, wake, loopback, view);
        rt.block_on(core.run(cmd_rx));
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the core thread: {e}");
    }
    (AppHandle { tx: cmd_tx, video }, ev_rx)
}
