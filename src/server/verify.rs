//! Proving a number before an account is bound to it (`sidecall-server --verify MODE`).
//!
//! Registration stores a *verification* (number, name, password hash, a one-time code) and
//! answers the same whatever the number: "if it can be registered, a code is on its way".
//! The code reaches the number's owner by a call from the server's PBX whose caller ID ends
//! in it (`call`), through the operator's SMS or voice gateway (`hook`), or an administrator
//! approves (`admin`). The right code binds the number: a new account, or the existing one
//! claimed (new password, its devices logged out and told why). Codes live 10 minutes, are
//! used once, allow 5 tries; codes sent are limited per number and per address.

use crate::protocol::{
    ErrorCode, FieldName, Verification, VerificationPending, VerifiedResponse, VerifyAnswer, VerifyMethod,
    VerifyRequest, VerifyWaiting,
};
use crate::server::auth;
use crate::server::http::{ApiError, AppState, Body, client_ip, parse_body, too_many};
use crate::server::ratelimit::KeyedLimiter;
use crate::server::store::{Attempt, VerificationRecord, now_ms};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Why a device was logged out when its number was claimed (close reason, ≤ 123 bytes).
pub const CLAIMED: &str = "your number was verified on another device: log in again";

/// How numbers are proven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// Nobody proves anything (a server for one LAN; the app's hosted server).
    None,
    /// The server calls the number through its PBX; the caller ID ends in the code.
    Call,
    /// The operator's command or URL delivers the code (SMS, voice).
    Hook(Hook),
    /// An administrator approves: `sidecall-server user verify NUMBER`.
    Admin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Run with `sh -c`; `$1`/`SIDECALL_NUMBER` is the number, `$2`/`SIDECALL_CODE` the code.
    Command(String),
    /// `POST` JSON `{"number", "code", "expires_in_s", "text"}`.
    Url(String),
}

#[derive(Clone, Debug)]
pub struct VerifyConfig {
    pub mode: VerifyMode,
    /// `call`: the caller ID the code is appended to (E.164, the operator's number block).
    pub caller_prefix: String,
    /// Digits of a code sent by call (the caller ID's last digits).
    pub call_digits: u8,
    /// Digits of a code sent by hook.
    pub hook_digits: u8,
    pub code_ttl: Duration,
    /// How long a registration waits for an administrator.
    pub admin_ttl: Duration,
    /// Tries per code.
    pub max_tries: i64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            mode: VerifyMode::None,
            caller_prefix: String::new(),
            call_digits: 4,
            hook_digits: 6,
            code_ttl: Duration::from_secs(600),
            admin_ttl: Duration::from_secs(7 * 24 * 3600),
            max_tries: 5,
        }
    }
}

impl VerifyConfig {
    /// `--verify MODE [--verify-hook CMD|URL] [--verify-caller-id PREFIX]`.
    pub fn parse(
        mode: &str,
        hook: Option<&str>,
        caller_prefix: Option<&str>,
    ) -> Result<VerifyConfig, String> {
        let mode = match mode {
            "none" => VerifyMode::None,
            "admin" => VerifyMode::Admin,
            "call" => {
                let prefix = caller_prefix.unwrap_or("").trim();
                let ok = prefix
                    .strip_prefix('+')
                    .is_some_and(|d| (4..=12).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()));
                if !ok {
                    return Err("--verify call needs --verify-caller-id: the E.164 start of the numbers \
                                your PBX may show as caller ID, e.g. +4930123456 (the code's four \
                                digits are appended)"
                        .into());
                }
                VerifyMode::Call
            }
            "hook" => match hook.map(str::trim).filter(|h| !h.is_empty()) {
                Some(h) if h.starts_with("http://") || h.starts_with("https://") => {
                    VerifyMode::Hook(Hook::Url(h.to_string()))
                }
                Some(h) => VerifyMode::Hook(Hook::Command(h.to_string())),
                None => {
                    return Err("--verify hook needs --verify-hook: a command (gets the number and \
                                the code as $1 and $2) or an https:// URL (gets them as JSON)"
                        .into());
                }
            },
            other => return Err(format!("unknown --verify mode {other:?}: use call, hook, admin or none")),
        };
        Ok(VerifyConfig {
            mode,
            caller_prefix: caller_prefix.unwrap_or("").trim().to_string(),
            ..Default::default()
        })
    }

    pub fn method(&self) -> Option<VerifyMethod> {
        match self.mode {
            VerifyMode::None => None,
            VerifyMode::Call => Some(VerifyMethod::Call),
            VerifyMode::Hook(_) => Some(VerifyMethod::Hook),
            VerifyMode::Admin => Some(VerifyMethod::Admin),
        }
    }
}

/// The verification state a server keeps in memory (the rest is in the database).
/// Codes sent to one number within [`CODES_WINDOW`], at most.
pub const CODES_PER_NUMBER: i64 = 3;
pub const CODES_WINDOW: Duration = Duration::from_secs(600);

pub struct Verifier {
    pub cfg: VerifyConfig,
    /// Code tries from one address: 20, then one per 5 s.
    tries: KeyedLimiter<IpAddr>,
    /// Verification calls ringing: verification id → the PBX's call id (hung up once used).
    ringing: Mutex<HashMap<String, String>>,
}

impl Verifier {
    pub fn new(cfg: VerifyConfig) -> Self {
        Verifier { cfg, tries: KeyedLimiter::new(20.0, 0.2), ringing: Mutex::new(HashMap::new()) }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.mode != VerifyMode::None
    }
}

/// A one-time code of `digits` decimal digits, uniformly drawn.
pub fn new_code(digits: u8) -> String {
    let digits = u32::from(digits.clamp(1, 9));
    let n = rand::rng().random_range(0..10u64.pow(digits));
    format!("{n:0width$}", width = digits as usize)
}

/// What the database keeps of a code: SHA-256 of `id:code`.
pub fn code_hash(id: &str, code: &str) -> String {
    auth::token_hash(&format!("{id}:{code}"))
}

fn same(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Registration on a server that verifies: stores the verification and sends the code. The
/// answer is the same whether the number has an account or not (nothing here looks it up).
pub async fn start(
    app: &AppState,
    number: String,
    display_name: String,
    password: String,
    ip: IpAddr,
) -> Result<Response, ApiError> {
    let v = &app.verifier;
    let Some(method) = v.cfg.method() else {
        return Err(ApiError::internal("verification", "not enabled"));
    };
    // Counted in the database, so that every node of a cluster counts the same codes.
    let window = now_ms() - CODES_WINDOW.as_millis() as i64;
    let sent = app
        .hub
        .store
        .verifications_since(&number, window)
        .await
        .map_err(|e| ApiError::internal("could not read the registrations", e))?;
    if sent >= CODES_PER_NUMBER {
        app.hub.metrics.registrations.get_or_create(&vec![("result", "rate_limited")]).inc();
        return Err(too_many("codes were sent to this number several times: wait ten minutes and try again"));
    }
    if method == VerifyMethod::Call {
        let health = app.hub.pbx.read().as_ref().map(|p| p.health());
        match health {
            Some(crate::server::pbx::PbxHealth::Ready) => {}
            None => return Err(ApiError::internal("the verification call", "no PBX is configured (--pbx)")),
            Some(_) => {
                // Refused alike for every number: nothing about accounts shows.
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Internal,
                    "the server cannot place the verification call right now (its phone system is not \
                     connected): try again in a few minutes",
                ));
            }
        }
    }
    let hash = crate::server::http::hash_password(app, password).await?;
    let id = auth::new_token();
    let (digits, ttl) = match method {
        VerifyMethod::Call => (v.cfg.call_digits, v.cfg.code_ttl),
        VerifyMethod::Hook => (v.cfg.hook_digits, v.cfg.code_ttl),
        VerifyMethod::Admin => (0, v.cfg.admin_ttl),
    };
    let code = (digits > 0).then(|| new_code(digits));
    let now = now_ms();
    let record = VerificationRecord {
        id: id.clone(),
        number: number.clone(),
        display_name,
        password_hash: hash,
        code_hash: code.as_deref().map(|c| code_hash(&id, c)).unwrap_or_default(),
        method: format!("{method:?}").to_ascii_lowercase(),
        attempts: 0,
        from_ip: ip.to_string(),
        created_at: now,
        expires_at: now + ttl.as_millis() as i64,
    };
    app.hub
        .store
        .create_verification(&record)
        .await
        .map_err(|e| ApiError::internal("could not save the registration", e))?;
    // Sent in the background: how the delivery goes must not show in the answer.
    if let Some(code) = code {
        deliver(app, method, &id, &number, &code, ttl);
    }
    app.hub.metrics.registrations.get_or_create(&vec![("result", "code_sent")]).inc();
    tracing::info!(%number, ?method, %ip, "registration waiting for verification");
    let message = match method {
        VerifyMethod::Call => format!(
            "If this number can be registered, your phone rings in a moment from {}…: the last {digits} digits \
             of that number are your code. Sidecall fills it in by itself when it watches your phone line.",
            v.cfg.caller_prefix
        ),
        VerifyMethod::Hook => {
            format!("If this number can be registered, a {digits}-digit code is on its way to it.")
        }
        VerifyMethod::Admin => {
            "If this number can be registered, the server's administrator approves it; you can log in then."
                .into()
        }
    };
    let body = VerificationPending {
        verification: Verification {
            id,
            number,
            method,
            expires_in_s: ttl.as_secs(),
            digits,
            caller_prefix: (method == VerifyMethod::Call).then(|| v.cfg.caller_prefix.clone()),
        },
        message,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

fn deliver(app: &AppState, method: VerifyMethod, id: &str, number: &str, code: &str, ttl: Duration) {
    match (&app.verifier.cfg.mode, method) {
        (VerifyMode::Call, _) => {
            let Some(pbx) = app.hub.pbx.read().clone() else { return };
            let caller_id = format!("{}{code}", app.verifier.cfg.caller_prefix);
            match pbx.ring(number, &caller_id) {
                Ok(call) => {
                    let mut ringing = app.verifier.ringing.lock();
                    if ringing.len() > 10_000 {
                        ringing.clear();
                    }
                    ringing.insert(id.to_string(), call);
                }
                Err(e) => {
                    tracing::warn!(%number, "the verification call could not be placed: {}", e.describe())
                }
            }
        }
        (VerifyMode::Hook(hook), _) => {
            let (hook, number, code) = (hook.clone(), number.to_string(), code.to_string());
            tokio::spawn(async move {
                if let Err(e) = run_hook(&hook, &number, &code, ttl).await {
                    tracing::error!(%number, "the verification hook failed: {e}");
                }
            });
        }
        _ => {}
    }
}

/// Hands the code to the operator's gateway, within 30 s.
async fn run_hook(hook: &Hook, number: &str, code: &str, ttl: Duration) -> Result<(), String> {
    let text = format!("Your Sidecall code is {code}. It is valid for {} minutes.", ttl.as_secs() / 60);
    match hook {
        Hook::Command(cmd) => {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .arg("sidecall-verify-hook")
                .arg(number)
                .arg(code)
                .env("SIDECALL_NUMBER", number)
                .env("SIDECALL_CODE", code)
                .env("SIDECALL_TEXT", &text)
                .env("SIDECALL_EXPIRES_IN", ttl.as_secs().to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
            let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
                .await
                .map_err(|_| format!("{cmd:?} took longer than 30 s (stopped)"))?
                .map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                tracing::info!(%number, "verification code handed to the hook");
                Ok(())
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                Err(format!(
                    "{cmd:?} exited with {}: {}",
                    out.status,
                    crate::protocol::limits::clip(err.trim().to_string())
                ))
            }
        }
        Hook::Url(url) => {
            let tls = crate::tls::system_client_config().map_err(|e| e.to_string())?;
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .use_preconfigured_tls(tls)
                .build()
                .map_err(|e| e.to_string())?;
            let body = serde_json::json!({
                "number": number, "code": code, "expires_in_s": ttl.as_secs(), "text": text,
            });
            let resp = client.post(url).json(&body).send().await.map_err(|e| format!("{url}: {e}"))?;
            if resp.status().is_success() {
                tracing::info!(%number, "verification code handed to the hook");
                Ok(())
            } else {
                Err(format!("{url} answered HTTP {}", resp.status()))
            }
        }
    }
}

/// `POST /api/v1/accounts/verify`: the code (or, with `admin`, whether it was approved).
pub async fn verify(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: VerifyRequest = parse_body(&headers, body)?;
    let ip = client_ip(peer, &headers, &app.trusted_proxies);
    let code = req.code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    if code.is_some_and(|c| c.len() > 16 || !c.chars().all(|ch| ch.is_ascii_digit())) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            "the code is digits only",
        )
        .on(FieldName::Code));
    }
    if req.id.len() > 128 {
        return Err(expired("no such registration: register again"));
    }
    let v = &app.verifier;
    if code.is_some() && !v.tries.check(&ip) {
        return Err(too_many("too many codes tried from your address: wait a minute"));
    }
    let store = &app.hub.store;
    // An admin poll does not use up tries.
    let max = if code.is_some() { v.cfg.max_tries } else { i64::MAX };
    let attempt = store
        .verification_attempt(&req.id, max)
        .await
        .map_err(|e| ApiError::internal("could not read the registration", e))?;
    let record = match attempt {
        Attempt::Open(r) => r,
        Attempt::Used { approved, number, display_name } if approved > 0 => {
            if code.is_some() {
                return Err(expired("this code was used already: log in with your number and password"));
            }
            // An administrator approved it (asked by polling).
            let body = VerifiedResponse { number, display_name, claimed: approved == 2 };
            return Ok((StatusCode::CREATED, axum::Json(VerifyAnswer::Done(body))).into_response());
        }
        Attempt::Used { .. } => {
            return Err(expired("the number was verified by another registration meanwhile: register again"));
        }
        Attempt::Missing => {
            return Err(expired("no such registration (or it ended long ago): register again"));
        }
        Attempt::Expired => return Err(expired("the code expired: register again for a new one")),
        Attempt::NoTries => return Err(expired("too many wrong codes: register again for a new one")),
    };
    let is_admin = record.code_hash.is_empty();
    match code {
        None if is_admin => {
            let body = VerifyWaiting {
                waiting: true,
                message: "waiting for the server's administrator to approve the registration".into(),
            };
            return Ok((StatusCode::ACCEPTED, axum::Json(VerifyAnswer::Waiting(body))).into_response());
        }
        Some(_) if is_admin => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadMessage,
                "this registration waits for an administrator, not a code",
            ));
        }
        None => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, "enter the code")
                .on(FieldName::Code));
        }
        Some(c) if !same(&code_hash(&record.id, c), &record.code_hash) => {
            app.hub.metrics.registrations.get_or_create(&vec![("result", "wrong_code")]).inc();
            let left = (v.cfg.max_tries - record.attempts).max(0);
            let message = if left == 0 {
                "wrong code, and that was the last try: register again for a new code".to_string()
            } else {
                format!("wrong code: {left} {} left", if left == 1 { "try" } else { "tries" })
            };
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::WrongCode, message).on(FieldName::Code)
            );
        }
        Some(_) => {}
    }
    let done = complete(&app, &record.id).await?;
    let Some(body) = done else {
        return Err(expired("the code was used or expired meanwhile: register again"));
    };
    Ok((StatusCode::CREATED, axum::Json(VerifyAnswer::Done(body))).into_response())
}

/// Binds the number of verification `id` and logs the old devices out (on this server now,
/// on others by [`watch_revocations`]).
pub async fn complete(app: &AppState, id: &str) -> Result<Option<VerifiedResponse>, ApiError> {
    let done = app
        .hub
        .store
        .complete_verification(id, CLAIMED)
        .await
        .map_err(|e| ApiError::internal("could not save the account", e))?;
    let Some(done) = done else { return Ok(None) };
    if let Some(call) = app.verifier.ringing.lock().remove(id)
        && let Some(pbx) = app.hub.pbx.read().clone()
    {
        pbx.hangup(&call);
    }
    for device in &done.revoked {
        app.hub.kick(*device, CLAIMED);
    }
    let result = if done.claimed { "claimed" } else { "verified" };
    app.hub.metrics.registrations.get_or_create(&vec![("result", result)]).inc();
    tracing::info!(number = %done.user.number, claimed = done.claimed, devices_logged_out = done.revoked.len(), "number verified");
    Ok(Some(VerifiedResponse {
        number: done.user.number,
        display_name: done.user.display_name,
        claimed: done.claimed,
    }))
}

fn expired(message: &str) -> ApiError {
    ApiError::new(StatusCode::GONE, ErrorCode::CodeExpired, message).on(FieldName::Code)
}

/// Closes the connections of devices another process logged out (an administrator's
/// `user verify` claiming a number, another server node), every 2 s; prunes old
/// verifications hourly.
pub async fn watch_revocations(
    hub: Arc<crate::server::hub::Hub>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut since = now_ms();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut pruned = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = now_ms();
        match hub.store.revoked_since(since.saturating_sub(5_000)).await {
            Ok(devices) => {
                for (device, _) in devices {
                    hub.kick(device, CLAIMED);
                }
                since = now;
            }
            Err(e) => tracing::warn!("cannot read logged-out devices: {e}"),
        }
        if pruned.elapsed() > Duration::from_secs(3600) {
            pruned = std::time::Instant::now();
            if let Err(e) = hub.store.prune_verifications().await {
                tracing::warn!("cannot prune old verifications: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_padded_digits_and_hashes_bind_the_id() {
        for _ in 0..200 {
            let c = new_code(4);
            assert!(c.len() == 4 && c.chars().all(|ch| ch.is_ascii_digit()), "{c}");
        }
        assert_ne!(code_hash("a", "1234"), code_hash("b", "1234"));
        assert!(same(&code_hash("a", "1234"), &code_hash("a", "1234")));
        assert!(!same(&code_hash("a", "1234"), &code_hash("a", "1235")));
    }

    #[test]
    fn modes_parse_with_their_needs() {
        assert_eq!(VerifyConfig::parse("none", None, None).map(|c| c.mode), Ok(VerifyMode::None));
        assert!(VerifyConfig::parse("call", None, None).is_err());
        assert!(VerifyConfig::parse("call", None, Some("4930")).is_err());
        assert_eq!(
            VerifyConfig::parse("call", None, Some("+4930123456")).map(|c| c.mode),
            Ok(VerifyMode::Call)
        );
        assert!(VerifyConfig::parse("hook", None, None).is_err());
        assert_eq!(
            VerifyConfig::parse("hook", Some("https://sms.example/send"), None).map(|c| c.mode),
            Ok(VerifyMode::Hook(Hook::Url("https://sms.example/send".into())))
        );
        assert!(VerifyConfig::parse("sms", None, None).is_err());
    }
}
