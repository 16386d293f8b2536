//! Numbers proven before an account is bound to them (`--verify`): codes by a hook, by the
//! PBX's caller ID (the app's FRITZ!Box watcher fills the code in), by an administrator;
//! wrong, expired, reused codes; the same answer whether a number exists; a claim logging the
//! old devices out. And on the callee's side: is a request the call ringing on the phone?

use crate::fixture::TestApp;
use crate::fixture::*;
use crate::pbx::{Script, Sim, server_with_pbx_and};
use sidecall::client::Event;
use sidecall::client::api::{self, ApiError};
use sidecall::protocol::{
    ErrorCode, LoginRequest, RegisterAnswer, RegisterRequest, Verification, VerifyAnswer, VerifyMethod,
    VerifyRequest,
};
use sidecall::server::verify::{Hook, VerifyMode};
use std::time::{Duration, Instant};

fn register_req(number: &str, name: &str, password: &str) -> RegisterRequest {
    RegisterRequest {
        number: number.into(),
        display_name: name.into(),
        password: password.into(),
        region: None,
    }
}

async fn register(server: &TestServer, number: &str, name: &str, password: &str) -> (Verification, String) {
    match api::register(&server.url, &server.trust(), &register_req(number, name, password)).await {
        Ok(RegisterAnswer::Pending(p)) => (p.verification, p.message),
        other => panic!("registration should wait for a code: {other:?}"),
    }
}

async fn verify(server: &TestServer, id: &str, code: Option<&str>) -> Result<VerifyAnswer, ApiError> {
    let req = VerifyRequest { id: id.into(), code: code.map(str::to_string) };
    api::verify(&server.url, &server.trust(), &req).await
}

fn refused(r: &Result<VerifyAnswer, ApiError>) -> (ErrorCode, String) {
    match r {
        Err(e @ ApiError::Refused { code, .. }) => (*code, e.to_string()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn login(server: &TestServer, number: &str, password: &str) -> Result<String, ApiError> {
    let req = LoginRequest {
        number: number.into(),
        password: password.into(),
        region: None,
        device_ip: None,
        device_name: Some("test".into()),
    };
    api::login(&server.url, &server.trust(), &req).await.map(|r| r.token)
}

/// The code the hook wrote for `number` (it writes `NUMBER CODE` lines to a file).
async fn hooked_code(file: &std::path::Path, number: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(code) = text.lines().rev().find_map(|l| l.strip_prefix(&format!("{number} "))) {
            return code.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the hook never wrote a code for {number}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn hook_server(dir: &std::path::Path, ttl: Duration) -> (TestServer, std::path::PathBuf) {
    let file = dir.join("codes.txt");
    let cmd = format!("echo \"$1 $SIDECALL_CODE\" >> '{}'", file.display());
    let server = TestServer::start_with(move |cfg| {
        cfg.verify.mode = VerifyMode::Hook(Hook::Command(cmd));
        cfg.verify.code_ttl = ttl;
    })
    .await;
    (server, file)
}

#[tokio::test]
async fn a_code_by_hook_binds_the_number_once_and_the_answer_is_the_same_for_taken_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, file) = hook_server(dir.path(), Duration::from_secs(600)).await;
    let (v, message) = register(&server, "030 123456", "Alice", PASSWORD).await;
    assert_eq!((v.method, v.digits, v.number.as_str()), (VerifyMethod::Hook, 6, ALICE));
    assert!(message.starts_with("If this number can be registered"), "{message}");
    // Nothing is bound before the code: no login yet.
    assert!(login(&server, ALICE, PASSWORD).await.is_err());
    let code = hooked_code(&file, ALICE).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let (c, text) = refused(&verify(&server, &v.id, Some(wrong)).await);
    assert_eq!(c, ErrorCode::WrongCode);
    assert!(text.contains("4 tries left"), "{text}");
    match verify(&server, &v.id, Some(&code)).await {
        Ok(VerifyAnswer::Done(d)) => assert_eq!((d.number.as_str(), d.claimed), (ALICE, false)),
        other => panic!("the right code binds the number: {other:?}"),
    }
    // Used once only.
    let (c, text) = refused(&verify(&server, &v.id, Some(&code)).await);
    assert_eq!(c, ErrorCode::CodeExpired);
    assert!(text.contains("used already"), "{text}");
    let token = login(&server, ALICE, PASSWORD).await.expect("the verified account logs in");
    let mut alice = server.client(&token, None).await;
    // A verified caller is marked so in the initiation.
    let (vb, _) = register(&server, BOB, "Bob", PASSWORD).await;
    let code = hooked_code(&file, BOB).await;
    assert!(matches!(verify(&server, &vb.id, Some(&code)).await, Ok(VerifyAnswer::Done(_))));
    let bob = server.client(&login(&server, BOB, PASSWORD).await.expect("login"), None).await;
    bob.handle.dial(ALICE, sidecall::protocol::Offer::default());
    let (_, caller, _) = alice.incoming().await;
    assert!(caller.verified, "{caller:?}");

    // Registering a taken number and a free one: the same answer, in content and time.
    let mut taken = Vec::new();
    let mut free = Vec::new();
    // (Alice registered once; a number gets three codes within ten minutes.)
    for i in 0..2 {
        let t0 = Instant::now();
        let (v1, m1) = register(&server, ALICE, "Mallory", "another password").await;
        taken.push(t0.elapsed());
        let t0 = Instant::now();
        let (v2, m2) = register(&server, &format!("+4940123456{i}"), "Mallory", "another password").await;
        free.push(t0.elapsed());
        assert_eq!(m1, m2, "the same message");
        assert_eq!(
            (v1.method, v1.digits, v1.expires_in_s, v1.caller_prefix.clone()),
            (v2.method, v2.digits, v2.expires_in_s, v2.caller_prefix.clone())
        );
        assert_eq!(v1.id.len(), v2.id.len());
    }
    let best = |v: &[Duration]| v.iter().min().map(Duration::as_secs_f64).unwrap_or(0.0);
    let (t, f) = (best(&taken), best(&free));
    println!("registration, best of 2: taken number {:.1} ms, free number {:.1} ms", t * 1e3, f * 1e3);
    assert!(t < f * 3.0 + 0.05 && f < t * 3.0 + 0.05, "timing tells taken from free: {t} vs {f}");
    // The account was not touched by those registrations.
    assert!(login(&server, ALICE, PASSWORD).await.is_ok());
    assert!(login(&server, ALICE, "another password").await.is_err());
    // A fourth code for the same number within ten minutes: refused, whatever the number.
    let r = api::register(&server.url, &server.trust(), &register_req(ALICE, "M", "another password")).await;
    assert!(matches!(r, Err(ApiError::Refused { code: ErrorCode::RateLimited, .. })), "{r:?}");
}

#[tokio::test]
async fn tries_are_limited_and_codes_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, file) = hook_server(dir.path(), Duration::from_secs(3)).await;
    let (v, _) = register(&server, BOB, "Bob", PASSWORD).await;
    let code = hooked_code(&file, BOB).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for left in (0..5).rev() {
        let (c, text) = refused(&verify(&server, &v.id, Some(wrong)).await);
        assert_eq!(c, ErrorCode::WrongCode);
        if left == 0 {
            assert!(text.contains("last try"), "{text}");
        } else {
            assert!(text.contains(&format!("{left} tr")), "{text}");
        }
    }
    // The right code after five wrong ones: too late.
    let (c, text) = refused(&verify(&server, &v.id, Some(&code)).await);
    assert_eq!(c, ErrorCode::CodeExpired);
    assert!(text.contains("too many wrong codes"), "{text}");
    assert!(login(&server, BOB, PASSWORD).await.is_err());

    // A code used after its lifetime.
    let (v, _) = register(&server, CAROL, "Carol", PASSWORD).await;
    let code = hooked_code(&file, CAROL).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (c, text) = refused(&verify(&server, &v.id, Some(&code)).await);
    assert_eq!(c, ErrorCode::CodeExpired);
    assert!(text.contains("expired"), "{text}");
    // An id nobody was given.
    let (c, _) = refused(&verify(&server, "no-such-registration", Some("123456")).await);
    assert_eq!(c, ErrorCode::CodeExpired);
}

#[tokio::test]
async fn an_administrator_approves_and_a_claim_logs_the_old_devices_out() {
    let server = TestServer::start_with(|cfg| cfg.verify.mode = VerifyMode::Admin).await;
    let db = sidecall::server::admin::Db { url: None, data_dir: server._dir.path().join("server") };
    let (v, _) = register(&server, ALICE, "Alice", PASSWORD).await;
    assert_eq!((v.method, v.digits), (VerifyMethod::Admin, 0));
    assert!(matches!(verify(&server, &v.id, None).await, Ok(VerifyAnswer::Waiting(_))));
    let listed = sidecall::server::admin::pending(&db).await.expect("pending");
    assert!(listed.contains(ALICE) && listed.contains("Alice"), "{listed}");
    // The administrator's command works on the database beside the running server.
    let said = sidecall::server::admin::verify(&db, "DE", "030 123456").await.expect("approve");
    assert!(said.contains("approved"), "{said}");
    match verify(&server, &v.id, None).await {
        Ok(VerifyAnswer::Done(d)) => assert!(!d.claimed),
        other => panic!("approved: {other:?}"),
    }
    let token = login(&server, ALICE, PASSWORD).await.expect("login after approval");
    let mut alice = server.client(&token, None).await;
    let second = login(&server, ALICE, PASSWORD).await.expect("a second device");

    // Someone proves the number again (a new SIM owner, or Alice without her password).
    let (v2, _) = register(&server, ALICE, "Alice Neu", "a new password").await;
    assert!(login(&server, ALICE, "a new password").await.is_err(), "nothing changes before approval");
    sidecall::server::admin::verify(&db, "DE", ALICE).await.expect("approve the claim");
    match verify(&server, &v2.id, None).await {
        Ok(VerifyAnswer::Done(d)) => assert!(d.claimed, "an existing account was claimed"),
        other => panic!("approved: {other:?}"),
    }
    // The online device is logged out and told why (another process did it: within 2 s).
    let reason = alice
        .expect("logged out", |e| match e {
            Event::LoggedOut { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("verified on another device"), "{reason}");
    // The offline one is told the same when it connects; its token is dead.
    let (handle, mut events) = sidecall::client::spawn(
        {
            let mut c = sidecall::client::ClientConfig::new(server.url.clone(), second);
            c.trust = server.trust();
            c
        },
        None,
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let why = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::LoggedOut { reason })) => break reason,
            Ok(Some(Event::Online { .. })) => panic!("a logged-out device came online"),
            Ok(Some(_)) => {}
            _ => panic!("no logout for the second device"),
        }
    };
    assert!(why.contains("verified on another device"), "{why}");
    drop(handle);
    assert!(login(&server, ALICE, PASSWORD).await.is_err(), "the old password is gone");
    let token = login(&server, ALICE, "a new password").await.expect("the new owner logs in");
    let _neu = server.client(&token, None).await;
}

/// The code in the caller ID of the server's call, typed by hand.
#[tokio::test]
async fn the_pbx_calls_the_number_with_the_code_in_its_caller_id() {
    let mut sim = Sim::start("s3cret", Script::Answer).await;
    let server = server_with_pbx_and(&sim, "s3cret", |cfg| {
        cfg.verify.mode = VerifyMode::Call;
        cfg.verify.caller_prefix = "+4930555".into();
    })
    .await;
    let (v, message) = register(&server, BOB, "Bob", PASSWORD).await;
    assert_eq!((v.method, v.digits, v.caller_prefix.as_deref()), (VerifyMethod::Call, 4, Some("+4930555")));
    assert!(message.contains("+4930555"), "{message}");
    let originate = sim.action("Originate").await;
    assert_eq!(originate.get("Channel"), Some(format!("Local/{BOB}@office").as_str()));
    let caller_id = originate.get("CallerID").expect("a caller ID").to_string();
    let code = caller_id
        .split('<')
        .nth(1)
        .and_then(|s| s.strip_suffix('>'))
        .and_then(|n| n.strip_prefix("+4930555"))
        .expect("the caller ID is the prefix and the code")
        .to_string();
    assert_eq!(code.len(), 4);
    assert!(matches!(verify(&server, &v.id, Some(&code)).await, Ok(VerifyAnswer::Done(_))));
    // The phone stops ringing once the code is in.
    let hangup = sim.action("Hangup").await;
    assert!(
        hangup.get("Channel").is_some_and(|c| c.starts_with(&format!("Local/{BOB}@office"))),
        "{hangup:?}"
    );
    let token = login(&server, BOB, PASSWORD).await.expect("login");
    let _bob = server.client(&token, None).await;
}

fn fritz_connected(s: &sidecall::app::AppState) -> bool {
    use sidecall::calls::{Source, WatcherStatus};
    s.watchers.iter().any(|(src, st)| *src == Source::Fritz && *st == WatcherStatus::Connected)
}

/// The app registers; the server's verification call rings on the FRITZ!Box; its call
/// monitor reports the caller ID and the app sends the code by itself, then logs in.
#[test]
fn the_app_fills_the_code_in_when_the_verification_call_rings() {
    use sidecall::app::{Connection, LoginStatus};
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let (mut sim, server) = rt.block_on(async {
        let sim = Sim::start("s3cret", Script::Answer).await;
        let server = server_with_pbx_and(&sim, "s3cret", |cfg| {
            cfg.verify.mode = VerifyMode::Call;
            cfg.verify.caller_prefix = "+4930555".into();
        })
        .await;
        (sim, server)
    });
    let box_ = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let box_addr = box_.local_addr().expect("addr");
    let app = TestApp::start(&format!(
        "region = \"DE\"\narea_code = \"030\"\n[fritz]\nenabled = true\nhost = \"{box_addr}\"\n"
    ));
    let (mut monitor, _) = rt.block_on(box_.accept()).expect("the watcher connects to the box");
    app.wait_state("watcher connected", &fritz_connected);
    app.register(&server.url, "030 123456");
    let st = app.wait_state("the code step", &|s| matches!(&s.login, LoginStatus::Verifying(_)));
    let LoginStatus::Verifying(view) = &st.login else { unreachable!() };
    assert!(view.automatic, "the watcher can catch the call: {view:?}");
    let originate = rt.block_on(sim.action("Originate"));
    let caller_id = originate.get("CallerID").expect("caller ID").to_string();
    let code =
        caller_id.split("<+4930555").nth(1).and_then(|c| c.strip_suffix('>')).expect("code").to_string();
    // The box shows the caller in the national form, as the phone's display does.
    let line = format!("02.12.26 14:00:00;RING;0;030555{code};30123456;SIP0;\r\n");
    rt.block_on(monitor.write_all(line.as_bytes())).expect("ring");
    let st = app.wait_state("online", &|s| s.connection == Connection::Online);
    let account = st.account.expect("account");
    assert_eq!(account.number, ALICE);
    assert!(account.verified, "the welcome says the number is verified");
    app.core.send(sidecall::app::AppCommand::Shutdown);
    drop(rt);
}

/// Bob asks Alice for a session while her phone is quiet: "not linked", and not accepted
/// although she accepts Bob automatically. Her phone then rings with Bob's number: the
/// request matches the call and is accepted.
#[test]
fn a_request_is_linked_to_the_ringing_call_and_auto_accepted_only_then() {
    use sidecall::app::Connection;
    use sidecall::calls::linked::CallMatch;
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let server = rt.block_on(TestServer::start());
    let mut bob = rt.block_on(server.user(BOB, "Bob"));
    let box_ = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let box_addr = box_.local_addr().expect("addr");
    let app = TestApp::start(&format!(
        "region = \"DE\"\narea_code = \"030\"\nauto_accept = [\"{BOB}\"]\n[fritz]\nenabled = true\nhost = \"{box_addr}\"\n"
    ));
    let (mut monitor, _) = rt.block_on(box_.accept()).expect("the watcher connects to the box");
    app.register(&server.url, "030 123456");
    app.wait_state("online, watching", &|s| s.connection == Connection::Online && fritz_connected(s));

    bob.handle.dial(ALICE, sidecall::protocol::Offer::default());
    let st = app.wait_state("ringing", &|s| !s.incoming.is_empty());
    let marks = st.incoming[0].marks;
    assert_eq!(marks.call_match, Some(CallMatch::NotLinked));
    assert!(!marks.verified, "Bob's number was not verified (a server with --verify none)");
    let early = rt.block_on(bob.drain(Duration::from_millis(700)));
    assert!(!early.iter().any(|e| matches!(e, Event::SessionStarted { .. })), "accepted unlinked: {early:?}");

    // Bob's call reaches Alice's phone (the mobile number as the box shows it).
    rt.block_on(monitor.write_all(b"02.12.26 14:00:00;RING;1;015123456789;30123456;SIP0;\r\n"))
        .expect("ring");
    rt.block_on(bob.started());
    let st = app.wait_state("in the session", &|s| s.active.is_some());
    let active = st.active.expect("active");
    assert_eq!(active.marks.and_then(|m| m.call_match), Some(CallMatch::Matches));
    app.core.send(sidecall::app::AppCommand::Shutdown);
    drop(rt);
}

/// `--verify-hook https://…` gets the number and code as JSON (here over plain HTTP on
/// loopback, as an SMS gateway on the operator's LAN would).
#[tokio::test]
async fn a_hook_url_gets_the_number_and_code_as_json() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/send", gateway.local_addr().expect("addr"));
    let server = TestServer::start_with(move |cfg| cfg.verify.mode = VerifyMode::Hook(Hook::Url(url))).await;
    let (v, _) = register(&server, CAROL, "Carol", PASSWORD).await;
    let (mut conn, _) =
        tokio::time::timeout(WAIT, gateway.accept()).await.expect("the hook posts").expect("accept");
    let mut req = Vec::new();
    let body = loop {
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).await.expect("read");
        assert!(n > 0, "request ended early: {}", String::from_utf8_lossy(&req));
        req.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&req).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                assert!(head.starts_with("POST /send"), "{head}");
                break body.to_string();
            }
        }
    };
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.expect("answer");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["number"], CAROL);
    let code = json["code"].as_str().expect("code").to_string();
    assert!(json["text"].as_str().is_some_and(|t| t.contains(&code)), "{json}");
    assert!(matches!(verify(&server, &v.id, Some(&code)).await, Ok(VerifyAnswer::Done(_))));
}

/// With the PBX not connected (here: it refuses the server's login), registration says the
/// verification call cannot be placed now — the same for every number — instead of promising
/// a call that never comes.
#[tokio::test]
async fn no_verification_call_is_promised_while_the_pbx_is_down() {
    let sim = Sim::start("s3cret", Script::Answer).await;
    let server = server_with_pbx_and(&sim, "not the secret", |cfg| {
        cfg.verify.mode = VerifyMode::Call;
        cfg.verify.caller_prefix = "+4930555".into();
    })
    .await;
    for number in [ALICE, BOB] {
        let r = api::register(&server.url, &server.trust(), &register_req(number, "X", PASSWORD)).await;
        match r {
            Err(ApiError::Refused { status: 503, message, .. }) => {
                assert!(message.contains("cannot place the verification call"), "{message}")
            }
            other => panic!("{number}: {other:?}"),
        }
    }
}
