//! The data side of an accepted session: a WebRTC peer whose signaling goes through the
//! server connection, and the file transfers on its channel. Used by the CLI and the app.

use crate::client::ClientHandle;
use crate::client::transfer::{self, ReceiveConfig, TransferCmd, TransferEvent, Way};
use crate::protocol::{IceServer, Role, SessionId, SignalData};
use crate::rtc::{Peer, PeerEvent};
use std::path::PathBuf;
use std::time::Instant;
use tokio::sync::mpsc;

/// What a data session reports.
#[derive(Clone, Debug, PartialEq)]
pub enum DataEvent {
    /// The peer-to-peer channel is open; files can flow. `open_ms`: since the session started.
    ChannelOpen {
        open_ms: u64,
    },
    Transfer(TransferEvent),
    /// The peer connection could not be made or broke.
    Failed(String),
}

/// Whether WebRTC should use loopback only (tests and demos on one machine):
/// `SIDECALL_RTC_LOOPBACK=1`.
pub fn loopback_from_env() -> bool {
    std::env::var("SIDECALL_RTC_LOOPBACK").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Handle to a running data session; dropping it closes the peer connection.
pub struct DataSession {
    pub session_id: SessionId,
    signals: mpsc::UnboundedSender<SignalData>,
    transfers: mpsc::UnboundedSender<TransferCmd>,
    close: Option<tokio::sync::oneshot::Sender<()>>,
}

pub struct DataConfig {
    pub role: Role,
    pub ice_servers: Vec<IceServer>,
    pub receive: ReceiveConfig,
    pub loopback: bool,
}

impl DataSession {
    /// Starts the peer for `session_id` on the current tokio runtime.
    pub fn start(
        client: ClientHandle,
        session_id: SessionId,
        cfg: DataConfig,
        events: mpsc::UnboundedSender<DataEvent>,
    ) -> DataSession {
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        let (tr_tx, tr_rx) = mpsc::unbounded_channel();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(drive(client, session_id.clone(), cfg, sig_rx, tr_rx, close_rx, events));
        DataSession { session_id, signals: sig_tx, transfers: tr_tx, close: Some(close_tx) }
    }

    /// Signaling from the peer, as relayed by the server.
    pub fn signal(&self, data: SignalData) {
        let _ = self.signals.send(data);
    }

    /// Offers files (queued until the channel is open).
    pub fn send_files(&self, paths: Vec<PathBuf>) {
        let _ = self.transfers.send(TransferCmd::Send(paths));
    }

    pub fn accept_file(&self, id: u32) {
        let _ = self.transfers.send(TransferCmd::Accept(id));
    }

    pub fn reject_file(&self, id: u32) {
        let _ = self.transfers.send(TransferCmd::Reject(id));
    }

    pub fn cancel_file(&self, id: u32, way: Way) {
        let _ = self.transfers.send(TransferCmd::Cancel { id, way });
    }

    pub fn close(&mut self) {
        if let Some(c) = self.close.take() {
            let _ = c.send(());
        }
    }
}

impl Drop for DataSession {
    fn drop(&mut self) {
        self.close();
    }
}

async fn drive(
    client: ClientHandle,
    session_id: SessionId,
    cfg: DataConfig,
    mut signals: mpsc::UnboundedReceiver<SignalData>,
    transfers: mpsc::UnboundedReceiver<TransferCmd>,
    mut close: tokio::sync::oneshot::Receiver<()>,
    events: mpsc::UnboundedSender<DataEvent>,
) {
    let started = Instant::now();
    let (peer, mut peer_events) = match Peer::start(cfg.role, &cfg.ice_servers, cfg.loopback).await {
        Ok(p) => p,
        Err(e) => {
            let _ = events.send(DataEvent::Failed(format!("cannot start the peer connection: {e}")));
            return;
        }
    };
    // Answers created from incoming offers come back through here.
    let (own_tx, mut own_rx) = mpsc::unbounded_channel::<PeerEvent>();
    let mut transfers = Some(transfers);
    let (tev_tx, mut tev_rx) = mpsc::unbounded_channel::<TransferEvent>();
    loop {
        tokio::select! {
            s = signals.recv() => {
                let Some(s) = s else { break };
                if let Err(e) = peer.signal(s, &own_tx).await {
                    tracing::warn!(%session_id, "signaling: {e}");
                }
            }
            ev = peer_events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    PeerEvent::Signal(s) => client.signal(&session_id, s),
                    PeerEvent::ChannelOpen(ch) => {
                        let open_ms = started.elapsed().as_millis() as u64;
                        tracing::info!(%session_id, open_ms, "data channel open");
                        let _ = events.send(DataEvent::ChannelOpen { open_ms });
                        if let Some(cmds) = transfers.take() {
                            tokio::spawn(transfer::run(ch, cfg.receive.clone(), cmds, tev_tx.clone()));
                        }
                    }
                    PeerEvent::Connected => {}
                    PeerEvent::Closed(why) => {
                        let _ = events.send(DataEvent::Failed(why));
                    }
                }
            }
            Some(ev) = own_rx.recv() => {
                if let PeerEvent::Signal(s) = ev {
                    client.signal(&session_id, s);
                }
            }
            Some(t) = tev_rx.recv() => {
                let _ = events.send(DataEvent::Transfer(t));
            }
            _ = &mut close => break,
        }
    }
    peer.close().await;
    // Report what the transfer engine says as it winds down.
    while let Ok(t) = tev_rx.try_recv() {
        let _ = events.send(DataEvent::Transfer(t));
    }
}
