//! The desktop window, driven through its accessibility tree (labels and roles) with
//! egui_kittest: each screen against a scripted core, then two whole apps against the real
//! server.

use crate::fixture::*;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use sidecall::app::{
    self, Active, AppCommand, AppEvent, AppHandle, AppPaths, AppSettings, AppState, Connection, Direction,
    HistoryEntry, HistoryOutcome, Ringing, VideoSending,
};
use sidecall::media::video::VideoSource;
use sidecall::protocol::{Offer, Party, PeerInfo, Role as SessionRole, SessionId};
use sidecall::ui::SidecallApp;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tmpsc;

/// A window on a scripted core: the test plays the core's part.
struct Scripted {
    harness: Harness<'static, SidecallApp>,
    commands: tmpsc::UnboundedReceiver<AppCommand>,
    events: mpsc::Sender<AppEvent>,
}

impl Scripted {
    fn new(state: AppState) -> Self {
        let (cmd_tx, commands) = tmpsc::unbounded_channel();
        let (events, ev_rx) = mpsc::channel();
        let app = SidecallApp::new(AppHandle::from_sender(cmd_tx), ev_rx);
        let harness = Harness::builder()
            .with_size([800.0, 700.0])
            .build_ui_state(|ui, app: &mut SidecallApp| app.show(ui), app);
        let mut s = Scripted { harness, commands, events };
        s.set(state);
        s
    }

    fn set(&mut self, state: AppState) {
        self.events.send(AppEvent::State(Box::new(state))).expect("window alive");
        self.harness.run_steps(3);
    }

    /// Commands the window sent since the last call (focus reports left out).
    fn sent(&mut self) -> Vec<AppCommand> {
        let mut out = Vec::new();
        while let Ok(c) = self.commands.try_recv() {
            if !matches!(c, AppCommand::WindowFocused(_)) {
                out.push(c);
            }
        }
        out
    }

    fn type_into(&mut self, label: &str, text: &str) {
        type_into(&mut self.harness, label, text);
    }

    fn click(&mut self, label: &str) {
        self.harness.get_by_label(label).click();
        self.harness.run_steps(3);
    }

    fn shows(&self, text: &str) -> bool {
        self.harness.query_all_by_label_contains(text).next().is_some()
    }
}

fn type_into(h: &mut Harness<'_, SidecallApp>, label: &str, text: &str) {
    let role = [Role::TextInput, Role::PasswordInput, Role::MultilineTextInput]
        .into_iter()
        .find(|r| h.query_by_role_and_label(*r, label).is_some())
        .unwrap_or_else(|| panic!("no text field labelled {label:?}"));
    h.get_by_role_and_label(role, label).focus();
    h.run_steps(2);
    h.get_by_role_and_label(role, label).type_text(text);
    h.run_steps(2);
}

fn online(number: &str, name: &str) -> AppState {
    let mut s = AppState::new(AppSettings::default());
    s.connection = Connection::Online;
    s.account = Some(Party { number: number.into(), display_name: name.into(), verified: true });
    s
}

#[test]
fn login_form_checks_its_fields_before_asking_the_server() {
    let mut w = Scripted::new(AppState::new(AppSettings::default()));
    // First run: hosting here is offered and chosen.
    assert!(w.shows("This computer"));
    w.click("Host a server on this computer");
    assert!(w.harness.query_by_role_and_label(Role::TextInput, "Server address").is_some());

    w.click("Log in");
    assert!(w.shows("Enter the server address"), "empty server is refused");
    w.type_into("Server address", "127.0.0.1:7480");
    w.type_into("Phone number", "030 12x");
    assert!(w.shows("is not a phone number"), "shown while typing");
    w.click("Log in");
    assert!(w.shows("Phone number:"));
    assert!(w.sent().iter().all(|c| !matches!(c, AppCommand::Login(_))), "nothing sent for a bad form");

    // Fix the number: it is shown formatted as typed.
    w.harness.get_by_role_and_label(Role::TextInput, "Phone number").focus();
    w.harness.run_steps(1);
    for _ in 0..3 {
        w.harness.key_press(egui::Key::Backspace);
    }
    w.harness.run_steps(1);
    w.type_into("Phone number", "123456");
    assert!(w.shows("+49 30 123456"), "formatted preview");
    w.click("Create account");
    assert!(w.shows("Enter the name others see"));
    w.type_into("Display name", "Alice");
    w.type_into("Password", "short");
    w.click("Create account");
    assert!(w.shows("at least 8 characters"));
    w.type_into("Password", " but longer");
    w.type_into("Device IP address", "192.168.1.20");
    w.click("Create account");
    let sent = w.sent();
    let creds = sent
        .iter()
        .find_map(|c| match c {
            AppCommand::Register(c) => Some(c.clone()),
            _ => None,
        })
        .expect("register sent");
    assert_eq!(creds.server, "127.0.0.1:7480");
    assert_eq!(creds.number, "030 123456");
    assert_eq!(creds.display_name, "Alice");
    assert_eq!(creds.password, "short but longer");
    assert_eq!(creds.region, "DE");
    assert_eq!(creds.device_ip, Some("192.168.1.20".parse().expect("ip")));
    assert!(!creds.host_server);

    // The core's refusal is shown in plain words.
    let mut s = AppState::new(AppSettings::default());
    s.login = app::LoginStatus::Failed {
        field: Some(app::Field::Password),
        message: "wrong phone number or password".into(),
    };
    w.set(s);
    assert!(w.shows("wrong phone number or password"));

    // A self-signed server: its fingerprint is shown, and only a click trusts it.
    let mut s = AppState::new(AppSettings::default());
    s.login =
        app::LoginStatus::Untrusted { url: "https://10.0.0.2:7480".into(), fingerprint: "AB:CD:EF".into() };
    w.set(s);
    assert!(w.shows("has a self-signed certificate"));
    assert!(w.shows("AB:CD:EF"));
    assert!(w.sent().is_empty(), "nothing trusted by itself");
    w.click("Trust this server");
    assert!(
        w.sent()
            .iter()
            .any(|c| matches!(c, AppCommand::TrustServer { fingerprint } if fingerprint == "AB:CD:EF")),
        "trusting sends the fingerprint shown"
    );
}

#[test]
fn dialing_by_hand_in_any_format() {
    let mut w = Scripted::new(online(ALICE, "Alice"));
    assert!(w.shows("Online as Alice (+4930123456)"));
    w.type_into("Number to call", "0151-2345 6789");
    assert!(w.shows("Calling +49 1512 3456789"), "shown as the number is formatted in its country");
    w.harness.get_by_label("Video").click();
    w.click("Start session");
    let dial = w.sent().into_iter().find_map(|c| match c {
        AppCommand::Dial { target, offer } => Some((target, offer)),
        _ => None,
    });
    assert_eq!(dial, Some(("0151-2345 6789".to_string(), Offer { files: true, video: true })));

    // The request's progress, then its outcome.
    let mut s = online(ALICE, "Alice");
    s.outgoing = Some(app::Outgoing {
        req_id: 1,
        target: "0151-2345 6789".into(),
        offer: Offer::default(),
        session_id: Some(SessionId("s1".into())),
        status: app::OutgoingStatus::Ringing,
        call_ref: None,
    });
    w.set(s.clone());
    assert!(w.shows("Waiting for +49 1512 3456789 to accept"));
    w.click("Cancel");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::End { session_id } if session_id.0 == "s1")));
    if let Some(o) = s.outgoing.as_mut() {
        o.status = app::OutgoingStatus::Declined;
    }
    w.set(s);
    assert!(w.shows("declined"));

    // Offline: no dialing, and the reason is shown.
    let mut s = online(ALICE, "Alice");
    s.connection = Connection::Offline { reason: "cannot reach http://x".into(), retry_in_ms: 4000 };
    w.set(s);
    assert!(w.shows("Offline: cannot reach http://x"));
    assert!(w.shows("You can start a session when online"));
}

#[test]
fn the_call_button_places_the_phone_call_and_shows_its_stages() {
    // Without a PBX on the server there is no Call button.
    let mut w = Scripted::new(online(ALICE, "Alice"));
    w.type_into("Number to call", "0151 23456789");
    assert!(w.harness.query_by_label("Call").is_none());
    let mut s = online(ALICE, "Alice");
    s.can_place_calls = true;
    s.extension = Some("201".into());
    w.set(s.clone());
    w.click("Call");
    let sent = w.sent();
    assert!(
        sent.iter().any(|c| matches!(c, AppCommand::Call { target, .. } if target == "0151 23456789")),
        "{sent:?}"
    );
    s.outgoing = Some(app::Outgoing {
        req_id: 1,
        target: "0151 23456789".into(),
        offer: Offer::default(),
        session_id: Some(SessionId("s2".into())),
        status: app::OutgoingStatus::Calling(sidecall::protocol::CallStage::CallingYou),
        call_ref: None,
    });
    w.set(s.clone());
    assert!(w.shows("Calling your phone: pick it up"));
    if let Some(o) = s.outgoing.as_mut() {
        o.status = app::OutgoingStatus::Calling(sidecall::protocol::CallStage::Dialing);
    }
    w.set(s);
    assert!(w.shows("Dialing +49 1512 3456789"));
    w.click("Cancel");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::End { session_id } if session_id.0 == "s2")));
}

fn ringing_state() -> AppState {
    let mut s = online(BOB, "Bob");
    s.incoming.push(Ringing {
        session_id: SessionId("s9".into()),
        caller: Party { number: ALICE.into(), display_name: "Alice".into(), verified: true },
        offer: Offer { files: true, video: true },
        deadline: Instant::now() + Duration::from_secs(30),
        marks: sidecall::app::Marks { verified: true, call_match: None },
        accept_on_match: false,
    });
    s
}

#[test]
fn incoming_prompt_accepts_and_declines() {
    let mut w = Scripted::new(ringing_state());
    assert!(w.shows("Incoming data session"));
    assert!(w.shows("Alice"));
    assert!(w.shows("offers files, video"));
    assert!(w.shows("Answer within"));
    w.click("Accept");
    let answers: Vec<_> = w
        .sent()
        .into_iter()
        .filter_map(|c| match c {
            AppCommand::Answer { session_id, accept } => Some((session_id.0, accept)),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![("s9".to_string(), true)]);

    // Video offered: the prompt says my video turns on, or I keep it off.
    let mut w = Scripted::new(ringing_state());
    assert!(w.shows("Your video turns on when you accept"));
    w.click("Accept, my video off");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::AcceptWithoutVideo(s) if s.0 == "s9")));

    let mut w = Scripted::new(ringing_state());
    w.click("Decline");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::Answer { accept: false, .. })));
    // Once the core says it stopped ringing, the prompt is gone.
    w.set(online(BOB, "Bob"));
    assert!(!w.shows("Incoming data session"));
}

#[test]
fn availability_toggles_and_session_panel() {
    let mut w = Scripted::new(online(BOB, "Bob"));
    w.click("Do not disturb");
    w.click("Take data sessions");
    let sent = w.sent();
    assert!(sent.iter().any(|c| matches!(c, AppCommand::SetDoNotDisturb(true))), "{sent:?}");
    assert!(sent.iter().any(|c| matches!(c, AppCommand::SetAccepting(false))), "{sent:?}");

    let mut s = online(BOB, "Bob");
    s.active = Some(session_with_alice("s2", SessionRole::Callee, Offer { files: true, video: false }));
    w.set(s);
    assert!(w.shows("In session with Alice"));
    assert!(w.shows("198.51.100.4"));
    w.click("End session");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::End { session_id } if session_id.0 == "s2")));
}

#[test]
fn history_lists_every_kind_of_entry() {
    let mut s = online(BOB, "Bob");
    let entry = |direction, outcome| HistoryEntry {
        at: 1_790_000_000,
        direction,
        number: ALICE.into(),
        name: Some("Alice".into()),
        outcome,
        verified: None,
        call_match: None,
    };
    s.history = vec![
        entry(Direction::Incoming, HistoryOutcome::Missed),
        entry(Direction::Incoming, HistoryOutcome::Declined),
        entry(Direction::Outgoing, HistoryOutcome::Completed { seconds: 65 }),
        entry(Direction::Outgoing, HistoryOutcome::Unavailable),
    ];
    let mut w = Scripted::new(s.clone());
    for text in ["missed", "declined", "session, 1:05", "unavailable", "Alice (+4930123456)"] {
        assert!(w.shows(text), "history shows {text:?}");
    }
    assert!(!w.shows("matched the call") && !w.shows("unverified number"), "no marks where none were known");
    // Incoming requests keep what was known of them.
    s.history[0].call_match = Some(sidecall::calls::linked::CallMatch::NotLinked);
    s.history[0].verified = Some(false);
    s.history[1].call_match = Some(sidecall::calls::linked::CallMatch::Matches);
    s.history[1].verified = Some(true);
    w.set(s);
    for text in ["not linked", "matched the call", "unverified number"] {
        assert!(w.shows(text), "history shows {text:?}");
    }
}

#[test]
fn settings_window_saves_lists() {
    let mut w = Scripted::new(online(BOB, "Bob"));
    w.click("Settings");
    assert!(w.shows("Ring volume"));
    w.click("Mute the ring");
    type_into(&mut w.harness, "Blocked numbers (one per line; they see you as unavailable)", "030 123456");
    type_into(&mut w.harness, "Accept automatically from (one number per line)", "+44 20 7946 0000");
    w.click("Save");
    let saved = w.sent().into_iter().find_map(|c| match c {
        AppCommand::SaveSettings { settings, blocked } => Some((*settings, blocked)),
        _ => None,
    });
    let (settings, blocked) = saved.expect("saved");
    assert!(settings.ring_muted);
    assert_eq!(settings.auto_accept, vec!["+44 20 7946 0000".to_string()]);
    assert_eq!(blocked, vec!["030 123456".to_string()]);
}

// ---- two whole apps against the real server ----

struct Live {
    h: Harness<'static, SidecallApp>,
    _dir: tempfile::TempDir,
}

impl Live {
    /// A whole app whose settings file starts with `settings` (TOML).
    fn start_with_settings(settings: &str) -> Live {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = AppPaths {
            config_dir: dir.path().join("config"),
            data_dir: dir.path().join("data"),
            profile: "default".into(),
        };
        std::fs::create_dir_all(paths.config_dir.join("profiles")).expect("profiles");
        let settings = settings.replace("$DIR", &dir.path().display().to_string());
        std::fs::write(paths.config_dir.join("profiles/default.settings.toml"), settings).expect("settings");
        let app = SidecallApp::start_with(paths, true);
        let h = Harness::builder()
            .with_size([800.0, 700.0])
            .build_ui_state(|ui, app: &mut SidecallApp| app.show(ui), app);
        Live { h, _dir: dir }
    }

    /// Steps the window (in real time) until `text` shows.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.h.step();
            if self.h.query_all_by_label_contains(text).next().is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "window never showed {text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn register(&mut self, server: &str, number: &str, name: &str) {
        self.wait_for("Host a server on this computer");
        // Not hosting: this test's server is elsewhere.
        self.h.get_by_label("Host a server on this computer").click();
        self.h.run_steps(2);
        type_into(&mut self.h, "Server address", server);
        type_into(&mut self.h, "Phone number", number);
        type_into(&mut self.h, "Display name", name);
        type_into(&mut self.h, "Password", PASSWORD);
        self.h.get_by_label("Create account").click();
        self.wait_for("Online as");
    }

    fn click(&mut self, label: &str) {
        self.h.get_by_label(label).click();
        self.h.run_steps(2);
    }

    /// Steps the window until `cond` holds.
    fn wait_until(&mut self, what: &str, cond: impl Fn(&Live) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.h.step();
            if cond(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never: {what} (video state {:?}, picture shown: {})",
                self.state().video,
                self.shows("Video from")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shows(&self, text: &str) -> bool {
        self.h.query_all_by_label_contains(text).next().is_some()
    }

    fn state(&self) -> AppState {
        self.h.state().state().cloned().expect("state")
    }
}

/// Two whole apps registered on the server at `url`: Alice (030 123456) and Bob
/// (+49 151 23456789), each starting with its settings file (TOML).
fn alice_and_bob(url: &str, alice_settings: &str, bob_settings: &str) -> (Live, Live) {
    let mut a = Live::start_with_settings(alice_settings);
    let mut b = Live::start_with_settings(bob_settings);
    a.register(url, "030 123456", "Alice");
    b.register(url, "+49 151 23456789", "Bob");
    (a, b)
}

/// Runs `f` on a current-thread runtime in a thread of its own, so the test's own thread is
/// free to drive the windows.
fn with_server<T>(answer_timeout: Duration, f: impl FnOnce(String) -> T) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let server = rt.block_on(TestServer::start_with(|c| c.hub.answer_timeout = answer_timeout));
    let out = f(server.url.clone());
    rt.block_on(async move {
        let mut server = server;
        server.stop().await;
    });
    out
}

#[test]
fn two_apps_dial_accept_end_decline_and_miss() {
    with_server(Duration::from_secs(2), |url| {
        let (mut a, mut b) = alice_and_bob(&url, "", "");

        // A dials B, typing B's number another way.
        type_into(&mut a.h, "Number to call", "0151 2345 6789");
        a.click("Start session");
        b.wait_for("Incoming data session");
        assert!(b.h.query_all_by_label_contains("Alice").next().is_some(), "the prompt names the caller");
        b.click("Accept");
        a.wait_for("In session with Bob");
        b.wait_for("In session with Alice");
        b.click("End session");
        a.wait_for("Last session ended: the other side ended it");
        b.wait_for("Last session ended: you ended it");
        for w in [&mut a, &mut b] {
            w.wait_for("session, 0:0");
            let first = w.state().history.first().cloned().expect("history entry");
            assert!(matches!(first.outcome, HistoryOutcome::Completed { .. }));
        }

        // Declined.
        a.click("Start session");
        b.wait_for("Incoming data session");
        b.click("Decline");
        a.wait_for("+49 1512 3456789 declined");
        b.wait_for("declined");
        assert!(b.h.query_all_by_label_contains("Incoming data session").next().is_none());

        // Unanswered: timed out for A, missed for B.
        a.click("Start session");
        b.wait_for("Incoming data session");
        a.wait_for("did not answer");
        b.wait_for("missed");
        assert!(
            b.h.query_all_by_label_contains("Incoming data session").next().is_none(),
            "the prompt went away"
        );
        let missed = b.state().history.first().cloned().expect("entry");
        assert_eq!((missed.direction, missed.outcome), (Direction::Incoming, HistoryOutcome::Missed));
        assert_eq!(missed.number, ALICE);
    });
}

#[derive(Debug)]
struct TestDrop(std::path::PathBuf);

impl egui::DroppedFile for TestDrop {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn a_file_dropped_on_the_window_arrives_after_the_receiver_accepts_it() {
    with_server(Duration::from_secs(30), |url| {
        let (mut a, mut b) =
            alice_and_bob(&url, "", "save_dir = \"$DIR/inbox\"\nauto_accept_files = false\n");
        type_into(&mut a.h, "Number to call", "0151 23456789");
        a.click("Start session");
        b.wait_for("Incoming data session");
        b.click("Accept");
        a.wait_for("Drop files anywhere on this window");
        b.wait_for("Drop files anywhere on this window");

        let src = a._dir.path().join("holiday photo.jpg");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).expect("write");
        a.h.input_mut().dropped_files.push(std::sync::Arc::new(TestDrop(src.clone())));
        a.h.step();
        b.wait_for("wants to send you this file");
        assert!(b.h.query_all_by_label_contains("holiday photo.jpg").next().is_some());
        b.click("Accept file");
        b.wait_for("received and verified");
        a.wait_for("sent and verified");
        let got = std::fs::read(b._dir.path().join("inbox").join("holiday photo.jpg")).expect("received");
        assert_eq!(got, data, "byte-identical");
        assert!(b.h.query_by_label("Show in folder").is_some());
        b.click("End session");
        a.wait_for("Last session ended");
    });
}

#[test]
fn phone_call_prompt_and_watcher_settings() {
    let mut s = online(ALICE, "Alice");
    s.call_prompt = Some(("fritz:3".into(), "+4915123456789".into()));
    s.watchers = vec![(
        sidecall::calls::Source::Fritz,
        sidecall::calls::WatcherStatus::Retrying {
            reason: "cannot connect to fritz.box:1012".into(),
            retry_in_ms: 4000,
        },
    )];
    let mut w = Scripted::new(s.clone());
    assert!(w.shows("Your phone is calling"));
    assert!(w.shows("+4915123456789"));
    w.click("Start data session");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::CallPrompt(true))));

    s.call_prompt = None;
    w.set(s);
    w.click("Settings");
    w.click("Phone calls");
    assert!(w.shows("Status: cannot connect to fritz.box:1012; retrying in 4 s"));
    w.click("AVM FRITZ!Box call monitor");
    type_into(&mut w.harness, "FRITZ!Box address", "192.168.178.1");
    type_into(&mut w.harness, "Area code", "030");
    w.click("Ask first");
    w.click("Test FRITZ!Box");
    let tested = w.sent().into_iter().find_map(|c| match c {
        AppCommand::TestWatcher { settings, .. } => Some(settings),
        _ => None,
    });
    assert_eq!(tested.expect("test sent").fritz.host, "192.168.178.1");
    w.click("Save");
    let saved = w.sent().into_iter().find_map(|c| match c {
        AppCommand::SaveSettings { settings, .. } => Some(*settings),
        _ => None,
    });
    let saved = saved.expect("saved");
    assert!(saved.fritz.enabled);
    assert_eq!(saved.area_code, "030");
    assert_eq!(saved.on_call, app::OnCall::Ask);
}

/// Bob's session with Alice, who is at 198.51.100.4 (her device says 192.168.1.20).
fn session_with_alice(id: &str, role: SessionRole, offer: Offer) -> Active {
    Active {
        session_id: SessionId(id.into()),
        role,
        peer: PeerInfo {
            number: ALICE.into(),
            display_name: "Alice".into(),
            device_ip: Some("192.168.1.20".parse().expect("ip")),
            observed_ip: Some("198.51.100.4".parse().expect("ip")),
        },
        offer,
        since: Instant::now(),
        call_ref: None,
        marks: None,
    }
}

fn session_with_video(sending: VideoSending) -> AppState {
    let mut s = online(BOB, "Bob");
    s.active = Some(session_with_alice("s3", SessionRole::Caller, Offer { files: true, video: true }));
    s.video.sending = sending;
    s.video.cameras = Some(Ok(Vec::new()));
    s.channel_open = true;
    s
}

#[test]
fn video_controls_offer_the_test_pattern_when_the_camera_fails() {
    let mut w = Scripted::new(session_with_video(VideoSending::Failed(
        "no camera found: connect one (and check you may use it), or send the test pattern".into(),
    )));
    assert!(w.shows("My video: no camera found"), "the failure is shown");
    w.click("Send the test pattern instead");
    let sent = w.sent();
    assert!(
        sent.iter().any(|c| matches!(c, AppCommand::StartVideo(Some(VideoSource::TestPattern)))),
        "{sent:?}"
    );
    w.click("Start my video");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::StartVideo(None))));

    // Settings, Video: size, frame rate, bitrate are saved.
    w.click("Settings");
    let header = w
        .harness
        .query_all_by_label("Video")
        .find(|n| n.accesskit_node().role() != Role::Label)
        .expect("the Video section of the settings");
    header.click();
    w.harness.run_steps(3);
    w.click("640×480");
    w.click("15");
    w.click("Save");
    let saved = w.sent().into_iter().find_map(|c| match c {
        AppCommand::SaveSettings { settings, .. } => Some(*settings),
        _ => None,
    });
    let v = saved.expect("saved").video;
    assert_eq!((v.width, v.height, v.fps), (640, 480, 15));

    w.set(session_with_video(VideoSending::On { what: "test pattern 640x480 at 30 fps".into() }));
    assert!(w.shows("Sending test pattern 640x480"));
    w.click("Stop my video");
    w.click("Mirror my picture");
    let sent = w.sent();
    assert!(sent.iter().any(|c| matches!(c, AppCommand::StopVideo)), "{sent:?}");
    assert!(sent.iter().any(|c| matches!(c, AppCommand::SetMirrorPreview(false))), "{sent:?}");
    // Files stay usable beside the video.
    assert!(w.shows("Drop files anywhere on this window"));
}

#[test]
fn two_apps_see_each_other_and_video_stops_and_starts_mid_session() {
    with_server(Duration::from_secs(30), |url| {
        let video = "[video]\nsource = \"test-pattern\"\nwidth = 640\nheight = 480\n";
        let (mut a, mut b) = alice_and_bob(&url, video, video);
        type_into(&mut a.h, "Number to call", "0151 23456789");
        a.click("Video");
        a.click("Start session");
        b.wait_for("Incoming data session");
        b.click("Accept");
        // Offered and accepted: both send the test pattern and see the other's.
        a.wait_for("Video from Bob");
        b.wait_for("Video from Alice");
        assert!(matches!(a.state().video.sending, VideoSending::On { .. }));
        assert!(matches!(b.state().video.sending, VideoSending::On { .. }));
        // What is sent: the size and the bitrate congestion control allows.
        a.wait_for("Sent at 640x480 ·");

        a.click("Stop my video");
        b.wait_until("Alice's picture goes away", |b| {
            !b.shows("Video from Alice") && !b.state().video.remote_on
        });
        a.wait_until("Alice's own video is off", |a| a.state().video.sending == VideoSending::Off);
        assert!(a.shows("Video from Bob"), "Bob's video goes on");

        a.click("Start my video");
        b.wait_for("Video from Alice");
        a.wait_until("sending again", |a| matches!(a.state().video.sending, VideoSending::On { .. }));
        b.click("End session");
        a.wait_for("Last session ended");
        a.wait_until("the picture is gone with the session", |a| !a.shows("Video from Bob"));

        // Bob takes the next video call with his own video off: he sees Alice, she sees nobody.
        a.click("Start session");
        b.wait_for("Incoming data session");
        b.click("Accept, my video off");
        b.wait_for("Video from Alice");
        assert_eq!(b.state().video.sending, VideoSending::Off);
        a.wait_until("Alice sends", |a| matches!(a.state().video.sending, VideoSending::On { .. }));
        let v = a.h.state().video();
        assert!(
            !a.shows("Video from Bob"),
            "A: {:?} B: {:?}; A's remote slot {:?} has a picture: {}; stats {:?}",
            a.state().video,
            b.state().video,
            v.remote,
            v.remote.latest().1.is_some(),
            v.stats()
        );
        a.click("End session");
        b.wait_for("Last session ended");
    });
}

#[test]
fn privacy_setting_and_the_sessions_path() {
    let mut w = Scripted::new(online(BOB, "Bob"));
    w.click("Settings");
    w.click("Privacy");
    assert!(w.shows("never learn your IP address"), "the choice is explained");
    w.click("Hide my address");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::SetHideAddress(true))), "{:?}", w.sent());

    // A relayed session: no address shown, and the path says so.
    let mut s = online(BOB, "Bob");
    let mut active = session_with_alice("s9", SessionRole::Callee, Offer { files: true, video: false });
    active.peer.device_ip = None;
    active.peer.observed_ip = None;
    s.active = Some(active);
    s.channel_open = true;
    s.path = Some(sidecall::rtc::Path::Relayed);
    w.set(s.clone());
    assert!(w.shows("Relayed by the server"));
    assert!(w.shows("Addresses hidden"));
    assert!(!w.shows("198.51.100.4"));
    s.path = Some(sidecall::rtc::Path::Direct);
    w.set(s);
    assert!(w.shows("Direct"));
}

#[test]
fn the_code_step_of_registration_sends_the_typed_code_and_cancels() {
    use sidecall::protocol::VerifyMethod;
    let mut s = AppState::new(AppSettings::default());
    s.login = app::LoginStatus::Verifying(app::VerifyView {
        number: ALICE.into(),
        method: VerifyMethod::Hook,
        digits: 6,
        message: "If this number can be registered, a 6-digit code is on its way to it.".into(),
        automatic: false,
        checking: false,
        error: Some("wrong code: 4 tries left".into()),
    });
    let mut w = Scripted::new(s.clone());
    assert!(w.shows(&format!("Verify {ALICE}")));
    assert!(w.shows("a 6-digit code is on its way"));
    assert!(w.shows("wrong code: 4 tries left"));
    assert!(!w.shows("Watching your phone line"), "no watcher: nothing fills itself in");
    w.type_into("Code", "123456");
    w.click("Verify");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::SubmitCode(code) if code == "123456")));
    w.click("Cancel");
    assert!(w.sent().iter().any(|c| matches!(c, AppCommand::CancelVerification)));

    // Verification by call with a watcher running: the code fills itself in.
    if let app::LoginStatus::Verifying(v) = &mut s.login {
        v.method = VerifyMethod::Call;
        v.automatic = true;
        v.error = None;
    }
    w.set(s.clone());
    assert!(w.shows("Watching your phone line"));
    // An administrator approves: no code field, a wait.
    if let app::LoginStatus::Verifying(v) = &mut s.login {
        v.method = VerifyMethod::Admin;
    }
    w.set(s);
    assert!(w.shows("Waiting for the administrator"));
}

#[test]
fn the_prompt_says_whether_the_request_matches_the_call_on_the_phone() {
    use sidecall::calls::linked::CallMatch;
    let mut s = ringing_state();
    s.incoming[0].marks = app::Marks { verified: true, call_match: Some(CallMatch::Matches) };
    let mut w = Scripted::new(s.clone());
    assert!(w.shows("Matches the call on your phone"));
    assert!(!w.shows("Unverified number"));
    s.incoming[0].marks = app::Marks { verified: false, call_match: Some(CallMatch::NotLinked) };
    w.set(s.clone());
    assert!(w.shows("Not linked to a call on your phone"));
    assert!(w.shows("Unverified number"));
    s.incoming[0].marks = app::Marks { verified: true, call_match: None };
    w.set(s);
    assert!(!w.shows("call on your phone"), "no watcher: nothing claimed");
}
