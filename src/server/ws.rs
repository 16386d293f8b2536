//! One WebSocket connection: `hello`, then messages until either side goes away.

use crate::protocol::{
    ClientMsg, ErrorCode, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ServerMsg, close_code, limits,
};
use crate::server::auth::token_hash;
use crate::server::hub::{AccessRequest, Hub, Login, Outbound, error_msg};
use crate::server::ratelimit::Bucket;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a new connection may take to say `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames a connection may send before its `hello` succeeds.
const FRAMES_BEFORE_HELLO: u32 = 20;
/// Messages refused for rate before the connection is closed as a flood.
const FLOOD_LIMIT: u32 = 500;

async fn send_msg(socket: &mut WebSocket, msg: &ServerMsg) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// Sends a close frame, then reads (and drops) what the client still sends until it answers
/// the close or a second passes. Dropping the socket with unread input would reset the TCP
/// connection, and the client might never see the close reason or the errors before it.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.to_string()) };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

fn count_error(hub: &Hub, code: ErrorCode) {
    hub.metrics.protocol_errors.get_or_create(&vec![("code", code.as_str())]).inc();
}

async fn refuse(hub: &Hub, socket: &mut WebSocket, code: ErrorCode, message: String) -> bool {
    count_error(hub, code);
    tracing::debug!(?code, %message, "refused a client message");
    send_msg(socket, &error_msg(code, message)).await
}

/// Refuses a message that breaks a field limit, naming its request or session so that the
/// client can tell which of its requests failed.
async fn refuse_field(hub: &Hub, socket: &mut WebSocket, msg: &ClientMsg, e: limits::FieldError) -> bool {
    count_error(hub, ErrorCode::InvalidField);
    tracing::debug!(%e, "refused a message over the field limits");
    let (req_id, session_id) = match msg {
        ClientMsg::AccessRequest { req_id, .. } => (Some(*req_id), None),
        ClientMsg::Answer { session_id, .. }
        | ClientMsg::End { session_id }
        | ClientMsg::Signal { session_id, .. }
            if e.field != "session_id" =>
        {
            (None, Some(session_id.clone()))
        }
        _ => (None, None),
    };
    let message = limits::clip(format!("{e} (see Limits in PROTOCOL.md)"));
    send_msg(socket, &ServerMsg::Error { code: ErrorCode::InvalidField, message, req_id, session_id }).await
}

/// What a received frame turned out to be.
enum Incoming {
    Msg(ClientMsg),
    /// Refused with an error; the connection goes on.
    Refused,
    /// Nothing to do (pings, pongs).
    Nothing,
    /// The connection is over.
    Gone,
}

async fn read_frame(
    hub: &Hub,
    socket: &mut WebSocket,
    frame: Option<Result<Message, axum::Error>>,
) -> Incoming {
    match frame {
        None => Incoming::Gone,
        Some(Err(e)) => {
            let text = e.to_string();
            if too_large(e) {
                count_error(hub, ErrorCode::TooLarge);
                tracing::info!("closing a connection that sent an oversized message: {text}");
                close(socket, close_code::TOO_BIG, "message too large: the limit is 65536 bytes").await;
            } else {
                tracing::debug!("websocket read failed: {text}");
            }
            Incoming::Gone
        }
        Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientMsg>(text.as_str()) {
            Ok(msg) => match limits::check(&msg) {
                Ok(()) => Incoming::Msg(msg),
                Err(e) => {
                    if refuse_field(hub, socket, &msg, e).await {
                        Incoming::Refused
                    } else {
                        Incoming::Gone
                    }
                }
            },
            Err(e) => {
                let ok =
                    refuse(hub, socket, ErrorCode::BadMessage, format!("could not read message: {e}")).await;
                if ok { Incoming::Refused } else { Incoming::Gone }
            }
        },
        Some(Ok(Message::Binary(_))) => {
            let ok = refuse(
                hub,
                socket,
                ErrorCode::BinaryNotSupported,
                "binary frames are not part of the protocol: send JSON text frames".into(),
            )
            .await;
            if ok { Incoming::Refused } else { Incoming::Gone }
        }
        Some(Ok(Message::Close(_))) => Incoming::Gone,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Nothing,
    }
}

/// Waits for a valid `hello`; refuses everything else. `None`: the connection is over.
async fn await_hello(hub: &Hub, socket: &mut WebSocket, observed_ip: IpAddr) -> Option<Login> {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let mut frames = 0u32;
    loop {
        frames += 1;
        if frames > FRAMES_BEFORE_HELLO {
            count_error(hub, ErrorCode::RateLimited);
            close(socket, close_code::POLICY, "too many messages before hello").await;
            return None;
        }
        let frame = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Ok(f) => f,
            Err(_) => {
                close(socket, close_code::HELLO_TIMEOUT, "no hello within 10 seconds").await;
                return None;
            }
        };
        let msg = match read_frame(hub, socket, frame).await {
            Incoming::Msg(m) => m,
            Incoming::Refused | Incoming::Nothing => continue,
            Incoming::Gone => return None,
        };
        let ClientMsg::Hello { protocol, token, device_ip } = msg else {
            refuse(hub, socket, ErrorCode::NotAuthenticated, "send hello with your token first".into()).await;
            continue;
        };
        if protocol != PROTOCOL_VERSION {
            refuse(
                hub,
                socket,
                ErrorCode::UnsupportedVersion,
                format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}: update Sidecall"),
            )
            .await;
            close(socket, close_code::UNSUPPORTED_VERSION, "unsupported protocol version").await;
            return None;
        }
        let found = match hub.store.device_by_token(&token_hash(&token)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!("token lookup failed: {e}");
                refuse(
                    hub,
                    socket,
                    ErrorCode::Internal,
                    "the server cannot reach its database; try again later".into(),
                )
                .await;
                close(socket, 1011, "database unavailable").await;
                return None;
            }
        };
        let Some((device, user)) = found else {
            refuse(hub, socket, ErrorCode::AuthFailed, "unknown or revoked token: log in again".into()).await;
            close(socket, close_code::AUTH_FAILED, "log in again").await;
            return None;
        };
        if let Some(why) = device.revoked {
            refuse(hub, socket, ErrorCode::AuthFailed, why).await;
            close(socket, close_code::AUTH_FAILED, crate::server::verify::CLAIMED).await;
            return None;
        }
        let reported_ip = device_ip.or(device.reported_ip);
        if let Err(e) = hub.store.device_seen(device.id, device_ip, observed_ip).await {
            tracing::warn!(device_id = device.id, "could not record device addresses: {e}");
        }
        let blocked = match hub.store.blocked(user.id).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot read the block list: {e}");
                Vec::new()
            }
        };
        return Some(Login {
            device_id: device.id,
            user_id: user.id,
            number: user.number,
            display_name: user.display_name,
            verified: user.verified,
            settings: user.settings,
            extension: user.extension,
            blocked,
            reported_ip,
            observed_ip,
        });
    }
}

struct ConnGuard<'a>(&'a Hub);
impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}

pub async fn connection(hub: Arc<Hub>, mut socket: WebSocket, observed_ip: IpAddr, host: Option<String>) {
    hub.metrics.connections.inc();
    let _guard = ConnGuard(&hub);
    let Some(login) = await_hello(&hub, &mut socket, observed_ip).await else {
        return;
    };
    let Some((conn_id, mut outbound)) = hub.connect(&login) else {
        close(&mut socket, close_code::RESTART, "server is restarting").await;
        return;
    };
    let device_id = login.device_id;
    let cluster = hub.cluster();
    if let Some(c) = &cluster
        && !present(c, &login, conn_id).await
    {
        hub.disconnect(device_id, conn_id);
        let msg = error_msg(
            ErrorCode::Unavailable,
            "the server cannot reach its database right now: reconnecting shortly",
        );
        send_msg(&mut socket, &msg).await;
        close(&mut socket, close_code::TRY_AGAIN, "database unavailable").await;
        return;
    }
    tracing::debug!(device_id, number = %login.number, %observed_ip, "device online");
    let welcome = ServerMsg::Welcome {
        protocol: PROTOCOL_VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        account: crate::protocol::Party {
            number: login.number.clone(),
            display_name: login.display_name.clone(),
            verified: login.verified,
        },
        device_id,
        settings: login.settings,
        heartbeat_secs: hub.cfg.heartbeat.as_secs().max(1),
        answer_timeout_secs: hub.cfg.answer_timeout.as_secs(),
        observed_ip,
        ice_servers: hub.ice_servers_for(device_id, host.as_deref()),
        can_place_calls: hub.can_place_calls(),
        extension: login.extension.clone(),
    };
    let blocked = ServerMsg::Blocked { numbers: login.blocked.clone() };
    if send_msg(&mut socket, &welcome).await && send_msg(&mut socket, &blocked).await {
        serve(&hub, &mut socket, &login, &mut outbound, host.as_deref()).await;
    }
    hub.disconnect(device_id, conn_id);
    if let Some(c) = &cluster {
        c.unregister(device_id, conn_id);
        // Unless a newer connection of the device took over meanwhile.
        if !hub.is_online(device_id) {
            c.announce_offline(device_id);
        }
    }
    tracing::debug!(device_id, "device offline");
}

/// Cluster: records that this node holds the device now, and has the node that held it
/// before close its older connection. `false`: the presence table cannot be written.
async fn present(c: &crate::server::cluster::Cluster, login: &Login, conn_id: u64) -> bool {
    let row = crate::server::cluster::wire::PresenceRow {
        device: login.device_id,
        user: login.user_id,
        node: c.node.to_string(),
        reported_ip: login.reported_ip,
        observed_ip: login.observed_ip,
    };
    // The other nodes hear of it first (their copy of the table routes requests), then it is
    // written down; a failed write takes it back.
    c.announce_online(&login.number, row.clone());
    let registered = c.register(&row, &login.number, conn_id).await;
    if registered.is_err() {
        c.announce_offline(login.device_id);
    }
    match registered {
        Ok(Some(old)) if *old != *c.node => {
            let kick = crate::server::cluster::wire::NodeMsg::Kick {
                device: login.device_id,
                code: close_code::REPLACED,
                reason: crate::server::hub::REPLACED.into(),
            };
            c.send(&old, &kick);
            true
        }
        Ok(_) => true,
        Err(e) => {
            tracing::error!(
                device_id = login.device_id,
                "cannot record the device in the presence table: {e}"
            );
            false
        }
    }
}

async fn serve(
    hub: &Arc<Hub>,
    socket: &mut WebSocket,
    login: &Login,
    outbound: &mut tokio::sync::mpsc::Receiver<Outbound>,
    host: Option<&str>,
) {
    let device_id = login.device_id;
    // Relay credentials are renewed at half their lifetime, so a device online for days
    // always holds a valid one.
    let renew = hub.relay_credential_ttl().map(|ttl| (ttl / 2).max(Duration::from_secs(1)));
    let mut renewal = renew.map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
    let heartbeat = hub.cfg.heartbeat.max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let mut last_heard = Instant::now();
    let mut messages = Bucket::new(60.0, 30.0);
    let mut requests = Bucket::new(10.0, 1.0);
    let mut flood = Flood::default();
    loop {
        tokio::select! {
            out = outbound.recv() => match out {
                Some(Outbound::Text(text)) => {
                    if socket.send(Message::Text(text)).await.is_err() { return; }
                }
                Some(Outbound::Close(code, reason)) => {
                    close(socket, code, &reason).await;
                    return;
                }
                None => {
                    close(socket, close_code::POLICY, "dropped: this client did not read its messages").await;
                    return;
                }
            },
            frame = socket.recv() => {
                let received = Instant::now();
                last_heard = received;
                // Every frame counts against the rate, pings and unreadable ones too: each
                // costs an answer.
                let ending = matches!(frame, None | Some(Err(_)) | Some(Ok(Message::Close(_))));
                if !ending && !messages.take(received) {
                    if !flood.refused(hub, socket, device_id, received).await { return; }
                    continue;
                }
                let msg = match read_frame(hub, socket, frame).await {
                    Incoming::Msg(m) => m,
                    Incoming::Refused | Incoming::Nothing => continue,
                    Incoming::Gone => return,
                };
                if matches!(msg, ClientMsg::AccessRequest { .. }) && !requests.take(received) {
                    if !flood.refused(hub, socket, device_id, received).await { return; }
                    continue;
                }
                if !handle(hub, socket, login, msg, received).await { return; }
            }
            _ = async { match renewal.as_mut() { Some(r) => r.tick().await, None => std::future::pending().await } } => {
                let msg = ServerMsg::IceServers { ice_servers: hub.ice_servers_for(device_id, host) };
                if !send_msg(socket, &msg).await { return; }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > heartbeat * 3 {
                    tracing::info!(device_id, "no answer to pings: closing");
                    close(socket, close_code::HEARTBEAT_TIMEOUT, "no answer to pings").await;
                    return;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() { return; }
            }
        }
    }
}

/// Messages refused for rate on one connection.
#[derive(Default)]
struct Flood {
    refused: u32,
    last_told: Option<Instant>,
}

impl Flood {
    /// Counts a refused frame; tells the client at most once a second, and closes the
    /// connection beyond [`FLOOD_LIMIT`]. `false`: the connection is over.
    async fn refused(&mut self, hub: &Hub, socket: &mut WebSocket, device_id: i64, now: Instant) -> bool {
        self.refused += 1;
        if self.refused > FLOOD_LIMIT {
            tracing::warn!(device_id, "closing a flooding connection");
            close(socket, close_code::POLICY, "too many messages").await;
            return false;
        }
        if self.last_told.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.last_told = Some(now);
            let message = "too many messages: slow down (messages are dropped meanwhile)";
            return refuse(hub, socket, ErrorCode::RateLimited, message.into()).await;
        }
        true
    }
}

/// Acts on one message of a logged-in device. `false`: the connection is over.
async fn handle(
    hub: &Arc<Hub>,
    socket: &mut WebSocket,
    login: &Login,
    msg: ClientMsg,
    received: Instant,
) -> bool {
    let device_id = login.device_id;
    match msg {
        ClientMsg::Hello { .. } => {
            refuse(
                hub,
                socket,
                ErrorCode::AlreadyAuthenticated,
                "already logged in on this connection".into(),
            )
            .await
        }
        ClientMsg::AccessRequest { req_id, target, offer, region, call_ref, place_call } => {
            // The extension as stored now (an administrator may have just set it).
            let extension = if place_call {
                match hub.store.user_by_number(&login.number).await {
                    Ok(user) => user.and_then(|u| u.extension),
                    Err(e) => {
                        tracing::error!("cannot read the extension: {e}");
                        None
                    }
                }
            } else {
                None
            };
            let req = AccessRequest { req_id, target, offer, region, call_ref, place_call, extension };
            hub.access_request(device_id, req, received);
            true
        }
        ClientMsg::Answer { session_id, accept } => {
            hub.answer(device_id, &session_id, accept);
            true
        }
        ClientMsg::Signal { session_id, data } => {
            hub.signal(device_id, &session_id, data);
            true
        }
        ClientMsg::End { session_id } => {
            hub.end(device_id, &session_id);
            true
        }
        ClientMsg::UpdateSettings { accepting_sessions, do_not_disturb, hide_address } => {
            let change = crate::protocol::SettingsChange { accepting_sessions, do_not_disturb, hide_address };
            match hub.store.update_settings(login.user_id, change).await {
                Ok(settings) => {
                    hub.settings_changed(login.user_id, settings);
                    true
                }
                Err(e) => {
                    tracing::error!("cannot save settings: {e}");
                    refuse(
                        hub,
                        socket,
                        ErrorCode::Internal,
                        "could not save the settings; try again later".into(),
                    )
                    .await
                }
            }
        }
        ClientMsg::SetBlocked { numbers } => set_blocked(hub, socket, login, numbers).await,
        ClientMsg::SetExtension { extension } => {
            let extension = extension.map(|e| e.trim().to_string()).filter(|e| !e.is_empty());
            if let Some(e) = &extension
                && !crate::server::pbx::valid_extension(e)
            {
                let msg = "an extension is 1 to 32 digits, letters or *#+_- (e.g. 201)".to_string();
                return refuse(hub, socket, ErrorCode::InvalidField, msg).await;
            }
            // The PBX is asked where it can tell; no answer in 3 s: taken as given.
            let check = match (&extension, hub.pbx.read().clone()) {
                (Some(e), Some(pbx)) => Some(pbx.check_extension(e)),
                _ => None,
            };
            if let Some(check) = check
                && let Ok(Ok(false)) = tokio::time::timeout(Duration::from_secs(3), check).await
            {
                let msg = format!(
                    "the PBX has no phone with extension {}: check the number on your desk phone",
                    extension.as_deref().unwrap_or("")
                );
                return refuse(hub, socket, ErrorCode::InvalidField, msg).await;
            }
            match hub.store.set_extension(login.user_id, extension.as_deref()).await {
                Ok(()) => {
                    hub.extension_changed(login.user_id, extension);
                    true
                }
                Err(e) => {
                    tracing::error!("cannot save the extension: {e}");
                    refuse(
                        hub,
                        socket,
                        ErrorCode::Internal,
                        "could not save the extension; try again later".into(),
                    )
                    .await
                }
            }
        }
        ClientMsg::Ping { nonce } => send_msg(socket, &ServerMsg::Pong { nonce }).await,
        ClientMsg::Resume { session_id, role, peer } => {
            hub.resume(device_id, &session_id, role, &peer);
            true
        }
    }
}

async fn set_blocked(hub: &Arc<Hub>, socket: &mut WebSocket, login: &Login, numbers: Vec<String>) -> bool {
    let region = hub.region_of_user(login.user_id);
    let mut normalized = Vec::with_capacity(numbers.len());
    for n in &numbers {
        match crate::number::normalize(n, Some(&region)) {
            Ok(e164) => normalized.push(e164.to_string()),
            Err(e) => return refuse(hub, socket, ErrorCode::InvalidNumber, format!("block list: {e}")).await,
        }
    }
    normalized.sort();
    normalized.dedup();
    match hub.store.set_blocked(login.user_id, &normalized).await {
        Ok(()) => {
            hub.blocked_changed(login.user_id, normalized);
            true
        }
        Err(e) => {
            tracing::error!("cannot save the block list: {e}");
            refuse(hub, socket, ErrorCode::Internal, "could not save the block list; try again later".into())
                .await
        }
    }
}

/// Limits applied to every WebSocket upgrade.
pub fn configure(upgrade: axum::extract::ws::WebSocketUpgrade) -> axum::extract::ws::WebSocketUpgrade {
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE_BYTES * 4)
}

/// Whether a read failed because the peer sent more than the limits allow (a message or a
/// frame over the cap, or a control frame over 125 bytes).
fn too_large(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e.into_inner().downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => true,
        Some(Error::Protocol(p)) => matches!(p, ProtocolError::ControlFrameTooBig),
        _ => false,
    }
}
