//! The headless client core: HTTP API, the WebSocket connection with its session state, and
//! the saved profile. No UI code lives here; the CLI and the desktop app both drive it.

pub mod api;
pub mod config;
pub mod core;
pub mod login;
pub mod session;
pub mod tls;
pub mod transfer;

pub use self::core::{ClientConfig, ClientHandle, Command, Event, StopReason, Waker, spawn};
pub use self::session::SessionController;
