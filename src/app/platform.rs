//! What the core asks of the desktop: open a folder, show a notification.

use crate::protocol::{Offer, Party};
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
/// A desktop notification; failures (no notification service) are logged once.
pub fn notify_incoming(caller: &Party, offer: Offer) {
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
