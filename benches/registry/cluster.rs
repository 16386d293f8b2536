//! `registry --nodes N`: N `sidecall-server` nodes on one PostgreSQL and one NATS, the
//! clients spread evenly over them, half the requests to a callee on the caller's own node
//! and half to one on another node. One process can hold only so many sockets (the open-file
//! limit), so the clients of each node live in a driver process of their own (this binary
//! again, with `--driver`).
//!
//! Latency is measured from the caller's send to the callee's receipt of the initiation with
//! CLOCK_MONOTONIC, which all processes on the machine share: the send time travels in the
//! request's `call_ref`.

use futures_util::{SinkExt, StreamExt};
use sidecall::protocol::{ClientMsg, Offer, PROTOCOL_VERSION, ServerMsg};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{number, percentile, rss_kib, token, ws_config};

pub struct ClusterOpts {
    pub nodes: usize,
    pub clients: usize,
    pub rate: u64,
    pub seconds: u64,
}

/// Microseconds of CLOCK_MONOTONIC: the same clock in every process of the machine.
fn mono_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

async fn seed_postgres(url: &str, n: usize) {
    let store = sidecall::server::store::SqlStore::connect(url).await.expect("migrate the bench database");
    store.close().await;
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let hash = sidecall::server::auth::hash_password("benchmark password").expect("hash");
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let numbers: Vec<String> = chunk.iter().map(|i| number(*i)).collect();
        let names: Vec<String> = chunk.iter().map(|i| format!("User {i}")).collect();
        let hashes: Vec<String> = chunk.iter().map(|_| hash.clone()).collect();
        let ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO users (number, display_name, password_hash, created_at) \
             SELECT n, d, h, 0 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(n, d, h) RETURNING id",
        )
        .bind(&numbers)
        .bind(&names)
        .bind(&hashes)
        .fetch_all(&pool)
        .await
        .expect("insert users");
        let tokens: Vec<String> =
            chunk.iter().map(|i| sidecall::server::auth::token_hash(&token(*i))).collect();
        sqlx::query(
            "INSERT INTO devices (user_id, token_hash, observed_ip, created_at, last_seen_at) \
             SELECT u, t, '127.0.0.1', 0, 0 FROM UNNEST($1::bigint[], $2::text[]) AS x(u, t)",
        )
        .bind(&ids)
        .bind(&tokens)
        .execute(&pool)
        .await
        .expect("insert devices");
    }
    pool.close().await;
}

fn start_node(dir: &std::path::Path, db: &str, cluster: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidecall-server"))
        .args(["--listen", "127.0.0.1:0", "--no-relay", "--verify", "none", "--log", "warn"])
        .args(["--heartbeat", "30", "--connections-per-address", "100000", "--threads", "1"])
        .args(["--database-url", db, "--nats", "nats://127.0.0.1:4222", "--cluster-name", cluster])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a node");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("node banner").expect("read banner");
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break u.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// CPU seconds (user + system) a process used so far.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// CPU seconds of every process with this name (PostgreSQL's backends, NATS).
fn cpu_of(name: &str) -> f64 {
    let Ok(out) = Command::new("pgrep").args(["-x", name]).output() else {
        return 0.0;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .map(cpu_secs)
        .sum()
}

async fn nodes_seen(url: &str) -> Option<u64> {
    let health: serde_json::Value = reqwest::get(format!("{url}/healthz")).await.ok()?.json().await.ok()?;
    health["cluster"]["nodes"].as_u64()
}

/// Latencies (µs) one driver measured at its callees.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Measured {
    same: Vec<u64>,
    cross: Vec<u64>,
    sent: usize,
    /// Sent during the warm-up, not counted.
    warm_up: usize,
    outcomes: usize,
}

pub async fn run_cluster(o: ClusterOpts) {
    sidecall::tls::install_default_provider();
    let base = std::env::var("SIDECALL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let admin = sqlx::PgPool::connect(&format!("{base}/test")).await.expect("PostgreSQL at 127.0.0.1:5432");
    let db_name = format!("sidecall_bench_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(&admin).await.expect("create");
    let db = format!("{base}/{db_name}");
    let per_node = o.clients / o.nodes;
    let total = per_node * o.nodes;
    eprintln!("seeding {total} accounts in PostgreSQL…");
    seed_postgres(&db, total).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = format!("bench-{}", std::process::id());
    let nodes =
        Nodes((0..o.nodes).map(|i| start_node(&dir.path().join(format!("n{i}")), &db, &cluster)).collect());
    let t = Instant::now();
    for (_, url) in nodes.iter() {
        while nodes_seen(url).await != Some(o.nodes as u64) {
            assert!(t.elapsed() < Duration::from_secs(20), "the nodes do not see each other");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle: Vec<u64> = nodes.iter().map(|(c, _)| rss_kib(c.id())).collect();

    eprintln!("connecting {per_node} clients to each of {} nodes (a driver process each)…", o.nodes);
    let exe = std::env::current_exe().expect("own path");
    let t_connect = Instant::now();
    let mut drivers: Vec<(Child, std::path::PathBuf)> = Vec::new();
    for (k, (_, url)) in nodes.iter().enumerate() {
        let out = dir.path().join(format!("driver{k}.json"));
        let child = Command::new(&exe)
            .arg("--driver")
            .args(["--ws", &sidecall::client::api::websocket_url(url).expect("ws url")])
            .args(["--node", &k.to_string(), "--nodes", &o.nodes.to_string()])
            .args(["--per-node", &per_node.to_string()])
            .args([
                "--rate",
                &(o.rate / o.nodes as u64).max(1).to_string(),
                "--seconds",
                &o.seconds.to_string(),
            ])
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a driver");
        drivers.push((child, out));
    }
    let mut outs = Vec::new();
    let mut reached = 0usize;
    for (child, _) in drivers.iter_mut() {
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        reached += line.strip_prefix("ready ").and_then(|n| n.trim().parse::<usize>().ok()).unwrap_or(0);
        outs.push(lines);
    }
    if reached < total {
        println!(
            "  reached {reached} of {total} online: the rest did not connect within 5 minutes \
             (memory available now: {} MB)",
            mem_available_mb()
        );
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let online: Vec<u64> = nodes.iter().map(|(c, _)| rss_kib(c.id())).collect();
    let drivers_kib: u64 = drivers.iter().map(|(c, _)| rss_kib(c.id())).sum();

    eprintln!("driving {} requests/s for 1 s (warm-up, not counted), then {} s…", o.rate, o.seconds);
    let node_pids: Vec<u32> = nodes.iter().map(|(c, _)| c.id()).collect();
    let driver_pids: Vec<u32> = drivers.iter().map(|(c, _)| c.id()).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    // The benchmark's own NATS server when it runs in its own namespace, else every one.
    let nats_pid = std::env::var("SIDECALL_BENCH_NATS_PID").ok().and_then(|p| p.parse::<u32>().ok());
    let nats_cpu = || nats_pid.map(cpu_secs).unwrap_or_else(|| cpu_of("nats-server"));
    let before = (cpu(&node_pids), cpu(&driver_pids), cpu_of("postgres"), nats_cpu());
    let machine_before = machine_ticks();
    // Every driver starts at the same moment, so that all count from the same instant.
    let start = mono_us() + 50_000;
    for (child, _) in drivers.iter_mut() {
        let stdin = child.stdin.as_mut().expect("stdin");
        let _ = writeln!(stdin, "go {start}");
        let _ = stdin.flush();
    }
    let mut all = Measured::default();
    let mut after = None;
    let mut machine_after = None;
    for ((child, out), mut lines) in drivers.into_iter().zip(outs) {
        let _ = lines.next();
        machine_after.get_or_insert_with(machine_ticks);
        after.get_or_insert_with(|| (cpu(&node_pids), cpu(&driver_pids), cpu_of("postgres"), nats_cpu()));
        let mut child = child;
        let _ = child.wait();
        let m: Measured =
            serde_json::from_slice(&std::fs::read(&out).expect("driver results")).expect("results");
        all.same.extend(m.same);
        all.cross.extend(m.cross);
        all.sent += m.sent;
        all.warm_up += m.warm_up;
        all.outcomes += m.outcomes;
    }
    drop(nodes);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).execute(&admin).await;

    all.same.sort_unstable();
    all.cross.sort_unstable();
    let ms = |v: &[u64], p: f64| percentile(v, p) as f64 / 1000.0;
    println!("sidecall registry benchmark, {} nodes (PostgreSQL + NATS)", o.nodes);
    println!("  online clients          {total} ({per_node} per node, connected in {connect_secs:.1} s)");
    println!(
        "  access requests         {} sent at {} requests/s, {} initiations delivered ({} same-node, {} cross-node)",
        all.sent,
        o.rate,
        all.same.len() + all.cross.len(),
        all.same.len(),
        all.cross.len()
    );
    println!(
        "  initiation latency      cross-node p50 {:.3} ms, p99 {:.3} ms (goal p99 ≤ 5 ms: {:.2}x)",
        ms(&all.cross, 0.5),
        ms(&all.cross, 0.99),
        ms(&all.cross, 0.99) / 5.0
    );
    println!(
        "                          same-node  p50 {:.3} ms, p99 {:.3} ms",
        ms(&all.same, 0.5),
        ms(&all.same, 0.99)
    );
    if let Some(a) = after {
        // The CPU was spent on the warm-up's requests too.
        let per_k = |x: f64, y: f64| (x - y) * 1_000_000.0 / (all.sent + all.warm_up).max(1) as f64;
        println!(
            "  CPU per request         nodes {:.0} µs, PostgreSQL {:.0} µs, NATS {:.0} µs, benchmark clients {:.0} µs \
             ({} cores here)",
            per_k(a.0, before.0),
            per_k(a.2, before.2),
            per_k(a.3, before.3),
            per_k(a.1, before.1),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
    }
    if let (Some((b0, t0)), Some(Some((b1, t1)))) = (machine_before, machine_after) {
        println!(
            "  machine busy            {:.0} % of its {} cores over the requests and 3 s after (every process: the p99 \
             grows with this)",
            (b1 - b0) as f64 * 100.0 / (t1 - t0).max(1) as f64,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
    }
    let free_mb = mem_available_mb();
    println!("  memory available        {free_mb} MB after the run");
    let mut node_bytes = 0.0;
    for (k, (i, on)) in idle.iter().zip(&online).enumerate() {
        let per = on.saturating_sub(*i) as f64 * 1024.0 / per_node.max(1) as f64;
        node_bytes += per / o.nodes as f64;
        println!(
            "  node {k} RSS              idle {i} KiB, online {on} KiB: {:.1} KB per client (goal 20 KB: {:.2}x)",
            per / 1000.0,
            per / 20_000.0
        );
    }
    // What would stop more clients on this machine: memory, or files per process.
    let client_bytes = drivers_kib as f64 * 1024.0 / total.max(1) as f64;
    let more = free_mb as f64 * 1e6 / (node_bytes + client_bytes).max(1.0);
    let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0);
    println!(
        "  room for more           memory: ~{:.0}k more online ({:.1} KB per client on its node + {:.1} KB in the \
         benchmark's client processes); open files: at most {} clients per node process (limit {files}), \
         so more online needs more nodes; CPU: see machine busy",
        more / 1000.0,
        node_bytes / 1000.0,
        client_bytes / 1000.0,
        files.saturating_sub(super::FD_MARGIN)
    );
}

/// One driver process: `per_node` clients on one node; then, on `go`, requests at `rate`.
pub fn driver_main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_default()
    };
    let ws = get("--ws");
    let node: usize = get("--node").parse().unwrap_or(0);
    let nodes: usize = get("--nodes").parse().unwrap_or(1);
    let per_node: usize = get("--per-node").parse().unwrap_or(1);
    let rate: u64 = get("--rate").parse().unwrap_or(100);
    let seconds: u64 = get("--seconds").parse().unwrap_or(5);
    let out = std::path::PathBuf::from(get("--out"));
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(drive(ws, node, nodes, per_node, rate, seconds, out));
}

/// With `SIDECALL_BENCH_TRACE` set: every initiation as (sent µs, latency µs, cross-node), for
/// a look at when the slow ones happened.
static TRACE: std::sync::Mutex<Vec<(u64, u64, bool)>> = std::sync::Mutex::new(Vec::new());

/// Requests are sent for this long before they count: the first ones find cold caches and
/// the drivers starting at slightly different moments.
const WARM_UP_US: u64 = 1_000_000;

struct Counters {
    /// Initiations of requests sent before this (CLOCK_MONOTONIC µs) are not counted.
    measure_from: std::sync::atomic::AtomicU64,
    trace: bool,
    connected: AtomicUsize,
    outcomes: AtomicUsize,
    same: std::sync::Mutex<Vec<u64>>,
    cross: std::sync::Mutex<Vec<u64>>,
}

async fn client(i: usize, ws_url: String, c: Arc<Counters>, mut rx: mpsc::Receiver<String>) {
    // As the app does: connect, say hello, and start over after a pause (with jitter) when
    // the node refuses or closes before `welcome`.
    let hello = ClientMsg::Hello { protocol: PROTOCOL_VERSION, token: token(i), device_ip: None };
    let hello = serde_json::to_string(&hello).unwrap_or_default();
    let mut ws = loop {
        let pause = Duration::from_millis(200 + (i as u64 * 7919) % 300);
        let Ok((mut ws, _)) =
            tokio_tungstenite::connect_async_with_config(&ws_url, Some(ws_config()), true).await
        else {
            tokio::time::sleep(pause).await;
            continue;
        };
        if ws.send(Message::text(hello.clone())).await.is_err() {
            tokio::time::sleep(pause).await;
            continue;
        }
        let welcomed = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if matches!(
                        serde_json::from_str::<ServerMsg>(text.as_str()),
                        Ok(ServerMsg::Welcome { .. })
                    ) {
                        break true;
                    }
                }
                Some(Ok(_)) => {}
                _ => break false,
            }
        };
        if welcomed {
            c.connected.fetch_add(1, Ordering::Relaxed);
            break ws;
        }
        tokio::time::sleep(pause).await;
    };
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    if frame.is_none() { return; }
                    continue;
                };
                let Ok(msg) = serde_json::from_str::<ServerMsg>(text.as_str()) else { continue };
                match msg {
                    ServerMsg::Initiation { session_id, call_ref, .. } => {
                        let now = mono_us();
                        if let Some((sent, cross)) = call_ref.as_deref().and_then(read_ref) {
                            let list = if cross { &c.cross } else { &c.same };
                            // Requests of the warm-up second are not counted.
                            if sent >= c.measure_from.load(Ordering::Relaxed) {
                                list.lock().expect("lock").push(now.saturating_sub(sent));
                            }
                            if c.trace {
                                TRACE.lock().expect("lock").push((sent, now.saturating_sub(sent), cross));
                            }
                        }
                        let answer = ClientMsg::Answer { session_id, accept: false };
                        let _ = ws.send(Message::text(serde_json::to_string(&answer).unwrap_or_default())).await;
                    }
                    ServerMsg::AccessOutcome { .. } => { c.outcomes.fetch_add(1, Ordering::Relaxed); }
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

/// `b:SENT_US:CROSS` → (sent, cross).
fn read_ref(r: &str) -> Option<(u64, bool)> {
    let mut parts = r.strip_prefix("b:")?.split(':');
    let sent = parts.next()?.parse().ok()?;
    let cross = parts.next()? == "1";
    Some((sent, cross))
}

async fn drive(
    ws: String,
    node: usize,
    nodes: usize,
    per_node: usize,
    rate: u64,
    seconds: u64,
    out: std::path::PathBuf,
) {
    let c = Arc::new(Counters {
        measure_from: std::sync::atomic::AtomicU64::new(u64::MAX),
        trace: std::env::var_os("SIDECALL_BENCH_TRACE").is_some(),
        connected: AtomicUsize::new(0),
        outcomes: AtomicUsize::new(0),
        same: std::sync::Mutex::new(Vec::new()),
        cross: std::sync::Mutex::new(Vec::new()),
    });
    let first = node * per_node;
    let mut senders = Vec::with_capacity(per_node);
    for k in 0..per_node {
        let (tx, rx) = mpsc::channel(8);
        senders.push(tx);
        tokio::spawn(client(first + k, ws.clone(), c.clone(), rx));
        if k % 250 == 249 {
            while c.connected.load(Ordering::Relaxed) + 50 < k {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let t = Instant::now();
    while c.connected.load(Ordering::Relaxed) < per_node && t.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("ready {}", c.connected.load(Ordering::Relaxed));
    let _ = std::io::stdout().flush();
    // Wait for "go START_US" on stdin (a blocking read, off the runtime's threads).
    let start = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        line.trim().strip_prefix("go ").and_then(|t| t.parse::<u64>().ok())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(mono_us);
    tokio::time::sleep(Duration::from_micros(start.saturating_sub(mono_us()))).await;

    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let measure_from = start + WARM_UP_US;
    c.measure_from.store(measure_from, Ordering::Relaxed);
    let total = (rate * (seconds * 1_000_000 + WARM_UP_US) / 1_000_000) as usize;
    let (mut sent, mut warm_up) = (0usize, 0usize);
    let mut seq = node * 1_000_003;
    while sent + warm_up < total {
        ticker.tick().await;
        seq += 1;
        let caller = (seq * 7919) % per_node;
        let cross = nodes > 1 && seq.is_multiple_of(2);
        let callee_node = if cross { (node + 1 + seq % (nodes - 1)) % nodes } else { node };
        let mut callee = (seq * 104_729) % per_node;
        if !cross && callee == caller {
            callee = (callee + 1) % per_node;
        }
        let now = mono_us();
        let req = ClientMsg::AccessRequest {
            req_id: seq as u64,
            target: number(callee_node * per_node + callee),
            offer: Offer { files: true, video: false },
            region: None,
            call_ref: Some(format!("b:{}:{}", now, cross as u8)),
            place_call: false,
        };
        if senders[caller].try_send(serde_json::to_string(&req).unwrap_or_default()).is_ok() {
            if now >= measure_from {
                sent += 1;
            } else {
                warm_up += 1;
            }
        }
    }
    // Let the last initiations (also from the other drivers) arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = Measured {
        same: std::mem::take(&mut *c.same.lock().expect("lock")),
        cross: std::mem::take(&mut *c.cross.lock().expect("lock")),
        sent,
        warm_up,
        outcomes: c.outcomes.load(Ordering::Relaxed),
    };
    let _ = std::fs::write(&out, serde_json::to_vec(&m).unwrap_or_default());
    if c.trace {
        let t = TRACE.lock().expect("lock");
        let text: String = t.iter().map(|(s, l, c)| format!("{s} {l} {}\n", *c as u8)).collect();
        let path = std::env::temp_dir().join(format!("sidecall-bench-trace-{node}.txt"));
        let _ = std::fs::write(&path, text);
        eprintln!("trace of every initiation (sent µs, latency µs, cross): {}", path.display());
    }
    println!("done");
    drop(senders);
}

/// Busy and total clock ticks of the whole machine, from the first line of /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn mem_available_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// The node processes; stopped when dropped, also when the benchmark fails halfway.
struct Nodes(Vec<(Child, String)>);

impl std::ops::Deref for Nodes {
    type Target = Vec<(Child, String)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (child, _) in self.0.iter_mut() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        for (child, _) in self.0.iter_mut() {
            let _ = child.wait();
        }
    }
}

/// Set in the benchmark's own process once it runs in its network namespace.
const IN_NETNS: &str = "SIDECALL_BENCH_IN_NETNS";

/// With `--netns`: runs this benchmark again in a network namespace of its own, with a NATS
/// server of its own there (the same Debian binary, core NATS only) and PostgreSQL reached
/// through its Unix socket; returns its exit code. `None`: not asked, or it cannot (not root,
/// no `nats-server`, PostgreSQL elsewhere), and the benchmark runs on the machine's loopback
/// and NATS.
///
/// The nodes, their clients and their NATS then share loopback and the message bus with
/// nothing else on the machine. Measured one run after the other on a development machine:
/// the machine's NATS (JetStream on, logging to a file) 88–94 µs of CPU per request, cross-node
/// p99 2.0–3.5 ms; a NATS of the benchmark's own 72–81 µs, 2.0–3.8 ms. With nodes that spent
/// ~250 µs a request (before the E.164 shortcut and the current-thread runtime) the machine's
/// NATS gave 17–23 ms and the benchmark's own 6–12 ms.
pub fn run_in_own_netns() -> Option<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os(IN_NETNS).is_some() || !args.iter().any(|a| a == "--netns") {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let socket_dir = std::path::Path::new("/var/run/postgresql");
    let nats = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.exists());
    let why_not = if !root {
        Some("not root")
    } else if std::env::var_os("SIDECALL_TEST_POSTGRES").is_some() {
        Some("SIDECALL_TEST_POSTGRES names a PostgreSQL of its own")
    } else if !socket_dir.exists() {
        Some("no PostgreSQL socket in /var/run/postgresql")
    } else if nats.is_none() {
        Some("no nats-server binary")
    } else {
        None
    };
    if let Some(why) = why_not {
        eprintln!("--netns: cannot ({why}); running on the machine's loopback and NATS");
        return None;
    }
    let nats = nats?;
    let ns = Netns::add(format!("scbench{}", std::process::id()))?;
    // `ip netns exec` execs the command: the child is the NATS server itself.
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(nats)
        .args(["-a", "127.0.0.1", "-p", "4222"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    eprintln!(
        "running in a network namespace of its own ({}), with a NATS server of its own (pid {}) and \
         PostgreSQL through its socket",
        ns.0,
        server.id()
    );
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().ok()?)
        .args(&args)
        .env(IN_NETNS, "1")
        .env("SIDECALL_TEST_POSTGRES", "postgres://postgres@%2Fvar%2Frun%2Fpostgresql")
        .env("SIDECALL_BENCH_NATS_PID", server.id().to_string())
        .status();
    let _ = server.kill();
    let _ = server.wait();
    Some(status.ok().and_then(|s| s.code()).unwrap_or(1))
}

/// A network namespace with its loopback up; deleted when dropped.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Option<Netns> {
        let ok = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        if !ok(&["netns", "add", &name]) {
            eprintln!("cannot create a network namespace: running in the machine's own");
            return None;
        }
        let ns = Netns(name);
        ok(&["-n", &ns.0, "link", "set", "lo", "up"]).then_some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
