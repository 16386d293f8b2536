//! The code step of a registration on a server that verifies numbers: the user types the
//! code, or the call watcher catches the server's verification call and fills it in; with
//! an administrator approving, the app asks every few seconds until it is done.

use super::*;
use crate::calls::linked::sees_incoming;
use crate::protocol::{ErrorCode, Verification, VerifyAnswer, VerifyMethod};

/// A registration waiting for its code.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PendingVerify {
    creds: Credentials,
    server_url: String,
    v: Verification,
}

/// How often an app waiting for an administrator asks.
const POLL_MS: u64 = 5_000;

fn effect(p: &PendingVerify, code: Option<String>, delay_ms: u64) -> Effect {
    Effect::Verify {
        server_url: p.server_url.clone(),
        pin: p.creds.pin.clone(),
        id: p.v.id.clone(),
        code,
        delay_ms,
    }
}

/// Registration answered "a code is on its way".
pub(super) fn pending(
    m: &mut Model,
    creds: Credentials,
    server_url: String,
    v: Verification,
    message: String,
    fx: &mut Vec<Effect>,
) {
    let automatic = v.method == VerifyMethod::Call && sees_incoming(&m.view.watchers);
    m.view.login = LoginStatus::Verifying(VerifyView {
        number: v.number.clone(),
        method: v.method,
        digits: v.digits,
        message,
        automatic,
        checking: false,
        error: None,
    });
    let p = PendingVerify { creds, server_url, v };
    if p.v.method == VerifyMethod::Admin {
        fx.push(effect(&p, None, POLL_MS));
    }
    m.verifying = Some(p);
}

/// The user typed a code (or the watcher read one).
pub(super) fn submit(m: &mut Model, code: String, fx: &mut Vec<Effect>) {
    let Some(p) = &m.verifying else { return };
    let code: String = code.chars().filter(char::is_ascii_digit).collect();
    let LoginStatus::Verifying(view) = &mut m.view.login else { return };
    if code.is_empty() {
        view.error = Some("Enter the code.".into());
        return;
    }
    view.checking = true;
    view.error = None;
    fx.push(effect(p, Some(code), 0));
}

pub(super) fn cancel(m: &mut Model) {
    if m.verifying.take().is_some() {
        m.view.login = LoginStatus::Idle;
    }
}

/// A watcher saw an incoming call: the server's verification call carries the code in its
/// caller ID.
pub(super) fn caller_seen(m: &mut Model, caller: &str, fx: &mut Vec<Effect>) {
    let Some(p) = &m.verifying else { return };
    let (Some(prefix), VerifyMethod::Call) = (p.v.caller_prefix.as_deref(), p.v.method) else { return };
    let checking = matches!(&m.view.login, LoginStatus::Verifying(v) if v.checking);
    if checking {
        return;
    }
    if let Some(code) = crate::client::login::code_from_caller_id(caller, prefix, p.v.digits) {
        tracing::info!("the verification call rang: checking its code");
        submit(m, code, fx);
    }
}

/// The server's answer to a code (or to "approved yet?").
pub(super) fn answered(
    m: &mut Model,
    id: String,
    result: Result<VerifyAnswer, (Option<ErrorCode>, String)>,
    fx: &mut Vec<Effect>,
) {
    if m.verifying.as_ref().is_none_or(|p| p.v.id != id) {
        return; // cancelled meanwhile
    }
    match result {
        Ok(VerifyAnswer::Done(done)) => {
            let Some(p) = m.verifying.take() else { return };
            if done.claimed {
                m.view.notice = Some(format!(
                    "{} is yours now: the account's other devices were logged out and its block list cleared.",
                    done.number
                ));
            }
            login(m, p.creds, false, fx);
        }
        Ok(VerifyAnswer::Waiting(_)) => {
            if let Some(p) = &m.verifying {
                fx.push(effect(p, None, POLL_MS));
            }
        }
        Err((Some(ErrorCode::CodeExpired), message)) => {
            m.verifying = None;
            m.view.login = LoginStatus::Failed { field: None, message: format!("{message}.") };
        }
        Err((code, message)) => {
            let admin = m.verifying.as_ref().is_some_and(|p| p.v.method == VerifyMethod::Admin);
            if let LoginStatus::Verifying(view) = &mut m.view.login {
                view.checking = false;
                view.error = Some(message);
            }
            // Waiting for an administrator survives a server that is briefly away.
            if admin
                && code != Some(ErrorCode::BadMessage)
                && let Some(p) = &m.verifying
            {
                fx.push(effect(p, None, POLL_MS * 2));
            }
        }
    }
}
