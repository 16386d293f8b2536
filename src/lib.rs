//! Sidecall: a data session beside an ordinary phone call.
//!
//! - [`protocol`]: wire types shared by server and clients (see `PROTOCOL.md`).
//! - [`number`]: phone numbers to E.164.
//! - [`server`]: the registry and signaling server.
//! - [`client`]: the headless client core (connection, session state), no UI.
//! - [`cli`]: the headless command line of the `sidecall` binary.

pub mod app;
pub mod calls;
pub mod cli;
pub mod client;
pub mod media;
pub mod number;
pub mod protocol;
pub mod rtc;
pub mod server;
pub mod ui;

/// Sets up `tracing` output on stderr; `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
