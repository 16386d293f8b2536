//! Dead connections are noticed on both sides.

use crate::fixture::*;
use futures_util::{SinkExt, StreamExt};
use sidecall::client::{ClientConfig, Event};
use sidecall::protocol::{Party, ServerMsg, Settings};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn server_drops_a_client_that_stops_answering_pings() {
    let server = TestServer::start_with(|c| c.hub.heartbeat = Duration::from_millis(200)).await;
    let token = server.account(ALICE, "Alice").await;
    // Logged in, then never reads again: its WebSocket library never answers the pings.
    let _silent = RawWs::login(&server, &token).await;
    assert_eq!(server.hub().online_devices(), 1);
    let t0 = Instant::now();
    while server.hub().online_devices() > 0 {
        assert!(t0.elapsed() < WAIT, "the silent client was never dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Three heartbeats of silence, not sooner.
    assert!(t0.elapsed() >= Duration::from_millis(350), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn client_reconnects_when_the_server_goes_silent() {
    // A server that welcomes, then neither pings nor closes: a dead path, as after a NAT
    // timeout or a suspended laptop.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { continue };
            let _hello = ws.next().await;
            let welcome = ServerMsg::Welcome {
                protocol: 1,
                server_version: "test".into(),
                account: Party { number: ALICE.into(), display_name: "Alice".into(), verified: false },
                device_id: 1,
                settings: Settings::default(),
                heartbeat_secs: 1,
                answer_timeout_secs: 30,
                observed_ip: "127.0.0.1".parse().expect("ip"),
                ice_servers: vec![],
                can_place_calls: false,
                extension: None,
            };
            let _ = ws.send(Message::text(serde_json::to_string(&welcome).expect("json"))).await;
            held.push(ws);
        }
    });
    let mut cfg = ClientConfig::new(format!("http://{addr}"), "token");
    cfg.backoff_min = Duration::from_millis(50);
    let (_handle, mut events) = sidecall::client::spawn(cfg, None);
    let mut online_at = None;
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .expect("events in time")
            .expect("running");
        match ev {
            Event::Online { .. } if online_at.is_none() => online_at = Some(Instant::now()),
            Event::Offline { reason, .. } => {
                let silent_for = online_at.expect("was online").elapsed();
                assert!(reason.contains("stopped answering"), "{reason}");
                assert!(silent_for >= Duration::from_millis(2900), "{silent_for:?}");
                break;
            }
            _ => {}
        }
    }
    // And it tries again by itself.
    let again = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Online { .. }) = events.recv().await {
                break;
            }
        }
    })
    .await;
    assert!(again.is_ok(), "reconnected");
}
