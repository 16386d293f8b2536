//! Video over a real session: two `sidecall` processes through a real `sidecall-server`,
//! WebRTC on loopback, the test pattern at 480p30 and 720p30 one way (caller sends, callee
//! receives, so each side's CPU is its own half of the work).
//!
//! Figures: capture-to-decoded latency p50/p95 (the pattern carries its capture time),
//! frames per second decoded, CPU % of one core per process, encoded bitrate. Baseline in
//! the same run: the same pictures encoded and decoded in one process with no network
//! (the codec's own share of latency and CPU).
//!
//! Then a limited link (root only: two network namespaces, `tc tbf` at 1.5 Mbit/s on the
//! sender's upload): 720p30 camera-like video for 30 s with the limit lifted after 20 s,
//! printing the sent and target bitrate and the size sent each second, latency p95, the oldest
//! picture shown, the longest stall and pictures dropped — beside the same run on the same
//! link without a limit.
//!
//! `cargo bench --bench video` runs 20 s per size; under `cargo test` a 3 s smoke run at 480p.

mod common;

use common::netns::Netns;
use common::{Proc, app, server_with_two_accounts};
use sidecall::media::codec::{COMPLEXITY, Complexity, H264Decoder, H264Encoder};
use sidecall::media::pattern::TestPattern;
use std::path::Path;
use std::time::{Duration, Instant};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Encode + decode of the same pictures in one process: latency per picture and CPU share.
fn codec_baseline(w: usize, h: usize, noise: u8, frames: u64, bitrate: u32) -> (f64, f64, f64) {
    let p = TestPattern::new(w, h).noisy(noise);
    let mut enc = H264Encoder::new(bitrate, 30.0).expect("encoder");
    let mut dec = H264Decoder::new().expect("decoder");
    let pics: Vec<_> = (0..30).map(|n| p.frame(n, n * 33)).collect();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for n in 0..frames {
        let t = Instant::now();
        let data = enc.encode(&pics[(n % 30) as usize]).expect("encode");
        let _ = dec.decode(&data).expect("decode");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let busy = t0.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    // CPU % of one core at 30 pictures per second.
    let cpu = busy / frames as f64 * 30.0 * 100.0;
    (pct(&lat, 0.5), pct(&lat, 0.95), cpu)
}

/// The test pattern's own cost: CPU % of one core to draw 30 pictures a second.
fn pattern_cost(w: usize, h: usize, noise: u8) -> f64 {
    let p = TestPattern::new(w, h).noisy(noise);
    let t0 = Instant::now();
    let n = 120;
    for i in 0..n {
        std::hint::black_box(p.frame(i, i * 33));
    }
    t0.elapsed().as_secs_f64() / n as f64 * 30.0 * 100.0
}

/// The encoder's complexity settings side by side on the same pictures: CPU % of one core
/// for encoding 30 pictures a second, and the quality (PSNR of the luma, decoded vs source).
fn codec_tradeoff(w: usize, h: usize, noise: u8, bitrate: u32) {
    let p = TestPattern::new(w, h).noisy(noise);
    let pics: Vec<_> = (0..60).map(|n| p.frame(n, n * 33)).collect();
    println!(
        "  encoder complexity, test-pattern:noisy {w}x{h} at {:.2} Mbit/s (in use: {COMPLEXITY:?})",
        f64::from(bitrate) / 1e6
    );
    for c in [Complexity::Low, Complexity::Medium, Complexity::High] {
        let mut enc = H264Encoder::with_complexity(bitrate, 30.0, c).expect("encoder");
        let mut dec = H264Decoder::new().expect("decoder");
        let (mut busy, mut bytes, mut err, mut px) = (Duration::ZERO, 0usize, 0f64, 0f64);
        for (n, pic) in pics.iter().cycle().take(240).enumerate() {
            let t = Instant::now();
            let data = enc.encode(pic).expect("encode");
            busy += t.elapsed();
            bytes += data.len();
            if n >= 60
                && let Some(out) = dec.decode(&data).expect("decode")
            {
                for (a, b) in pic.y.iter().zip(&out.y) {
                    let d = f64::from(*a) - f64::from(*b);
                    err += d * d;
                }
                px += pic.y.len() as f64;
            }
        }
        let psnr = 10.0 * (255.0f64 * 255.0 / (err / px.max(1.0))).log10();
        println!(
            "    {:<7} encode {:4.1} % of a core, PSNR {psnr:.2} dB, {:.2} Mbit/s",
            format!("{c:?}"),
            busy.as_secs_f64() / 240.0 * 30.0 * 100.0,
            bytes as f64 * 8.0 / 8.0 / 1e6
        );
    }
}

struct Run {
    p50: f64,
    p95: f64,
    fps: f64,
    cpu_send: f64,
    cpu_recv: f64,
    mbps: f64,
    decoded: u64,
    dropped: u64,
}

/// One session: the caller sends `source` at `size`; with `both`, the callee sends the same back.
fn run(cfg: &Path, source: &str, size: &str, both: bool, secs: u64) -> Run {
    let mut largs = vec!["listen", "--accept", "all", "--once", "--json", "--video-stats"];
    if both {
        largs.extend(["--video", source, "--video-size", size]);
    }
    let listener = Proc::spawn(&mut app(cfg, "b", &largs));
    listener.wait_line("\"event\":\"online\"", Duration::from_secs(10));
    let hang = (secs + 2).to_string();
    let dial = Proc::spawn(&mut app(
        cfg,
        "a",
        &[
            "dial",
            "+4915123456789",
            "--json",
            "--no-files",
            "--video",
            source,
            "--video-size",
            size,
            "--hangup-after",
            &hang,
        ],
    ));
    dial.wait_line("sending_started", Duration::from_secs(20));
    // Skip the first second (connection set-up, first keyframe), then measure `secs`.
    listener.wait_line("video_stats", Duration::from_secs(10));
    listener.wait_line("video_stats", Duration::from_secs(10));
    let (c0s, c0r, t0) = (dial.cpu(), listener.cpu(), Instant::now());
    let mut rates = Vec::new();
    let mut fps = Vec::new();
    let mut last = serde_json::Value::Null;
    while t0.elapsed() < Duration::from_secs(secs) {
        let (_, l) = listener.wait_line("video_stats", Duration::from_secs(10));
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        rates.push(v["bitrate_in_bps"].as_f64().unwrap_or(0.0));
        fps.push(v["receiving"]["fps"].as_f64().unwrap_or(0.0));
        last = v;
    }
    let wall = t0.elapsed().as_secs_f64();
    let (c1s, c1r) = (dial.cpu(), listener.cpu());
    let r = &last["receiving"];
    let decoded = r["frames_decoded"].as_u64().unwrap_or(0);
    Run {
        p50: r["latency_p50_ms"].as_f64().unwrap_or(f64::NAN),
        p95: r["latency_p95_ms"].as_f64().unwrap_or(f64::NAN),
        fps: fps.iter().sum::<f64>() / fps.len().max(1) as f64,
        cpu_send: (c1s - c0s).as_secs_f64() / wall * 100.0,
        cpu_recv: (c1r - c0r).as_secs_f64() / wall * 100.0,
        mbps: rates.iter().skip(1).sum::<f64>() / (rates.len().saturating_sub(1)).max(1) as f64 / 1e6,
        decoded,
        dropped: r["frames_dropped"].as_u64().unwrap_or(0),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if full && std::env::args().any(|a| a == "--limited-link") {
        let root = tempfile::tempdir().expect("tempdir");
        limited_link(root.path());
        return;
    }
    let secs = if full { 20 } else { 3 };
    // (source, noise the baseline draws, size, both ways)
    let runs: &[(&str, u8, &str, usize, usize, bool)] = if full {
        &[
            ("test-pattern", 0, "640x480", 640, 480, false),
            ("test-pattern", 0, "1280x720", 1280, 720, false),
            ("test-pattern:noisy", 6, "640x480", 640, 480, false),
            ("test-pattern:noisy", 6, "1280x720", 1280, 720, false),
            ("test-pattern:noisy", 6, "1280x720", 1280, 720, true),
        ]
    } else {
        &[("test-pattern", 0, "640x480", 640, 480, false)]
    };
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let (server, cfg) = server_with_two_accounts(dir);
    println!(
        "sidecall video benchmark ({} mode, {secs} s per run, 30 fps, one way unless marked; `noisy` adds camera-like sensor noise)",
        if full { "full" } else { "smoke" }
    );
    for &(source, noise, size, w, h, both) in runs {
        let r = run(&cfg, source, size, both, secs);
        let bitrate = (w * h * 30 * 7 / 100) as u32;
        let (b50, b95, bcpu) = codec_baseline(w, h, noise, if full { 300 } else { 60 }, bitrate);
        let way = if both {
            ", both ways (each side sends and receives; figures of the caller's stream)"
        } else {
            ""
        };
        println!("  {source} {size} at 30 fps{way}");
        println!(
            "    capture-to-decoded latency  p50 {:.1} ms, p95 {:.1} ms (goal p95 <= 50 ms: {:.2}x)",
            r.p50,
            r.p95,
            r.p95 / 50.0
        );
        println!(
            "    codec alone, same pictures  p50 {b50:.1} ms, p95 {b95:.1} ms (encode + decode, no network; ratio p50 {:.1}x)",
            r.p50 / b50
        );
        println!(
            "    decoded                     {:.1} fps sustained ({} pictures, {} dropped)",
            r.fps, r.decoded, r.dropped
        );
        println!(
            "    CPU, one core = 100 %       caller {:.0} %, callee {:.0} % (goal <= 35 %); codec alone {bcpu:.0} %, drawing the test pattern {:.1} %",
            r.cpu_send,
            r.cpu_recv,
            pattern_cost(w, h, noise)
        );
        println!("    encoded bitrate             {:.2} Mbit/s (target {:.2})", r.mbps, bitrate as f64 / 1e6);
    }
    drop(server);
    if full {
        codec_tradeoff(1280, 720, 6, 1_935_360);
        limited_link(root.path());
    }
}

/// What one run over the namespaces' link showed.
#[derive(Default)]
struct LinkRun {
    /// Per second: (seconds, sent bit/s, target bit/s, width sent, fps received, oldest picture ms).
    seconds: Vec<(f64, f64, f64, u64, f64, f64)>,
    p95: f64,
    longest_stall: f64,
    dropped: u64,
    skipped: u64,
    decoded: u64,
}

fn link_run(net: &Netns, limit: Option<u64>, lift_after: Option<u64>, secs: u64) -> LinkRun {
    let num =
        |v: &serde_json::Value, k: &[&str]| k.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN);
    net.limit(limit).expect("tc");
    let bob = Proc::spawn(&mut net.app(
        "far",
        "b",
        &["listen", "--accept", "all", "--once", "--json", "--video-stats"],
    ));
    bob.wait_line("\"event\":\"online\"", Duration::from_secs(10));
    let hang = (secs + 1).to_string();
    let alice = Proc::spawn(&mut net.app(
        "home",
        "a",
        &[
            "dial",
            "+4915123456789",
            "--json",
            "--no-files",
            "--video",
            "test-pattern:noisy",
            "--video-size",
            "1280x720",
            "--video-bitrate",
            "2500",
            "--video-stats",
            "--hangup-after",
            &hang,
        ],
    ));
    let (t0, _) = alice.wait_line("sending_started", Duration::from_secs(20));
    let mut run = LinkRun::default();
    let mut sent: Vec<(f64, f64, f64, u64)> = Vec::new();
    let mut lifted = false;
    let mut last_in = serde_json::Value::Null;
    let mut last_out = serde_json::Value::Null;
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(after) = lift_after
            && !lifted
            && t0.elapsed() >= Duration::from_secs(after)
        {
            net.limit(None).expect("lift");
            lifted = true;
        }
        while let Ok((t, l)) = alice.lines.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_default();
            if v["event"] == "video_stats" && v["final"] == false {
                let s = &v["sending"];
                sent.push((
                    (t - t0).as_secs_f64(),
                    num(&v, &["bitrate_out_bps"]),
                    num(s, &["target_bitrate_bps"]),
                    s["width"].as_u64().unwrap_or(0),
                ));
                last_out = v;
            }
        }
        while let Ok((t, l)) = bob.lines.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_default();
            if v["event"] == "video_stats" && v["final"] == false {
                let at = (t - t0).as_secs_f64();
                let r = &v["receiving"];
                if let Some(&(_, out, target, width)) = sent.last() {
                    run.seconds.push((at, out, target, width, num(r, &["fps"]), num(r, &["latency_max_ms"])));
                }
                if !lifted {
                    // Over the recent 600 pictures: while limited, the limited ones.
                    run.p95 = num(r, &["latency_p95_ms"]);
                }
                last_in = v;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = &last_in["receiving"];
    run.longest_stall = num(r, &["longest_stall_ms"]);
    run.dropped = r["frames_dropped"].as_u64().unwrap_or(0);
    run.decoded = r["frames_decoded"].as_u64().unwrap_or(0);
    run.skipped = last_out["sending"]["frames_skipped"].as_u64().unwrap_or(0);
    drop(alice);
    drop(bob);
    run
}

fn limited_link(root: &Path) {
    let dir = root.join("netns");
    let net = match Netns::build(&dir) {
        Ok(n) => n,
        Err(e) => {
            println!("  limited link: skipped (cannot make network namespaces here: {e}; run as root)");
            return;
        }
    };
    let _server = net.server_with_two_accounts();
    let free = link_run(&net, None, None, 15);
    let slow = link_run(&net, Some(1500), Some(20), 30);
    println!(
        "  test-pattern:noisy 1280x720 at 30 fps, setting 2.5 Mbit/s, over a 1.5 Mbit/s link (tc tbf, 150 ms queue); limit lifted at 20 s"
    );
    println!("    second  sent Mbit/s  target  size sent  fps in  oldest shown ms");
    for (at, out, target, width, fps, oldest) in &slow.seconds {
        println!(
            "    {at:6.1}  {:11.2}  {:6.2}  {:>9}  {fps:6.0}  {oldest:15.0}",
            out / 1e6,
            target / 1e6,
            format!("{width}w")
        );
    }
    let limited: Vec<f64> = slow.seconds.iter().filter(|s| (5.0..20.0).contains(&s.0)).map(|s| s.1).collect();
    let mean = limited.iter().sum::<f64>() / limited.len().max(1) as f64;
    println!(
        "    limited 5-20 s: sent mean {:.2} Mbit/s (link 1.50); after the lift: target {:.2} Mbit/s at the end",
        mean / 1e6,
        slow.seconds.last().map_or(0.0, |s| s.2) / 1e6
    );
    println!(
        "    latency p95 while limited {:.0} ms (goal <= 200 ms; same link without a limit {:.0} ms), longest stall {:.0} ms (no limit: {:.0} ms; goal: no freeze)",
        slow.p95, free.p95, slow.longest_stall, free.longest_stall
    );
    println!(
        "    pictures decoded {} in 30 s (no limit: {} in 15 s), dropped at the receiver {} (no limit {}), skipped by the sender {} (no limit {})",
        slow.decoded, free.decoded, slow.dropped, free.dropped, slow.skipped, free.skipped
    );
}
