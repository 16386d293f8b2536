//! Sidecall: a data session beside an ordinary phone call.
//!
//! - [`protocol`]: wire types shared by server and clients (see `PROTOCOL.md`).
//! - [`number`]: phone numbers to E.164.
//! - [`server`]: the registry and signaling server.
//! - [`client`]: the headless client core (connection, session state), no UI.
//! - [`cli`]: the headless command line of the `sidecall` binary.
//! - [`app`]: the desktop app's core (state, reducer, effects; no egui); [`ui`] draws it.
//! - [`rtc`], [`media`], [`calls`]: WebRTC, camera/video/ring, and the phone-call watchers.

// The server (`protocol`, `number`, `server`) builds alone; everything else is the desktop
// app and command line (the `desktop` feature, on by default).
pub mod ami;
#[cfg(feature = "desktop")]
pub mod app;
#[cfg(feature = "desktop")]
pub mod calls;
#[cfg(feature = "desktop")]
pub mod cli;
#[cfg(feature = "desktop")]
pub mod client;
#[cfg(feature = "desktop")]
pub mod media;
pub mod number;
pub mod protocol;
#[cfg(feature = "desktop")]
pub mod rtc;
pub mod server;
pub mod tls;
#[cfg(feature = "desktop")]
pub mod ui;

/// This user's data folder for Sidecall (`~/.local/share/sidecall` on Linux), or
/// `SIDECALL_DATA_DIR`. The app keeps its history there, and the server its database in
/// `server/` below it.
pub fn data_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("SIDECALL_DATA_DIR") {
        return Some(dir.into());
    }
    directories::ProjectDirs::from("org", "Sidecall", "sidecall").map(|d| d.data_dir().to_path_buf())
}

/// Sets up `tracing` output on stderr; `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
