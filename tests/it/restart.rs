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

    for c in [&mut alice, &mut bob] {
        let reason = c
            .expect("session ended", |e| match e {
                Event::SessionEnded { reason, .. } => Some(*reason),
                _ => None,
            })
            .await;
        assert!(matches!(reason, StopReason::ServerShutdown | StopReason::ConnectionLost), "{reason:?}");
        c.expect("offline", |e| matches!(e, Event::Offline { .. }).then_some(())).await;
        // Back online on their own, with the token the database kept.
        c.expect("online again", |e| matches!(e, Event::Online { .. }).then_some(())).await;
    }
    assert_eq!(server.hub().store.user_count().await.expect("count"), 2);

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
