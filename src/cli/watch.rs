//! `sidecall watch`: the app's core without its window — the call watchers of this
//! profile's settings, the same rules for when to request a session and to end it with the
//! call — printing each call, each watcher's status and each request.

use super::{Cli, Exit, Failure, WatchArgs, fail};
use crate::app::{AppCommand, AppEvent, AppPaths, AppSettings, AppState, Connection, OnCall, OutgoingStatus};
use crate::calls::{CallEvent, Source, WatcherStatus};

pub(super) async fn watch(cli: &Cli, args: &WatchArgs) -> Result<Exit, Failure> {
    let mut paths = AppPaths::for_profile(&cli.profile)?;
    if let Some(dir) = &cli.config_dir {
        paths.config_dir = dir.clone();
    }
    if crate::client::config::Profile::load(&super::profile_path(cli)?)?.is_none_or(|p| p.token.is_none()) {
        return Err(fail(Exit::LoginNeeded, "not logged in: run `sidecall account login` first"));
    }
    let file = paths.settings_file();
    let mut settings = AppSettings::load(&file);
    let before = settings.clone();
    if let Some(host) = &args.fritz {
        settings.fritz.enabled = true;
        settings.fritz.host = host.clone();
    }
    if let Some(area) = &args.area_code {
        settings.area_code = area.clone();
    }
    match args.on_call.as_deref() {
        Some("automatic") => settings.on_call = OnCall::Automatic,
        Some("off") => settings.on_call = OnCall::Off,
        Some(other) => return Err(fail(Exit::Usage, format!("--on-call {other}: use automatic or off"))),
        None => {}
    }
    if settings != before {
        settings
            .save(&file)
            .map_err(|e| fail(Exit::Error, format!("cannot save {}: {e}", file.display())))?;
    }
    if settings.on_call == OnCall::Ask {
        eprintln!("note: the settings ask in the window before each session; without one, none is requested");
    }
    if !(settings.fritz.enabled || settings.ami.enabled || settings.phone.enabled) {
        eprintln!("note: no call watcher is set up: give --fritz HOST, or set one up in the app's settings");
    }
    let (core, events) = crate::app::start(paths, std::sync::Arc::new(|| {}));
    // No window to look at: requests ringing here are shown as desktop notifications (where
    // the desktop has a notification service), whose Accept and Decline answer them.
    core.send(AppCommand::WindowFocused(false));
    let json = args.json;
    let printer = tokio::task::spawn_blocking(move || print_until_logged_out(&events, json));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            core.send(AppCommand::Shutdown);
            Ok(Exit::Ok)
        }
        done = printer => match done {
            Ok(code) => Ok(code),
            Err(e) => Err(fail(Exit::Error, format!("the watcher stopped: {e}"))),
        },
    }
}

/// Prints what changes, until the login is refused (or the core stops).
fn print_until_logged_out(events: &std::sync::mpsc::Receiver<AppEvent>, json: bool) -> Exit {
    let mut last: Option<AppState> = None;
    loop {
        // The core gone (it stopped): nothing more to watch.
        let Ok(ev) = events.recv() else { return Exit::Error };
        match ev {
            AppEvent::Call { source, call } => print_call(source, &call, json),
            AppEvent::State(s) => {
                let logged_out = changes(last.as_ref(), &s, json);
                last = Some(*s);
                if logged_out {
                    return Exit::LoginNeeded;
                }
            }
            AppEvent::Ring { .. } => {}
        }
    }
}

fn emit(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn print_call(source: Source, call: &CallEvent, json: bool) {
    let text = match call {
        CallEvent::Outgoing { number, .. } => format!("{}: the phone dials {number}", source.label()),
        CallEvent::Incoming { caller, .. } => {
            format!("{}: a call from {}", source.label(), caller.as_deref().unwrap_or("an unknown number"))
        }
        CallEvent::Connected { .. } => format!("{}: the call is answered", source.label()),
        CallEvent::Ended { .. } => format!("{}: the call ended", source.label()),
    };
    emit(json, serde_json::json!({"event": "call", "source": source, "detail": call}), text);
}

/// Prints how `now` differs from `before`; `true` once logged out.
fn changes(before: Option<&AppState>, now: &AppState, json: bool) -> bool {
    for (src, st) in &now.watchers {
        if before.is_some_and(|b| b.watchers.iter().any(|(s, old)| s == src && old == st)) {
            continue;
        }
        let text = match st {
            WatcherStatus::Connecting => "connecting".to_string(),
            WatcherStatus::Connected => "connected".to_string(),
            WatcherStatus::Retrying { reason, retry_in_ms } => {
                format!("{reason}; retrying in {:.0} s", *retry_in_ms as f64 / 1000.0)
            }
            WatcherStatus::Failed { reason } => format!("stopped: {reason}"),
            WatcherStatus::Listening { at } => format!("listening at {at}"),
        };
        emit(
            json,
            serde_json::json!({"event": "watcher", "source": src, "status": st}),
            format!("{}: {text}", src.label()),
        );
    }
    if before.map(|b| &b.connection) != Some(&now.connection) {
        let (word, text) = match &now.connection {
            Connection::Online => ("online", "online".to_string()),
            Connection::Connecting { .. } => ("connecting", "connecting to the server…".to_string()),
            Connection::Offline { reason, .. } => ("offline", format!("offline: {reason}")),
            Connection::LoggedOut => ("logged_out", "logged out: run `sidecall account login`".to_string()),
        };
        emit(json, serde_json::json!({"event": "connection", "state": word}), text);
        if now.connection == Connection::LoggedOut && before.is_some() {
            return true;
        }
    }
    let request = |s: &AppState| s.outgoing.as_ref().map(|o| (o.target.clone(), o.status.clone()));
    if let Some((target, status)) = request(now)
        && before.and_then(request) != Some((target.clone(), status.clone()))
    {
        let word = match &status {
            OutgoingStatus::Dialing => "requesting".to_string(),
            OutgoingStatus::Calling(_) => "calling".to_string(),
            OutgoingStatus::Ringing => "ringing".to_string(),
            OutgoingStatus::Accepted => "accepted".to_string(),
            OutgoingStatus::Declined => "declined".to_string(),
            OutgoingStatus::NoAnswer => "no answer".to_string(),
            OutgoingStatus::Unavailable => "unavailable".to_string(),
            OutgoingStatus::InvalidNumber(why) => format!("invalid number: {why}"),
            OutgoingStatus::Cancelled => "cancelled".to_string(),
            OutgoingStatus::Failed(why) => format!("failed: {why}"),
        };
        emit(
            json,
            serde_json::json!({"event": "request", "target": target, "status": word}),
            format!("session with {target}: {word}"),
        );
    }
    if now.active.is_none()
        && let Some(a) = before.and_then(|b| b.active.as_ref())
    {
        emit(
            json,
            serde_json::json!({"event": "session_ended", "peer": a.peer.number}),
            format!("session with {} ended", a.peer.number),
        );
    }
    if let Some(n) = now.notice.as_ref().filter(|n| before.is_none_or(|b| b.notice.as_ref() != Some(*n))) {
        emit(json, serde_json::json!({"event": "notice", "text": n}), n.clone());
    }
    false
}
