//! Registry benchmark: N online clients against one `sidecall-server` process on loopback,
//! access requests at a fixed rate. Prints requests/s, initiation delivery latency p50/p99,
//! and the server's RSS per online client, each beside a baseline measured in the same run
//! (a bare WebSocket echo over the same loopback: the two hops an initiation takes).
//!
//!   cargo bench --bench registry                      # 10,000 clients, 1,000 requests/s, 10 s
//!   cargo bench --bench registry -- --clients 2000 --rate 500 --seconds 5
//!   cargo bench --bench registry -- --nodes 3           # 3 nodes × 15,000 clients, 3,000 requests/s
//!   cargo bench --bench registry -- --nodes 7 --clients 100000
//!
//! With `--nodes N` (PostgreSQL and NATS on loopback, as on the development machines) it
//! measures a cluster first (see `registry/cluster.rs`), then one node alone with as many
//! clients as one cluster node holds, as the same run's baseline. `--netns` (root) runs it in
//! a network namespace of its own with a NATS server of its own instead of on the machine's
//! loopback and NATS. The first second of requests warms up and is not counted;
//! `SIDECALL_BENCH_TRACE=1` writes every initiation's send time and latency to a file.
//!
//! Under `cargo test` (no `--bench` argument) it runs as a small smoke test.

use futures_util::{SinkExt, StreamExt};
use sidecall::protocol::{ClientMsg, Offer, PROTOCOL_VERSION, ServerMsg};
use sidecall::server::store::SqlStore;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[path = "registry/cluster.rs"]
mod cluster;

struct Opts {
    clients: usize,
    rate: u64,
    seconds: u64,
    nodes: usize,
}

fn parse_opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let nodes = args
        .iter()
        .position(|a| a == "--nodes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let mut o = if nodes > 1 {
        Opts { clients: 15_000 * nodes, rate: 1_000 * nodes as u64, seconds: 10, nodes }
    } else if full {
        Opts { clients: 10_000, rate: 1_000, seconds: 10, nodes }
    } else {
        Opts { clients: 200, rate: 200, seconds: 2, nodes }
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().and_then(|v| v.parse::<u64>().ok());
        match a.as_str() {
            "--clients" => o.clients = val().unwrap_or(o.clients as u64) as usize,
            "--rate" => o.rate = val().unwrap_or(o.rate),
            "--seconds" => o.seconds = val().unwrap_or(o.seconds),
            _ => {}
        }
    }
    o.clients = o.clients.max(4);
    o
}

fn number(i: usize) -> String {
    format!("+49151{i:08}")
}

fn token(i: usize) -> String {
    format!("bench-token-{i:08}")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Creates the registry with `n` users, each with one logged-in device, in one transaction.
async fn seed(dir: &std::path::Path, n: usize) {
    let path = dir.join("registry.sqlite3");
    let store = SqlStore::open_sqlite_file(&path).await.expect("create registry");
    store.close().await;
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.expect("open registry");
    let mut tx = pool.begin().await.expect("begin");
    // One real argon2id hash shared by all (nobody logs in with a password here).
    let hash = sidecall::server::auth::hash_password("benchmark password").expect("hash");
    for i in 0..n {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (number, display_name, password_hash, created_at) VALUES ($1, $2, $3, 0) RETURNING id",
        )
        .bind(number(i))
        .bind(format!("User {i}"))
        .bind(&hash)
        .fetch_one(&mut *tx)
        .await
        .expect("insert user");
        sqlx::query(
            "INSERT INTO devices (user_id, token_hash, observed_ip, created_at, last_seen_at) VALUES ($1, $2, '127.0.0.1', 0, 0)",
        )
        .bind(id)
        .bind(sidecall::server::auth::token_hash(&token(i)))
        .execute(&mut *tx)
        .await
        .expect("insert device");
    }
    tx.commit().await.expect("commit");
    pool.close().await;
}

fn start_server(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidecall-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
            "--verify",
            "none",
            "--log",
            "warn",
            "--heartbeat",
            "30",
            // Every simulated client connects from the same loopback address.
            "--connections-per-address",
            "100000",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sidecall-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("server banner").expect("read banner");
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break u.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// Shared between the driver and the client tasks.
struct Shared {
    /// When the request now ringing at callee i was sent (µs since `epoch`), 0 when none.
    sent_at: Vec<AtomicU64>,
    epoch: Instant,
    latencies: std::sync::Mutex<Vec<u64>>,
    delivered: AtomicUsize,
    outcomes: AtomicUsize,
    connected: AtomicUsize,
}

async fn client(i: usize, ws_url: String, shared: Arc<Shared>, mut rx: mpsc::Receiver<String>) {
    let mut ws = loop {
        match tokio_tungstenite::connect_async_with_config(&ws_url, Some(ws_config()), true).await {
            Ok((ws, _)) => break ws,
            Err(e) => {
                eprintln!("client {i}: connect failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let hello = ClientMsg::Hello { protocol: PROTOCOL_VERSION, token: token(i), device_ip: None };
    let _ = ws.send(Message::text(serde_json::to_string(&hello).unwrap_or_default())).await;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { return };
                let Message::Text(text) = frame else { continue };
                let Ok(msg) = serde_json::from_str::<ServerMsg>(text.as_str()) else { continue };
                match msg {
                    ServerMsg::Welcome { .. } => { shared.connected.fetch_add(1, Ordering::Relaxed); }
                    ServerMsg::Initiation { session_id, .. } => {
                        let now = shared.epoch.elapsed().as_micros() as u64;
                        let sent = shared.sent_at[i].swap(0, Ordering::AcqRel);
                        if sent > 0 {
                            shared.latencies.lock().expect("lock").push(now.saturating_sub(sent));
                        }
                        shared.delivered.fetch_add(1, Ordering::Relaxed);
                        let answer = ClientMsg::Answer { session_id, accept: false };
                        let _ = ws.send(Message::text(serde_json::to_string(&answer).unwrap_or_default())).await;
                    }
                    ServerMsg::AccessOutcome { .. } => { shared.outcomes.fetch_add(1, Ordering::Relaxed); }
                    _ => {}
                }
            }
            out = rx.recv() => {
                let Some(text) = out else { let _ = ws.close(None).await; return };
                if ws.send(Message::text(text)).await.is_err() { return; }
            }
        }
    }
}

/// Baseline: round trips through a bare tokio-tungstenite echo server on loopback.
async fn echo_baseline(samples: usize) -> Vec<u64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config())).await
                else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}"), Some(ws_config()), true)
            .await
            .expect("connect echo");
    let payload = r#"{"type":"initiation","session_id":"0123456789abcdef0123456789abcdef","caller":{"number":"+4915100000001","display_name":"User 1"},"offer":{"files":true,"video":false},"expires_in_ms":30000}"#;
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        ws.send(Message::text(payload)).await.expect("send");
        let _ = ws.next().await;
        out.push(t0.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    out.sort_unstable();
    out
}

/// Files the benchmark and the server keep open besides the clients' sockets.
const FD_MARGIN: u64 = 200;

fn main() {
    if std::env::args().any(|a| a == "--driver") {
        return cluster::driver_main();
    }
    let mut opts = parse_opts();
    // Every client is a socket here and one in the server: each process must be allowed one
    // file per client. Check first and say so, rather than retry "Too many open files".
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
        }
    };
    let most = limit.saturating_sub(FD_MARGIN) as usize;
    if opts.nodes > 1 {
        let per_node = opts.clients / opts.nodes;
        if per_node > most {
            println!(
                "open-file limit {limit} per process: one node (and one driver) holds at most {most} \
                 clients here, not {per_node}: use more nodes (--nodes) or fewer clients"
            );
            return;
        }
        eprintln!("open-file limit {limit}: {per_node} clients per node fit (room for {most})");
        if let Some(code) = cluster::run_in_own_netns() {
            std::process::exit(code);
        }
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let cluster_opts = cluster::ClusterOpts {
            nodes: opts.nodes,
            clients: opts.clients,
            rate: opts.rate,
            seconds: opts.seconds,
        };
        rt.block_on(cluster::run_cluster(cluster_opts));
        println!(
            "one node alone, same run (baseline): {per_node} clients, {} requests/s",
            opts.rate / opts.nodes as u64
        );
        let single =
            Opts { clients: per_node, rate: opts.rate / opts.nodes as u64, seconds: opts.seconds, nodes: 1 };
        rt.block_on(run(single));
        return;
    }
    if opts.clients > most {
        println!(
            "open-file limit {limit} per process: one process holds at most {most} clients here \
             (asked for {}); running with {most}. Raise it (ulimit -Hn, /etc/security/limits.conf) \
             or spread the clients over several server nodes.",
            opts.clients
        );
        opts.clients = most.max(4);
    } else {
        eprintln!("open-file limit {limit}: room for {most} clients per process");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(opts));
}

async fn run(o: Opts) {
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("seeding {} accounts…", o.clients);
    seed(dir.path(), o.clients).await;
    let (mut server, url) = start_server(dir.path());
    let pid = server.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = rss_kib(pid);
    let ws_url = sidecall::client::api::websocket_url(&url).expect("ws url");

    let shared = Arc::new(Shared {
        sent_at: (0..o.clients).map(|_| AtomicU64::new(0)).collect(),
        epoch: Instant::now(),
        latencies: std::sync::Mutex::new(Vec::new()),
        delivered: AtomicUsize::new(0),
        outcomes: AtomicUsize::new(0),
        connected: AtomicUsize::new(0),
    });
    eprintln!("connecting {} clients…", o.clients);
    let t_connect = Instant::now();
    let mut senders = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let (tx, rx) = mpsc::channel(8);
        senders.push(tx);
        tokio::spawn(client(i, ws_url.clone(), shared.clone(), rx));
        if i % 250 == 249 {
            // Let the server accept in batches rather than overflowing its backlog.
            while shared.connected.load(Ordering::Relaxed) + 50 < i {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    while shared.connected.load(Ordering::Relaxed) < o.clients {
        if t_connect.elapsed() > Duration::from_secs(120) {
            eprintln!("only {} of {} clients connected", shared.connected.load(Ordering::Relaxed), o.clients);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let online = shared.connected.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_online = rss_kib(pid);

    eprintln!("driving {} requests/s for {} s…", o.rate, o.seconds);
    let interval = Duration::from_nanos(1_000_000_000 / o.rate.max(1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (o.rate * o.seconds) as usize;
    let mut sent = 0usize;
    let mut skipped = 0usize;
    let t_drive = Instant::now();
    let mut seq = 0usize;
    while sent < total {
        ticker.tick().await;
        seq += 1;
        let caller = (seq * 7919) % o.clients;
        let callee = (caller + 1 + (seq * 104_729) % (o.clients - 1)) % o.clients;
        let now = shared.epoch.elapsed().as_micros() as u64;
        if shared.sent_at[callee]
            .compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            skipped += 1;
            continue;
        }
        let req = ClientMsg::AccessRequest {
            req_id: seq as u64,
            target: number(callee),
            offer: Offer { files: true, video: false },
            region: None,
            call_ref: None,
            place_call: false,
        };
        let text = serde_json::to_string(&req).unwrap_or_default();
        if senders[caller].try_send(text).is_err() {
            shared.sent_at[callee].store(0, Ordering::Release);
            skipped += 1;
            continue;
        }
        sent += 1;
    }
    let drive_secs = t_drive.elapsed().as_secs_f64();
    // Let the last initiations arrive.
    let wait_until = Instant::now() + Duration::from_secs(3);
    while shared.delivered.load(Ordering::Relaxed) < sent && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_end = rss_kib(pid);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *shared.latencies.lock().expect("lock"));
    lat.sort_unstable();

    let baseline = echo_baseline(2000.min(o.rate as usize * o.seconds as usize).max(200)).await;
    drop(senders);
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = server.wait();

    let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
    let (b50, b99) = (percentile(&baseline, 0.50), percentile(&baseline, 0.99));
    let per_client = (rss_online.saturating_sub(rss_idle)) as f64 * 1024.0 / online.max(1) as f64;
    let ratio = |a: u64, b: u64| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
    println!(
        "sidecall registry benchmark ({} mode)",
        if std::env::args().any(|a| a == "--bench") { "full" } else { "smoke" }
    );
    println!("  online clients          {online} (connected in {connect_secs:.1} s)");
    println!(
        "  access requests         {sent} sent, {delivered} initiations delivered, {} outcomes, {skipped} skipped (callee busy)",
        shared.outcomes.load(Ordering::Relaxed)
    );
    println!(
        "  request rate            {:.0} requests/s offered, {:.0} initiations/s delivered (target {})",
        sent as f64 / drive_secs,
        delivered as f64 / drive_secs,
        o.rate
    );
    println!(
        "  initiation latency      p50 {:.3} ms, p99 {:.3} ms",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0
    );
    println!(
        "  baseline (ws echo RTT)  p50 {:.3} ms, p99 {:.3} ms",
        b50 as f64 / 1000.0,
        b99 as f64 / 1000.0
    );
    println!("  latency / baseline      p50 {:.2}x, p99 {:.2}x", ratio(p50, b50), ratio(p99, b99));
    println!(
        "  server RSS              idle {} KiB, {online} online {} KiB, after load {} KiB",
        rss_idle, rss_online, rss_end
    );
    println!(
        "  RSS per online client   {:.1} KB (goal 20 KB: {:.2}x of goal)",
        per_client / 1000.0,
        per_client / 20_000.0
    );
    println!("  p99 goal 5 ms           {:.2}x of goal", p99 as f64 / 5000.0);
}
