//! The call-state machine, input by input: no sockets, no threads, no clock.

use super::*;
use crate::calls::WatcherStatus;
use crate::protocol::{PeerInfo, Settings};

const ALICE: &str = "+4915111111111";
const BOB: &str = "+4915122222222";

fn clock(secs: u64) -> Clock {
    // One fixed origin: `now` moves with `unix`.
    thread_local!(static ORIGIN: Instant = Instant::now());
    ORIGIN.with(|o| Clock { now: *o + Duration::from_secs(secs), unix: 1_700_000_000 + secs })
}

fn sid(s: &str) -> SessionId {
    SessionId(s.into())
}

fn party(number: &str) -> Party {
    Party { number: number.into(), display_name: format!("name of {number}"), verified: false }
}

fn peer(number: &str) -> PeerInfo {
    PeerInfo {
        number: number.into(),
        display_name: format!("name of {number}"),
        device_ip: None,
        observed_ip: Some("192.0.2.7".parse().expect("ip")),
    }
}

/// A model logged in and online, as Alice.
fn online() -> Model {
    let mut m = Model::new(AppState::new(AppSettings::default()));
    let profile = Profile {
        server: "http://127.0.0.1:7480".into(),
        number: ALICE.into(),
        token: Some("t".into()),
        ..Default::default()
    };
    m.view.profile = Some(profile);
    let fx = reduce(&mut m, Input::Start, clock(0));
    assert!(fx.iter().any(|e| matches!(e, Effect::GoOnline { .. })), "{fx:?}");
    server(&mut m, online_event(), 0);
    assert_eq!(m.view.connection, Connection::Online);
    m
}

fn online_event() -> Event {
    Event::Online {
        can_place_calls: false,
        extension: None,
        account: party(ALICE),
        device_id: 1,
        settings: Settings::default(),
        observed_ip: "192.0.2.1".parse().expect("ip"),
        answer_timeout_secs: 30,
        ice_servers: Vec::new(),
    }
}

fn cmd(m: &mut Model, c: AppCommand, t: u64) -> Vec<Effect> {
    reduce(m, Input::Command(c), clock(t))
}

fn server(m: &mut Model, ev: Event, t: u64) -> Vec<Effect> {
    reduce(m, Input::Server(ev), clock(t))
}

fn phone(m: &mut Model, ev: CallEvent) -> Vec<Effect> {
    reduce(m, Input::Watcher(WatcherEvent::Call(Source::Fritz, ev)), clock(0))
}

fn dialed(fx: &[Effect]) -> Option<u64> {
    fx.iter().find_map(|e| match e {
        Effect::Client(ClientCall::Dial { req_id, .. }) => Some(*req_id),
        _ => None,
    })
}

fn ends(fx: &[Effect]) -> Vec<SessionId> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Client(ClientCall::End { session_id }) => Some(session_id.clone()),
            _ => None,
        })
        .collect()
}

fn incoming(id: &str, from: &str, video: bool) -> Event {
    Event::Incoming {
        session_id: sid(id),
        caller: party(from),
        offer: Offer { files: true, video },
        expires_in_ms: 30_000,
        call_ref: None,
    }
}

fn started(id: &str, role: Role, video: bool) -> Event {
    Event::SessionStarted {
        session_id: sid(id),
        role,
        offer: Offer { files: true, video },
        peer: peer(BOB),
        relayed: false,
    }
}

/// Dials Bob; returns the request id.
fn dial_bob(m: &mut Model) -> u64 {
    let fx = cmd(m, AppCommand::Dial { target: BOB.into(), offer: Offer::default() }, 0);
    let req = dialed(&fx).expect("a dial effect");
    assert_eq!(m.view.outgoing.as_ref().map(|o| o.status.clone()), Some(OutgoingStatus::Dialing));
    req
}

#[test]
fn every_outcome_of_a_dial_lands_in_the_state_and_the_history() {
    let cases = [
        (Outcome::Declined, OutgoingStatus::Declined, Some(HistoryOutcome::Declined)),
        (Outcome::TimedOut, OutgoingStatus::NoAnswer, Some(HistoryOutcome::NoAnswer)),
        (Outcome::Unavailable, OutgoingStatus::Unavailable, Some(HistoryOutcome::Unavailable)),
        (Outcome::Cancelled, OutgoingStatus::Cancelled, Some(HistoryOutcome::Cancelled)),
        (
            Outcome::InvalidNumber { reason: "too short".into() },
            OutgoingStatus::InvalidNumber("too short".into()),
            Some(HistoryOutcome::Failed { reason: "too short".into() }),
        ),
        // An accepted request is written down when its session ends, with its length.
        (Outcome::Accepted, OutgoingStatus::Accepted, None),
    ];
    for (outcome, status, hist) in cases {
        let mut m = online();
        let req = dial_bob(&mut m);
        server(&mut m, Event::DialPending { req_id: req, session_id: sid("s1") }, 0);
        assert_eq!(m.view.outgoing.as_ref().map(|o| o.status.clone()), Some(OutgoingStatus::Ringing));
        let fx = server(&mut m, Event::DialResult { req_id: req, session_id: Some(sid("s1")), outcome }, 3);
        assert_eq!(m.view.outgoing.as_ref().map(|o| o.status.clone()), Some(status));
        assert_eq!(m.view.history.first().map(|h| h.outcome.clone()), hist.clone());
        assert_eq!(fx.contains(&Effect::SaveHistory), hist.is_some());
        if let Some(h) = m.view.history.first() {
            assert_eq!((h.direction, h.number.as_str(), h.at), (Direction::Outgoing, BOB, 1_700_000_003));
        }
    }
}

#[test]
fn a_failed_dial_and_a_result_for_another_request_are_told_apart() {
    let mut m = online();
    let req = dial_bob(&mut m);
    // A late answer to an earlier request changes nothing.
    server(&mut m, Event::DialResult { req_id: req + 7, session_id: None, outcome: Outcome::Declined }, 0);
    assert_eq!(m.view.outgoing.as_ref().map(|o| o.status.clone()), Some(OutgoingStatus::Dialing));
    let message = "the connection to the server was lost".to_string();
    server(&mut m, Event::DialFailed { req_id: req, code: None, message: message.clone() }, 0);
    assert_eq!(m.view.outgoing.as_ref().map(|o| o.status.clone()), Some(OutgoingStatus::Failed(message)));
}

#[test]
fn a_second_dial_while_one_rings_is_refused() {
    let mut m = online();
    dial_bob(&mut m);
    let fx = cmd(&mut m, AppCommand::Dial { target: "+4915133333333".into(), offer: Offer::default() }, 0);
    assert_eq!(dialed(&fx), None);
    assert!(m.view.notice.as_deref().is_some_and(|n| n.contains("already ringing")));
}

#[test]
fn request_ids_are_unique() {
    let mut m = online();
    let a = dial_bob(&mut m);
    server(&mut m, Event::DialResult { req_id: a, session_id: None, outcome: Outcome::Declined }, 0);
    let b = dial_bob(&mut m);
    assert_ne!(a, b);
}

#[test]
fn an_accepted_call_starts_the_data_side_and_its_end_is_written_down_with_its_length() {
    let mut m = online();
    let req = dial_bob(&mut m);
    server(&mut m, Event::DialPending { req_id: req, session_id: sid("s1") }, 0);
    server(
        &mut m,
        Event::DialResult { req_id: req, session_id: Some(sid("s1")), outcome: Outcome::Accepted },
        1,
    );
    let fx = server(&mut m, started("s1", Role::Caller, false), 1);
    assert!(
        fx.iter().any(|e| matches!(e, Effect::StartData { session_id, role: Role::Caller, video: None, .. } if *session_id == sid("s1"))),
        "{fx:?}"
    );
    assert_eq!(m.view.active.as_ref().map(|a| a.session_id.clone()), Some(sid("s1")));
    // Files and video commands reach the data side now.
    let fx = cmd(&mut m, AppCommand::SendFiles(vec!["/tmp/x".into()]), 2);
    assert_eq!(fx, vec![Effect::Data(DataCall::SendFiles(vec!["/tmp/x".into()]))]);
    let fx = server(&mut m, Event::SessionEnded { session_id: sid("s1"), reason: StopReason::PeerEnded }, 61);
    assert!(fx.contains(&Effect::SaveHistory));
    assert_eq!(m.view.active, None);
    assert_eq!(m.view.outgoing, None);
    assert_eq!(m.view.last_ended, Some(StopReason::PeerEnded));
    assert_eq!(m.view.history[0].outcome, HistoryOutcome::Completed { seconds: 60 });
    // No data side any more: files are refused with a word.
    let fx = cmd(&mut m, AppCommand::SendFiles(vec!["/tmp/x".into()]), 62);
    assert!(fx.is_empty());
    assert!(m.view.notice.as_deref().is_some_and(|n| n.contains("during a session")));
}

#[test]
fn incoming_rings_and_each_way_it_stops_is_recorded() {
    let cases = [
        (StopReason::TimedOut, Some(HistoryOutcome::Missed)),
        (StopReason::CallerGone, Some(HistoryOutcome::Missed)),
        (StopReason::Cancelled, Some(HistoryOutcome::Missed)),
        (StopReason::DeclinedElsewhere, Some(HistoryOutcome::Declined)),
        // Another of my devices took it: nothing to write down here.
        (StopReason::AnsweredElsewhere, None),
    ];
    for (reason, hist) in cases {
        let mut m = online();
        m.focused = false;
        let fx = server(&mut m, incoming("s9", BOB, false), 0);
        assert!(fx.iter().any(|e| matches!(e, Effect::StartRing { .. })), "{fx:?}");
        assert!(fx.iter().any(|e| matches!(e, Effect::Notify { .. })), "not focused: notify");
        assert!(fx.iter().any(|e| matches!(e, Effect::Attention { .. })));
        assert_eq!(m.view.incoming.len(), 1);
        assert_eq!(m.view.incoming[0].deadline, clock(30).now);
        let fx = server(&mut m, Event::IncomingClosed { session_id: sid("s9"), reason }, 5);
        assert!(fx.contains(&Effect::StopRing));
        assert!(m.view.incoming.is_empty());
        assert_eq!(m.view.history.first().map(|h| h.outcome.clone()), hist);
    }
}

#[test]
fn two_callers_ring_together_and_the_ring_stops_with_the_last() {
    let mut m = online();
    server(&mut m, incoming("a", BOB, false), 0);
    server(&mut m, incoming("b", "+4915133333333", false), 0);
    let fx = cmd(&mut m, AppCommand::Answer { session_id: sid("a"), accept: false }, 1);
    assert!(fx.contains(&Effect::Client(ClientCall::Answer { session_id: sid("a"), accept: false })));
    assert!(!fx.contains(&Effect::StopRing), "b still rings");
    assert_eq!(m.view.history[0].outcome, HistoryOutcome::Declined);
    let fx = cmd(&mut m, AppCommand::Answer { session_id: sid("b"), accept: true }, 2);
    assert!(fx.contains(&Effect::StopRing));
    assert_eq!(m.view.history.len(), 1, "an accepted request is written down when it ends");
}

#[test]
fn muted_focused_and_auto_accepted_requests() {
    let mut m = online();
    m.view.settings.ring_muted = true;
    let fx = server(&mut m, incoming("a", BOB, false), 0);
    assert!(!fx.iter().any(|e| matches!(e, Effect::StartRing { .. } | Effect::Notify { .. })), "{fx:?}");
    let mut m = online();
    m.view.settings.auto_accept = vec![BOB.into()];
    let fx = server(&mut m, incoming("a", BOB, false), 0);
    assert_eq!(fx, vec![Effect::Client(ClientCall::Answer { session_id: sid("a"), accept: true })]);
    assert!(m.view.incoming.is_empty());
}

#[test]
fn video_offered_turns_my_camera_on_unless_accepted_without_it() {
    let mut m = online();
    server(&mut m, incoming("a", BOB, true), 0);
    let fx = server(&mut m, started("a", Role::Callee, true), 1);
    assert!(fx.iter().any(|e| matches!(e, Effect::StartData { video: Some(_), .. })), "{fx:?}");
    assert_eq!(m.view.video.sending, VideoSending::Starting);

    let mut m = online();
    server(&mut m, incoming("b", BOB, true), 0);
    cmd(&mut m, AppCommand::AcceptWithoutVideo(sid("b")), 0);
    let fx = server(&mut m, started("b", Role::Callee, true), 1);
    assert!(fx.iter().any(|e| matches!(e, Effect::StartData { video: None, .. })), "{fx:?}");
    assert_eq!(m.view.video.sending, VideoSending::Off);

    let mut m = online();
    m.view.settings.video.camera_on_video_offer = false;
    let fx = server(&mut m, started("c", Role::Callee, true), 1);
    assert!(fx.iter().any(|e| matches!(e, Effect::StartData { video: None, .. })));
}

#[test]
fn the_phone_dials_and_hangs_up() {
    let mut m = online();
    let fx = phone(&mut m, CallEvent::Outgoing { call_ref: "c1".into(), number: "0151 22222222".into() });
    let req = dialed(&fx).expect("dialed for the phone call");
    assert_eq!(m.view.outgoing.as_ref().map(|o| o.target.as_str()), Some(BOB));
    server(&mut m, Event::DialPending { req_id: req, session_id: sid("s1") }, 0);
    server(
        &mut m,
        Event::DialResult { req_id: req, session_id: Some(sid("s1")), outcome: Outcome::Accepted },
        0,
    );
    server(&mut m, started("s1", Role::Caller, false), 0);
    assert_eq!(m.view.active.as_ref().and_then(|a| a.call_ref.as_deref()), Some("c1"));
    // Another call's end leaves the session alone; its own ends it.
    assert!(ends(&phone(&mut m, CallEvent::Ended { call_ref: "other".into() })).is_empty());
    assert_eq!(ends(&phone(&mut m, CallEvent::Ended { call_ref: "c1".into() })), vec![sid("s1")]);
}

#[test]
fn the_phone_hanging_up_while_the_request_rings_cancels_it() {
    let mut m = online();
    let fx = phone(&mut m, CallEvent::Outgoing { call_ref: "c1".into(), number: BOB.into() });
    let req = dialed(&fx).expect("dialed");
    server(&mut m, Event::DialPending { req_id: req, session_id: sid("s1") }, 0);
    assert_eq!(ends(&phone(&mut m, CallEvent::Ended { call_ref: "c1".into() })), vec![sid("s1")]);
}

/// The race fixed in f788a7d: the phone's hang-up reaches the core before the server's
/// `access_pending` with the session id. The request is ended as soon as the id arrives.
#[test]
fn the_phone_hanging_up_before_the_server_answered_ends_the_session_when_its_id_arrives() {
    let mut m = online();
    let fx = phone(&mut m, CallEvent::Outgoing { call_ref: "c1".into(), number: BOB.into() });
    let req = dialed(&fx).expect("dialed");
    let fx = phone(&mut m, CallEvent::Ended { call_ref: "c1".into() });
    assert!(ends(&fx).is_empty(), "no session id yet: nothing to end");
    let fx = server(&mut m, Event::DialPending { req_id: req, session_id: sid("s1") }, 0);
    assert_eq!(ends(&fx), vec![sid("s1")]);
    // Only once.
    let fx = server(&mut m, Event::DialPending { req_id: req, session_id: sid("s1") }, 0);
    assert!(ends(&fx).is_empty());
}

#[test]
fn a_hang_up_is_ignored_when_sessions_should_outlive_the_call() {
    let mut m = online();
    m.view.settings.end_with_call = false;
    let fx = phone(&mut m, CallEvent::Outgoing { call_ref: "c1".into(), number: BOB.into() });
    let req = dialed(&fx).expect("dialed");
    server(&mut m, Event::DialPending { req_id: req, session_id: sid("s1") }, 0);
    assert!(ends(&phone(&mut m, CallEvent::Ended { call_ref: "c1".into() })).is_empty());
}

#[test]
fn on_call_ask_prompts_and_off_does_nothing() {
    let mut m = online();
    m.view.settings.on_call = OnCall::Ask;
    let fx = phone(&mut m, CallEvent::Outgoing { call_ref: "c1".into(), number: BOB.into() });
    assert_eq!(dialed(&fx), None);
    assert_eq!(m.view.call_prompt, Some(("c1".into(), BOB.into())));
    let fx = cmd(&mut m, AppCommand::CallPrompt(true), 0);
    assert!(dialed(&fx).is_some());
    assert_eq!(m.view.call_prompt, None);

    let mut m = online();
    m.view.settings.on_call = OnCall::Off;
    assert_eq!(
        dialed(&phone(&mut m, CallEvent::Outgoing { call_ref: "c".into(), number: BOB.into() })),
        None
    );

    // A short number is an extension of the phone system: no session, and said so.
    let mut m = online();
    let fx = phone(&mut m, CallEvent::Outgoing { call_ref: "c".into(), number: "12".into() });
    assert_eq!(dialed(&fx), None);
    assert!(m.view.notice.as_deref().is_some_and(|n| n.contains("Internal call")), "{:?}", m.view.notice);
    // A number that cannot be read is said so too.
    let mut m = online();
    let fx = phone(&mut m, CallEvent::Outgoing { call_ref: "c".into(), number: "0123".into() });
    assert_eq!(dialed(&fx), None);
    assert!(m.view.notice.as_deref().is_some_and(|n| n.contains("cannot use")), "{:?}", m.view.notice);
}

#[test]
fn a_tel_link_before_the_connection_is_up_is_dialed_once_online() {
    let mut m = online();
    server(&mut m, Event::Offline { reason: "down".into(), retry_in_ms: 100 }, 0);
    let fx = cmd(&mut m, AppCommand::TelLink(BOB.into()), 0);
    assert_eq!(dialed(&fx), None);
    let fx = server(&mut m, online_event(), 1);
    assert!(dialed(&fx).is_some());
    assert_eq!(m.view.outgoing.as_ref().and_then(|o| o.call_ref.as_deref()), Some("tel:launch"));
}

#[test]
fn a_revoked_login_asks_to_log_in_again_and_forgets_the_token() {
    let mut m = online();
    server(&mut m, Event::LoggedOut { reason: "the device was removed".into() }, 0);
    assert_eq!(m.view.connection, Connection::LoggedOut);
    assert!(matches!(&m.view.login, LoginStatus::Failed { field: Some(Field::Password), .. }));
    assert_eq!(m.view.profile.as_ref().and_then(|p| p.token.clone()), None);
}

#[test]
fn logout_revokes_on_the_server_and_clears_the_calls() {
    let mut m = online();
    server(&mut m, incoming("a", BOB, false), 0);
    let fx = cmd(&mut m, AppCommand::Logout, 0);
    assert!(fx.contains(&Effect::Disconnect));
    assert!(fx.contains(&Effect::ServerLogout {
        server: "http://127.0.0.1:7480".into(),
        token: "t".into(),
        pin: None
    }));
    assert!(
        fx.iter().any(|e| matches!(e, Effect::SaveProfile(p) if p.token.is_none() && p.device_id.is_none()))
    );
    assert!(m.view.incoming.is_empty());
    assert_eq!(m.view.connection, Connection::LoggedOut);
    // Logged out: no more calls on the server connection.
    assert!(cmd(&mut m, AppCommand::Dial { target: BOB.into(), offer: Offer::default() }, 0).is_empty());
}

#[test]
fn login_through_the_hosted_server_hosts_first_then_logs_in_and_goes_online() {
    let mut m = Model::new(AppState::new(AppSettings::default()));
    let creds = Credentials {
        number: ALICE.into(),
        password: "secret-pw".into(),
        host_server: true,
        ..Default::default()
    };
    let fx = cmd(&mut m, AppCommand::Register(creds.clone()), 0);
    assert!(matches!(fx.as_slice(), [Effect::Host { .. }]), "{fx:?}");
    assert!(matches!(m.view.login, LoginStatus::Busy(_)));
    let hosting = Hosting {
        local_url: "https://127.0.0.1:7480".into(),
        lan_url: None,
        fingerprint: Some("AB:CD".into()),
    };
    let fx = reduce(&mut m, Input::Done(Done::Hosted(Ok(hosting))), clock(0));
    // Our own server's certificate is trusted without asking.
    assert!(
        matches!(fx.as_slice(), [Effect::Login { server_url, register: true, creds }]
            if server_url == "https://127.0.0.1:7480" && creds.pin.as_deref() == Some("AB:CD")),
        "{fx:?}"
    );
    assert_eq!(m.view.login, LoginStatus::Busy("Creating your account…".into()));
    let profile = Profile {
        server: "https://127.0.0.1:7480".into(),
        number: ALICE.into(),
        region: Some("AT".into()),
        token: Some("tok".into()),
        server_fingerprint: Some("AB:CD".into()),
        ..Default::default()
    };
    let done = Done::LoggedIn { profile: Box::new(profile), creds: Box::new(creds) };
    let fx = reduce(&mut m, Input::Done(done), clock(0));
    assert!(fx.iter().any(|e| matches!(e, Effect::SaveProfile(_))));
    assert!(fx.iter().any(|e| matches!(e, Effect::SaveSettings(s) if s.host_server && s.region == "AT")));
    assert!(fx.iter().any(|e| matches!(e, Effect::GoOnline { token, pin, .. } if token == "tok" && pin.as_deref() == Some("AB:CD"))));
    assert_eq!(m.view.login, LoginStatus::Idle);
    assert_eq!(m.view.connection, Connection::Connecting { attempt: 1 });
}

#[test]
fn login_problems_point_at_their_field() {
    let mut m = Model::new(AppState::new(AppSettings::default()));
    let creds = Credentials { server: "ht!tp://".into(), ..Default::default() };
    assert!(cmd(&mut m, AppCommand::Login(creds), 0).is_empty());
    assert!(matches!(m.view.login, LoginStatus::Failed { field: Some(Field::Server), .. }));
    let creds = Credentials { host_server: true, ..Default::default() };
    cmd(&mut m, AppCommand::Login(creds), 0);
    reduce(&mut m, Input::Done(Done::Hosted(Err("port 7480 is in use".into()))), clock(0));
    assert!(
        matches!(&m.view.login, LoginStatus::Failed { field: Some(Field::Server), message } if message.contains("in use"))
    );
}

#[test]
fn settings_are_cleaned_saved_and_restart_the_watchers_only_when_theirs_changed() {
    let mut m = online();
    let mut s = m.view.settings.clone();
    s.auto_accept = vec!["0151 22222222".into(), "  ".into(), "no number".into()];
    s.ring_volume = 3.0;
    let fx = cmd(&mut m, AppCommand::SaveSettings { settings: Box::new(s.clone()), blocked: vec![] }, 0);
    assert_eq!(m.view.settings.auto_accept, vec![BOB.to_string()]);
    assert_eq!(m.view.settings.ring_volume, 1.0);
    assert!(fx.iter().any(|e| matches!(e, Effect::SaveSettings(_))));
    assert!(!fx.iter().any(|e| matches!(e, Effect::StartWatchers(_))));
    assert!(m.view.notice.as_deref().is_some_and(|n| n.contains("not added to auto-accept")));
    s.fritz.enabled = true;
    s.fritz.host = "fritz.box".into();
    let fx = cmd(&mut m, AppCommand::SaveSettings { settings: Box::new(s), blocked: vec![BOB.into()] }, 0);
    assert!(fx.iter().any(|e| matches!(e, Effect::StartWatchers(_))));
    assert!(fx.contains(&Effect::Client(ClientCall::SetBlocked(vec![BOB.into()]))));
}

#[test]
fn watcher_status_is_kept_per_source() {
    let mut m = online();
    let st = |m: &mut Model, s| reduce(m, Input::Watcher(WatcherEvent::Status(Source::Ami, s)), clock(0));
    st(&mut m, WatcherStatus::Connecting);
    st(&mut m, WatcherStatus::Connected);
    assert_eq!(m.view.watchers, vec![(Source::Ami, WatcherStatus::Connected)]);
    // Turning the watchers over forgets the old statuses (as before the split).
    let mut s = m.view.settings.clone();
    s.ami.enabled = true;
    s.ami.host = "pbx.local".into();
    cmd(&mut m, AppCommand::SaveSettings { settings: Box::new(s), blocked: vec![] }, 0);
    assert!(m.view.watchers.is_empty(), "{:?}", m.view.watchers);
}

#[test]
fn file_rows_follow_their_transfers() {
    let mut files = Vec::new();
    let t0 = clock(0).now;
    transfer_event(&mut files, TransferEvent::Preparing { name: "a.bin".into(), size: 10 }, true, t0);
    transfer_event(&mut files, TransferEvent::Offered { id: 4, name: "a.bin".into(), size: 10 }, true, t0);
    assert_eq!((files[0].id, files[0].status.clone()), (4, FileStatus::Waiting));
    let started =
        TransferEvent::Started { id: 4, way: Way::Sending, name: "a.bin".into(), offset: 2, size: 10 };
    transfer_event(&mut files, started, true, t0);
    let progress = TransferEvent::Progress { id: 4, way: Way::Sending, bytes: 6, size: 10 };
    transfer_event(&mut files, progress, true, clock(2).now);
    assert_eq!(files[0].speed, 2.0, "4 bytes in 2 s");
    transfer_event(&mut files, TransferEvent::ChannelClosed, true, t0);
    assert!(matches!(files[0].status, FileStatus::Failed(_)));
}

#[test]
fn a_self_signed_server_is_trusted_only_when_the_user_says_so() {
    let mut m = Model::new(AppState::new(AppSettings::default()));
    let creds =
        Credentials { server: "https://10.0.0.2:7480".into(), number: ALICE.into(), ..Default::default() };
    let fx = cmd(&mut m, AppCommand::Register(creds.clone()), 0);
    assert!(matches!(fx.as_slice(), [Effect::Login { creds, .. }] if creds.pin.is_none()), "{fx:?}");
    let untrusted = Done::LoginUntrusted {
        creds: Box::new(creds.clone()),
        register: false,
        url: "https://10.0.0.2:7480".into(),
        fingerprint: "AB:CD".into(),
    };
    reduce(&mut m, Input::Done(untrusted), clock(0));
    assert!(matches!(&m.view.login, LoginStatus::Untrusted { fingerprint, .. } if fingerprint == "AB:CD"));
    // Some other fingerprint than the one shown is not a yes.
    let fx = cmd(&mut m, AppCommand::TrustServer { fingerprint: "EE:FF".into() }, 0);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(m.view.login, LoginStatus::Idle);
    // Asked again and trusted: the login goes on, pinned, and only logs in.
    let untrusted = Done::LoginUntrusted {
        creds: Box::new(creds),
        register: false,
        url: "https://10.0.0.2:7480".into(),
        fingerprint: "AB:CD".into(),
    };
    reduce(&mut m, Input::Done(untrusted), clock(0));
    let fx = cmd(&mut m, AppCommand::TrustServer { fingerprint: "AB:CD".into() }, 0);
    assert!(
        matches!(fx.as_slice(), [Effect::Login { creds, register: false, .. }] if creds.pin.as_deref() == Some("AB:CD")),
        "{fx:?}"
    );
    // Declining sends nothing.
    reduce(
        &mut m,
        Input::Done(Done::LoginUntrusted {
            creds: Box::new(Credentials::default()),
            register: true,
            url: "u".into(),
            fingerprint: "AB:CD".into(),
        }),
        clock(0),
    );
    let fx = cmd(&mut m, AppCommand::DistrustServer, 0);
    assert!(fx.is_empty());
    assert!(matches!(m.view.login, LoginStatus::Failed { field: Some(Field::Server), .. }));
}

#[test]
fn a_placed_call_shows_its_stages_and_a_failure_in_plain_words() {
    use crate::protocol::{CallFailure, CallStage};
    let mut m = online();
    // No PBX on the server: nothing is sent.
    assert!(cmd(&mut m, AppCommand::Call { target: BOB.into(), offer: Offer::default() }, 0).is_empty());
    m.view.can_place_calls = true;
    let fx = cmd(&mut m, AppCommand::Call { target: BOB.into(), offer: Offer::default() }, 0);
    let req_id = match fx.as_slice() {
        [Effect::Client(ClientCall::Dial { req_id, place_call: true, .. })] => *req_id,
        other => panic!("{other:?}"),
    };
    let sid = SessionId("c1".into());
    for stage in [CallStage::Dialing, CallStage::Answered] {
        server(&mut m, Event::CallProgress { req_id, session_id: sid.clone(), stage }, 0);
        assert_eq!(m.view.outgoing.as_ref().map(|o| o.status.clone()), Some(OutgoingStatus::Calling(stage)));
    }
    let failed = Event::DialResult {
        req_id,
        session_id: Some(sid),
        outcome: Outcome::CallFailed { reason: CallFailure::Busy },
    };
    server(&mut m, failed, 0);
    assert_eq!(
        m.view.outgoing.as_ref().map(|o| o.status.clone()),
        Some(OutgoingStatus::Failed(CallFailure::Busy.describe().into()))
    );
}

#[test]
fn with_start_when_answered_the_session_waits_for_the_phone_call_to_connect() {
    let mut m = online();
    m.view.settings.start_when = crate::app::StartWhen::Answered;
    let dialed = CallEvent::Outgoing { call_ref: "fritz:1".into(), number: "015123456789".into() };
    assert!(dialed_req(&phone(&mut m, dialed.clone())).is_none(), "not at dialing");
    // Never answered: no session at all.
    phone(&mut m, CallEvent::Ended { call_ref: "fritz:1".into() });
    assert!(dialed_req(&phone(&mut m, CallEvent::Connected { call_ref: "fritz:1".into() })).is_none());
    // Answered: now.
    phone(&mut m, CallEvent::Outgoing { call_ref: "fritz:2".into(), number: "015123456789".into() });
    assert!(
        dialed_req(&phone(&mut m, CallEvent::Connected { call_ref: "fritz:9".into() })).is_none(),
        "another call"
    );
    assert!(dialed_req(&phone(&mut m, CallEvent::Connected { call_ref: "fritz:2".into() })).is_some());
}

#[test]
fn a_tel_link_can_have_the_server_place_the_call() {
    let mut m = online();
    m.view.settings.tel_places_call = true;
    m.view.can_place_calls = true;
    let fx = cmd(&mut m, AppCommand::TelLink("+4915123456789".into()), 0);
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Client(ClientCall::Dial { place_call: true, .. }))),
        "{fx:?}"
    );
}

fn dialed_req(fx: &[Effect]) -> Option<u64> {
    dialed(fx)
}

#[test]
fn the_call_button_without_a_pbx_dials_from_the_fritz_box_and_the_session_follows_its_connect() {
    let mut m = online();
    m.view.settings.fritz = crate::app::FritzSettings {
        enabled: true,
        host: "fritz.box".into(),
        dial: true,
        username: "u".into(),
        password: "p".into(),
        handset: String::new(),
    };
    let fx = cmd(&mut m, AppCommand::Call { target: "0151 23456789".into(), offer: Offer::default() }, 0);
    assert!(
        matches!(fx.as_slice(), [Effect::FritzDial(cfg, n)] if n == "+4915123456789" && cfg.base == "http://fritz.box:49000"),
        "{fx:?}"
    );
    // The box dials: its call monitor reports the call; no session yet.
    let out = CallEvent::Outgoing { call_ref: "fritz:3".into(), number: "015123456789".into() };
    assert!(dialed(&phone(&mut m, out)).is_none());
    // The other side picks up: now the session is requested.
    assert!(dialed(&phone(&mut m, CallEvent::Connected { call_ref: "fritz:3".into() })).is_some());
}

fn creds() -> Credentials {
    Credentials {
        server: "http://127.0.0.1:7480".into(),
        number: "030 123456".into(),
        display_name: "Alice".into(),
        password: "correct horse".into(),
        region: "DE".into(),
        ..Default::default()
    }
}

fn pending(method: crate::protocol::VerifyMethod, digits: u8) -> Done {
    Done::VerificationPending {
        creds: Box::new(creds()),
        server_url: "http://127.0.0.1:7480".into(),
        verification: crate::protocol::Verification {
            id: "v1".into(),
            number: "+4930123456".into(),
            method,
            expires_in_s: 600,
            digits,
            caller_prefix: (method == crate::protocol::VerifyMethod::Call).then(|| "+4930555".into()),
        },
        message: "a code is on its way".into(),
    }
}

fn done(m: &mut Model, d: Done) -> Vec<Effect> {
    reduce(m, Input::Done(d), clock(0))
}

#[test]
fn the_verification_call_ringing_on_the_watched_phone_sends_its_code() {
    use crate::protocol::{ErrorCode, VerifiedResponse, VerifyAnswer, VerifyMethod};
    let mut m = Model::new(AppState::new(AppSettings::default()));
    reduce(&mut m, Input::Watcher(WatcherEvent::Status(Source::Fritz, WatcherStatus::Connected)), clock(0));
    done(&mut m, pending(VerifyMethod::Call, 4));
    let LoginStatus::Verifying(v) = &m.view.login else { panic!("{:?}", m.view.login) };
    assert!(v.automatic);
    // Another caller first: nothing is sent.
    assert!(
        phone(&mut m, CallEvent::Incoming { call_ref: "f:1".into(), caller: Some("0301111".into()) })
            .is_empty()
    );
    let fx = phone(&mut m, CallEvent::Incoming { call_ref: "f:2".into(), caller: Some("0305550042".into()) });
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Verify { id, code: Some(c), .. } if id == "v1" && c == "0042")),
        "{fx:?}"
    );
    // A wrong one (say the box showed another number): the message, and the field again.
    done(
        &mut m,
        Done::Verified {
            id: "v1".into(),
            result: Err((Some(ErrorCode::WrongCode), "wrong code: 4 tries left".into())),
        },
    );
    let LoginStatus::Verifying(v) = &m.view.login else { panic!() };
    assert_eq!((v.checking, v.error.as_deref()), (false, Some("wrong code: 4 tries left")));
    let fx = cmd(&mut m, AppCommand::SubmitCode(" 00 42 ".into()), 0);
    assert!(fx.iter().any(|e| matches!(e, Effect::Verify { code: Some(c), .. } if c == "0042")));
    let ok = VerifiedResponse { number: "+4930123456".into(), display_name: "Alice".into(), claimed: true };
    let fx = done(&mut m, Done::Verified { id: "v1".into(), result: Ok(VerifyAnswer::Done(ok)) });
    assert!(fx.iter().any(|e| matches!(e, Effect::Login { register: false, .. })), "logs in: {fx:?}");
    assert!(m.view.notice.as_deref().is_some_and(|n| n.contains("logged out")), "a claim is said");
}

#[test]
fn waiting_for_an_administrator_asks_again_until_cancelled_or_expired() {
    use crate::protocol::{ErrorCode, VerifyAnswer, VerifyMethod, VerifyWaiting};
    let mut m = Model::new(AppState::new(AppSettings::default()));
    let fx = done(&mut m, pending(VerifyMethod::Admin, 0));
    assert!(fx.iter().any(|e| matches!(e, Effect::Verify { code: None, delay_ms: 5000, .. })), "{fx:?}");
    let waiting = VerifyAnswer::Waiting(VerifyWaiting { waiting: true, message: "w".into() });
    let fx = done(&mut m, Done::Verified { id: "v1".into(), result: Ok(waiting.clone()) });
    assert!(fx.iter().any(|e| matches!(e, Effect::Verify { code: None, .. })), "asks again");
    cmd(&mut m, AppCommand::CancelVerification, 0);
    assert_eq!(m.view.login, LoginStatus::Idle);
    let fx = done(&mut m, Done::Verified { id: "v1".into(), result: Ok(waiting) });
    assert!(fx.is_empty(), "a late answer after cancelling does nothing: {fx:?}");
    // Expired: back to the form with the reason.
    done(&mut m, pending(VerifyMethod::Admin, 0));
    done(
        &mut m,
        Done::Verified { id: "v1".into(), result: Err((Some(ErrorCode::CodeExpired), "expired".into())) },
    );
    assert!(matches!(&m.view.login, LoginStatus::Failed { message, .. } if message.contains("expired")));
}

/// Plays a watcher's whole stream into the core; returns the numbers it requested sessions
/// with and the notices it showed. Each request is answered `unavailable` at once.
fn replay(source: Source, events: Vec<CallEvent>) -> (Vec<String>, Vec<String>) {
    let mut m = online();
    m.view.settings.area_code = "030".into();
    let (mut targets, mut notices) = (Vec::new(), Vec::new());
    for ev in events {
        let fx = reduce(&mut m, Input::Watcher(WatcherEvent::Call(source, ev)), clock(0));
        if let Some(req) = dialed(&fx) {
            targets.push(m.view.outgoing.as_ref().map(|o| o.target.clone()).unwrap_or_default());
            let result = Event::DialResult { req_id: req, session_id: None, outcome: Outcome::Unavailable };
            server(&mut m, result, 0);
        }
        if let Some(n) = m.view.notice.take() {
            notices.push(n);
        }
    }
    (targets, notices)
}

const WANTED: [&str; 3] = ["+4915123456789", "+4930987654", "+4930555555"];

fn internal_notices(notices: &[String]) {
    for what in ["**610", "*21#", "21"] {
        assert!(
            notices.iter().any(|n| n.starts_with("Internal call") && n.contains(what)),
            "{what} said to be internal: {notices:?}"
        );
    }
}

#[test]
fn a_recorded_fritzbox_stream_requests_only_numbers_outside_read_right() {
    let stream = "\
02.12.26 10:00:00;CALL;1;11;4930123456;**610;SIP0;
02.12.26 10:00:05;DISCONNECT;1;0;
02.12.26 10:01:00;CALL;2;11;4930123456;*21#;SIP0;
02.12.26 10:01:01;DISCONNECT;2;0;
02.12.26 10:02:00;CALL;3;11;4930123456;01013015123456789#;SIP0;
02.12.26 10:02:30;DISCONNECT;3;30;
02.12.26 10:03:00;CALL;4;11;4930123456;004930987654#;SIP0;
02.12.26 10:03:10;CONNECT;4;11;004930987654;
02.12.26 10:04:00;DISCONNECT;4;50;
02.12.26 10:05:00;RING;5;015123456789;4930123456;SIP0;
02.12.26 10:05:20;DISCONNECT;5;0;
02.12.26 10:06:00;CALL;6;11;4930123456;21;SIP0;
02.12.26 10:07:00;CALL;7;11;4930123456;555555#;SIP0;
";
    let events: Vec<CallEvent> =
        stream.lines().map(|l| crate::calls::fritz::parse_line(l).expect("a call monitor line")).collect();
    let (targets, notices) = replay(Source::Fritz, events);
    assert_eq!(targets, WANTED, "{notices:?}");
    internal_notices(&notices);
}

#[test]
fn a_recorded_asterisk_stream_requests_only_numbers_outside_read_right() {
    let dial = |id: &str, dest_num: &str| {
        format!(
            "Event: DialBegin\nChannel: PJSIP/201-0000{id}\nUniqueid: {id}\nLinkedid: {id}\nDestChannel: PJSIP/trunk-0000{id}\nDestCallerIDNum: {dest_num}"
        )
    };
    let hangup = |id: &str| {
        format!("Event: Hangup\nChannel: PJSIP/201-0000{id}\nUniqueid: {id}\nLinkedid: {id}\nCause: 16")
    };
    let stream = [
        dial("01", "**610"),
        hangup("01"),
        dial("02", "*21#"),
        hangup("02"),
        // Another extension's call is not ours.
        "Event: DialBegin\nChannel: PJSIP/202-00000009\nUniqueid: 09\nLinkedid: 09\nDestCallerIDNum: 030111111".into(),
        dial("03", "01013015123456789#"),
        hangup("03"),
        dial("04", "004930987654#"),
        hangup("04"),
        dial("05", "21"),
        hangup("05"),
        dial("06", "555555#"),
        hangup("06"),
    ];
    let mut tracker = crate::calls::ami::Tracker::default();
    let events: Vec<CallEvent> = stream
        .iter()
        .filter_map(|text| {
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            tracker.event(&crate::ami::parse_message(&lines), "201")
        })
        .collect();
    let (targets, notices) = replay(Source::Ami, events);
    assert_eq!(targets, WANTED, "{notices:?}");
    internal_notices(&notices);
}

#[test]
fn recorded_desk_phone_action_urls_request_only_numbers_outside_read_right() {
    // What a desk phone puts into its outgoing-call action URL's $remote, call after call.
    let remotes = ["**610", "*21#", "01013015123456789#", "004930987654#", "21", "555555#"];
    let events = remotes
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            let call_ref = format!("phone:{i}");
            [
                CallEvent::Outgoing { call_ref: call_ref.clone(), number: r.to_string() },
                CallEvent::Ended { call_ref },
            ]
        })
        .collect();
    let (targets, notices) = replay(Source::Phone, events);
    assert_eq!(targets, WANTED, "{notices:?}");
    internal_notices(&notices);
}
