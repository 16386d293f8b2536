//! File-transfer benchmark: a real `sidecall-server` and two `sidecall` processes on loopback
//! (`listen --accept all` and `dial --send`), so the whole path is measured: signaling through
//! the server, WebRTC, the file written to disk and verified. Prints MB/s, the peak RSS of
//! each side, accept-to-channel-open time, and a raw TCP loopback copy of the same file to
//! disk measured in the same run, with the ratio.
//!
//!   cargo bench --bench transfer                    # 256 MiB, 7 channel opens
//!   cargo bench --bench transfer -- --mib 1024
//!   cargo bench --bench transfer -- --relay      # also through the server's relay, same run
//!
//! Under `cargo test` (no `--bench` argument) it runs as a small smoke test.

mod common;

use common::{Proc, app, server_with_two_accounts};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn make_file(path: &Path, bytes: u64) {
    let mut f = std::fs::File::create(path).expect("create");
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("write");
        left -= n as u64;
        block.rotate_left(7);
    }
    f.sync_all().expect("sync");
}

/// Raw TCP on loopback, read from disk, written to disk and fsynced: the ceiling.
fn tcp_baseline(src: &Path, dst: &Path) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dst = dst.to_path_buf();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&dst).expect("create"));
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).expect("write");
        }
        f.into_inner().expect("flush").sync_all().expect("sync");
    });
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut f = std::fs::File::open(src).expect("open");
    std::io::copy(&mut f, &mut s).expect("copy");
    drop(s);
    receiver.join().expect("receiver");
    let secs = t0.elapsed().as_secs_f64();
    std::fs::metadata(src).expect("meta").len() as f64 / 1e6 / secs
}

/// What one pass measured.
struct Figures {
    mbps: f64,
    secs: f64,
    open_ms: Vec<u64>,
    hwm_send: u64,
    hwm_recv: u64,
    path: String,
}

/// Channel opens (several short sessions), then the big transfer watched for peak memory.
fn pass(cfg: &Path, inbox: &Path, src: &Path, tiny: &Path, opens: usize, mib: u64) -> Figures {
    let _ = std::fs::remove_dir_all(inbox);
    let inbox_s = inbox.to_str().expect("utf-8");
    let mut open_ms = Vec::new();
    let mut path = String::new();
    for _ in 0..opens {
        let listener = Proc::spawn(&mut app(
            cfg,
            "b",
            &["listen", "--accept", "all", "--once", "--json", "--save-dir", inbox_s],
        ));
        listener.wait_line("\"event\":\"online\"", Duration::from_secs(10));
        let dial = Proc::spawn(&mut app(
            cfg,
            "a",
            &["dial", "+4915123456789", "--json", "--send", tiny.to_str().expect("utf-8")],
        ));
        let (_, l) = dial.wait_line("channel_open", Duration::from_secs(20));
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        open_ms.push(v["open_ms"].as_u64().unwrap_or(0));
        path = v["path"].as_str().unwrap_or("?").to_string();
        dial.wait_line("session_ended", Duration::from_secs(20));
    }
    open_ms.sort_unstable();
    let listener = Proc::spawn(&mut app(
        cfg,
        "b",
        &["listen", "--accept", "all", "--once", "--json", "--save-dir", inbox_s],
    ));
    listener.wait_line("\"event\":\"online\"", Duration::from_secs(10));
    let mut dial = Proc::spawn(&mut app(
        cfg,
        "a",
        &["dial", "+4915123456789", "--json", "--send", src.to_str().expect("utf-8")],
    ));
    let (t_started, _) = dial.wait_line("\"event\":\"started\"", Duration::from_secs(60));
    let (mut hwm_send, mut hwm_recv) = (0, 0);
    let t_done = loop {
        hwm_send = hwm_send.max(dial.hwm_kib());
        hwm_recv = hwm_recv.max(listener.hwm_kib());
        match dial.lines.recv_timeout(Duration::from_millis(50)) {
            Ok((t, l)) if l.contains("\"event\":\"completed\"") => break t,
            Ok((_, l)) if l.contains("\"event\":\"failed\"") => panic!("transfer failed: {l}"),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("dial ended early: {e}"),
        }
    };
    hwm_send = hwm_send.max(dial.hwm_kib());
    hwm_recv = hwm_recv.max(listener.hwm_kib());
    let _ = dial.child.wait();
    let secs = t_done.duration_since(t_started).as_secs_f64();
    let same = std::fs::metadata(inbox.join("payload.bin")).map(|m| m.len()).unwrap_or(0) == mib << 20;
    assert!(same, "the received file has the wrong size");
    Figures { mbps: (mib << 20) as f64 / 1e6 / secs, secs, open_ms, hwm_send, hwm_recv, path }
}

fn p50(v: &[u64]) -> u64 {
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let relay = std::env::args().any(|a| a == "--relay");
    let mib = arg("--mib").unwrap_or(if full { 256 } else { 8 });
    let opens = arg("--opens").unwrap_or(if full { 7 } else { 2 }) as usize;
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let (server, cfg) = server_with_two_accounts(dir);
    let inbox = dir.join("inbox");
    let src = dir.join("payload.bin");
    eprintln!("writing a {mib} MiB test file…");
    make_file(&src, mib << 20);
    let tiny = dir.join("tiny.txt");
    std::fs::write(&tiny, b"x").expect("tiny");

    let direct = pass(&cfg, &inbox, &src, &tiny, opens, mib);
    let base = tcp_baseline(&src, &dir.join("tcp-copy.bin"));
    println!("sidecall transfer benchmark ({} mode)", if full { "full" } else { "smoke" });
    println!("  file                    {mib} MiB, written to disk and SHA-256 verified by the receiver");
    println!(
        "  throughput              {:.0} MB/s ({:.2} s offer-accepted to verified), path {}",
        direct.mbps, direct.secs, direct.path
    );
    println!("  raw TCP loopback copy   {base:.0} MB/s (same file, disk to disk, same run)");
    println!("  ratio to TCP            {:.2}x", direct.mbps / base);
    println!(
        "  peak RSS                sender {:.1} MB, receiver {:.1} MB (goal 64 MB)",
        direct.hwm_send as f64 / 1024.0,
        direct.hwm_recv as f64 / 1024.0
    );
    println!(
        "  accept-to-channel-open  p50 {} ms, all {:?} (goal 10 ms p50)",
        p50(&direct.open_ms),
        direct.open_ms
    );
    if relay {
        // Bob hides his address: the same sessions go through the server's relay.
        let st = app(&cfg, "b", &["settings", "--hide-address", "on"])
            .stdout(std::process::Stdio::null())
            .status();
        assert!(st.is_ok_and(|s| s.success()), "hide my address");
        let (cpu0, t0) = (server.cpu(), std::time::Instant::now());
        let relayed = pass(&cfg, &inbox, &src, &tiny, opens, mib);
        let (cpu, wall) = (server.cpu() - cpu0, t0.elapsed());
        assert_eq!(relayed.path, "relayed", "hide my address relays the session");
        let gb = 2.0 * (mib << 20) as f64 / 1e9; // in and out of the relay
        println!(
            "  relayed (Bob hides his address; same run, same file; the relay's per-user cap, \
             64 MB/s by default, lifted with --relay-user-rate)"
        );
        println!(
            "    throughput            {:.0} MB/s ({:.2} s), {:.2}x direct (goal 0.5x)",
            relayed.mbps,
            relayed.secs,
            relayed.mbps / direct.mbps
        );
        println!(
            "    accept-to-open        p50 {} ms, all {:?} (goal 50 ms p50; direct {} ms)",
            p50(&relayed.open_ms),
            relayed.open_ms,
            p50(&direct.open_ms)
        );
        println!(
            "    server CPU            {:.2} s per GB relayed ({:.0} % of one core over the pass), peak RSS {:.1} MB",
            cpu.as_secs_f64() / gb,
            cpu.as_secs_f64() * 100.0 / wall.as_secs_f64(),
            server.hwm_kib() as f64 / 1024.0
        );
    }
    drop(server);
}
