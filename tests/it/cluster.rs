//! Three server nodes on one PostgreSQL and one NATS (the development and CI machines run
//! both on loopback): the handshake with caller and callee on different nodes, and nodes
//! that stop. SIDECALL_TEST_POSTGRES=skip (no PostgreSQL) skips these.

use crate::fixture::*;
use sidecall::client::{Event, StopReason};
use sidecall::protocol::{ErrorCode, Offer, Outcome, Role, SignalData};
use sidecall::server::cluster::ClusterConfig;
use std::net::SocketAddr;
use std::time::Duration;

pub const NATS: &str = "nats://127.0.0.1:4222";

/// A fresh PostgreSQL database for one test; dropped with it.
pub struct TestDb {
    pub url: String,
    admin: String,
    name: String,
}

impl TestDb {
    pub async fn create(tag: &str) -> Option<TestDb> {
        let base = std::env::var("SIDECALL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        if base == "skip" {
            eprintln!("cluster test skipped: SIDECALL_TEST_POSTGRES=skip");
            return None;
        }
        let admin = format!("{base}/test");
        let pool = sqlx::PgPool::connect(&admin).await.expect("PostgreSQL at 127.0.0.1:5432 (database test)");
        let name = format!("sidecall_{tag}_{}", std::process::id());
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await
            .expect("drop");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create");
        pool.close().await;
        Some(TestDb { url: format!("{base}/{name}"), admin, name })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A runtime of its own: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                }
            });
        })
        .join();
    }
}

pub struct TestCluster {
    pub nodes: Vec<TestServer>,
    pub _db: TestDb,
}

impl TestCluster {
    /// `n` nodes that see each other.
    pub async fn start(tag: &str, n: usize) -> Option<TestCluster> {
        Self::start_with(tag, n, |_| {}).await
    }

    pub async fn start_with(
        tag: &str,
        n: usize,
        tweak: impl Fn(&mut sidecall::server::ServerConfig),
    ) -> Option<TestCluster> {
        let db = TestDb::create(tag).await?;
        let name = format!("test-{tag}-{}", std::process::id());
        let mut nodes = Vec::new();
        for _ in 0..n {
            let url = db.url.clone();
            let cluster = ClusterConfig { nats_url: NATS.into(), name: name.clone() };
            nodes.push(
                TestServer::start_with(|cfg| {
                    cfg.database_url = Some(url);
                    cfg.cluster = Some(cluster);
                    tweak(cfg);
                })
                .await,
            );
        }
        let c = TestCluster { nodes, _db: db };
        c.wait_for_nodes(n).await;
        Some(c)
    }

    /// Waits until every running node sees `n` nodes (itself included).
    pub async fn wait_for_nodes(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen: Vec<usize> = self
                .nodes
                .iter()
                .filter_map(|s| s.running.as_ref())
                .map(|r| r.hub.cluster().map(|c| c.peers().len() + 1).unwrap_or(1))
                .collect();
            if seen.iter().all(|s| *s == n) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "nodes see {seen:?} nodes, not {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn node(&self, i: usize) -> &TestServer {
        &self.nodes[i]
    }

    /// Waits until every node knows `n` online devices of `number`. A login reaches the
    /// other nodes' copies of the presence table a moment after its `welcome`.
    pub async fn wait_presence(&self, number: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for s in self.nodes.iter().filter_map(|s| s.running.as_ref()) {
            let c = s.hub.cluster().expect("cluster");
            while c.lookup(number).await.map(|r| r.len()).unwrap_or(0) != n {
                assert!(tokio::time::Instant::now() < deadline, "{number} is not on {n} devices everywhere");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The session id names its authority: the node holding the callee's device.
fn authority(sid: &sidecall::protocol::SessionId) -> &str {
    sid.0.split_once('.').map(|(n, _)| n).expect("a cluster session id names its node")
}

fn node_id(s: &TestServer) -> String {
    s.hub().cluster().expect("cluster").node.to_string()
}

#[tokio::test]
async fn caller_and_callee_on_different_nodes() {
    let Some(c) =
        TestCluster::start_with("xnode", 3, |cfg| cfg.hub.answer_timeout = Duration::from_secs(2)).await
    else {
        return;
    };
    let mut alice = c.node(0).user(ALICE, "Alice").await;
    let bob_token = c.node(1).account(BOB, "Bob").await;
    let bob_ip = "192.168.178.20".parse().expect("ip");
    let mut bob = c.node(1).client(&bob_token, Some(bob_ip)).await;

    // Accept: the initiation names the caller only; addresses come with session_started.
    let req = alice.handle.dial("0151 2345 6789", Offer { files: true, video: false });
    let (sid, caller, _) = bob.incoming().await;
    assert_eq!(caller.number, ALICE);
    assert_eq!(authority(&sid), node_id(c.node(1)), "the callee's node holds the session");
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    let (a_sid, a_role, a_peer) = alice.started().await;
    let (_, b_role, b_peer) = bob.started().await;
    assert_eq!((a_sid.clone(), a_role, b_role), (sid.clone(), Role::Caller, Role::Callee));
    assert_eq!(a_peer.device_ip, Some(bob_ip));
    assert_eq!(b_peer.number, ALICE);

    // Signals in order, both ways, across nodes.
    for i in 0..50 {
        alice.handle.signal(
            &sid,
            SignalData::Candidate {
                candidate: format!("candidate:{i} 1 udp 1 10.0.0.1 {} typ host", 5000 + i),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            },
        );
    }
    for i in 0..50 {
        let got = bob
            .expect("signal", |e| match e {
                Event::Signal { data: SignalData::Candidate { candidate, .. }, .. } => {
                    Some(candidate.clone())
                }
                _ => None,
            })
            .await;
        assert!(got.starts_with(&format!("candidate:{i} ")), "signal {i} out of order: {got}");
    }
    bob.handle.signal(&sid, SignalData::EndOfCandidates);
    alice
        .expect("signal back", |e| {
            matches!(e, Event::Signal { data: SignalData::EndOfCandidates, .. }).then_some(())
        })
        .await;
    alice.handle.end(&sid);
    assert_eq!(bob.ended().await.1, StopReason::PeerEnded);
    assert_eq!(alice.ended().await.1, StopReason::YouEnded);

    // Decline.
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, _, _) = bob.incoming().await;
    bob.handle.answer(&sid, false);
    assert_eq!(alice.dial_result(req).await, Outcome::Declined);

    // Cancel.
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, _, _) = bob.incoming().await;
    alice
        .expect("pending", |e| matches!(e, Event::DialPending { req_id, .. } if *req_id == req).then_some(()))
        .await;
    alice.handle.end(&sid);
    assert_eq!(bob.closed(&sid).await, StopReason::Cancelled);
    assert_eq!(alice.dial_result(req).await, Outcome::Cancelled);

    // Timeout (2 s here), once, from the authority.
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, _, _) = bob.incoming().await;
    assert_eq!(bob.closed(&sid).await, StopReason::TimedOut);
    assert_eq!(alice.dial_result(req).await, Outcome::TimedOut);

    // Unknown numbers and offline users look the same, whichever node is asked.
    let req = alice.handle.dial(CAROL, Offer::default());
    assert_eq!(alice.dial_result(req).await, Outcome::Unavailable);
}

#[tokio::test]
async fn two_devices_on_two_nodes_first_answer_wins_and_settings_follow() {
    let Some(c) = TestCluster::start("twodev", 3).await else {
        return;
    };
    let mut alice = c.node(0).user(ALICE, "Alice").await;
    let bob1_token = c.node(1).account(BOB, "Bob").await;
    let bob2_token = c.node(2).login(BOB, None).await;
    let mut bob1 = c.node(1).client(&bob1_token, None).await;
    let mut bob2 = c.node(2).client(&bob2_token, None).await;
    c.wait_presence(BOB, 2).await;

    let req = alice.handle.dial(BOB, Offer::default());
    let (sid1, _, _) = bob1.incoming().await;
    let (sid2, _, _) = bob2.incoming().await;
    assert_eq!(sid1, sid2, "one session rings on both nodes");
    // Both answer at once; exactly one wins (whichever reaches the authority first).
    bob2.handle.answer(&sid2, true);
    bob1.handle.answer(&sid1, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    let mut started = 0;
    let mut closed = 0;
    for events in [bob1.drain(Duration::from_millis(700)).await, bob2.drain(Duration::from_millis(700)).await]
    {
        for e in &events {
            match e {
                Event::SessionStarted { role, .. } => {
                    assert_eq!(*role, Role::Callee);
                    started += 1;
                }
                Event::IncomingClosed { reason, .. } => {
                    assert_eq!(*reason, StopReason::AnsweredElsewhere);
                    closed += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!((started, closed), (1, 1), "one device of Bob starts the session, the other is told");
    alice.started().await;

    // A block list set on node 2 holds for requests arriving at node 0 and reaches node 1.
    bob2.handle.set_blocked(vec![ALICE.into()]);
    bob1.expect("block list on the other node", |e| match e {
        Event::Blocked { numbers } if numbers.iter().any(|n| n == ALICE) => Some(()),
        _ => None,
    })
    .await;
    let req = alice.handle.dial(BOB, Offer::default());
    assert_eq!(alice.dial_result(req).await, Outcome::Unavailable);
    bob2.handle.set_blocked(vec![]);
    bob1.expect("unblocked", |e| matches!(e, Event::Blocked { numbers } if numbers.is_empty()).then_some(()))
        .await;
    // Do-not-disturb set on node 1 (Bob's authority) and on node 2 alike.
    bob2.handle.update_settings(None, Some(true));
    bob1.settings(|s| s.do_not_disturb).await;
    let req = alice.handle.dial(BOB, Offer::default());
    assert_eq!(alice.dial_result(req).await, Outcome::Unavailable);
}

#[tokio::test]
async fn same_node_and_hidden_addresses_across_nodes() {
    let Some(c) = TestCluster::start("hide", 2).await else {
        return;
    };
    // Same node.
    let mut alice = c.node(0).user(ALICE, "Alice").await;
    let mut carol = c.node(0).user(CAROL, "Carol").await;
    let req = alice.handle.dial(CAROL, Offer::default());
    let (sid, _, _) = carol.incoming().await;
    assert_eq!(authority(&sid), node_id(c.node(0)));
    carol.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    alice.started().await;
    carol.started().await;

    // Bob on the other node hides his address: neither side learns one.
    let bob_token = c.node(1).account(BOB, "Bob").await;
    let mut bob = c.node(1).client(&bob_token, Some("192.168.1.9".parse().expect("ip"))).await;
    bob.handle.change_settings(sidecall::protocol::SettingsChange {
        hide_address: Some(true),
        ..Default::default()
    });
    bob.settings(|s| s.hide_address).await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, _, _) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    let (_, _, a_peer) = alice.started().await;
    let (_, _, b_peer) = bob.started().await;
    assert_eq!((a_peer.device_ip, a_peer.observed_ip), (None, None));
    assert_eq!((b_peer.device_ip, b_peer.observed_ip), (None, None));
}

#[tokio::test]
async fn a_stopping_node_ends_its_sessions_with_node_lost() {
    let Some(mut c) = TestCluster::start("lost", 3).await else {
        return;
    };
    let mut alice = c.node(0).user(ALICE, "Alice").await;
    let mut bob = c.node(1).user(BOB, "Bob").await;
    let mut carol = c.node(2).user(CAROL, "Carol").await;
    // Alice ↔ Carol active (held by node 2); Alice → Bob ringing (held by node 1).
    let req = alice.handle.dial(CAROL, Offer::default());
    let (sid_c, _, _) = carol.incoming().await;
    carol.handle.answer(&sid_c, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    alice.started().await;
    carol.started().await;
    let req_b = alice.handle.dial(BOB, Offer::default());
    bob.incoming().await;
    alice
        .expect("pending", |e| {
            matches!(e, Event::DialPending { req_id, .. } if *req_id == req_b).then_some(())
        })
        .await;

    // Node 1 stops gracefully: Bob's connection closes first, so his node (still there)
    // tells Alice he went offline.
    c.nodes[1].stop().await;
    assert_eq!(alice.dial_result(req_b).await, Outcome::Unavailable);
    // Node 2 stops: the active session ends for Alice with node_lost.
    c.nodes[2].stop().await;
    let (sid, why) = alice.ended().await;
    assert_eq!((sid, why), (sid_c, StopReason::NodeLost));
    c.wait_for_nodes(1).await;
    drop((bob, carol));
}

/// A TCP load balancer of the test's own: round robin over the nodes, skipping one that
/// refuses the connection (as HAProxy or a DNS round robin with a retrying client would).
pub struct Balancer {
    pub url: String,
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let start = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let backends = backends.clone();
                tokio::spawn(async move {
                    for k in 0..backends.len() {
                        let to = backends[(start + k) % backends.len()];
                        if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { url: format!("http://{addr}") }
    }
}

/// A client core of `token` on `url`, with the app's own reconnect timing.
async fn client_at(url: &str, token: &str) -> TestClient {
    TestClient::online(sidecall::client::ClientConfig::new(url.to_string(), token)).await
}

fn node_process(dir: &std::path::Path, db: &str, name: &str, listen: &str) -> (crate::cli::Proc, String) {
    let p = crate::cli::Proc::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_sidecall-server"))
            .args(["--listen", listen, "--no-relay", "--verify", "none", "--log", "warn"])
            .args(["--database-url", db, "--nats", NATS, "--cluster-name", name, "--reconnect-grace", "3"])
            // As the benchmark runs its nodes: one thread each (a current-thread runtime).
            .args(["--threads", "1"])
            .arg("--data-dir")
            .arg(dir),
    );
    let line = p.wait_line("listening on");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("url in banner").to_string();
    (p, url)
}

async fn nodes_seen(url: &str) -> Option<u64> {
    let health: serde_json::Value = reqwest::get(format!("{url}/healthz")).await.ok()?.json().await.ok()?;
    health["cluster"]["nodes"].as_u64()
}

async fn wait_nodes_seen(urls: &[&str], n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for url in urls {
        while nodes_seen(url).await != Some(n) {
            assert!(tokio::time::Instant::now() < deadline, "{url} does not see {n} nodes");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn login_at(url: &str, number: &str, name: &str) -> String {
    use sidecall::client::api;
    use sidecall::protocol::{LoginRequest, RegisterRequest};
    let trust = sidecall::client::tls::Trust::from_pin(None);
    let req = RegisterRequest {
        number: number.into(),
        display_name: name.into(),
        password: PASSWORD.into(),
        region: None,
    };
    api::register(url, &trust, &req).await.expect("register");
    let req = LoginRequest {
        number: number.into(),
        password: PASSWORD.into(),
        region: None,
        device_ip: None,
        device_name: Some("test".into()),
    };
    api::login(url, &trust, &req).await.expect("login").token
}

/// Waits for the client to lose its connection and come back; returns how long it was
/// offline from noticing.
async fn back_online(c: &mut TestClient) -> Duration {
    c.expect("offline", |e| matches!(e, Event::Offline { .. }).then_some(())).await;
    let noticed = std::time::Instant::now();
    c.expect("online again", |e| matches!(e, Event::Online { .. }).then_some(())).await;
    noticed.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_node_its_clients_move_and_its_sessions_end() {
    sidecall::tls::install_default_provider();
    let Some(db) = TestDb::create("kill").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("test-kill-{}", std::process::id());
    let mut nodes: Vec<(crate::cli::Proc, String)> = (0..3)
        .map(|i| node_process(&dir.path().join(format!("n{i}")), &db.url, &name, "127.0.0.1:0"))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|(_, u)| u.clone()).collect();
    wait_nodes_seen(&urls.iter().map(String::as_str).collect::<Vec<_>>(), 3).await;
    let addrs: Vec<SocketAddr> =
        urls.iter().map(|u| u.trim_start_matches("http://").parse().expect("addr")).collect();
    let lb = Balancer::start(addrs).await;

    // Connections through the balancer: Alice lands on node 0, Bob on 1, Carol on 2.
    let (a, b, c) = (
        login_at(&urls[0], ALICE, "Alice").await,
        login_at(&urls[0], BOB, "Bob").await,
        login_at(&urls[0], CAROL, "Carol").await,
    );
    let mut alice = client_at(&lb.url, &a).await;
    let mut bob = client_at(&lb.url, &b).await;
    let mut carol = client_at(&lb.url, &c).await;

    // Alice ↔ Bob active, held by Bob's node 1.
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid_b, _, _) = bob.incoming().await;
    bob.handle.answer(&sid_b, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    alice.started().await;
    bob.started().await;

    // kill -9 node 1 mid-session.
    let killed = std::time::Instant::now();
    let pid = nodes[1].0.pid();
    assert!(
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill").success()
    );
    let offline_for = back_online(&mut bob).await;
    eprintln!("kill -9 mid-session: Bob online again {offline_for:?} after noticing");
    assert!(offline_for < Duration::from_secs(2), "Bob offline for {offline_for:?} after noticing");
    let (sid, why) = alice.ended().await;
    assert_eq!((sid, why), (sid_b, StopReason::NodeLost));
    eprintln!("Alice told node_lost {:?} after the kill", killed.elapsed());
    wait_nodes_seen(&[&urls[0], &urls[2]], 2).await;

    // kill -9 node 2 mid-ring (Carol's node holds Alice's request).
    let req = alice.handle.dial(CAROL, Offer::default());
    carol.incoming().await;
    alice
        .expect("pending", |e| matches!(e, Event::DialPending { req_id, .. } if *req_id == req).then_some(()))
        .await;
    let pid = nodes[2].0.pid();
    assert!(
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill").success()
    );
    let code = alice
        .expect("dial failed", |e| match e {
            Event::DialFailed { req_id, code, .. } if *req_id == req => Some(*code),
            _ => None,
        })
        .await;
    assert_eq!(code, Some(ErrorCode::NodeLost));
    let offline_for = back_online(&mut carol).await;
    assert!(offline_for < Duration::from_secs(2), "Carol offline for {offline_for:?} after noticing");

    // The nodes come back (new processes on the same ports) and rejoin; nothing stored was
    // lost: everyone logs in with the same tokens, and a new session goes through.
    for i in [1, 2] {
        nodes[i] = node_process(
            &dir.path().join(format!("n{i}")),
            &db.url,
            &name,
            urls[i].trim_start_matches("http://"),
        );
    }
    wait_nodes_seen(&urls.iter().map(String::as_str).collect::<Vec<_>>(), 3).await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, _, _) = bob.incoming().await;
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    drop(nodes);
}

/// A TCP forwarder to one address that the test can cut (existing connections dropped,
/// new ones refused) and restore: a node losing its NATS or its PostgreSQL.
pub struct Cable {
    pub addr: SocketAddr,
    target: std::sync::Arc<parking_lot::Mutex<SocketAddr>>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cable {
    pub async fn to(target: SocketAddr) -> Cable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let target = std::sync::Arc::new(parking_lot::Mutex::new(target));
        let (c2, conns2, t2) = (cut.clone(), conns.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = *t2.lock();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns2.lock().push(task.abort_handle());
            }
        });
        Cable { addr, target, cut, conns }
    }

    /// New connections go to `to` from now on.
    pub fn retarget(&self, to: SocketAddr) {
        *self.target.lock() = to;
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn health(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{url}/healthz")).await.expect("healthz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn wait_health(url: &str, want: u16) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = health(url).await;
        if status == want {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "healthz of {url} stays {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{url}/metrics")).await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits (up to the lease time and a connect timeout) for a gauge to read `want`.
async fn wait_metric(url: &str, name: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let got = metric(url, name).await;
        if got == Some(want) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} stays {got:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_losing_nats_or_postgres_says_so_refuses_logins_and_recovers() {
    sidecall::tls::install_default_provider();
    let nats = Cable::to("127.0.0.1:4222".parse().expect("addr")).await;
    let pg = Cable::to("127.0.0.1:5432".parse().expect("addr")).await;
    let Some(db) = TestDb::create("cut").await else {
        return;
    };
    let name = format!("test-cut-{}", std::process::id());
    let through_pg = db.url.replace("127.0.0.1:5432", &pg.addr.to_string());
    let start = |db_url: String, nats_url: String| {
        let name = name.clone();
        TestServer::start_with(move |cfg| {
            cfg.database_url = Some(db_url);
            cfg.cluster = Some(ClusterConfig { nats_url, name });
        })
    };
    let cut_node = start(through_pg, format!("nats://{}", nats.addr)).await;
    let other = start(db.url.clone(), NATS.into()).await;
    let c = TestCluster { nodes: vec![cut_node, other], _db: db };
    c.wait_for_nodes(2).await;
    let mut alice = c.node(0).user(ALICE, "Alice").await;
    let mut bob = c.node(1).user(BOB, "Bob").await;
    let url = c.node(0).url.clone();

    for (what, cable) in [("message bus (NATS)", &nats), ("database", &pg)] {
        cable.cut();
        let body = wait_health(&url, 503).await;
        assert!(body["status"].as_str().is_some_and(|s| s.contains(what)), "{body}");
        let up = if what.contains("NATS") { "sidecall_cluster_nats_up" } else { "sidecall_cluster_db_up" };
        wait_metric(&url, up, 0.0).await;
        // New logins are refused with a clear error.
        let req = sidecall::protocol::LoginRequest {
            number: BOB.into(),
            password: PASSWORD.into(),
            region: None,
            device_ip: None,
            device_name: None,
        };
        let err = sidecall::client::api::login(&url, &c.node(0).trust(), &req).await.expect_err("refused");
        assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
        assert!(err.to_string().contains(what), "{err}");

        cable.restore();
        wait_health(&url, 200).await;
        wait_metric(&url, up, 1.0).await;
        c.wait_for_nodes(2).await;
        // Recovered by itself: a session across the two nodes goes through.
        let req = alice.handle.dial(BOB, Offer::default());
        let (sid, _, _) = bob.incoming().await;
        bob.handle.answer(&sid, true);
        assert_eq!(alice.dial_result(req).await, Outcome::Accepted, "after the {what} came back");
        alice.started().await;
        bob.started().await;
        alice.handle.end(&sid);
        bob.ended().await;
        alice.ended().await;
    }
}

#[tokio::test]
async fn verification_codes_count_per_number_not_per_node() {
    let Some(c) = TestCluster::start_with("codes", 3, |cfg| {
        cfg.verify.mode = sidecall::server::verify::VerifyMode::Admin;
    })
    .await
    else {
        return;
    };
    // Verification codes for one number: three, wherever they were asked for.
    let req = sidecall::protocol::RegisterRequest {
        number: "+4989123456".into(),
        display_name: "Dora".into(),
        password: PASSWORD.into(),
        region: None,
    };
    for i in 0..3 {
        let node = c.node(i % 3);
        sidecall::client::api::register(&node.url, &node.trust(), &req).await.expect("code sent");
    }
    let node = c.node(1);
    let err =
        sidecall::client::api::register(&node.url, &node.trust(), &req).await.expect_err("fourth refused");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
}

#[tokio::test]
async fn a_callee_rings_for_three_callers_at_most_whichever_nodes_they_are_on() {
    let Some(c) = TestCluster::start("rings", 3).await else {
        return;
    };
    let mut clients = Vec::new();
    for (i, number) in ["+4930111111", "+4930222222", "+4930333333", "+4930444444"].iter().enumerate() {
        clients.push(c.node(i % 3).user(number, "Caller").await);
    }
    let mut bob = c.node(1).user(BOB, "Bob").await;
    for caller in clients.iter().take(3) {
        caller.handle.dial(BOB, Offer::default());
        bob.incoming().await;
    }
    let fourth = clients[3].handle.dial(BOB, Offer::default());
    assert_eq!(clients[3].dial_result(fourth).await, Outcome::Unavailable);
    let events = bob.drain(Duration::from_millis(300)).await;
    assert!(!events.iter().any(|e| matches!(e, Event::Incoming { .. })), "a fourth caller rang: {events:?}");
}

#[tokio::test]
async fn a_device_that_reconnects_to_another_node_keeps_its_session() {
    let Some(c) = TestCluster::start("moved", 3).await else {
        return;
    };
    // Alice reaches the cluster through a cable of the test's own, first to node 0.
    let cable = Cable::to(c.node(0).addr).await;
    let alice_token = c.node(0).account(ALICE, "Alice").await;
    let mut alice = client_at(&format!("http://{}", cable.addr), &alice_token).await;
    let mut bob = c.node(1).user(BOB, "Bob").await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, _, _) = bob.incoming().await;
    assert_eq!(authority(&sid), node_id(c.node(1)));
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    alice.started().await;
    bob.started().await;

    // Her connection drops; she comes back through node 2 within the grace time.
    cable.retarget(c.node(2).addr);
    cable.cut();
    cable.restore();
    back_online(&mut alice).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The session goes on across the nodes: signals both ways, then an end.
    bob.handle.signal(&sid, SignalData::EndOfCandidates);
    alice
        .expect("signal after moving", |e| {
            matches!(e, Event::Signal { data: SignalData::EndOfCandidates, .. }).then_some(())
        })
        .await;
    alice.handle.signal(&sid, SignalData::EndOfCandidates);
    bob.expect("signal from the moved device", |e| {
        matches!(e, Event::Signal { data: SignalData::EndOfCandidates, .. }).then_some(())
    })
    .await;
    // Longer than the grace time (2 s here): still running.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    alice.handle.end(&sid);
    assert_eq!(bob.ended().await.1, StopReason::PeerEnded);
    assert_eq!(alice.ended().await.1, StopReason::YouEnded);
}
