//! Sessions through the server's own TURN relay, with real WebRTC on loopback: "hide my
//! address" on either side relays the whole session, nobody is told an address, and the
//! server refuses signals that would show one.

use super::fixture::{ALICE, BOB, PASSWORD, TestServer, WAIT};
use sidecall::client::session::{DataEvent, VideoDisplay};
use sidecall::client::transfer::{ReceiveConfig, TransferEvent, Way};
use sidecall::client::{self, ClientConfig, ClientHandle, Event, SessionController, api};
use sidecall::protocol::{
    ErrorCode, IceServer, LoginRequest, Offer, RegisterRequest, SessionId, SettingsChange, SignalData,
};
use sidecall::rtc::Path;
use sidecall::server::relay::RelayConfig;
use sidecall::server::{RelayMode, relay::sdp};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

async fn relay_server(always: bool) -> TestServer {
    TestServer::start_with(|c| {
        c.relay = RelayMode::Own(RelayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ports: 42000..=42999,
            ..Default::default()
        });
        c.hub.relay_always = always;
    })
    .await
}

/// One side of a session: its client, every event it got, its data side.
struct Side {
    handle: ClientHandle,
    events: mpsc::UnboundedReceiver<Event>,
    ice: Vec<IceServer>,
    seen: Vec<Event>,
}

async fn side(server: &TestServer, number: &str, name: &str) -> Side {
    let req = RegisterRequest {
        number: number.into(),
        display_name: name.into(),
        password: PASSWORD.into(),
        region: None,
    };
    api::register(&server.url, &Default::default(), &req).await.expect("register");
    let login = LoginRequest {
        number: number.into(),
        password: PASSWORD.into(),
        region: None,
        device_ip: Some("192.0.2.44".parse().expect("ip")),
        device_name: None,
    };
    let token = api::login(&server.url, &Default::default(), &login).await.expect("login").token;
    let (handle, mut events) = client::spawn(ClientConfig::new(server.url.clone(), token), None);
    let ice = loop {
        match tokio::time::timeout(WAIT, events.recv()).await.expect("online in time").expect("event") {
            Event::Online { ice_servers, .. } => break ice_servers,
            _ => continue,
        }
    };
    Side { handle, events, ice, seen: Vec::new() }
}

impl Side {
    async fn next(&mut self) -> Event {
        let ev =
            tokio::time::timeout(WAIT, self.events.recv()).await.expect("an event in time").expect("event");
        self.seen.push(ev.clone());
        ev
    }
}

/// Runs a session between the two (`hide` says who hides), sends a file from the caller and
/// returns the path each side reported and what each side saw.
async fn session(server: &TestServer, hide: Option<&str>) -> (Vec<Option<Path>>, Side, Side) {
    let mut alice = side(server, ALICE, "Alice").await;
    let mut bob = side(server, BOB, "Bob").await;
    for (who, s) in [("alice", &mut alice), ("bob", &mut bob)] {
        if hide == Some(who) {
            s.handle.change_settings(SettingsChange { hide_address: Some(true), ..Default::default() });
            loop {
                if let Event::Settings { settings } = s.next().await
                    && settings.hide_address
                {
                    break;
                }
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let src = dir.path().join("payload.bin");
    std::fs::write(&src, &payload).expect("write");
    alice.handle.dial(BOB, Offer { files: true, video: false });
    let sid = loop {
        if let Event::Incoming { session_id, .. } = bob.next().await {
            break session_id;
        }
    };
    bob.handle.answer(&sid, true);
    let (a_tx, mut a_rx) = mpsc::unbounded_channel();
    let (b_tx, mut b_rx) = mpsc::unbounded_channel();
    let mut a_ctl =
        SessionController::new(alice.handle.clone(), true, a_tx).with_ice_servers(alice.ice.clone());
    let mut b_ctl = SessionController::new(bob.handle.clone(), true, b_tx).with_ice_servers(bob.ice.clone());
    let receive = |d: &std::path::Path| ReceiveConfig { dir: d.to_path_buf(), auto_accept: true };
    let inbox = dir.path().join("inbox");
    let mut paths = Vec::new();
    let mut received = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let t0 = std::time::Instant::now();
    while !(received && paths.len() == 2) {
        tokio::select! {
            Some(ev) = alice.events.recv() => {
                alice.seen.push(ev.clone());
                a_ctl.observe(&ev);
                if let Event::SessionStarted { session_id, role, .. } = ev {
                    a_ctl.start(session_id, role, receive(&inbox), None, VideoDisplay::default()).send_files(vec![src.clone()]);
                }
            }
            Some(ev) = bob.events.recv() => {
                bob.seen.push(ev.clone());
                b_ctl.observe(&ev);
                if let Event::SessionStarted { session_id, role, .. } = ev {
                    b_ctl.start(session_id, role, receive(&inbox), None, VideoDisplay::default());
                }
            }
            Some(ev) = a_rx.recv() => match ev {
                DataEvent::ChannelOpen { path, .. } => paths.push(path),
                DataEvent::Failed(why) => panic!("alice's connection failed: {why}"),
                _ => {}
            },
            Some(ev) = b_rx.recv() => match ev {
                DataEvent::ChannelOpen { path, .. } => paths.push(path),
                DataEvent::Transfer(TransferEvent::Completed { way: Way::Receiving, path: Some(p), .. }) => {
                    assert_eq!(std::fs::read(&p).expect("received file"), payload, "byte-identical");
                    received = true;
                }
                DataEvent::Transfer(TransferEvent::Failed { reason, .. }) => panic!("transfer failed: {reason}"),
                DataEvent::Failed(why) => panic!("bob's connection failed: {why}"),
                _ => {}
            },
            _ = tokio::time::sleep_until(deadline) => panic!("no relayed transfer in 30 s (paths so far {paths:?})"),
        }
    }
    eprintln!("session (hide {hide:?}): {:?} from accept to the file received", t0.elapsed());
    alice.handle.end(&sid);
    (paths, alice, bob)
}

fn relay_ip(server: &TestServer) -> IpAddr {
    server.running.as_ref().and_then(|r| r.relay.as_ref()).expect("a relay").local_addr().ip()
}

/// What a side saw, checked for addresses: no address of the other side in `session_started`,
/// and every signal from it names only relay candidates with hidden related addresses.
fn saw_no_address(s: &Side, relay: IpAddr) -> usize {
    let mut signals = 0;
    for ev in &s.seen {
        match ev {
            Event::SessionStarted { peer, relayed, .. } => {
                assert!(*relayed, "the session is relayed");
                assert_eq!((peer.device_ip, peer.observed_ip), (None, None), "no address told: {peer:?}");
            }
            Event::Signal { data, .. } => {
                if let Err(why) = sdp::check(data, |ip| ip == relay) {
                    panic!("a signal showed an address ({why}): {data:?}");
                }
                if let SignalData::Candidate { candidate, .. } = data {
                    assert!(
                        candidate.contains("typ relay") && !candidate.contains("raddr 127."),
                        "{candidate}"
                    );
                }
                signals += 1;
            }
            _ => {}
        }
    }
    signals
}

#[tokio::test]
async fn hide_my_address_on_the_callee_side_relays_the_session_and_shows_no_address() {
    let server = relay_server(false).await;
    let (paths, alice, bob) = session(&server, Some("bob")).await;
    assert_eq!(paths, vec![Some(Path::Relayed), Some(Path::Relayed)]);
    let relay = relay_ip(&server);
    assert!(saw_no_address(&alice, relay) > 0 && saw_no_address(&bob, relay) > 0, "signals were exchanged");
    let relayed = server.hub().metrics.relay_bytes.get_or_create(&vec![("way", "to_peer")]).get();
    assert!(relayed >= 2_000_000, "the file went through the relay ({relayed} bytes)");
}

#[tokio::test]
async fn hide_my_address_on_the_caller_side_and_the_server_policy_relay_too() {
    let server = relay_server(false).await;
    let (paths, alice, bob) = session(&server, Some("alice")).await;
    assert_eq!(paths, vec![Some(Path::Relayed), Some(Path::Relayed)]);
    let relay = relay_ip(&server);
    saw_no_address(&alice, relay);
    saw_no_address(&bob, relay);

    let server = relay_server(true).await;
    let (paths, ..) = session(&server, None).await;
    assert_eq!(paths, vec![Some(Path::Relayed), Some(Path::Relayed)], "--relay always");
}

#[tokio::test]
async fn without_hiding_a_loopback_pair_stays_direct_and_addresses_are_told() {
    let server = relay_server(false).await;
    let (paths, alice, _bob) = session(&server, None).await;
    assert_eq!(paths, vec![Some(Path::Direct), Some(Path::Direct)]);
    let told = alice.seen.iter().any(
        |e| matches!(e, Event::SessionStarted { peer, relayed: false, .. } if peer.observed_ip.is_some()),
    );
    assert!(told, "a direct session tells the peer's address");
}

/// A modified client in a relayed session sends its host candidate and an SDP with one:
/// refused with `relay_required`, never forwarded.
#[tokio::test]
async fn a_hostile_client_cannot_send_its_address_in_a_relayed_session() {
    let server = relay_server(true).await;
    let mut alice = side(&server, ALICE, "Alice").await;
    let mut bob = side(&server, BOB, "Bob").await;
    alice.handle.dial(BOB, Offer::default());
    let sid: SessionId = loop {
        if let Event::Incoming { session_id, .. } = bob.next().await {
            break session_id;
        }
    };
    bob.handle.answer(&sid, true);
    loop {
        if let Event::SessionStarted { relayed: true, .. } = alice.next().await {
            break;
        }
    }
    let hostile = [
        SignalData::Candidate {
            candidate: "candidate:1 1 udp 2122260223 192.168.178.20 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        },
        SignalData::Offer {
            sdp: "v=0\r\nc=IN IP4 192.168.178.20\r\na=candidate:1 1 udp 1 192.168.178.20 5 typ host\r\n"
                .into(),
        },
    ];
    for data in hostile {
        alice.handle.signal(&sid, data);
        loop {
            if let Event::Error { code, .. } = alice.next().await {
                assert_eq!(code, ErrorCode::RelayRequired);
                break;
            }
        }
    }
    // Nothing reached Bob.
    let late = tokio::time::timeout(Duration::from_millis(300), bob.events.recv()).await;
    assert!(!matches!(late, Ok(Some(Event::Signal { .. }))), "{late:?}");
    let refused =
        server.hub().metrics.relay_refusals.get_or_create(&vec![("reason", "signal_not_relay")]).get();
    assert_eq!(refused, 2);
}

#[tokio::test]
async fn welcome_carries_a_relay_credential_of_the_device_at_the_address_it_used() {
    let server = relay_server(false).await;
    let a = side(&server, ALICE, "Alice").await;
    let relay = server.running.as_ref().and_then(|r| r.relay.as_ref()).expect("relay").local_addr();
    let turn = a.ice.iter().find(|s| s.urls.iter().any(|u| u.starts_with("turn:"))).expect("a TURN server");
    assert!(turn.urls.contains(&format!("turn:127.0.0.1:{}?transport=udp", relay.port())), "{turn:?}");
    assert!(turn.urls.contains(&format!("stun:127.0.0.1:{}", relay.port())), "{turn:?}");
    let user = turn.username.as_deref().expect("username");
    let (expiry, device) = user.split_once(':').expect("EXPIRY:DEVICE");
    assert!(expiry.parse::<u64>().is_ok() && device.parse::<i64>().is_ok(), "{user}");
    assert!(turn.credential.as_deref().is_some_and(|c| c.len() == 28), "base64 of 20 bytes");
}

#[tokio::test]
async fn relay_credentials_are_renewed_before_they_expire() {
    let server = TestServer::start_with(|c| {
        c.relay = RelayMode::Own(RelayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ports: 43000..=43099,
            credential_ttl: Duration::from_secs(2),
            ..Default::default()
        });
    })
    .await;
    let mut a = side(&server, ALICE, "Alice").await;
    let first = a.ice.iter().find_map(|s| s.username.clone()).expect("a credential");
    let renewed = loop {
        if let Event::IceServers { ice_servers } = a.next().await {
            break ice_servers.iter().find_map(|s| s.username.clone()).expect("a credential");
        }
    };
    let expiry = |u: &str| u.split_once(':').and_then(|(e, _)| e.parse::<u64>().ok()).expect("expiry");
    assert!(expiry(&renewed) > expiry(&first), "{first} then {renewed}");
}

/// A coturn from Debian's package, started with `use-auth-secret` on loopback; killed on drop.
struct Coturn {
    child: std::process::Child,
    port: u16,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn coturn(secret: &str) -> Option<Coturn> {
    if std::process::Command::new("turnserver").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "CI installs coturn (packaging/dev.sh): turnserver is missing");
        eprintln!("NOTICE: coturn interop test skipped: no turnserver (apt-get install coturn)");
        return None;
    }
    let port =
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free port").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new("turnserver")
        .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--allow-loopback-peers"])
        .arg(format!("--listening-port={port}"))
        .args(["--min-port=44100", "--max-port=44199", "--use-auth-secret", "--realm=sidecall"])
        .arg(format!("--static-auth-secret={secret}"))
        .args(["--no-tls", "--no-dtls", "--no-cli", "--no-tcp", "--simple-log", "--log-file=stdout"])
        .arg(format!("--pidfile={}", dir.path().join("turnserver.pid").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start turnserver");
    // Ready when it answers a STUN binding request.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
    probe.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend((0..12).map(|i| i as u8));
    for _ in 0..50 {
        let _ = probe.send_to(&req, ("127.0.0.1", port));
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = probe.recv_from(&mut buf)
            && n >= 20
            && buf[..2] == [0x01, 0x01]
        {
            return Some(Coturn { child, port });
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("coturn did not answer on 127.0.0.1:{port}");
}

/// The same relayed session through Debian's coturn, which checks the credentials our
/// server mints from the shared secret.
#[tokio::test]
async fn a_relayed_session_through_coturn_with_the_shared_secret() {
    let secret = "coturn and sidecall share this";
    let Some(turn) = coturn(secret) else { return };
    let url = format!("turn:127.0.0.1:{}?transport=udp", turn.port);
    let server = TestServer::start_with(|c| {
        c.relay = RelayMode::External { urls: vec![url.clone()], secret: secret.into() };
        c.hub.relay_always = true;
    })
    .await;
    let (paths, alice, bob) = session(&server, None).await;
    assert_eq!(paths, vec![Some(Path::Relayed), Some(Path::Relayed)], "through coturn");
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    saw_no_address(&alice, ip);
    saw_no_address(&bob, ip);
    assert!(alice.ice.iter().any(|s| s.urls.contains(&url)), "welcome names the coturn: {:?}", alice.ice);
    drop(turn);
}

/// Declined and unanswered requests of a user who hides: the caller learns nothing of the
/// callee (no address ever reaches either side before an accept, and none in a relayed one).
#[tokio::test]
async fn declined_and_timed_out_requests_show_no_address_either() {
    let server = TestServer::start_with(|c| {
        c.relay = RelayMode::Own(RelayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ports: 43100..=43199,
            ..Default::default()
        });
        c.hub.answer_timeout = Duration::from_millis(500);
    })
    .await;
    let mut alice = side(&server, ALICE, "Alice").await;
    let mut bob = side(&server, BOB, "Bob").await;
    bob.handle.change_settings(SettingsChange { hide_address: Some(true), ..Default::default() });
    for decline in [true, false] {
        let req = alice.handle.dial(BOB, Offer::default());
        let sid = loop {
            if let Event::Incoming { session_id, .. } = bob.next().await {
                break session_id;
            }
        };
        if decline {
            bob.handle.answer(&sid, false);
        }
        loop {
            if let Event::DialResult { req_id, .. } = alice.next().await
                && req_id == req
            {
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(300), bob.next()).await;
    for (who, s) in [("alice", &alice), ("bob", &bob)] {
        let text = format!("{:?}", s.seen);
        // Both sides log in reporting 192.0.2.44 and connect from 127.0.0.1.
        assert!(!text.contains("192.0.2.44") && !text.contains("127.0.0.1"), "{who} saw an address: {text}");
        assert!(!s.seen.iter().any(|e| matches!(e, Event::SessionStarted { .. } | Event::Signal { .. })));
    }
}
