//! What the window shows: the view types, sent whole after every change.

use super::history::HistoryEntry;
use super::settings::AppSettings;
use crate::client::StopReason;
use crate::client::config::Profile;
use crate::client::transfer::Way;
use crate::media::camera::CameraInfo;
use crate::protocol::{Offer, Party, PeerInfo, Role, SessionId, Settings};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

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
    /// The fingerprint of the server's self-signed certificate the user trusted.
    pub pin: Option<String>,
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
    Failed {
        field: Option<Field>,
        message: String,
    },
    /// The server's certificate is self-signed: trust it (by its fingerprint) or not.
    Untrusted {
        url: String,
        fingerprint: String,
    },
    /// Registered; the server wants proof that the number is the user's.
    Verifying(VerifyView),
}

/// The code step of a registration, as shown.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyView {
    pub number: String,
    pub method: crate::protocol::VerifyMethod,
    /// Digits of the code (0: an administrator approves).
    pub digits: u8,
    /// What the server said happens next.
    pub message: String,
    /// A call watcher runs that can catch the verification call and fill the code in.
    pub automatic: bool,
    /// A code is being checked.
    pub checking: bool,
    /// The last try's problem (a wrong code: tries left).
    pub error: Option<String>,
}

/// What is known of a request's caller: whether the server verified the number, and what
/// this user's phone line says (`None`: no watcher that sees incoming calls runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    pub verified: bool,
    pub call_match: Option<crate::calls::linked::CallMatch>,
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
    /// Click-to-call: the phone call is being placed (this far).
    Calling(crate::protocol::CallStage),
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
        !matches!(self, OutgoingStatus::Dialing | OutgoingStatus::Calling(_) | OutgoingStatus::Ringing)
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
    pub marks: Marks,
    /// The caller is accepted automatically, but no call on the phone vouched for the
    /// request yet: accept once one does.
    pub accept_on_match: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Active {
    pub session_id: SessionId,
    pub role: Role,
    pub peer: PeerInfo,
    pub offer: Offer,
    pub since: Instant,
    pub call_ref: Option<String>,
    /// An incoming request's marks (for the history).
    pub marks: Option<Marks>,
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
    /// SHA-256 fingerprint of the server's self-signed certificate: others compare it with
    /// what their app shows when they first log in.
    pub fingerprint: Option<String>,
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
    /// The server can place phone calls through its PBX (the *Call* button).
    pub can_place_calls: bool,
    /// This user's extension on that PBX.
    pub extension: Option<String>,
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
    /// Direct, or relayed by the server, once the channel is open.
    pub path: Option<crate::rtc::Path>,
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
            can_place_calls: false,
            extension: None,
            blocked: Vec::new(),
            settings,
            outgoing: None,
            incoming: Vec::new(),
            active: None,
            last_ended: None,
            files: Vec::new(),
            channel_open: false,
            path: None,
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
