//! Desk phones' action URLs (Snom, Yealink, Grandstream, …): the phone calls a URL on this
//! computer when a call starts, connects or ends. Paste into the phone's settings:
//!
//! ```text
//! Outgoing call:   http://<this computer>:7481/phone/outgoing?remote=$remote     (Snom)
//!                  http://<this computer>:7481/phone/outgoing?remote=$calledNumber (Yealink)
//! Call connected:  http://<this computer>:7481/phone/connected?remote=$remote
//! Call ended:      http://<this computer>:7481/phone/disconnected?remote=$remote
//! Incoming call:   http://<this computer>:7481/phone/incoming?remote=$remote
//! ```
//!
//! Only requests from the configured phone address are taken.

use super::{CallEvent, Emitter, WatcherStatus};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

struct PhoneState {
    phone: IpAddr,
    out: Emitter,
    /// The phone reports one call at a time; each outgoing/incoming starts a new reference.
    counter: AtomicU64,
}

async fn event(
    State(st): State<Arc<PhoneState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(kind): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, &'static str) {
    if peer.ip() != st.phone {
        tracing::warn!(from = %peer.ip(), "action URL from an address that is not the configured phone: refused");
        return (StatusCode::FORBIDDEN, "not the configured phone\n");
    }
    let remote =
        q.get("remote").or_else(|| q.get("number")).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let current = |bump: bool| {
        let n = if bump {
            st.counter.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            st.counter.load(Ordering::Relaxed)
        };
        format!("phone:{n}")
    };
    let ev = match kind.as_str() {
        "outgoing" => match remote {
            Some(number) => CallEvent::Outgoing { call_ref: current(true), number },
            None => return (StatusCode::BAD_REQUEST, "missing ?remote=NUMBER\n"),
        },
        "incoming" => CallEvent::Incoming { call_ref: current(true), caller: remote },
        "connected" => CallEvent::Connected { call_ref: current(false) },
        "disconnected" => CallEvent::Ended { call_ref: current(false) },
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "use /phone/outgoing, /phone/connected, /phone/disconnected or /phone/incoming\n",
            );
        }
    };
    st.out.call(ev);
    (StatusCode::OK, "ok\n")
}

/// Serves the action URLs on `listen` until the receiver goes away.
pub async fn run(listen: SocketAddr, phone: IpAddr, out: Emitter) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            out.status(WatcherStatus::Failed { reason: format!("cannot listen on {listen}: {e}") });
            return;
        }
    };
    let at = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    out.status(WatcherStatus::Listening { at });
    let st = Arc::new(PhoneState { phone, out: out.clone(), counter: AtomicU64::new(0) });
    let app = axum::Router::new().route("/phone/{kind}", get(event)).with_state(st);
    let closed = async move {
        while !out.closed() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    };
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(closed)
        .await;
    if let Err(e) = served {
        tracing::warn!("action URL listener stopped: {e}");
    }
}
