//! The one integration-test binary: real server, real sockets, real database files.

mod bad_input;
mod browser;
mod calls;
mod cli;
mod cluster;
mod fixture;
mod fritz_dial;
mod handshake;
mod hardening;
mod heartbeat;
mod nat;
mod notify;
mod pbx;
mod protocol_doc;
mod relay;
mod restart;
mod rtc;
mod slow_link;
mod store;
mod tls;
mod transfer;
mod tray;
mod ui;
mod verify;
mod video;
