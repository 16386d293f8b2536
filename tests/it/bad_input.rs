//! Hostile and broken input: typed errors or a close with a reason; the server stays up and
//! nothing stored is lost.

use crate::fixture::*;
use futures_util::SinkExt;
use sidecall::client::{Event, api};
use sidecall::protocol::{
    ClientMsg, ErrorCode, HttpError, LoginRequest, MAX_MESSAGE_BYTES, Offer, Outcome, PROTOCOL_VERSION,
    RegisterRequest, ServerMsg, close_code,
};
use tokio_tungstenite::tungstenite::Message;

/// The server still works: Alice can still reach Bob.
async fn still_serving(server: &TestServer) {
    let mut alice = server.client(&server.login(ALICE, None).await, None).await;
    let mut bob = server.client(&server.login(BOB, None).await, None).await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    let outcome = alice.dial_result(req).await;
    assert_eq!(outcome, Outcome::Accepted);
}

#[tokio::test]
async fn garbage_before_and_after_login_gets_typed_errors() {
    let server = TestServer::start().await;
    let token = server.account(ALICE, "Alice").await;
    server.account(BOB, "Bob").await;
    let mut raw = RawWs::connect(&server).await;

    raw.send_text("{not json").await;
    assert_eq!(raw.expect_error().await, ErrorCode::BadMessage);
    raw.send_text(r#"{"type":"launch_missiles"}"#).await;
    assert_eq!(raw.expect_error().await, ErrorCode::BadMessage);
    raw.send_text(r#"{"type":"access_request","target":5}"#).await;
    assert_eq!(raw.expect_error().await, ErrorCode::BadMessage);
    raw.ws.send(Message::binary(vec![0u8, 1, 2, 3])).await.expect("send");
    assert_eq!(raw.expect_error().await, ErrorCode::BinaryNotSupported);
    raw.send(&access(1, BOB)).await;
    assert_eq!(raw.expect_error().await, ErrorCode::NotAuthenticated);

    // The same connection can still log in properly.
    raw.send(&ClientMsg::Hello { protocol: PROTOCOL_VERSION, token: token.clone(), device_ip: None }).await;
    assert!(matches!(raw.next().await, Frame::Msg(ServerMsg::Welcome { .. })));
    raw.send(&ClientMsg::Hello { protocol: PROTOCOL_VERSION, token, device_ip: None }).await;
    assert_eq!(raw.expect_error().await, ErrorCode::AlreadyAuthenticated);
    raw.send_text(r#"{"type":"answer","session_id":"nope","accept":true}"#).await;
    assert_eq!(raw.expect_error().await, ErrorCode::UnknownSession);
    raw.send_text("[]").await;
    assert_eq!(raw.expect_error().await, ErrorCode::BadMessage);
    raw.send(&ClientMsg::Ping { nonce: 42 }).await;
    assert!(matches!(raw.next().await, Frame::Msg(ServerMsg::Pong { nonce: 42 })));

    still_serving(&server).await;
}

#[tokio::test]
async fn bad_tokens_and_versions_are_closed_with_a_reason() {
    let server = TestServer::start().await;
    let token = server.account(ALICE, "Alice").await;

    let mut raw = RawWs::connect(&server).await;
    raw.send(&ClientMsg::Hello { protocol: PROTOCOL_VERSION, token: "forged".into(), device_ip: None }).await;
    assert_eq!(raw.expect_error().await, ErrorCode::AuthFailed);
    assert!(matches!(raw.next().await, Frame::Closed(Some(close_code::AUTH_FAILED), _)));

    let mut raw = RawWs::connect(&server).await;
    raw.send(&ClientMsg::Hello { protocol: 99, token, device_ip: None }).await;
    assert_eq!(raw.expect_error().await, ErrorCode::UnsupportedVersion);
    assert!(matches!(raw.next().await, Frame::Closed(Some(close_code::UNSUPPORTED_VERSION), _)));

    // The client core gives up (does not hammer the server) on a revoked token.
    let mut cfg = sidecall::client::ClientConfig::new(server.url.clone(), "revoked");
    cfg.backoff_min = std::time::Duration::from_millis(10);
    let (_h, mut events) = sidecall::client::spawn(cfg, None);
    let mut saw_logged_out = false;
    while let Ok(Some(ev)) = tokio::time::timeout(WAIT, events.recv()).await {
        match ev {
            Event::LoggedOut { .. } => saw_logged_out = true,
            Event::Stopped => break,
            _ => {}
        }
    }
    assert!(saw_logged_out);
}

#[tokio::test]
async fn oversized_message_closes_only_that_connection() {
    let server = TestServer::start().await;
    let token = server.account(ALICE, "Alice").await;
    server.account(BOB, "Bob").await;
    let mut raw = RawWs::login(&server, &token).await;
    let huge = format!(r#"{{"type":"ping","nonce":1,"pad":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES + 10));
    // The server may close before the whole frame is written; either way it must not serve it.
    let _ = raw.ws.send(Message::text(huge)).await;
    match raw.next().await {
        Frame::Closed(code, _) => assert!(code.is_none() || code == Some(close_code::TOO_BIG), "{code:?}"),
        other => panic!("expected a close, got {other:?}"),
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn floods_are_rate_limited_then_closed() {
    let server = TestServer::start().await;
    let token = server.account(ALICE, "Alice").await;
    server.account(BOB, "Bob").await;
    let mut raw = RawWs::login(&server, &token).await;
    for i in 0..1000u64 {
        let msg = serde_json::to_string(&ClientMsg::Ping { nonce: i }).expect("json");
        if raw.ws.feed(Message::text(msg)).await.is_err() {
            break;
        }
    }
    let _ = raw.ws.flush().await;
    let mut pongs = 0;
    let mut limited = false;
    let closed = loop {
        match raw.next().await {
            Frame::Msg(ServerMsg::Pong { .. }) => pongs += 1,
            Frame::Msg(ServerMsg::Error { code: ErrorCode::RateLimited, .. }) => limited = true,
            Frame::Msg(other) => panic!("{other:?}"),
            Frame::Closed(code, reason) => break (code, reason),
        }
    };
    assert!(limited, "a rate_limited error before the close ({pongs} pongs, closed {closed:?})");
    assert!(pongs < 200, "most of the flood was dropped, {pongs} answered");
    assert_eq!(closed.0, Some(close_code::POLICY), "{closed:?}");

    // Access requests have their own, tighter limit.
    let mut raw = RawWs::login(&server, &server.login(ALICE, None).await).await;
    for i in 0..30 {
        raw.send(&access(i, "+49 40 9876543")).await;
    }
    let mut outcomes = 0;
    let mut limited = false;
    // Errors go out at once, outcomes through the device's queue: collect both for a while.
    while let Some(frame) = raw.try_next(std::time::Duration::from_millis(500)).await {
        match frame {
            Frame::Msg(ServerMsg::AccessOutcome { .. }) => outcomes += 1,
            Frame::Msg(ServerMsg::Error { code: ErrorCode::RateLimited, .. }) => limited = true,
            other => panic!("{other:?}"),
        }
    }
    assert!(limited);
    assert!((10..=12).contains(&outcomes), "a burst of 10 passes, then the limit: {outcomes}");
    still_serving(&server).await;
}

async fn post_raw(
    server: &TestServer,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Option<HttpError>) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("http");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).ok())
}

#[tokio::test]
async fn http_api_refuses_bad_requests_with_json_errors() {
    let server = TestServer::start().await;
    server.account(ALICE, "Alice").await;
    let code = |r: &(u16, Option<HttpError>)| r.1.as_ref().map(|e| e.error.code);

    let r = post_raw(&server, "/api/v1/accounts", "{oops").await;
    assert_eq!((r.0, code(&r)), (400, Some(ErrorCode::BadMessage)));
    let r = post_raw(&server, "/api/v1/accounts", vec![b'{'; 20_000]).await;
    assert_eq!((r.0, code(&r)), (413, Some(ErrorCode::TooLarge)));
    let r = post_raw(&server, "/api/v1/nowhere", "{}").await;
    assert_eq!(r.0, 404);

    let reg = |number: &str, name: &str, pw: &str| RegisterRequest {
        number: number.into(),
        display_name: name.into(),
        password: pw.into(),
        region: None,
    };
    let err = api::register(&server.url, &Default::default(), &reg("12", "X", PASSWORD))
        .await
        .expect_err("invalid number");
    assert_eq!(err.code(), Some(ErrorCode::InvalidNumber));
    let err = api::register(&server.url, &Default::default(), &reg("030 123456", "Other", PASSWORD))
        .await
        .expect_err("exists");
    assert_eq!(err.code(), Some(ErrorCode::AccountExists));
    assert!(err.to_string().contains("log in"), "{err}");
    let err = api::register(&server.url, &Default::default(), &reg(CAROL, "Carol", "short"))
        .await
        .expect_err("short password");
    assert_eq!(err.code(), Some(ErrorCode::InvalidField));
    let err = api::register(&server.url, &Default::default(), &reg(CAROL, "bad\u{7}name", PASSWORD))
        .await
        .expect_err("control char");
    assert_eq!(err.code(), Some(ErrorCode::InvalidField));

    let login = |pw: &str| LoginRequest {
        number: ALICE.into(),
        password: pw.into(),
        region: None,
        device_ip: None,
        device_name: None,
    };
    let err = api::login(&server.url, &Default::default(), &login("wrong password"))
        .await
        .expect_err("wrong password");
    assert_eq!(err.code(), Some(ErrorCode::WrongCredentials));
    let unknown = LoginRequest { number: CAROL.into(), ..login(PASSWORD) };
    let err = api::login(&server.url, &Default::default(), &unknown).await.expect_err("unknown user");
    assert_eq!(err.code(), Some(ErrorCode::WrongCredentials), "same answer as a wrong password");

    // Guessing passwords is throttled per number.
    let mut throttled = false;
    for _ in 0..15 {
        if let Err(e) = api::login(&server.url, &Default::default(), &login("guess guess")).await
            && e.code() == Some(ErrorCode::RateLimited)
        {
            throttled = true;
            break;
        }
    }
    assert!(throttled);

    // Unreachable servers are explained.
    let err = api::login("http://127.0.0.1:9", &Default::default(), &login(PASSWORD))
        .await
        .expect_err("unreachable");
    assert!(err.to_string().contains("cannot reach the server"), "{err}");

    // Nothing stored was lost: Alice's account is intact and is the only one.
    assert_eq!(server.hub().store.user_count().await.expect("count"), 1);
    let alice = server.hub().store.user_by_number(ALICE).await.expect("read").expect("alice exists");
    assert_eq!(alice.display_name, "Alice");
}

#[tokio::test]
async fn logout_revokes_the_token_and_closes_its_connection() {
    let server = TestServer::start().await;
    let token = server.account(ALICE, "Alice").await;
    let mut alice = server.client(&token, None).await;
    api::logout(&server.url, &Default::default(), &token).await.expect("logout");
    alice.expect("logged out", |e| matches!(e, Event::LoggedOut { .. }).then_some(())).await;
    let err = api::logout(&server.url, &Default::default(), &token).await.expect_err("already revoked");
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed));
}
