//! Click-to-call through the server's PBX connector, against an Asterisk Manager Interface
//! simulator (Asterisk is not packaged in Debian 12).
//!
//! The simulator speaks AMI's real framing and event sequence as documented by Asterisk
//! ("Asterisk Manager Interface (AMI) v2 Specification"; the `Originate` action with
//! `ChannelId`/`Async`; the events `Newchannel`, `OriginateResponse` with `Reason` codes,
//! `DialBegin`, `DialState`, `DialEnd` with `DialStatus`, `BridgeEnter`, `Hangup`, each with
//! `Uniqueid`/`Linkedid`; `Ping` answered with `Ping: Pong`): a one-line banner, `Key: Value`
//! lines, an empty line after each message, and other calls' events interleaved.

use crate::fixture::*;
use sidecall::ami::{parse_message, read_message};
use sidecall::client::{Event, StopReason};
use sidecall::protocol::{CallFailure, CallStage, Offer, Outcome};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify, mpsc};

/// How the simulated PBX lets a placed call go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Script {
    /// The caller picks up, the target rings, then answers when told; hangs up when told.
    Answer,
    Busy,
    NoAnswer,
    /// The caller's own phone is not picked up.
    CallerNoAnswer,
    /// The connection drops while the target rings.
    Drop,
}

pub(crate) struct Sim {
    addr: std::net::SocketAddr,
    script: Arc<Mutex<Script>>,
    answer: Arc<Notify>,
    hang_up: Arc<Notify>,
    /// Every action received, as `Key: Value` pairs.
    actions: mpsc::UnboundedReceiver<sidecall::ami::Message>,
}

fn ev(lines: &[(&str, &str)]) -> String {
    let mut s: String = lines.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    s.push_str("\r\n");
    s
}

impl Sim {
    pub(crate) async fn start(secret: &'static str, script: Script) -> Sim {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(Mutex::new(script));
        let (answer, hang_up) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (tx, actions) = mpsc::unbounded_channel();
        let (s, a, h) = (script.clone(), answer.clone(), hang_up.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (s, a, h, tx) = (s.clone(), a.clone(), h.clone(), tx.clone());
                tokio::spawn(async move { serve(tcp, secret, s, a, h, tx).await });
            }
        });
        Sim { addr, script, answer, hang_up, actions }
    }

    fn url(&self, secret: &str) -> String {
        format!("ami://sidecall:{secret}@{}?context=office&channel=PJSIP/{{ext}}", self.addr)
    }

    /// The next action of this name the PBX received.
    pub(crate) async fn action(&mut self, name: &str) -> sidecall::ami::Message {
        tokio::time::timeout(WAIT, async {
            loop {
                let m = self.actions.recv().await.expect("simulator alive");
                if m.get("Action") == Some(name) {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {name} action"))
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    secret: &str,
    script: Arc<Mutex<Script>>,
    answer: Arc<Notify>,
    hang_up: Arc<Notify>,
    actions: mpsc::UnboundedSender<sidecall::ami::Message>,
) {
    let (read, write) = tcp.into_split();
    let write = Arc::new(Mutex::new(write));
    let send = move |text: String| {
        let w = write.clone();
        async move { w.lock().await.write_all(text.as_bytes()).await.is_ok() }
    };
    if !send("Asterisk Call Manager/9.0.0\r\n".into()).await {
        return;
    }
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    while let Ok(Some(lines)) = read_message(&mut reader, &mut buf).await {
        let msg = parse_message(&lines);
        let _ = actions.send(msg.clone());
        let id = msg.get("ActionID").unwrap_or("").to_string();
        match msg.get("Action").unwrap_or("") {
            "Login" if msg.get("Secret") == Some(secret) => {
                send(ev(&[
                    ("Response", "Success"),
                    ("ActionID", &id),
                    ("Message", "Authentication accepted"),
                ]))
                .await;
                send(ev(&[
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Status", "Fully Booted"),
                ]))
                .await;
            }
            "Login" => {
                send(ev(&[("Response", "Error"), ("ActionID", &id), ("Message", "Authentication failed")]))
                    .await;
                return;
            }
            "Ping" => {
                send(ev(&[
                    ("Response", "Success"),
                    ("ActionID", &id),
                    ("Ping", "Pong"),
                    ("Timestamp", "1700000000.000000"),
                ]))
                .await;
            }
            "PJSIPShowEndpoint" if msg.get("Endpoint") == Some("201") => {
                send(ev(&[
                    ("Response", "Success"),
                    ("ActionID", &id),
                    ("EventList", "start"),
                    ("Message", "Following are Events for each object associated with the Endpoint"),
                ]))
                .await;
                send(ev(&[
                    ("Event", "EndpointDetail"),
                    ("ActionID", &id),
                    ("ObjectType", "endpoint"),
                    ("ObjectName", "201"),
                ]))
                .await;
                send(ev(&[
                    ("Event", "EndpointDetailComplete"),
                    ("ActionID", &id),
                    ("EventList", "Complete"),
                    ("ListItems", "1"),
                ]))
                .await;
            }
            "PJSIPShowEndpoint" => {
                let which = msg.get("Endpoint").unwrap_or("").to_string();
                send(ev(&[
                    ("Response", "Error"),
                    ("ActionID", &id),
                    ("Message", &format!("Unable to retrieve endpoint {which}")),
                ]))
                .await;
            }
            "Hangup" => {
                send(ev(&[("Response", "Success"), ("ActionID", &id), ("Message", "Channel Hungup")])).await;
                let ch = msg.get("Channel").unwrap_or("").to_string();
                send(ev(&[
                    ("Event", "Hangup"),
                    ("Channel", &ch),
                    ("Uniqueid", "cancelled"),
                    ("Linkedid", "cancelled"),
                    ("Cause", "16"),
                ]))
                .await;
            }
            "Originate" => {
                send(ev(&[
                    ("Response", "Success"),
                    ("ActionID", &id),
                    ("Message", "Originate successfully queued"),
                ]))
                .await;
                let call = msg.get("ChannelId").unwrap_or("").to_string();
                if msg.get("Application").is_some() {
                    // A call to an outside number running an application (a verification
                    // call): its Local channel comes up and rings.
                    let channel = format!("{}-00000001;1", msg.get("Channel").unwrap_or(""));
                    send(ev(&[
                        ("Event", "Newchannel"),
                        ("Channel", &channel),
                        ("ChannelState", "4"),
                        ("ChannelStateDesc", "Ring"),
                        ("Uniqueid", &call),
                        ("Linkedid", &call),
                    ]))
                    .await;
                    continue;
                }
                let exten = msg.get("Exten").unwrap_or("").to_string();
                let script = *script.lock().await;
                let (answer, hang_up, send) = (answer.clone(), hang_up.clone(), send.clone());
                tokio::spawn(async move { play(script, &call, &exten, answer, hang_up, send).await });
                if script == Script::Drop {
                    // The PBX goes away while the target rings.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return;
                }
            }
            _ => {
                send(ev(&[("Response", "Error"), ("ActionID", &id), ("Message", "Invalid/unknown command")]))
                    .await;
            }
        }
    }
}

async fn play<F, Fut>(
    script: Script,
    call: &str,
    exten: &str,
    answer: Arc<Notify>,
    hang_up: Arc<Notify>,
    send: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let ch = "PJSIP/201-00000001";
    let out = "PJSIP/trunk-00000002";
    let pause = || tokio::time::sleep(Duration::from_millis(30));
    // Someone else's call, interleaved.
    send(ev(&[
        ("Event", "Newchannel"),
        ("Channel", "PJSIP/305-00000009"),
        ("Uniqueid", "1700000000.9"),
        ("Linkedid", "1700000000.9"),
    ]))
    .await;
    send(ev(&[
        ("Event", "Newchannel"),
        ("Channel", ch),
        ("Uniqueid", call),
        ("Linkedid", call),
        ("ChannelStateDesc", "Down"),
    ]))
    .await;
    pause().await;
    if script == Script::CallerNoAnswer {
        send(ev(&[
            ("Event", "OriginateResponse"),
            ("ActionID", call),
            ("Response", "Failure"),
            ("Channel", ch),
            ("Reason", "3"),
            ("Uniqueid", call),
        ]))
        .await;
        return;
    }
    send(ev(&[
        ("Event", "OriginateResponse"),
        ("ActionID", call),
        ("Response", "Success"),
        ("Channel", ch),
        ("Reason", "4"),
        ("Uniqueid", call),
    ]))
    .await;
    send(ev(&[
        ("Event", "DialBegin"),
        ("Channel", ch),
        ("Uniqueid", call),
        ("Linkedid", call),
        ("DestChannel", out),
        ("DestUniqueid", &format!("{call}-2")),
        ("DestLinkedid", call),
        ("DialString", &format!("trunk/{exten}")),
    ]))
    .await;
    send(ev(&[
        ("Event", "DialBegin"),
        ("Channel", "PJSIP/305-00000009"),
        ("Uniqueid", "1700000000.9"),
        ("Linkedid", "1700000000.9"),
        ("DialString", "trunk/999"),
    ]))
    .await;
    // An answer to a keepalive Ping arrives between the call's events.
    send(ev(&[
        ("Response", "Success"),
        ("ActionID", "sidecall-ping-0"),
        ("Ping", "Pong"),
        ("Timestamp", "1700000000.000000"),
    ]))
    .await;
    send(ev(&[
        ("Event", "DialState"),
        ("Channel", ch),
        ("Linkedid", call),
        ("DestChannel", out),
        ("DialStatus", "RINGING"),
    ]))
    .await;
    let status = match script {
        Script::Busy => "BUSY",
        Script::NoAnswer => "NOANSWER",
        Script::Drop => return,
        _ => {
            answer.notified().await;
            "ANSWER"
        }
    };
    send(ev(&[
        ("Event", "DialEnd"),
        ("Channel", ch),
        ("Uniqueid", call),
        ("Linkedid", call),
        ("DestChannel", out),
        ("DialStatus", status),
    ]))
    .await;
    if status != "ANSWER" {
        send(ev(&[
            ("Event", "Hangup"),
            ("Channel", ch),
            ("Uniqueid", call),
            ("Linkedid", call),
            ("Cause", "17"),
        ]))
        .await;
        return;
    }
    send(ev(&[
        ("Event", "BridgeEnter"),
        ("Channel", ch),
        ("Uniqueid", call),
        ("Linkedid", call),
        ("BridgeUniqueid", "b1"),
    ]))
    .await;
    hang_up.notified().await;
    send(ev(&[
        ("Event", "Hangup"),
        ("Channel", out),
        ("Uniqueid", &format!("{call}-2")),
        ("Linkedid", call),
        ("Cause", "16"),
    ]))
    .await;
    send(ev(&[
        ("Event", "Hangup"),
        ("Channel", ch),
        ("Uniqueid", call),
        ("Linkedid", call),
        ("Cause", "16"),
    ]))
    .await;
}

async fn server_with_pbx(sim: &Sim, secret: &str) -> TestServer {
    server_with_pbx_and(sim, secret, |_| {}).await
}

/// A server placing calls through the simulator, configured further by `tweak`.
pub(crate) async fn server_with_pbx_and(
    sim: &Sim,
    secret: &str,
    tweak: impl FnOnce(&mut sidecall::server::ServerConfig),
) -> TestServer {
    let url = sim.url(secret);
    let server = TestServer::start_with(move |cfg| {
        cfg.pbx = Some(sidecall::server::pbx::PbxConfig::parse(&url).expect("pbx url"));
        tweak(cfg);
    })
    .await;
    // Logged in to the PBX before the test goes on.
    let health = format!("{}/healthz", server.url);
    for _ in 0..100 {
        let body: serde_json::Value =
            reqwest::get(&health).await.expect("health").json().await.expect("json");
        if body["pbx"] != "connecting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

async fn with_extension(c: &mut TestClient, ext: &str) {
    c.handle.set_extension(Some(ext.into()));
    c.expect("extension stored", |e| {
        matches!(e, Event::Extension { extension: Some(x) } if x == ext).then_some(())
    })
    .await;
}

async fn stage(c: &mut TestClient, want: CallStage) {
    c.expect("call stage", |e| {
        matches!(e, Event::CallProgress { stage, .. } if *stage == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_data_session_rings_only_once_the_phone_call_is_answered() {
    sidecall::tls::install_default_provider();
    let mut sim = Sim::start("s3cret", Script::Answer).await;
    let server = server_with_pbx(&sim, "s3cret").await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    // The PBX is asked: it has no phone 999.
    alice.handle.set_extension(Some("999".into()));
    let (code, message) = alice.error().await;
    assert_eq!(code, sidecall::protocol::ErrorCode::InvalidField);
    assert!(message.contains("no phone with extension 999"), "{message}");
    with_extension(&mut alice, "201").await;

    let req = alice.handle.call("0151 23456789", Offer { files: true, video: false }, None);
    let originate = sim.action("Originate").await;
    assert_eq!(originate.get("Channel"), Some("PJSIP/201"), "the caller's own phone rings first");
    assert_eq!(originate.get("Exten"), Some(BOB));
    assert_eq!(originate.get("Context"), Some("office"));
    assert_eq!(originate.get("Async"), Some("true"));
    stage(&mut alice, CallStage::CallingYou).await;
    stage(&mut alice, CallStage::Dialing).await;
    // The target's phone rings: nothing reaches Bob's desktop yet.
    let before = bob.drain(Duration::from_millis(400)).await;
    assert!(
        !before.iter().any(|e| matches!(e, Event::Incoming { .. })),
        "rung before the answer: {before:?}"
    );

    sim.answer.notify_one();
    stage(&mut alice, CallStage::Answered).await;
    let (sid, caller, _) = bob.incoming().await;
    assert_eq!(caller.number, ALICE);
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    bob.started().await;

    // Hanging up the phone ends the data session for both.
    sim.hang_up.notify_one();
    for c in [&mut alice, &mut bob] {
        let (ended, reason) = c.ended().await;
        assert_eq!((ended, reason), (sid.clone(), StopReason::CallEnded));
    }
}

#[tokio::test]
async fn busy_no_answer_and_an_unanswered_own_phone_fail_with_their_reason() {
    sidecall::tls::install_default_provider();
    let sim = Sim::start("s3cret", Script::Busy).await;
    let server = server_with_pbx(&sim, "s3cret").await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    with_extension(&mut alice, "201").await;
    for (script, want) in [
        (Script::Busy, CallFailure::Busy),
        (Script::NoAnswer, CallFailure::NoAnswer),
        (Script::CallerNoAnswer, CallFailure::YourPhoneNoAnswer),
    ] {
        *sim.script.lock().await = script;
        let req = alice.handle.call(BOB, Offer::default(), None);
        assert_eq!(alice.dial_result(req).await, Outcome::CallFailed { reason: want }, "{script:?}");
    }
    let seen = bob.drain(Duration::from_millis(200)).await;
    assert!(!seen.iter().any(|e| matches!(e, Event::Incoming { .. })), "Bob was never rung: {seen:?}");
}

#[tokio::test]
async fn cancelling_before_the_answer_hangs_the_phone_call_up() {
    sidecall::tls::install_default_provider();
    let mut sim = Sim::start("s3cret", Script::Answer).await;
    let server = server_with_pbx(&sim, "s3cret").await;
    let mut alice = server.user(ALICE, "Alice").await;
    with_extension(&mut alice, "201").await;
    let req = alice.handle.call(BOB, Offer::default(), None);
    let sid = alice
        .expect("dialing", |e| match e {
            Event::CallProgress { session_id, stage: CallStage::Dialing, .. } => Some(session_id.clone()),
            _ => None,
        })
        .await;
    alice.handle.end(&sid);
    let hangup = sim.action("Hangup").await;
    assert_eq!(hangup.get("Channel"), Some("PJSIP/201-00000001"), "the caller's channel is hung up");
    assert_eq!(alice.dial_result(req).await, Outcome::Cancelled);
}

#[tokio::test]
async fn a_pbx_that_drops_fails_the_call_cleanly_and_is_reconnected() {
    sidecall::tls::install_default_provider();
    let mut sim = Sim::start("s3cret", Script::Drop).await;
    let server = server_with_pbx(&sim, "s3cret").await;
    let mut alice = server.user(ALICE, "Alice").await;
    with_extension(&mut alice, "201").await;
    let req = alice.handle.call(BOB, Offer::default(), None);
    assert_eq!(alice.dial_result(req).await, Outcome::CallFailed { reason: CallFailure::PbxUnavailable });
    // The connector logs in again by itself.
    sim.action("Login").await;
    sim.action("Login").await;
    *sim.script.lock().await = Script::Busy;
    let outcome = loop {
        let req = alice.handle.call(BOB, Offer::default(), None);
        match alice.dial_result(req).await {
            Outcome::CallFailed { reason: CallFailure::PbxUnavailable } => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    assert_eq!(outcome, Outcome::CallFailed { reason: CallFailure::Busy }, "calls work again");
}

#[tokio::test]
async fn a_wrong_secret_no_extension_and_no_account_are_clear() {
    sidecall::tls::install_default_provider();
    let sim = Sim::start("s3cret", Script::Answer).await;
    let server = server_with_pbx(&sim, "wrong").await;
    let health: serde_json::Value =
        reqwest::get(format!("{}/healthz", server.url)).await.expect("health").json().await.expect("json");
    assert!(health["pbx"].as_str().is_some_and(|s| s.contains("refused the login")), "{health}");
    let mut alice = server.user(ALICE, "Alice").await;
    let req = alice.handle.call(BOB, Offer::default(), None);
    assert_eq!(alice.dial_result(req).await, Outcome::CallFailed { reason: CallFailure::NoExtension });
    with_extension(&mut alice, "201").await;
    let req = alice.handle.call(BOB, Offer::default(), None);
    assert_eq!(alice.dial_result(req).await, Outcome::CallFailed { reason: CallFailure::PbxUnavailable });

    // With the right secret, a target without a Sidecall account still gets the phone call;
    // the caller learns only `unavailable` about the data session.
    let mut sim = Sim::start("s3cret", Script::Answer).await;
    let server = server_with_pbx(&sim, "s3cret").await;
    let mut alice = server.user(ALICE, "Alice").await;
    with_extension(&mut alice, "201").await;
    let req = alice.handle.call(CAROL, Offer::default(), None);
    sim.action("Originate").await;
    stage(&mut alice, CallStage::Dialing).await;
    sim.answer.notify_one();
    stage(&mut alice, CallStage::Answered).await;
    assert_eq!(alice.dial_result(req).await, Outcome::Unavailable);
}

/// A FreeSWITCH event socket (inbound) simulator: `auth/request`, `command/reply`,
/// `text/event-plain` events with URL-encoded values and a `Content-Length` body, as in
/// FreeSWITCH's mod_event_socket documentation; `bgapi originate` answered with a Job-UUID.
struct EslSim {
    addr: std::net::SocketAddr,
    answer: Arc<Notify>,
    hang_up: Arc<Notify>,
    commands: mpsc::UnboundedReceiver<String>,
}

fn esl_event(lines: &[(&str, &str)], body: &str) -> String {
    let enc = |v: &str| v.replace(' ', "%20").replace(':', "%3A");
    let mut b: String = lines.iter().map(|(k, v)| format!("{k}: {}\n", enc(v))).collect();
    if !body.is_empty() {
        b.push_str(&format!("Content-Length: {}\n\n{body}", body.len()));
    } else {
        b.push('\n');
    }
    format!("Content-Length: {}\nContent-Type: text/event-plain\n\n{b}", b.len())
}

impl EslSim {
    async fn start(password: &'static str, busy: bool) -> EslSim {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (answer, hang_up) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (tx, commands) = mpsc::unbounded_channel();
        let (a, h) = (answer.clone(), hang_up.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (a, h, tx) = (a.clone(), h.clone(), tx.clone());
                tokio::spawn(async move {
                    let (read, write) = tcp.into_split();
                    let write = Arc::new(Mutex::new(write));
                    let send = move |t: String| {
                        let w = write.clone();
                        async move { w.lock().await.write_all(t.as_bytes()).await.is_ok() }
                    };
                    send("Content-Type: auth/request\n\n".into()).await;
                    let mut reader = BufReader::new(read);
                    let mut buf = Vec::new();
                    // A command is a line, maybe header lines after it, then an empty line.
                    while let Ok(Some(lines)) = read_message(&mut reader, &mut buf).await {
                        let line = lines.first().cloned().unwrap_or_default();
                        let headers = parse_message(&lines[1..]);
                        let _ = tx.send(line.clone());
                        if line.starts_with("auth") {
                            if line == format!("auth {password}") {
                                send("Content-Type: command/reply\nReply-Text: +OK accepted\n\n".into())
                                    .await;
                            } else {
                                send("Content-Type: command/reply\nReply-Text: -ERR invalid\n\n".into())
                                    .await;
                                return;
                            }
                        } else if line.starts_with("event") {
                            send("Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n".into()).await;
                        } else if line.starts_with("bgapi originate") {
                            let uuid = line
                                .split("origination_uuid=")
                                .nth(1)
                                .and_then(|r| r.split(',').next())
                                .unwrap_or("")
                                .to_string();
                            let job = headers.get("Job-UUID").unwrap_or("").to_string();
                            send(format!("Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n")).await;
                            let (a, h, send) = (a.clone(), h.clone(), send.clone());
                            tokio::spawn(async move {
                                send(esl_event(
                                    &[("Event-Name", "CHANNEL_ANSWER"), ("Unique-ID", "someone-else")],
                                    "",
                                ))
                                .await;
                                send(esl_event(
                                    &[
                                        ("Event-Name", "CHANNEL_ANSWER"),
                                        ("Unique-ID", &uuid),
                                        ("Caller-Caller-ID-Name", "Sidecall: x"),
                                    ],
                                    "",
                                ))
                                .await;
                                send(esl_event(
                                    &[
                                        ("Event-Name", "BACKGROUND_JOB"),
                                        ("Job-UUID", &job),
                                        ("Job-Command", "originate"),
                                    ],
                                    &format!("+OK {uuid}\n"),
                                ))
                                .await;
                                if busy {
                                    send(esl_event(
                                        &[
                                            ("Event-Name", "CHANNEL_HANGUP_COMPLETE"),
                                            ("Unique-ID", &uuid),
                                            ("Hangup-Cause", "USER_BUSY"),
                                        ],
                                        "",
                                    ))
                                    .await;
                                    return;
                                }
                                a.notified().await;
                                send(esl_event(
                                    &[("Event-Name", "CHANNEL_BRIDGE"), ("Unique-ID", &uuid)],
                                    "",
                                ))
                                .await;
                                h.notified().await;
                                send(esl_event(
                                    &[
                                        ("Event-Name", "CHANNEL_HANGUP_COMPLETE"),
                                        ("Unique-ID", &uuid),
                                        ("Hangup-Cause", "NORMAL_CLEARING"),
                                    ],
                                    "",
                                ))
                                .await;
                            });
                        }
                    }
                });
            }
        });
        EslSim { addr, answer, hang_up, commands }
    }

    async fn command(&mut self, starts: &str) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                let c = self.commands.recv().await.expect("simulator alive");
                if c.starts_with(starts) {
                    return c;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {starts} command"))
    }
}

#[tokio::test]
async fn freeswitch_places_the_call_and_rings_the_session_after_the_answer() {
    sidecall::tls::install_default_provider();
    let mut sim = EslSim::start("ClueCon", false).await;
    let url = format!("esl://:ClueCon@{}?context=office", sim.addr);
    let server = TestServer::start_with(move |cfg| {
        cfg.pbx = Some(sidecall::server::pbx::PbxConfig::parse(&url).expect("pbx url"));
    })
    .await;
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    with_extension(&mut alice, "1000").await;
    sim.command("event plain").await;
    let req = loop {
        let req = alice.handle.call(BOB, Offer::default(), None);
        match alice
            .expect("progress or outcome", |e| match e {
                Event::CallProgress { req_id, .. } if *req_id == req => Some(true),
                Event::DialResult { req_id, .. } if *req_id == req => Some(false),
                _ => None,
            })
            .await
        {
            true => break req,
            false => tokio::time::sleep(Duration::from_millis(50)).await, // not logged in yet
        }
    };
    let originate = sim.command("bgapi originate").await;
    assert!(
        originate.contains("user/1000 ") && originate.contains(&format!("{BOB} XML office")),
        "{originate}"
    );
    stage(&mut alice, CallStage::Dialing).await;
    let before = bob.drain(Duration::from_millis(300)).await;
    assert!(!before.iter().any(|e| matches!(e, Event::Incoming { .. })), "rung before the answer");
    sim.answer.notify_one();
    stage(&mut alice, CallStage::Answered).await;
    let (sid, ..) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    sim.hang_up.notify_one();
    assert_eq!(bob.ended().await, (sid, StopReason::CallEnded));

    // Busy, and a wrong password.
    let busy = EslSim::start("ClueCon", true).await;
    let url = format!("esl://:ClueCon@{}", busy.addr);
    let server = TestServer::start_with(move |cfg| {
        cfg.pbx = Some(sidecall::server::pbx::PbxConfig::parse(&url).expect("url"))
    })
    .await;
    let mut alice = server.user(ALICE, "Alice").await;
    with_extension(&mut alice, "1000").await;
    let outcome = loop {
        let req = alice.handle.call(BOB, Offer::default(), None);
        match alice.dial_result(req).await {
            Outcome::CallFailed { reason: CallFailure::PbxUnavailable } => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other,
        }
    };
    assert_eq!(outcome, Outcome::CallFailed { reason: CallFailure::Busy });
    let wrong = EslSim::start("ClueCon", false).await;
    let url = format!("esl://:nope@{}", wrong.addr);
    let server = TestServer::start_with(move |cfg| {
        cfg.pbx = Some(sidecall::server::pbx::PbxConfig::parse(&url).expect("url"))
    })
    .await;
    let health = format!("{}/healthz", server.url);
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            let body: serde_json::Value =
                reqwest::get(&health).await.expect("health").json().await.expect("json");
            if let Some(s) = body["pbx"].as_str().filter(|s| s.contains("refused the login")) {
                return s.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "a wrong password shows on /healthz");
}

/// `sidecall call` as a user runs it, against `sidecall-server --pbx ami://…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_places_the_call_and_prints_its_stages() {
    use crate::cli::{Proc, app};
    use std::process::Command;
    let sim = Sim::start("s3cret", Script::Answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, pbx) = (dir.path().to_path_buf(), sim.url("s3cret"));
    let answer = sim.answer.clone();
    tokio::task::spawn_blocking(move || {
        let server = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_sidecall-server"))
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--no-relay",
                    "--verify",
                    "none",
                    "--log",
                    "warn",
                    "--pbx",
                    &pbx,
                ])
                .arg("--data-dir")
                .arg(root.join("server")),
        );
        let line = server.wait_line("listening on");
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("url").to_string();
        let cfg = root.join("config");
        let run = |p: &str, args: &[&str]| {
            let out = app(&cfg, p, args).output().expect("run sidecall");
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run("a", &["account", "register", "--server", &url, "--number", ALICE, "--name", "Alice"]);
        run("b", &["account", "register", "--server", &url, "--number", BOB, "--name", "Bob"]);
        assert!(run("a", &["settings", "--extension", "201"]).contains("extension: 201"));
        let listener = Proc::spawn(&mut app(&cfg, "b", &["listen", "--accept", "all", "--once", "--json"]));
        listener.wait_line(r#""event":"online""#);
        let mut call = Proc::spawn(
            app(&cfg, "a", &["call", "0151 23456789", "--hangup-after", "0.5"])
                .env("SIDECALL_RTC_LOOPBACK", "1"),
        );
        call.wait_line("calling your phone");
        call.wait_line("dialing");
        // The target's phone rings: Bob's desktop does not, yet.
        std::thread::sleep(Duration::from_millis(300));
        let early: Vec<String> = std::iter::from_fn(|| listener.lines.try_recv().ok()).collect();
        assert!(
            !early.iter().any(|l| l.contains(r#""event":"incoming""#)),
            "rung before the answer: {early:?}"
        );
        answer.notify_one();
        call.wait_line("answered");
        call.wait_line("accepted");
        assert_eq!(call.wait_exit(), 0);
        let rest = listener.rest(15);
        assert!(rest.iter().any(|l| l.contains(r#""event":"incoming""#)), "{rest:#?}");
    })
    .await
    .expect("the CLI run");
}

/// Verification by call through FreeSWITCH: `bgapi originate` of the number with the code in
/// `origination_caller_id_number`, killed once the code is in.
#[tokio::test]
async fn freeswitch_rings_the_number_to_verify_with_the_code_as_caller_id() {
    sidecall::tls::install_default_provider();
    let mut sim = EslSim::start("ClueCon", false).await;
    let url = format!("esl://:ClueCon@{}?context=office", sim.addr);
    let server = TestServer::start_with(move |cfg| {
        cfg.pbx = Some(sidecall::server::pbx::PbxConfig::parse(&url).expect("pbx url"));
        cfg.verify.mode = sidecall::server::verify::VerifyMode::Call;
        cfg.verify.caller_prefix = "+4930555".into();
    })
    .await;
    sim.command("event plain").await;
    let req = sidecall::protocol::RegisterRequest {
        number: BOB.into(),
        display_name: "Bob".into(),
        password: PASSWORD.into(),
        region: None,
    };
    let Ok(sidecall::protocol::RegisterAnswer::Pending(p)) =
        sidecall::client::api::register(&server.url, &server.trust(), &req).await
    else {
        panic!("a code step")
    };
    let line = sim.command("bgapi originate").await;
    assert!(line.contains(&format!("loopback/{BOB}/office &sleep(2000)")), "{line}");
    let code = line
        .split("origination_caller_id_number=+4930555")
        .nth(1)
        .map(|r| r.chars().take_while(char::is_ascii_digit).collect::<String>())
        .expect("the code in the caller ID");
    assert_eq!(code.len(), 4, "{line}");
    let verify = sidecall::protocol::VerifyRequest { id: p.verification.id, code: Some(code) };
    let done = sidecall::client::api::verify(&server.url, &server.trust(), &verify).await;
    assert!(matches!(done, Ok(sidecall::protocol::VerifyAnswer::Done(_))), "{done:?}");
    let kill = sim.command("bgapi uuid_kill").await;
    assert!(line.contains(kill.trim_start_matches("bgapi uuid_kill ")), "{kill} hangs up {line}");
}
