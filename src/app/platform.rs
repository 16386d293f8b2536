//! What the core asks of the desktop: open a folder, show a notification.

use crate::protocol::{Offer, Party, SessionId};
use std::path::Path;

/// Opens the folder holding `path` in the file manager (never the file itself).
pub fn show_in_folder(path: &Path) -> std::io::Result<()> {
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
/// Desktop notifications of requests ringing here, with Accept and Decline; each withdrawn
/// when its request stops ringing. Failures (no notification service) are logged once.
#[derive(Default)]
pub struct Notifications {
    shown: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<SessionId, Shown>>>,
}

type Shown = std::sync::Arc<notify_rust::NotificationHandle>;

impl Notifications {
    /// Shows the request; `answer(true)` is called for Accept, `answer(false)` for Decline.
    pub fn show(
        &self,
        session_id: SessionId,
        caller: &Party,
        offer: Offer,
        answer: impl FnOnce(bool) + Send + 'static,
    ) {
        let summary = format!("{} wants a data session", caller.display_name);
        let body = format!("{} offers {offer}.", caller.number);
        let shown = self.shown.clone();
        tokio::spawn(async move {
            static WARNED: std::sync::Once = std::sync::Once::new();
            let handle = notify_rust::Notification::new()
                .appname("Sidecall")
                .summary(&summary)
                .body(&body)
                .icon("call-start")
                .action("accept", "Accept")
                .action("decline", "Decline")
                .hint(notify_rust::Hint::Category("call.incoming".into()))
                .hint(notify_rust::Hint::Resident(true))
                .urgency(notify_rust::Urgency::Critical)
                .timeout(notify_rust::Timeout::Never)
                .show_async()
                .await;
            let handle = match handle {
                Ok(h) => std::sync::Arc::new(h),
                Err(e) => {
                    WARNED.call_once(|| tracing::warn!("desktop notifications are unavailable: {e}"));
                    return;
                }
            };
            tracing::info!(id = handle.id(), %session_id, "request notified");
            shown.lock().insert(session_id.clone(), handle.clone());
            let mut picked = None;
            handle
                .wait_for_action_async(|r| {
                    if let notify_rust::ActionResponse::Custom(action) = r {
                        picked = Some(action.to_string());
                    }
                })
                .await;
            shown.lock().remove(&session_id);
            if picked.is_some() {
                // Resident: an action does not take it away by itself.
                handle.close_async().await;
            }
            match picked.as_deref() {
                Some("accept") => answer(true),
                Some("decline") => answer(false),
                _ => {}
            }
        });
    }

    /// Withdraws the request's notification, if it is shown.
    pub fn withdraw(&self, session_id: &SessionId) {
        let Some(handle) = self.shown.lock().remove(session_id) else { return };
        tokio::spawn(async move { handle.close_async().await });
    }
}
