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

/// Starts Sidecall (minimised to the tray) when the user logs in, or stops doing so: an XDG
/// autostart entry on Linux and the BSDs. (Windows would use the Run registry key and macOS a
/// login item; neither is built here.)
pub fn set_autostart(on: bool, profile: &str) -> std::io::Result<()> {
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        let dir = std::env::var_os("XDG_CONFIG_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))
            .ok_or_else(|| std::io::Error::other("no home folder"))?
            .join("autostart");
        autostart_entry(&dir, on, profile, &std::env::current_exe()?)
    }
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    {
        if on {
            return Err(std::io::Error::other("starting at login is not built for this platform yet"));
        }
        let _ = profile;
        Ok(())
    }
}

/// Writes (or removes) the autostart entry of `profile` in `dir`, starting `exe` minimised.
#[cfg(all(unix, not(target_os = "macos")))]
fn autostart_entry(dir: &Path, on: bool, profile: &str, exe: &Path) -> std::io::Result<()> {
    let name = if profile == "default" {
        "sidecall.desktop".to_string()
    } else {
        format!("sidecall-{profile}.desktop")
    };
    let file = dir.join(name);
    if !on {
        return match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let profile_arg = if profile == "default" { String::new() } else { format!(" --profile {profile}") };
    let entry = format!(
        "[Desktop Entry]\nType=Application\nName=Sidecall\nComment=Video and files beside your phone call\n\
         Exec=\"{}\"{profile_arg} --minimized\nIcon=org.sidecall.Sidecall\nX-GNOME-Autostart-enabled=true\n",
        exe.display()
    );
    std::fs::create_dir_all(dir)?;
    super::settings::write_atomic(&file, entry.as_bytes())
}

#[cfg(all(test, unix, not(target_os = "macos")))]
mod tests {
    use super::*;

    #[test]
    fn the_autostart_entry_starts_the_profile_minimised_and_goes_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        let autostart = dir.path().join("autostart");
        autostart_entry(&autostart, true, "work", Path::new("/usr/bin/sidecall")).expect("write");
        let entry = std::fs::read_to_string(autostart.join("sidecall-work.desktop")).expect("entry");
        assert!(entry.contains("Exec=\"/usr/bin/sidecall\" --profile work --minimized"), "{entry}");
        autostart_entry(&autostart, false, "work", Path::new("/usr/bin/sidecall")).expect("remove");
        assert!(!autostart.join("sidecall-work.desktop").exists());
        autostart_entry(&autostart, false, "work", Path::new("/usr/bin/sidecall"))
            .expect("removing twice is fine");
    }
}
