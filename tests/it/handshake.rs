//! The handshake from dialed number to accepted session, through the real server.

use crate::fixture::*;
use sidecall::client::{Event, StopReason};
use sidecall::protocol::{ClientMsg, ErrorCode, Offer, Outcome, Role, ServerMsg, SignalData};
use std::net::IpAddr;
use std::time::Duration;

#[tokio::test]
async fn accept_relay_and_end_by_callee() {
    let server = TestServer::start().await;
    let bob_ip: IpAddr = "192.168.178.20".parse().expect("ip");
    let mut alice = server.user(ALICE, "Alice").await;
    let bob_token = server.account(BOB, "Bob").await;
    let mut bob = server.client(&bob_token, Some(bob_ip)).await;

    // Alice dials Bob's mobile number the way she would type it at home in Berlin.
    let req = alice.handle.dial_with(
        "0151 2345 6789",
        Offer { files: true, video: true },
        None,
        Some("fritzbox:7".into()),
    );
    let (sid, caller, offer, call_ref) = bob
        .expect("incoming", |e| match e {
            Event::Incoming { session_id, caller, offer, call_ref, .. } => {
                Some((session_id.clone(), caller.clone(), *offer, call_ref.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(call_ref.as_deref(), Some("fritzbox:7"));
    assert_eq!(caller.number, ALICE);
    assert_eq!(caller.display_name, "Alice");
    assert_eq!(offer, Offer { files: true, video: true });
    let pending = alice
        .expect("pending", |e| match e {
            Event::DialPending { req_id, session_id } if *req_id == req => Some(session_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(pending, sid);

    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    let (a_sid, a_role, a_peer) = alice.started().await;
    let (b_sid, b_role, b_peer) = bob.started().await;
    assert_eq!((a_sid.clone(), b_sid), (sid.clone(), sid.clone()));
    assert_eq!((a_role, b_role), (Role::Caller, Role::Callee));
    assert_eq!(a_peer.number, BOB);
    assert_eq!(a_peer.display_name, "Bob");
    assert_eq!(a_peer.device_ip, Some(bob_ip), "caller learns the callee's reported address");
    assert_eq!(a_peer.observed_ip, Some("127.0.0.1".parse::<IpAddr>().expect("ip")));
    assert_eq!(b_peer.number, ALICE);

    // Signaling is relayed verbatim between exactly these two devices.
    let offer_sdp = SignalData::Offer { sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n".into() };
    alice.handle.signal(&sid, offer_sdp.clone());
    let got = bob
        .expect("signal", |e| match e {
            Event::Signal { session_id, data } if *session_id == sid => Some(data.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, offer_sdp);
    let cand = SignalData::Candidate {
        candidate: "candidate:1 1 udp 1 10.0.0.1 5000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
    };
    bob.handle.signal(&sid, cand.clone());
    let got = alice
        .expect("signal", |e| match e {
            Event::Signal { data, .. } => Some(data.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, cand);

    bob.handle.end(&sid);
    assert_eq!(bob.ended().await, (sid.clone(), StopReason::YouEnded));
    assert_eq!(alice.ended().await, (sid.clone(), StopReason::PeerEnded));

    // The session is over: signaling and a second end are refused with a clear error.
    alice.handle.signal(&sid, SignalData::EndOfCandidates);
    let (code, _) = alice.error().await;
    assert_eq!(code, ErrorCode::SessionClosed);
}

#[tokio::test]
async fn caller_ends_an_active_session() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    alice.started().await;
    alice.handle.end(&sid);
    assert_eq!(bob.ended().await.1, StopReason::PeerEnded);
    assert_eq!(alice.ended().await.1, StopReason::YouEnded);
}

#[tokio::test]
async fn decline() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, false);
    assert_eq!(alice.dial_result(req).await, Outcome::Declined);
    // A second answer is late: the session is over and says so.
    bob.handle.answer(&sid, true);
    let (code, _) = bob.error().await;
    assert_eq!(code, ErrorCode::SessionClosed);
    let late = alice.drain(Duration::from_millis(300)).await;
    assert!(!late.iter().any(|e| matches!(e, Event::SessionStarted { .. })), "{late:?}");
}

#[tokio::test]
async fn unanswered_request_times_out_and_late_answer_is_refused() {
    let server = TestServer::start_with(|c| c.hub.answer_timeout = Duration::from_millis(700)).await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    assert_eq!(alice.dial_result(req).await, Outcome::TimedOut);
    let reason = bob.closed(&sid).await;
    assert_eq!(reason, StopReason::TimedOut);
    bob.handle.answer(&sid, true);
    let (code, msg) = bob.error().await;
    assert_eq!(code, ErrorCode::SessionClosed);
    assert!(msg.contains("timed out"), "{msg}");
}

#[tokio::test]
async fn caller_cancels_while_ringing() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = bob.incoming().await;
    alice.handle.end(&sid);
    assert_eq!(alice.dial_result(req).await, Outcome::Cancelled);
    let reason = bob.closed(&sid).await;
    assert_eq!(reason, StopReason::Cancelled);
}

#[tokio::test]
async fn unknown_offline_unwilling_and_dnd_targets_are_all_just_unavailable() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    // Registered but never online.
    server.account(CAROL, "Carol").await;
    let mut bob = server.user(BOB, "Bob").await;

    // Unknown (valid number, no account) and offline.
    for target in ["+49 40 9876543", CAROL] {
        let req = alice.handle.dial(target, Offer::default());
        assert_eq!(alice.dial_result(req).await, Outcome::Unavailable, "{target}");
    }
    // Not taking sessions.
    bob.handle.update_settings(Some(false), None);
    bob.settings(|settings| !settings.accepting_sessions).await;
    let req = alice.handle.dial(BOB, Offer::default());
    assert_eq!(alice.dial_result(req).await, Outcome::Unavailable);
    // Do not disturb.
    bob.handle.update_settings(Some(true), Some(true));
    bob.settings(|settings| settings.do_not_disturb).await;
    let req = alice.handle.dial(BOB, Offer::default());
    assert_eq!(alice.dial_result(req).await, Outcome::Unavailable);
    // Bob was never rung.
    let seen = bob.drain(Duration::from_millis(300)).await;
    assert!(!seen.iter().any(|e| matches!(e, Event::Incoming { .. })), "{seen:?}");
    // And available again.
    bob.handle.update_settings(None, Some(false));
    bob.settings(|settings| !settings.do_not_disturb).await;
    let req = alice.handle.dial(BOB, Offer::default());
    bob.incoming().await;
    alice
        .expect("pending", |e| matches!(e, Event::DialPending { req_id, .. } if *req_id == req).then_some(()))
        .await;
}

#[tokio::test]
async fn blocked_callers_get_unavailable_and_the_list_survives_reconnects() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut carol = server.user(CAROL, "Carol").await;
    let bob_token = server.account(BOB, "Bob").await;
    let mut bob = server.client(&bob_token, None).await;
    // National form, read in Bob's own country.
    bob.handle.set_blocked(vec!["030 123456".into()]);
    let list = bob
        .expect("block list", |e| match e {
            Event::Blocked { numbers } if !numbers.is_empty() => Some(numbers.clone()),
            _ => None,
        })
        .await;
    assert_eq!(list, vec![ALICE.to_string()]);
    let req = alice.handle.dial(BOB, Offer::default());
    assert_eq!(alice.dial_result(req).await, Outcome::Unavailable);
    let req = carol.handle.dial(BOB, Offer::default());
    bob.incoming().await;
    carol
        .expect("pending", |e| matches!(e, Event::DialPending { req_id, .. } if *req_id == req).then_some(()))
        .await;
    // A new device of Bob's is told the stored list.
    let mut laptop = server.client(&server.login(BOB, None).await, None).await;
    let stored = laptop
        .expect("block list", |e| match e {
            Event::Blocked { numbers } => Some(numbers.clone()),
            _ => None,
        })
        .await;
    assert_eq!(stored, vec![ALICE.to_string()]);
    // Invalid entries are refused, naming the number; the list stays.
    bob.handle.set_blocked(vec!["nonsense".into()]);
    let (code, msg) = bob.error().await;
    assert_eq!(code, ErrorCode::InvalidNumber);
    assert!(msg.contains("nonsense"), "{msg}");
    let req = alice.handle.dial(BOB, Offer::default());
    assert_eq!(alice.dial_result(req).await, Outcome::Unavailable);
}

#[tokio::test]
async fn every_common_format_reaches_the_same_user() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    for form in [
        "+49 151 23456789",
        "0049 151 2345 6789",
        "0151/23456789",
        "(0151) 234-567-89",
        "tel:+49-151-23456789",
    ] {
        let req = alice.handle.dial(form, Offer::default());
        let (sid, caller, _) = bob.incoming().await;
        assert_eq!(caller.number, ALICE, "{form}");
        bob.handle.answer(&sid, false);
        assert_eq!(alice.dial_result(req).await, Outcome::Declined, "{form}");
    }
    // A national number is read in the caller's own country unless told otherwise: read in
    // Austria, Bob's national number is somebody else's (or nobody's).
    let req = alice.handle.dial_with("0151 23456789", Offer::default(), Some("AT".into()), None);
    let outcome = alice.dial_result(req).await;
    assert!(matches!(outcome, Outcome::InvalidNumber { .. } | Outcome::Unavailable), "{outcome:?}");
    let seen = bob.drain(Duration::from_millis(200)).await;
    assert!(!seen.iter().any(|e| matches!(e, Event::Incoming { .. })), "{seen:?}");
}

#[tokio::test]
async fn invalid_and_own_numbers_are_refused_clearly() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    // "+999123" has the E.164 form but no country: only registered numbers skip the check.
    for bad in ["", "hello", "0151 9", "+999 123", "+999123"] {
        let req = alice.handle.dial(bad, Offer::default());
        match alice.dial_result(req).await {
            Outcome::InvalidNumber { reason } => assert!(!reason.is_empty(), "{bad}"),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
    let req = alice.handle.dial("030 123456", Offer::default());
    let code = alice
        .expect("failure", |e| match e {
            Event::DialFailed { req_id, code, .. } if *req_id == req => Some(*code),
            _ => None,
        })
        .await;
    assert_eq!(code, Some(ErrorCode::SelfRequest));
}

#[tokio::test]
async fn two_devices_ring_and_the_first_answer_wins() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let token1 = server.account(BOB, "Bob").await;
    let token2 = server.login(BOB, None).await;
    let mut desk = server.client(&token1, None).await;
    let mut laptop = server.client(&token2, None).await;

    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = desk.incoming().await;
    let (sid2, ..) = laptop.incoming().await;
    assert_eq!(sid, sid2);
    laptop.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    let reason = desk.closed(&sid).await;
    assert_eq!(reason, StopReason::AnsweredElsewhere);
    laptop.started().await;
    // The desk phone's late answer is refused.
    desk.handle.answer(&sid, true);
    let (code, _) = desk.error().await;
    assert_eq!(code, ErrorCode::AlreadyAnswered);

    // A decline on one device ends the request for all.
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, ..) = desk.incoming().await;
    laptop.incoming().await;
    desk.handle.answer(&sid, false);
    assert_eq!(alice.dial_result(req).await, Outcome::Declined);
    let reason = laptop.closed(&sid).await;
    assert_eq!(reason, StopReason::DeclinedElsewhere);
}

#[tokio::test]
async fn nothing_about_the_callee_reaches_the_caller_before_accept() {
    let server = TestServer::start().await;
    let secret_ip = "203.0.113.77";
    let alice_token = server.account(ALICE, "Alice").await;
    let bob_token = server.account(BOB, "Bobby Secretname").await;
    let mut bob = server.client(&bob_token, Some(secret_ip.parse().expect("ip"))).await;
    let mut alice = RawWs::login(&server, &alice_token).await;
    alice.send(&access(1, BOB)).await;
    let sid = match alice.next().await {
        Frame::Msg(ServerMsg::AccessPending { session_id, .. }) => session_id,
        other => panic!("expected pending, got {other:?}"),
    };
    // Signaling before accept is refused, and nothing is relayed.
    alice
        .send(&ClientMsg::Signal { session_id: sid.clone(), data: SignalData::Offer { sdp: "x".into() } })
        .await;
    assert_eq!(alice.expect_error().await, ErrorCode::SessionNotActive);
    let (bsid, ..) = bob.incoming().await;
    let before: Vec<String> = alice.transcript.clone();
    for text in &before {
        assert!(!text.contains(secret_ip) && !text.contains("Secretname"), "leaked before accept: {text}");
    }
    let bob_saw = bob.drain(Duration::from_millis(200)).await;
    assert!(!bob_saw.iter().any(|e| matches!(e, Event::Signal { .. })), "{bob_saw:?}");

    bob.handle.answer(&bsid, true);
    loop {
        match alice.next().await {
            Frame::Msg(ServerMsg::SessionStarted { peer, .. }) => {
                assert_eq!(peer.device_ip.map(|i| i.to_string()).as_deref(), Some(secret_ip));
                assert_eq!(peer.display_name, "Bobby Secretname");
                break;
            }
            Frame::Msg(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dropped_peer_ends_the_session_for_the_other() {
    let server = TestServer::start().await;
    let mut alice = server.user(ALICE, "Alice").await;
    let bob_token = server.account(BOB, "Bob").await;
    let mut bob = RawWs::login(&server, &bob_token).await;
    let req = alice.handle.dial(BOB, Offer::default());
    let sid = match bob.next().await {
        Frame::Msg(ServerMsg::Initiation { session_id, .. }) => session_id,
        other => panic!("{other:?}"),
    };
    bob.send(&ClientMsg::Answer { session_id: sid.clone(), accept: true }).await;
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    drop(bob);
    assert_eq!(alice.ended().await, (sid, StopReason::PeerDisconnected));
}

#[tokio::test]
async fn ringing_stops_when_the_caller_goes_offline() {
    let server = TestServer::start().await;
    let alice_token = server.account(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    let mut alice = RawWs::login(&server, &alice_token).await;
    alice.send(&access(9, BOB)).await;
    let (sid, ..) = bob.incoming().await;
    drop(alice);
    let reason = bob.closed(&sid).await;
    assert_eq!(reason, StopReason::CallerGone);
}
