//! A server on the open internet: what hostile clients send is bounded, refused clearly, and
//! never costs another user their connection, their login or their ring.

use crate::cli::Proc;
use crate::fixture::*;
use futures_util::SinkExt;
use sidecall::client::Event;
use sidecall::protocol::{
    ClientMsg, ErrorCode, HttpError, Offer, Outcome, ServerMsg, SessionId, SignalData, close_code, limits,
};
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// An HTTP client whose connections come from `from` (any 127.x address is this machine).
fn http_from(from: &str) -> reqwest::Client {
    sidecall::tls::install_default_provider();
    let ip: IpAddr = from.parse().expect("ip");
    reqwest::Client::builder().local_address(ip).build().expect("client")
}

async fn login_from(server: &TestServer, from: &str, number: &str, password: &str) -> reqwest::StatusCode {
    let body = serde_json::json!({"number": number, "password": password});
    let url = format!("{}/api/v1/login", server.url);
    http_from(from).post(url).json(&body).send().await.expect("login request").status()
}

#[tokio::test]
async fn an_oversized_forwarded_field_is_refused_and_the_callee_stays_online() {
    let server = TestServer::start().await;
    let alice_token = server.account(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    let mut alice = RawWs::login(&server, &alice_token).await;

    // A call reference near the frame limit would make an initiation larger than Bob's
    // client accepts: refused at the door, naming the request.
    let huge = ClientMsg::AccessRequest {
        req_id: 7,
        target: BOB.into(),
        offer: Offer::default(),
        region: None,
        call_ref: Some("x".repeat(60_000)),
        place_call: false,
    };
    alice.send(&huge).await;
    match alice.next().await {
        Frame::Msg(ServerMsg::Error { code, req_id, message, .. }) => {
            assert_eq!(code, ErrorCode::InvalidField);
            assert_eq!(req_id, Some(7));
            assert!(
                message.contains("call_ref") && message.len() <= limits::ERROR_MESSAGE_BYTES,
                "{message}"
            );
        }
        other => panic!("expected invalid_field, got {other:?}"),
    }
    let rung = bob.drain(Duration::from_millis(300)).await;
    assert!(!rung.iter().any(|e| matches!(e, Event::Incoming { .. })), "Bob was not rung: {rung:?}");

    // Bob is still online and is rung by a proper request; an oversized SDP in the session
    // is refused and not forwarded either.
    alice.send(&access(8, BOB)).await;
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    loop {
        if let Frame::Msg(ServerMsg::SessionStarted { .. }) = alice.next().await {
            break;
        }
    }
    bob.drain(Duration::from_millis(200)).await;
    let sdp = "a=x\r\n".repeat(limits::SDP_BYTES / 5 + 1);
    alice.send(&ClientMsg::Signal { session_id: sid.clone(), data: SignalData::Offer { sdp } }).await;
    assert_eq!(alice.expect_error().await, ErrorCode::InvalidField);
    let after = bob.drain(Duration::from_millis(300)).await;
    assert!(!after.iter().any(|e| matches!(e, Event::Signal { .. })), "nothing forwarded: {after:?}");
    assert!(!after.iter().any(|e| matches!(e, Event::Offline { .. })), "Bob stays connected: {after:?}");
    let fine = SignalData::Video { sending: true };
    alice.send(&ClientMsg::Signal { session_id: sid, data: fine.clone() }).await;
    bob.expect("the signal", |e| matches!(e, Event::Signal { data, .. } if *data == fine).then_some(()))
        .await;
}

#[tokio::test]
async fn names_that_hide_or_reorder_text_and_posts_that_are_not_json_are_refused() {
    let server = TestServer::start().await;
    let http = http_from("127.0.0.1");
    let url = format!("{}/api/v1/accounts", server.url);
    for name in ["Bob\u{202E}nosliA", "Al\u{200B}ice", "\u{2067}Eve"] {
        let body = serde_json::json!({"number": CAROL, "display_name": name, "password": PASSWORD});
        let resp = http.post(&url).json(&body).send().await.expect("post");
        assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST, "{name:?}");
        let err: HttpError = resp.json().await.expect("error body");
        assert_eq!(err.error.code, ErrorCode::InvalidField);
        assert_eq!(err.error.field, Some(sidecall::protocol::FieldName::DisplayName));
    }
    // A web page can post a form or text/plain to a LAN server without asking: not here.
    let body =
        serde_json::json!({"number": CAROL, "display_name": "Carol", "password": PASSWORD}).to_string();
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = http.post(&url).header("content-type", ct).body(body.clone()).send().await.expect("post");
        assert_eq!(resp.status(), reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
    }
    let resp =
        http.post(&url).header("content-type", "application/json; charset=utf-8").body(body).send().await;
    assert_eq!(resp.expect("post").status(), reqwest::StatusCode::CREATED);
    // An emoji name with its joiners is a name, not a trick.
    let body = serde_json::json!({"number": BOB, "display_name": "Bob 👨\u{200D}🔧", "password": PASSWORD});
    assert_eq!(
        http.post(&url).json(&body).send().await.expect("post").status(),
        reqwest::StatusCode::CREATED
    );
}

#[tokio::test]
async fn only_failures_count_and_an_attacker_cannot_lock_the_owner_out() {
    let server = TestServer::start().await;
    server.account(ALICE, "Alice").await; // the owner, logged in from 127.0.0.1 before
    // Fifty colleagues behind one address log in, twice each: nobody is refused.
    let office = http_from("127.0.0.1");
    for i in 0..50 {
        let number = format!("+4930555{i:04}");
        let body =
            serde_json::json!({"number": number, "display_name": format!("User {i}"), "password": PASSWORD});
        let r = office
            .post(format!("{}/api/v1/accounts", server.url))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        for _ in 0..2 {
            assert_eq!(login_from(&server, "127.0.0.1", &number, PASSWORD).await, reqwest::StatusCode::OK);
        }
    }
    // An attacker guesses Alice's password from twenty addresses.
    let mut refused = 0;
    for a in 2..22 {
        for _ in 0..5 {
            let status = login_from(&server, &format!("127.0.0.{a}"), ALICE, "wrong password").await;
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                refused += 1;
            } else {
                assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
            }
        }
    }
    assert!(refused > 0, "the number's ceiling was reached");
    // A new address is refused even with the right password now ...
    assert_eq!(
        login_from(&server, "127.0.0.99", ALICE, PASSWORD).await,
        reqwest::StatusCode::TOO_MANY_REQUESTS
    );
    // ... but Alice, from where she logged in before, gets in.
    assert_eq!(login_from(&server, "127.0.0.1", ALICE, PASSWORD).await, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn a_ring_flood_on_one_callee_rings_a_few_and_the_rest_are_unavailable() {
    let server = TestServer::start().await;
    let mut bob = server.user(BOB, "Bob").await;
    let mut callers = Vec::new();
    for i in 0..8 {
        callers.push(server.user(&format!("+4930777{i:04}"), &format!("Caller {i}")).await);
    }
    let reqs: Vec<u64> = callers.iter().map(|c| c.handle.dial(BOB, Offer::default())).collect();
    let mut unavailable = 0;
    for (c, req) in callers.iter_mut().zip(&reqs) {
        let outcome = tokio::time::timeout(Duration::from_millis(1500), c.dial_result(*req)).await;
        if outcome == Ok(Outcome::Unavailable) {
            unavailable += 1;
        }
    }
    let rang: Vec<SessionId> = bob
        .drain(Duration::from_millis(300))
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::Incoming { session_id, .. } => Some(session_id),
            _ => None,
        })
        .collect();
    assert_eq!(rang.len(), sidecall::server::hub::RINGING_CALLERS, "only a few ring at once");
    assert_eq!(unavailable, 8 - rang.len(), "the others are told unavailable at once");
    // Bob is still there and can answer what rings.
    bob.handle.answer(&rang[0], true);
    bob.started().await;
}

#[tokio::test]
async fn pings_and_unreadable_messages_count_toward_the_flood_limit() {
    let server = TestServer::start().await;
    let token = server.account(ALICE, "Alice").await;
    for flood in [Message::Ping(vec![1u8; 8].into()), Message::text("{not json")] {
        let mut raw = RawWs::login(&server, &token).await;
        for _ in 0..2000 {
            if raw.ws.send(flood.clone()).await.is_err() {
                break;
            }
        }
        let code = loop {
            match raw.try_next(WAIT).await {
                Some(Frame::Closed(code, _)) => break code,
                Some(_) => continue,
                None => panic!("the flood was not closed"),
            }
        };
        assert_eq!(code, Some(close_code::POLICY));
    }
}

/// Connects and sends `bytes`; returns how long until the server closed the connection.
async fn closed_after(addr: std::net::SocketAddr, bytes: &[u8]) -> Duration {
    let t0 = std::time::Instant::now();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return t0.elapsed(),
            Ok(Ok(_)) => continue, // an answer (a 408, a response): read on until closed
            Err(_) => panic!("the connection was held for 20 s"),
        }
    }
}

#[tokio::test]
async fn slow_idle_and_crowding_connections_are_closed_on_time() {
    let server = TestServer::start_with(|cfg| {
        cfg.limits.header_timeout = Duration::from_secs(1);
        cfg.limits.body_timeout = Duration::from_secs(1);
        cfg.limits.idle_timeout = Duration::from_secs(3);
        cfg.limits.connections_per_address = 6;
    })
    .await;
    let addr = server.addr;
    let (slow_header, slow_body, idle, keep_alive) = tokio::join!(
        closed_after(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),
        closed_after(
            addr,
            b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"num"
        ),
        closed_after(addr, b""),
        closed_after(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    for (what, took, limit) in [
        ("slow headers", slow_header, 1),
        ("slow body", slow_body, 1),
        ("silent", idle, 1),                // no headers in time either
        ("idle keep-alive", keep_alive, 1), // waiting for the next request's headers
    ] {
        assert!(took >= Duration::from_millis(limit * 900), "{what}: closed too early ({took:?})");
        assert!(took < Duration::from_secs(limit + 5), "{what}: held for {took:?}");
    }

    // Six idle connections from one address: the seventh is closed at once, while another
    // address is served.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut seventh = TcpStream::connect(addr).await.expect("connect");
    let _ = seventh.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), seventh.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0) | Err(_))), "the seventh connection is closed unanswered: {n:?}");
    let other = http_from("127.0.0.2").get(format!("{}/healthz", server.url)).send().await.expect("health");
    assert!(other.status().is_success());
    drop(held);
}

/// The server process with at most `nofile` open files; returns it and its URL.
fn server_with_file_limit(dir: &std::path::Path, nofile: u32) -> (Proc, String) {
    let server = Proc::spawn(
        Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg(env!("CARGO_BIN_EXE_sidecall-server"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-relay",
                "--verify",
                "none",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(dir),
    );
    let line = server.wait_line("listening on");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("url").to_string();
    (server, url)
}

#[tokio::test]
async fn health_and_logins_keep_working_at_the_file_limit() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, url) = server_with_file_limit(dir.path(), 300);
    let http = http_from("127.0.0.1");
    let body = serde_json::json!({"number": ALICE, "display_name": "Alice", "password": PASSWORD});
    let r = http.post(format!("{url}/api/v1/accounts")).json(&body).send().await.expect("register");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);

    // Far more WebSockets than the process has files for.
    let ws_url = url.replacen("http://", "ws://", 1) + sidecall::protocol::WS_PATH;
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        match tokio_tungstenite::connect_async(ws_url.as_str()).await {
            Ok((ws, _)) => open.push(ws),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "some WebSockets were refused ({} open)", open.len());
    assert!(open.len() >= 100, "most places went to WebSockets: {}", open.len());
    // Health and logins still answer.
    let health = http.get(format!("{url}/healthz")).send().await.expect("health");
    assert!(health.status().is_success(), "{}", health.status());
    let body = serde_json::json!({"number": ALICE, "password": PASSWORD});
    let login = http.post(format!("{url}/api/v1/login")).json(&body).send().await.expect("login");
    assert_eq!(login.status(), reqwest::StatusCode::OK);
    drop(open);
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_burst_of_registrations_is_bounded_in_memory_and_memory_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, url) = server_with_file_limit(dir.path(), 4096);
    let pid = server.pid();
    let register = |from: String, i: u32| {
        let url = url.clone();
        async move {
            let body = serde_json::json!({"number": format!("+4930888{i:04}"), "display_name": "Burst", "password": PASSWORD});
            http_from(&from)
                .post(format!("{url}/api/v1/accounts"))
                .json(&body)
                .send()
                .await
                .map(|r| r.status())
        }
    };
    assert_eq!(register("127.0.0.1".into(), 9999).await.ok(), Some(reqwest::StatusCode::CREATED));
    let baseline = status_kib(pid, "VmRSS:");
    // A hundred registrations at once, from a hundred addresses.
    let burst = (0..100u32).map(|i| register(format!("127.0.1.{}", i + 1), i));
    let statuses = futures_util::future::join_all(burst).await;
    let created = statuses.iter().filter(|s| matches!(s, Ok(reqwest::StatusCode::CREATED))).count();
    let refused = statuses.iter().filter(|s| matches!(s, Ok(reqwest::StatusCode::TOO_MANY_REQUESTS))).count();
    assert_eq!(created + refused, 100, "each was created or refused with 429: {statuses:?}");
    assert!(created >= 5, "some got through: {created}");
    let peak = status_kib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status_kib(pid, "VmRSS:");
    eprintln!(
        "registration burst: {created} created, {refused} refused; RSS {} MiB before, peak {} MiB, {} MiB after",
        baseline / 1024,
        peak / 1024,
        after / 1024
    );
    // One argon2 hash takes 19 MiB: a few run at once, never a hundred.
    let cores = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(2);
    assert!(peak < baseline + (cores + 2) * 20 * 1024, "peak {peak} KiB over a baseline of {baseline} KiB");
    assert!(after < baseline + 16 * 1024, "memory returns: {after} KiB after, {baseline} KiB before");
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let server =
        TestServer::start_with(|cfg| cfg.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")]).await;
    server.account(ALICE, "Alice").await;
    let body = serde_json::json!({"number": ALICE, "password": PASSWORD});
    let url = format!("{}/api/v1/login", server.url);
    for (from, forwarded, seen) in [
        ("127.0.0.1", "198.51.100.9, 203.0.113.5", "203.0.113.5"), // the proxy: its last hop is the client
        ("127.0.0.2", "203.0.113.5", "127.0.0.2"),                 // anyone else: the header is ignored
    ] {
        let resp = http_from(from)
            .post(&url)
            .header("x-forwarded-for", forwarded)
            .json(&body)
            .send()
            .await
            .expect("login");
        let login: sidecall::protocol::LoginResponse = resp.json().await.expect("body");
        assert_eq!(login.observed_ip.to_string(), seen, "from {from}");
    }
}
