//! The server restarts; the registry survives and clients come back by themselves.

use crate::fixture::*;
use sidecall::client::{Event, StopReason};
use sidecall::protocol::{Offer, Outcome};

#[tokio::test]
async fn restart_keeps_the_registry_and_clients_reconnect() {
    let mut server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;

    // An active session when the server goes down ends for both sides with a reason.
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    alice
        .expect("accepted", |e| {
            matches!(e, Event::DialResult { req_id, outcome: Outcome::Accepted, .. } if *req_id == req)
                .then_some(())
        })
        .await;

    server.restart().await;

    // The session outlives the server: both come back online on their own (with the token
    // the database kept) and resume it; nothing ended it.
    for c in [&mut alice, &mut bob] {
        c.expect("offline", |e| matches!(e, Event::Offline { .. }).then_some(())).await;
        let seen = c.drain_until_online().await;
        assert!(!seen.iter().any(|e| matches!(e, Event::SessionEnded { .. })), "{seen:?}");
    }
    assert_eq!(server.hub().store.user_count().await.expect("count"), 2);
    // The restarted server knows the session again: Alice hangs up, Bob is told.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    alice.handle.end(&sid);
    let reason = bob
        .expect("session ended", |e| match e {
            Event::SessionEnded { session_id, reason } if *session_id == sid => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, StopReason::PeerEnded);

    let req = alice.handle.dial("0151 23456789", Offer::default());
    let sid = bob
        .expect("incoming after restart", |e| match e {
            Event::Incoming { session_id, caller, .. } if caller.number == ALICE => Some(session_id.clone()),
            _ => None,
        })
        .await;
    bob.handle.answer(&sid, true);
    let outcome = alice.dial_result(req).await;
    assert_eq!(outcome, Outcome::Accepted);
}

#[tokio::test]
async fn clients_wait_out_a_server_that_is_down() {
    let mut server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    server.stop().await;
    // While down, dialing fails at once with a reason instead of hanging.
    alice.expect("offline", |e| matches!(e, Event::Offline { .. }).then_some(())).await;
    let req = alice.handle.dial(BOB, Offer::default());
    alice
        .expect("dial refused offline", |e| {
            matches!(e, Event::DialFailed { req_id, .. } if *req_id == req).then_some(())
        })
        .await;
    // Several failed attempts later it comes back.
    alice
        .expect("retry", |e| matches!(e, Event::Connecting { attempt } if *attempt >= 3).then_some(()))
        .await;
    server.restart().await;
    alice.expect("online again", |e| matches!(e, Event::Online { .. }).then_some(())).await;
}

#[tokio::test]
async fn a_session_claimed_by_one_side_only_ends_after_the_grace_time() {
    let mut server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    bob.started().await;
    // Bob goes away for good while the server restarts; Alice comes back and claims it.
    bob.handle.shutdown();
    server.restart().await;
    alice.drain_until_online().await;
    let reason = alice
        .expect("session ended", |e| match e {
            Event::SessionEnded { session_id, reason } if *session_id == sid => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, StopReason::PeerDisconnected);
}

#[tokio::test]
async fn a_dropped_connection_keeps_the_session_for_the_grace_time() {
    let server =
        TestServer::start_with(|cfg| cfg.hub.reconnect_grace = std::time::Duration::from_secs(30)).await;
    let mut alice = server.user(ALICE, "Alice").await;
    let bob_token = server.account(BOB, "Bob").await;
    let mut bob = server.client(&bob_token, None).await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    bob.started().await;
    // Bob's connection drops (the process goes on): Alice is told nothing.
    bob.handle.shutdown();
    let seen = alice.drain(std::time::Duration::from_millis(800)).await;
    assert!(!seen.iter().any(|e| matches!(e, Event::SessionEnded { .. })), "{seen:?}");
    // Bob's device comes back and resumes: the session goes on, and ends normally.
    let mut bob = server.client(&bob_token, None).await;
    let _ = &mut bob;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    alice.handle.end(&sid);
    let reason = alice
        .expect("ended", |e| match e {
            Event::SessionEnded { session_id, reason } if *session_id == sid => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, StopReason::YouEnded);
}

#[tokio::test]
async fn after_a_restart_only_the_two_parties_can_restore_a_session() {
    use sidecall::protocol::{ClientMsg, ErrorCode, Role, ServerMsg};
    let mut server =
        TestServer::start_with(|cfg| cfg.hub.reconnect_grace = std::time::Duration::from_secs(10)).await;
    let mut alice = server.user(ALICE, "Alice").await;
    let bob_token = server.account(BOB, "Bob").await;
    let mut bob = server.client(&bob_token, None).await;
    let mallory_token = server.account(CAROL, "Mallory").await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    bob.started().await;
    bob.handle.shutdown();
    server.restart().await;
    alice.drain_until_online().await; // Alice claims the session (caller, with Bob)
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Someone else who got hold of the id cannot step in as the callee.
    let mut mallory = RawWs::login(&server, &mallory_token).await;
    mallory
        .send(&ClientMsg::Resume { session_id: sid.clone(), role: Role::Callee, peer: ALICE.into() })
        .await;
    assert_eq!(mallory.expect_error().await, ErrorCode::UnknownSession);
    // Bob can.
    let mut bob = RawWs::login(&server, &bob_token).await;
    bob.send(&ClientMsg::Resume { session_id: sid.clone(), role: Role::Callee, peer: ALICE.into() }).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    alice.handle.end(&sid);
    loop {
        match bob.next().await {
            Frame::Msg(ServerMsg::SessionEnded { session_id, reason }) if session_id == sid => {
                assert_eq!(reason, sidecall::protocol::EndReason::PeerEnded);
                break;
            }
            Frame::Msg(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert!(mallory.try_next(std::time::Duration::from_millis(200)).await.is_none(), "Mallory hears nothing");
}
