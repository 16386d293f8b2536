//! Wire types shared by the server and every client.
//!
//! One tagged enum per direction over the WebSocket ([`ClientMsg`], [`ServerMsg`]) plus the
//! request/response bodies of the small HTTP API. `PROTOCOL.md` documents every message with
//! an example; the two must stay one-to-one.

pub mod limits;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// Version of the WebSocket protocol spoken by this build. A client sends it in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket message (and frame) the server accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest HTTP request body the server accepts, in bytes.
pub const MAX_HTTP_BODY_BYTES: usize = 16 * 1024;

/// Path of the WebSocket endpoint.
pub const WS_PATH: &str = "/api/v1/ws";
/// Path of the registration endpoint.
pub const REGISTER_PATH: &str = "/api/v1/accounts";
/// Path of the endpoint that completes a registration with its code.
pub const VERIFY_PATH: &str = "/api/v1/accounts/verify";
/// Path of the login endpoint.
pub const LOGIN_PATH: &str = "/api/v1/login";
/// Path of the logout endpoint.
pub const LOGOUT_PATH: &str = "/api/v1/logout";

/// Opaque identifier of one session (one access request and, if accepted, the data session).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the caller offers to share in the session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    #[serde(default)]
    pub files: bool,
    #[serde(default)]
    pub video: bool,
}

impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.files, self.video) {
            (true, true) => f.write_str("files, video"),
            (true, false) => f.write_str("files"),
            (false, true) => f.write_str("video"),
            (false, false) => f.write_str("nothing"),
        }
    }
}

/// A user as others see them: number and display name, nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// E.164, e.g. `+4930123456`.
    pub number: String,
    pub display_name: String,
    /// The server checked that this user owns the number (a code by call, SMS or voice, or
    /// an administrator); `false`: anyone could have registered it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
}

/// The other side of an accepted session, including where it can be reached.
/// Sent only after the callee accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub number: String,
    pub display_name: String,
    /// The address the peer's device reported for itself (often a LAN address); absent when
    /// it reported none, or in a relayed session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ip: Option<IpAddr>,
    /// The address the server saw the peer's device connect from; absent in a relayed
    /// session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_ip: Option<IpAddr>,
}

/// Per-user settings kept by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Whether this user takes data sessions at all.
    pub accepting_sessions: bool,
    /// Do not disturb: requests are answered `unavailable` without ringing.
    pub do_not_disturb: bool,
    /// Hide my address: every session of this user goes through the server's relay, and
    /// neither side is told the other's addresses.
    #[serde(default)]
    pub hide_address: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { accepting_sessions: true, do_not_disturb: false, hide_address: false }
    }
}

/// A change of [`Settings`]: each field given is set, the others stay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub accepting_sessions: Option<bool>,
    pub do_not_disturb: Option<bool>,
    pub hide_address: Option<bool>,
}

/// A STUN/TURN server the clients should use for ICE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// WebRTC signaling payload relayed verbatim between the two devices of an active session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalData {
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mline_index: Option<u16>,
    },
    /// No more candidates will follow.
    EndOfCandidates,
    /// The sender's video starts or stops (the track itself stays negotiated).
    Video {
        sending: bool,
    },
}

/// Messages a client sends over the WebSocket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message on every connection.
    Hello {
        protocol: u32,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_ip: Option<IpAddr>,
    },
    /// Ask for a data session with the owner of `target` (any common number format).
    AccessRequest {
        req_id: u64,
        target: String,
        #[serde(default)]
        offer: Offer,
        /// Region (ISO 3166 alpha-2) to read a national number in; default: the caller's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// Reference of the phone call this session accompanies, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_ref: Option<String>,
        /// Click-to-call: the server places the phone call through its PBX (from the caller's
        /// own extension), and rings the data session only once the target answered.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        place_call: bool,
    },
    /// Set (or, with `null`, clear) the caller's own extension on the server's PBX.
    SetExtension {
        #[serde(default)]
        extension: Option<String>,
    },
    /// Answer an initiation.
    Answer { session_id: SessionId, accept: bool },
    /// Relay WebRTC signaling to the peer of an active session.
    Signal { session_id: SessionId, data: SignalData },
    /// End a session: cancels a ringing request (caller) or hangs up an active session.
    End { session_id: SessionId },
    /// Change per-user settings; omitted fields stay as they are.
    UpdateSettings {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accepting_sessions: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        do_not_disturb: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hide_address: Option<bool>,
    },
    /// Replace the list of numbers whose requests this user never sees (any common format).
    SetBlocked { numbers: Vec<String> },
    /// Application-level keepalive for clients that cannot send WebSocket pings.
    Ping { nonce: u64 },
    /// After (re)connecting: this device is still in session `session_id` (its peer-to-peer
    /// connection outlived the server connection), in `role`, with the owner of `peer`.
    Resume { session_id: SessionId, role: Role, peer: String },
}

/// Who a session is with, from the point of view of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Caller,
    Callee,
}

/// How an access request ended, as told to the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The callee accepted; `session_started` follows.
    Accepted,
    Declined,
    TimedOut,
    /// Not registered, offline, not taking sessions, or do-not-disturb: deliberately the same.
    Unavailable,
    InvalidNumber {
        reason: String,
    },
    /// The caller ended the request before it was answered.
    Cancelled,
    /// Click-to-call: the phone call did not come about.
    CallFailed {
        reason: CallFailure,
    },
}

/// How far a phone call the server places has come (click-to-call).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStage {
    /// The PBX rings the caller's own phone.
    CallingYou,
    /// The caller picked up; the PBX dials the target.
    Dialing,
    /// The target answered the phone; the data session rings next (if they use Sidecall).
    Answered,
}

/// Why a phone call the server places did not come about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallFailure {
    /// The caller's own phone was not picked up.
    YourPhoneNoAnswer,
    YourPhoneBusy,
    YourPhoneRejected,
    /// The caller's phone is not reachable (not registered, no such extension).
    YourPhoneUnavailable,
    /// The target's line is busy.
    Busy,
    /// The target did not answer.
    NoAnswer,
    /// The target rejected the call.
    Rejected,
    /// The target cannot be reached (congestion, no route).
    Unavailable,
    /// The call was hung up or cancelled before the target answered.
    Cancelled,
    /// The server cannot reach its PBX, or has none.
    PbxUnavailable,
    /// The caller has no extension set (Settings, or `sidecall-server user set-extension`).
    NoExtension,
}

impl CallFailure {
    /// In plain words, for people.
    pub fn describe(self) -> &'static str {
        match self {
            CallFailure::YourPhoneNoAnswer => "your phone was not picked up",
            CallFailure::YourPhoneBusy => "your phone is busy",
            CallFailure::YourPhoneRejected => "your phone rejected the call",
            CallFailure::YourPhoneUnavailable => {
                "your phone cannot be reached (is it registered on the PBX?)"
            }
            CallFailure::Busy => "the line is busy",
            CallFailure::NoAnswer => "no answer",
            CallFailure::Rejected => "the call was rejected",
            CallFailure::Unavailable => "the number cannot be reached",
            CallFailure::Cancelled => "the call was hung up before it was answered",
            CallFailure::PbxUnavailable => {
                "the server cannot place calls right now (its PBX is not reachable)"
            }
            CallFailure::NoExtension => "no extension is set for you: set your phone's extension in Settings",
        }
    }
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Declined => "declined",
            Outcome::TimedOut => "timed_out",
            Outcome::Unavailable => "unavailable",
            Outcome::InvalidNumber { .. } => "invalid_number",
            Outcome::Cancelled => "cancelled",
            Outcome::CallFailed { .. } => "call_failed",
        }
    }
}

/// Why an initiation stopped ringing on a callee device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedReason {
    AnsweredElsewhere,
    DeclinedElsewhere,
    Cancelled,
    TimedOut,
    CallerGone,
    /// The server node that handled the request stopped (multi-node servers).
    NodeLost,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// This device sent `end`.
    YouEnded,
    /// The peer sent `end`.
    PeerEnded,
    /// The peer's connection to the server was lost.
    PeerDisconnected,
    /// The server is shutting down.
    ServerShutdown,
    /// The phone call the session was placed with ended (click-to-call).
    CallEnded,
    /// A server node the session ran through stopped (multi-node servers); dial again.
    NodeLost,
}

/// Machine-readable error codes, sent in `error` messages and HTTP error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not valid JSON, unknown `type`, or missing/mistyped fields.
    BadMessage,
    /// Binary WebSocket frames are not part of the protocol.
    BinaryNotSupported,
    /// A message other than `hello` before `hello` succeeded.
    NotAuthenticated,
    /// `hello` sent twice.
    AlreadyAuthenticated,
    /// Unknown, revoked or malformed token; log in again.
    AuthFailed,
    /// The client's protocol version is not spoken by this server.
    UnsupportedVersion,
    /// A phone number could not be read.
    InvalidNumber,
    /// An access request naming the caller's own number.
    SelfRequest,
    /// No such session, or not one of this device's.
    UnknownSession,
    /// The initiation was already answered (here or on another device).
    AlreadyAnswered,
    /// The session is over (timed out, cancelled, ended).
    SessionClosed,
    /// The session is not active (e.g. signaling before accept).
    SessionNotActive,
    /// Too many messages or requests; slow down.
    RateLimited,
    /// Registration for a number that already has an account.
    AccountExists,
    /// Wrong number or password.
    WrongCredentials,
    /// A field is out of range (display name, password length …).
    InvalidField,
    /// The request body is larger than allowed.
    TooLarge,
    /// In a relayed session, a signal carried a candidate that is not on the server's relay.
    RelayRequired,
    /// Something failed on the server; try again later.
    Internal,
    /// A verification code that is not the one sent; `message` says how many tries are left.
    WrongCode,
    /// The verification is over (expired, used, tries used up, or replaced): register again.
    CodeExpired,
    /// The server node that handled a pending request stopped (multi-node servers): dial again.
    NodeLost,
    /// The server cannot reach its database or its cluster right now: try again shortly.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in the order of PROTOCOL.md's table.
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::BadMessage,
        ErrorCode::BinaryNotSupported,
        ErrorCode::NotAuthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::AuthFailed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidNumber,
        ErrorCode::SelfRequest,
        ErrorCode::UnknownSession,
        ErrorCode::AlreadyAnswered,
        ErrorCode::SessionClosed,
        ErrorCode::SessionNotActive,
        ErrorCode::RateLimited,
        ErrorCode::AccountExists,
        ErrorCode::WrongCredentials,
        ErrorCode::InvalidField,
        ErrorCode::TooLarge,
        ErrorCode::RelayRequired,
        ErrorCode::Internal,
        ErrorCode::WrongCode,
        ErrorCode::CodeExpired,
        ErrorCode::NodeLost,
        ErrorCode::Unavailable,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::InvalidNumber => "invalid_number",
            ErrorCode::SelfRequest => "self_request",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::AlreadyAnswered => "already_answered",
            ErrorCode::SessionClosed => "session_closed",
            ErrorCode::SessionNotActive => "session_not_active",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::AccountExists => "account_exists",
            ErrorCode::WrongCredentials => "wrong_credentials",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RelayRequired => "relay_required",
            ErrorCode::Internal => "internal",
            ErrorCode::WrongCode => "wrong_code",
            ErrorCode::CodeExpired => "code_expired",
            ErrorCode::NodeLost => "node_lost",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Messages the server sends over the WebSocket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to a successful `hello`.
    Welcome {
        protocol: u32,
        server_version: String,
        account: Party,
        device_id: i64,
        settings: Settings,
        /// The server pings every this many seconds; silence for three times as long means
        /// the connection is dead.
        heartbeat_secs: u64,
        /// How long an initiation rings before it times out.
        answer_timeout_secs: u64,
        observed_ip: IpAddr,
        ice_servers: Vec<IceServer>,
        /// The server can place phone calls through its PBX (click-to-call).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        can_place_calls: bool,
        /// This user's extension on that PBX, if set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extension: Option<String>,
    },
    /// Click-to-call: how far the phone call has come (before `access_pending`/`access_outcome`).
    CallProgress { req_id: u64, session_id: SessionId, stage: CallStage },
    /// This user's extension as stored, after `set_extension`.
    Extension {
        #[serde(default)]
        extension: Option<String>,
    },
    /// The access request reached at least one device of the callee, which is now ringing.
    AccessPending { req_id: u64, session_id: SessionId },
    /// Final answer to an access request.
    AccessOutcome {
        req_id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
        outcome: Outcome,
    },
    /// Someone asks for a data session with this user.
    Initiation {
        session_id: SessionId,
        caller: Party,
        offer: Offer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_ref: Option<String>,
        /// Milliseconds until the request times out.
        expires_in_ms: u64,
    },
    /// An initiation this device was shown stopped ringing.
    InitiationClosed { session_id: SessionId, reason: ClosedReason },
    /// The session is accepted; both sides get this with the other's connection data.
    SessionStarted {
        session_id: SessionId,
        role: Role,
        offer: Offer,
        peer: PeerInfo,
        /// The session goes through the server's relay only (one side hides its address):
        /// use ICE transport policy `relay`; `peer` carries no address.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        relayed: bool,
    },
    /// Signaling relayed from the peer.
    Signal { session_id: SessionId, data: SignalData },
    /// The session is over.
    SessionEnded { session_id: SessionId, reason: EndReason },
    /// New ICE servers (fresh relay credentials), before the old ones expire.
    IceServers { ice_servers: Vec<IceServer> },
    /// Current settings, after `update_settings`.
    Settings { settings: Settings },
    /// The block list as stored (E.164, sorted), after `set_blocked` and after `welcome`.
    Blocked { numbers: Vec<String> },
    /// Answer to `ping`.
    Pong { nonce: u64 },
    /// Something the client sent was refused.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
    },
}

/// WebSocket close codes the server uses (besides the standard 1000/1001/1009/1012).
pub mod close_code {
    /// Policy violation: flooding, or auth failed.
    pub const POLICY: u16 = 1008;
    /// A message was larger than [`super::MAX_MESSAGE_BYTES`].
    pub const TOO_BIG: u16 = 1009;
    /// The server is restarting; reconnect.
    pub const RESTART: u16 = 1012;
    /// The server cannot serve right now (its database or cluster is unreachable); reconnect.
    pub const TRY_AGAIN: u16 = 1013;
    /// The token was rejected; the client must log in again (do not reconnect).
    pub const AUTH_FAILED: u16 = 4001;
    /// Another connection of this device replaced this one.
    pub const REPLACED: u16 = 4002;
    /// No `hello` in time.
    pub const HELLO_TIMEOUT: u16 = 4003;
    /// Protocol version not supported.
    pub const UNSUPPORTED_VERSION: u16 = 4004;
    /// The client did not answer pings.
    pub const HEARTBEAT_TIMEOUT: u16 = 4005;
}

// ---- HTTP API ----

/// `POST /api/v1/accounts`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub number: String,
    pub display_name: String,
    pub password: String,
    /// Region (ISO 3166 alpha-2) to read a national number in; default: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// `201 Created` answer to registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub number: String,
    pub display_name: String,
}

/// `202 Accepted` answer to registration on a server that verifies numbers: the same whether
/// the number has an account or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationPending {
    pub verification: Verification,
    /// For people: what happens next.
    pub message: String,
}

/// A registration waiting for proof that the registering person owns the number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Handle for `POST /api/v1/accounts/verify` (a secret of the registering client).
    pub id: String,
    pub number: String,
    pub method: VerifyMethod,
    /// Seconds the code (or the wait for an administrator) lasts.
    pub expires_in_s: u64,
    /// Digits of the code (0 with `admin`).
    pub digits: u8,
    /// `call`: the number the server's call comes from, without the code's digits, which
    /// are the caller ID's last digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_prefix: Option<String>,
}

/// How a number is proven before an account is bound to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMethod {
    /// The server calls the number; the caller ID's last digits are the code.
    Call,
    /// The operator's gateway sends the code by SMS or voice.
    Hook,
    /// An administrator approves the registration.
    Admin,
}

/// What registration answers: the account (no verification) or the code step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RegisterAnswer {
    Pending(VerificationPending),
    Done(RegisterResponse),
}

/// `POST /api/v1/accounts/verify`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// `verification.id` from the registration.
    pub id: String,
    /// The code; absent with `admin` (asks whether an administrator approved yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `201 Created` answer to a verification: the account is bound to the number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedResponse {
    pub number: String,
    pub display_name: String,
    /// The number had an account: it is now this registrant's, its other devices were
    /// logged out and its block list cleared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claimed: bool,
}

/// `202 Accepted` answer to a verification with `admin` not yet approved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyWaiting {
    pub waiting: bool,
    pub message: String,
}

/// What verification answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VerifyAnswer {
    Waiting(VerifyWaiting),
    Done(VerifiedResponse),
}

/// `POST /api/v1/login`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub number: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The device's own idea of its IP address (may be a LAN address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ip: Option<IpAddr>,
    /// A name for this device, e.g. the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

/// `200 OK` answer to login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Bearer token for `hello` and `Authorization: Bearer`.
    pub token: String,
    pub device_id: i64,
    pub number: String,
    pub display_name: String,
    pub observed_ip: IpAddr,
}

/// Body of every HTTP error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    pub error: ErrorBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// With `invalid_field` and `invalid_number`: which field of the request is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<FieldName>,
}

/// A field of a register or login request, named in an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldName {
    Number,
    DisplayName,
    Password,
    DeviceName,
    Code,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_request_round_trips_with_defaults() {
        let json = r#"{"type":"access_request","req_id":7,"target":"030 1234567"}"#;
        let msg: ClientMsg = serde_json::from_str(json).expect("parse");
        assert_eq!(
            msg,
            ClientMsg::AccessRequest {
                req_id: 7,
                target: "030 1234567".into(),
                offer: Offer::default(),
                region: None,
                call_ref: None,
                place_call: false,
            }
        );
    }

    #[test]
    fn outcome_is_tagged_by_result() {
        let msg = ServerMsg::AccessOutcome {
            req_id: 1,
            session_id: None,
            outcome: Outcome::InvalidNumber { reason: "too short".into() },
        };
        let json = serde_json::to_string(&msg).expect("serialize");
        assert_eq!(
            json,
            r#"{"type":"access_outcome","req_id":1,"outcome":{"result":"invalid_number","reason":"too short"}}"#
        );
    }

    #[test]
    fn error_code_labels_match_the_wire() {
        for code in [ErrorCode::BadMessage, ErrorCode::SelfRequest, ErrorCode::TooLarge] {
            let wire = serde_json::to_value(code).expect("serialize");
            assert_eq!(wire.as_str(), Some(code.as_str()));
        }
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"launch_missiles"}"#).is_err());
    }
}
