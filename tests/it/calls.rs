//! Call watchers against protocol simulators on loopback.

use sidecall::calls::{self, CallEvent, Emitter, Source, WatcherEvent, WatcherStatus};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

async fn next(
    rx: &mut mpsc::UnboundedReceiver<WatcherEvent>,
    what: &str,
    mut pick: impl FnMut(&WatcherEvent) -> bool,
) -> WatcherEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if pick(&e) => return e,
            Ok(Some(e)) => seen.push(e),
            _ => panic!("no {what}; saw {seen:#?}"),
        }
    }
}

fn call(ev: &WatcherEvent) -> Option<&CallEvent> {
    match ev {
        WatcherEvent::Call(_, c) => Some(c),
        _ => None,
    }
}

#[tokio::test]
async fn fritz_lines_become_calls_and_garbage_is_skipped() {
    let box_ = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = box_.local_addr().expect("addr").to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(calls::fritz::run(addr, Emitter::new(Source::Fritz, tx)));
    let (mut s, _) = box_.accept().await.expect("watcher connects");
    next(&mut rx, "connected", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Connected))).await;
    s.write_all(b"25.11.26 18:02:11;CALL;3;11;4930123456;0151 23456789;SIP0;\r\n").await.expect("write");
    let ev = next(&mut rx, "outgoing", |e| call(e).is_some()).await;
    assert_eq!(
        call(&ev),
        Some(&CallEvent::Outgoing { call_ref: "fritz:3".into(), number: "0151 23456789".into() })
    );
    // Garbage, truncated, overlong and Latin-1 lines: skipped; the watcher keeps reading.
    let mut junk = b"hello world\n25.11.26 18:02:11;CALL;4;11\n".to_vec();
    junk.extend(vec![b'x'; 10_000]);
    junk.extend(b"\n25.11.26 18:02:12;RING;5;M\xfcller;4930123456;SIP0;\n\xff\xfe\x00\n");
    junk.extend(b"25.11.26 18:03:40;DISCONNECT;3;85;\n");
    s.write_all(&junk).await.expect("write");
    let ring = next(&mut rx, "ring", |e| matches!(call(e), Some(CallEvent::Incoming { .. }))).await;
    assert!(
        matches!(call(&ring), Some(CallEvent::Incoming { caller: Some(c), .. }) if c.starts_with('M')),
        "{ring:?}"
    );
    let end = next(&mut rx, "disconnect", |e| matches!(call(e), Some(CallEvent::Ended { .. }))).await;
    assert_eq!(call(&end), Some(&CallEvent::Ended { call_ref: "fritz:3".into() }));

    // The box drops the socket: the watcher says so and comes back.
    drop(s);
    next(&mut rx, "retrying", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Retrying { .. }))).await;
    let (mut s, _) = box_.accept().await.expect("reconnects");
    next(&mut rx, "connected again", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Connected)))
        .await;
    s.write_all(b"25.11.26 18:05:00;CALL;6;11;4930123456;123456;SIP0;\n").await.expect("write");
    next(
        &mut rx,
        "call after reconnect",
        |e| matches!(call(e), Some(CallEvent::Outgoing { call_ref, .. }) if call_ref == "fritz:6"),
    )
    .await;
    watcher.abort();
}

#[tokio::test]
async fn fritz_port_refused_for_a_while_then_up() {
    // A port nobody listens on yet, as after the box rebooted.
    let port = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher =
        tokio::spawn(calls::fritz::run(format!("127.0.0.1:{port}"), Emitter::new(Source::Fritz, tx)));
    let retry =
        next(&mut rx, "refused", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Retrying { .. })))
            .await;
    assert!(format!("{retry:?}").contains("#96*5*"), "the status says what to do: {retry:?}");
    let box_ = TcpListener::bind(("127.0.0.1", port)).await.expect("the box is back");
    let accepted = tokio::time::timeout(Duration::from_secs(10), box_.accept()).await;
    assert!(accepted.is_ok(), "the watcher retried");
    next(&mut rx, "connected", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Connected))).await;
    watcher.abort();
}

/// A minimal Asterisk manager: banner, login, then the given events.
async fn ami_server(secret: &'static str, events: &'static [&'static str]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let Ok((s, _)) = l.accept().await else { return };
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let _ = w.write_all(b"Asterisk Call Manager/7.0.3\r\n").await;
        let mut login = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if line.trim().is_empty() {
                break;
            }
            login.push_str(&line);
        }
        if login.contains(&format!("Secret: {secret}")) {
            let _ = w.write_all(b"Response: Success\r\nActionID: sidecall-login\r\nMessage: Authentication accepted\r\n\r\n").await;
            for e in events {
                let _ = w.write_all(e.replace('\n', "\r\n").as_bytes()).await;
                let _ = w.write_all(b"\r\n\r\n").await;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        } else {
            let _ = w
                .write_all(
                    b"Response: Error\r\nActionID: sidecall-login\r\nMessage: Authentication failed\r\n\r\n",
                )
                .await;
        }
    });
    addr
}

fn ami_cfg(addr: String, secret: &str) -> calls::ami::AmiConfig {
    calls::ami::AmiConfig {
        addr,
        username: "sidecall".into(),
        secret: secret.into(),
        extension: "201".into(),
    }
}

#[tokio::test]
async fn ami_follows_the_extensions_calls() {
    let addr = ami_server(
        "s3cret",
        &[
            "Event: Newchannel\nChannel: PJSIP/201-00000001\nLinkedid: 1700.1",
            "Event: DialBegin\nChannel: PJSIP/202-00000009\nLinkedid: 1600.1\nDestCallerIDNum: 999",
            "Event: DialBegin\nChannel: PJSIP/201-00000001\nLinkedid: 1700.1\nDestCallerIDNum: 0151 23456789",
            "Event: DialEnd\nChannel: PJSIP/201-00000001\nLinkedid: 1700.1\nDialStatus: ANSWER",
            "Event: Hangup\nChannel: PJSIP/201-00000001\nLinkedid: 1700.1\nCause: 16",
        ],
    )
    .await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let w = tokio::spawn(calls::ami::run(ami_cfg(addr, "s3cret"), Emitter::new(Source::Ami, tx)));
    next(&mut rx, "logged in", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Connected))).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Some(c) = call(&next(&mut rx, "call", |e| call(e).is_some()).await) {
            got.push(c.clone());
        }
    }
    assert_eq!(
        got,
        vec![
            CallEvent::Outgoing { call_ref: "ami:1700.1".into(), number: "0151 23456789".into() },
            CallEvent::Connected { call_ref: "ami:1700.1".into() },
            CallEvent::Ended { call_ref: "ami:1700.1".into() },
        ],
        "only extension 201's call"
    );
    w.abort();
}

#[tokio::test]
async fn ami_login_failure_is_a_clear_status_not_a_loop() {
    let addr = ami_server("right", &[]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let w = tokio::spawn(calls::ami::run(ami_cfg(addr, "wrong"), Emitter::new(Source::Ami, tx)));
    let failed =
        next(&mut rx, "failed", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Failed { .. }))).await;
    let text = format!("{failed:?}");
    assert!(text.contains("AMI login failed: Authentication failed"), "{text}");
    assert!(tokio::time::timeout(Duration::from_secs(5), w).await.is_ok(), "the watcher stopped");
}

#[tokio::test]
async fn desk_phone_action_urls_only_from_the_phone() {
    let port = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let w = tokio::spawn(calls::action_url::run(
        listen,
        "127.0.0.1".parse().expect("ip"),
        Emitter::new(Source::Phone, tx),
    ));
    next(&mut rx, "listening", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Listening { .. })))
        .await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/phone/outgoing?remote=0151%2023456789")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let ev = next(&mut rx, "outgoing", |e| call(e).is_some()).await;
    assert_eq!(
        call(&ev),
        Some(&CallEvent::Outgoing { call_ref: "phone:1".into(), number: "0151 23456789".into() })
    );
    http.get(format!("{base}/phone/disconnected?remote=0151")).send().await.expect("get");
    let ev = next(&mut rx, "ended", |e| call(e).is_some()).await;
    assert_eq!(call(&ev), Some(&CallEvent::Ended { call_ref: "phone:1".into() }));
    assert_eq!(http.get(format!("{base}/phone/outgoing")).send().await.expect("get").status(), 400);
    assert_eq!(http.get(format!("{base}/phone/launch")).send().await.expect("get").status(), 404);
    w.abort();

    // A watcher that expects another phone refuses this computer.
    let port2 = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listen2: std::net::SocketAddr = format!("127.0.0.1:{port2}").parse().expect("addr");
    let w = tokio::spawn(calls::action_url::run(
        listen2,
        "127.0.0.2".parse().expect("ip"),
        Emitter::new(Source::Phone, tx),
    ));
    next(&mut rx, "listening", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Listening { .. })))
        .await;
    let r =
        http.get(format!("http://127.0.0.1:{port2}/phone/outgoing?remote=123")).send().await.expect("get");
    assert_eq!(r.status(), 403);
    w.abort();
}

#[tokio::test]
async fn a_second_launch_hands_its_tel_link_to_the_running_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sidecall-test.sock");
    assert!(calls::tel::forward(&path, "+4930123456").await.is_err(), "nobody runs yet");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let w = tokio::spawn(calls::tel::serve(path.clone(), Emitter::new(Source::Tel, tx)));
    next(&mut rx, "listening", |e| matches!(e, WatcherEvent::Status(_, WatcherStatus::Listening { .. })))
        .await;
    let number = calls::tel::parse_tel("tel:+49-151-23456789").expect("tel");
    calls::tel::forward(&path, &number).await.expect("handed over");
    let ev = next(&mut rx, "outgoing", |e| call(e).is_some()).await;
    assert_eq!(
        call(&ev),
        Some(&CallEvent::Outgoing { call_ref: "tel:1".into(), number: "+49-151-23456789".into() })
    );
    w.abort();
}

/// The parsers take any bytes without panicking (a light fuzz run; `fuzz/` has the
/// libFuzzer targets).
#[test]
fn parsers_survive_random_input() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds = [
        "25.11.26 18:02:11;CALL;0;11;4930123456;015123456789;SIP0;",
        "tel:+49-30-123456",
        "Event: DialBegin",
        "#31#01013004930123456#",
        "**610",
        "0305550042",
    ];
    for i in 0..20_000 {
        let mut s: Vec<u8> = seeds[i % seeds.len()].as_bytes().to_vec();
        for _ in 0..(rnd() % 6) {
            let pos = (rnd() as usize) % (s.len() + 1);
            match rnd() % 3 {
                0 if pos < s.len() => s[pos] = rnd() as u8,
                1 => s.insert(pos, rnd() as u8),
                _ if pos < s.len() => {
                    s.remove(pos);
                }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&s);
        let _ = calls::fritz::parse_line(&text);
        let _ = calls::tel::parse_tel(&text);
        let msg = calls::ami::parse_message(&text.lines().map(str::to_string).collect::<Vec<_>>());
        let _ = calls::ami::Tracker::default().event(&msg, "201");
        let _ = sidecall::number::normalize_dialed(&text, "DE", Some("30"));
        for region in ["DE", "AT", "CH", "US"] {
            let _ = sidecall::number::read_dialed(&text, region, Some("30"));
        }
        let _ = sidecall::client::login::code_from_caller_id(&text, "+4930555", 4);
        let mut recent = calls::linked::RecentCalls::default();
        recent.observe(
            &calls::CallEvent::Incoming { call_ref: "x".into(), caller: Some(text.to_string()) },
            std::time::Instant::now(),
            "DE",
            Some("30"),
        );
    }
}

/// The whole point: the phone dials, the app requests the session by itself with the right
/// E.164 number, and when the phone hangs up the session ends.
#[test]
fn a_phone_call_on_the_fritzbox_starts_and_ends_the_session() {
    use crate::fixture::{BOB, TestServer};
    use sidecall::app::{self, AppCommand};
    use sidecall::client::StopReason;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let server = rt.block_on(TestServer::start());
    let box_ = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let box_addr = box_.local_addr().expect("addr");
    let mut bob = rt.block_on(server.user(BOB, "Bob"));

    let app = crate::fixture::TestApp::start(&format!(
        "region = \"DE\"\narea_code = \"030\"\non_call = \"automatic\"\nend_with_call = true\n[fritz]\nenabled = true\nhost = \"{box_addr}\"\n"
    ));
    let wait_state = |what: &str, pred: &dyn Fn(&app::AppState) -> bool| app.wait_state(what, pred);
    app.register(&server.url, "030 123456");
    wait_state("online", &|s| s.connection == app::Connection::Online);

    rt.block_on(async {
        let (mut s, _) = box_.accept().await.expect("the watcher connects to the box");
        // Alice picks up her phone and dials Bob's mobile, as a call monitor reports it.
        s.write_all(b"25.11.26 18:02:11;CALL;7;11;4930123456;015123456789;SIP0;\r\n").await.expect("write");
        let (sid, caller, _) = bob.incoming().await;
        assert_eq!(caller.number, crate::fixture::ALICE);
        bob.handle.answer(&sid, true);
        bob.started().await;
        // The phone call ends: so does the session.
        s.write_all(b"25.11.26 18:04:00;DISCONNECT;7;109;\r\n").await.expect("write");
        let (ended, reason) = bob.ended().await;
        assert_eq!((ended, reason), (sid, StopReason::PeerEnded));
    });
    let st = wait_state("watcher shown connected", &|s| {
        s.watchers.iter().any(|(src, st)| *src == Source::Fritz && *st == WatcherStatus::Connected)
    });
    assert!(st.active.is_none());
    app.core.send(AppCommand::Shutdown);
    drop(rt);
}
