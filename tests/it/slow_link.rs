//! Video on a slow or lossy link: two network namespaces made by the test (a home with
//! Alice, who sends 720p camera-like video, and the other side with the server and Bob), a
//! veth pair between them, and on Alice's upload either a 1.5 Mbit/s token bucket (`tc tbf`:
//! this kernel has no netem) or 2 % random loss of what reaches the far side (`iptables -m
//! statistic`). The real
//! `sidecall-server` and `sidecall` binaries run in them; Bob's figures say what he sees.
//! Needs root (ip netns, tc, iptables); elsewhere it is skipped with a notice.

use super::cli::Proc;
use super::nat::{in_netns, sh};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_sidecall-server");
const APP: &str = env!("CARGO_BIN_EXE_sidecall");
const FAR_IP: &str = "10.98.0.1";
const HOME_IP: &str = "10.98.0.2";
/// Alice's upload in the limited run, bits per second.
const LINK_BPS: f64 = 1_500_000.0;

/// Two namespaces joined by a veth pair; removed when dropped.
struct Link {
    prefix: String,
    root: PathBuf,
}

impl Link {
    fn ns(&self, side: &str) -> String {
        format!("{}-{side}", self.prefix)
    }

    /// Alice's end of the pair (her upload leaves through it).
    fn home_dev(&self) -> String {
        format!("{}h", self.prefix)
    }

    fn build(tag: &str, root: &Path) -> Result<Link, String> {
        let prefix = format!("sl{tag}{}", std::process::id() % 100_000);
        let l = Link { prefix, root: root.to_path_buf() };
        for side in ["far", "home"] {
            sh(&["ip", "netns", "add", &l.ns(side)])?;
            sh(&["ip", "-n", &l.ns(side), "link", "set", "lo", "up"])?;
        }
        let (far_dev, home_dev) = (format!("{}f", l.prefix), l.home_dev());
        sh(&["ip", "link", "add", &far_dev, "type", "veth", "peer", "name", &home_dev])?;
        for (dev, side, ip) in [(&far_dev, "far", FAR_IP), (&home_dev, "home", HOME_IP)] {
            sh(&["ip", "link", "set", dev, "netns", &l.ns(side)])?;
            sh(&["ip", "-n", &l.ns(side), "addr", "add", &format!("{ip}/24"), "dev", dev])?;
            sh(&["ip", "-n", &l.ns(side), "link", "set", dev, "up"])?;
        }
        Ok(l)
    }

    fn cmd(&self, side: &str, bin: &str, args: &[&str]) -> Command {
        in_netns(&self.ns(side), bin, args, &self.root, "error")
    }

    fn in_ns(&self, side: &str, args: &[&str]) -> Result<(), String> {
        let ns = self.ns(side);
        let mut all = vec!["ip", "netns", "exec", ns.as_str()];
        all.extend(args);
        sh(&all)
    }

    /// Server and Bob on the far side, Alice at home; Bob listens and receives only.
    fn start(&self) -> (Proc, Proc) {
        let data = self.root.join("server");
        let listen = format!("{FAR_IP}:7480");
        let server = Proc::spawn(&mut self.cmd(
            "far",
            SERVER,
            &[
                "--listen",
                &listen,
                "--no-relay",
                "--verify",
                "none",
                "--log",
                "warn",
                "--data-dir",
                data.to_str().expect("utf-8"),
            ],
        ));
        server.wait_line("listening on");
        let url = format!("http://{FAR_IP}:7480");
        for (side, profile, number, name) in
            [("home", "a", "030 123456", "Alice"), ("far", "b", "+49 151 23456789", "Bob")]
        {
            let out = self
                .cmd(
                    side,
                    APP,
                    &[
                        "--profile",
                        profile,
                        "account",
                        "register",
                        "--server",
                        &url,
                        "--number",
                        number,
                        "--name",
                        name,
                    ],
                )
                .stderr(Stdio::piped())
                .output()
                .expect("register");
            assert!(out.status.success(), "register {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let bob = Proc::spawn(&mut self.cmd(
            "far",
            APP,
            &["--profile", "b", "listen", "--accept", "all", "--once", "--json", "--video-stats"],
        ));
        bob.wait_line(r#""event":"online""#);
        (server, bob)
    }

    /// Alice dials Bob and sends 720p30 camera-like video for `secs` seconds.
    fn dial(&self, secs: u32) -> Proc {
        let hang = secs.to_string();
        Proc::spawn(&mut self.cmd(
            "home",
            APP,
            &[
                "--profile",
                "a",
                "dial",
                "+4915123456789",
                "--json",
                "--no-files",
                "--video",
                "test-pattern:noisy",
                "--video-size",
                "1280x720",
                "--video-fps",
                "30",
                "--video-bitrate",
                "2500",
                "--video-stats",
                "--hangup-after",
                &hang,
            ],
        ))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for side in ["far", "home"] {
            let _ = sh(&["ip", "netns", "del", &self.ns(side)]);
        }
    }
}

/// One `video_stats` line and when the test read it (seconds after `t0`).
struct Figures {
    at: f64,
    v: Value,
}

/// Reads both processes' figures until `until` (seconds after `t0`).
fn collect(t0: Instant, until: f64, procs: [&Proc; 2], into: [&mut Vec<Figures>; 2]) {
    let [a, b] = into;
    while t0.elapsed().as_secs_f64() < until {
        for (p, out) in procs.iter().zip([&mut *a, &mut *b]) {
            while let Ok(line) = p.lines.try_recv() {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["event"] == "video_stats"
                    && v["final"] == false
                {
                    out.push(Figures { at: t0.elapsed().as_secs_f64(), v });
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn within(f: &[Figures], from: f64, to: f64) -> impl Iterator<Item = &Value> {
    f.iter().filter(move |x| x.at >= from && x.at < to).map(|x| &x.v)
}

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)
}

/// The two tests here each encode 720p video in a debug build: one at a time, so that the
/// figures are the link's and not two cores shared four ways. The project's test command
/// (`packaging/dev.sh test`) runs them in a pass of their own after the other tests, for the
/// same reason: on a slower machine, beside the other tests, the decoder fell to 21-25
/// pictures a second.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn topology(tag: &str, root: &Path) -> Option<Link> {
    match Link::build(tag, root) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!(
                "NOTICE: slow-link video test skipped: cannot make network namespaces here ({e}); run as root"
            );
            None
        }
    }
}

#[test]
fn video_follows_a_slow_link_down_and_back_up() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(link) = topology("r", dir.path()) else { return };
    let rate = format!("{}kbit", LINK_BPS as u64 / 1000);
    link.in_ns(
        "home",
        &[
            "tc",
            "qdisc",
            "add",
            "dev",
            &link.home_dev(),
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            "16kb",
            "latency",
            "150ms",
        ],
    )
    .expect("tbf");
    let (_server, bob) = link.start();
    let alice = link.dial(32);
    alice.wait_line("sending_started");
    let t0 = Instant::now();
    let (mut sent, mut seen) = (Vec::new(), Vec::new());
    collect(t0, 16.0, [&alice, &bob], [&mut sent, &mut seen]);
    // The limit is lifted.
    link.in_ns("home", &["tc", "qdisc", "del", "dev", &link.home_dev(), "root"]).expect("lift");
    collect(t0, 30.0, [&alice, &bob], [&mut sent, &mut seen]);

    for f in &sent {
        let s = &f.v["sending"];
        eprintln!(
            "  {:5.1} s  out {:.2} Mbit/s  target {:.2}  {}x{}  skipped {}",
            f.at,
            num(&f.v, &["bitrate_out_bps"]) / 1e6,
            num(s, &["target_bitrate_bps"]) / 1e6,
            s["width"],
            s["height"],
            s["frames_skipped"]
        );
    }
    for f in &seen {
        let r = &f.v["receiving"];
        eprintln!(
            "  {:5.1} s  in {:.2} Mbit/s  {} fps  {}x{}  latency p50 {} max {}  keyframe requests {}",
            f.at,
            num(&f.v, &["bitrate_in_bps"]) / 1e6,
            r["fps"],
            r["width"],
            r["height"],
            r["latency_p50_ms"],
            r["latency_max_ms"],
            r["keyframe_requests_sent"]
        );
    }
    // From 5 s on the sender stays under the link's rate. Finding the rate means crossing it
    // now and then (the queue that builds is the signal), so a second may be a little over:
    // most when the encoder, short of CPU, sent less than its target for a while and the
    // estimate rose past the link meanwhile (seen in CI: one second at 1.06x, then the
    // estimate fell back). A sender that ignores the link sends 2.4 Mbit/s here.
    let settled: Vec<f64> = within(&sent, 5.0, 16.0).map(|v| num(v, &["bitrate_out_bps"])).collect();
    assert!(settled.len() >= 8, "figures every second: {settled:?}");
    let mean = settled.iter().sum::<f64>() / settled.len() as f64;
    eprintln!(
        "sent after 5 s: mean {:.2} Mbit/s, highest second {:.2}",
        mean / 1e6,
        settled.iter().fold(0.0, |a: f64, &b| a.max(b)) / 1e6
    );
    assert!(
        mean <= LINK_BPS && mean >= LINK_BPS * 0.6,
        "sent bitrate under {LINK_BPS} after 5 s, using the link: {settled:?}"
    );
    assert!(settled.iter().all(|&b| b <= LINK_BPS * 1.1), "no second far over the link: {settled:?}");
    // Bob keeps watching: at least 20 pictures a second, none shown older than half a second.
    // A second in which Alice's own machine made fewer pictures (this test shares two cores
    // with the others; Alice's figures say how many she captured — pictures skipped for the
    // link count against the link) is held to what she captured.
    let sent_fps = |at: f64| -> f64 {
        let near: Vec<&Figures> = sent.iter().filter(|f| (f.at - at).abs() <= 1.5).collect();
        let frames = |f: &Figures| num(&f.v, &["sending", "frames_captured"]);
        match (near.first(), near.last()) {
            (Some(a), Some(b)) if b.at > a.at => (frames(b) - frames(a)) / (b.at - a.at),
            _ => f64::NAN,
        }
    };
    let watched: Vec<(f64, f64, f64)> = seen
        .iter()
        .filter(|f| (3.0..16.0).contains(&f.at))
        .map(|f| {
            (num(&f.v, &["receiving", "fps"]), sent_fps(f.at), num(&f.v, &["receiving", "latency_max_ms"]))
        })
        .collect();
    assert!(watched.len() >= 10, "{watched:?}");
    assert!(
        watched.iter().all(|&(fps, made, _)| fps >= 20.0 || fps >= made - 4.0),
        "decoded ≥ 20 fps on the slow link (decoded, sent around then, oldest shown): {watched:?}"
    );
    // On average 25 a second, or nearly all Alice made when her machine made fewer (seen in
    // CI on a slower machine: 23.3 made, 23.2 decoded).
    let mean = watched.iter().map(|w| w.0).sum::<f64>() / watched.len() as f64;
    let made: Vec<f64> = watched.iter().map(|w| w.1).filter(|m| m.is_finite()).collect();
    let mean_made = made.iter().sum::<f64>() / made.len().max(1) as f64;
    assert!(
        mean >= 25.0_f64.min(mean_made - 2.0),
        "decoded {mean:.1} fps on average ({mean_made:.1} made): {watched:?}"
    );
    assert!(watched.iter().all(|&(_, _, max)| max <= 500.0), "no picture older than 500 ms: {watched:?}");
    // Once the link is free the bitrate rises again.
    let limited =
        within(&sent, 10.0, 16.0).map(|v| num(v, &["sending", "target_bitrate_bps"])).fold(0.0, f64::max);
    let freed =
        within(&sent, 24.0, 30.0).map(|v| num(v, &["sending", "target_bitrate_bps"])).fold(0.0, f64::max);
    eprintln!(
        "target: {:.2} Mbit/s limited, {:.2} Mbit/s after the limit was lifted",
        limited / 1e6,
        freed / 1e6
    );
    assert!(freed > limited * 1.2, "the bitrate rose again: {limited} → {freed}");
    drop(alice);
}

#[test]
fn video_goes_on_through_random_loss() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(link) = topology("l", dir.path()) else { return };
    // Dropped on arrival, as a lossy path does (dropped on the way out, the sender would be
    // told so: EPERM).
    link.in_ns(
        "far",
        &[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.02",
            "-j",
            "DROP",
        ],
    )
    .expect("loss");
    let (_server, bob) = link.start();
    let alice = link.dial(20);
    alice.wait_line("sending_started");
    let t0 = Instant::now();
    let (mut sent, mut seen) = (Vec::new(), Vec::new());
    collect(t0, 18.0, [&alice, &bob], [&mut sent, &mut seen]);
    let last = &seen.last().expect("Bob's figures").v["receiving"];
    eprintln!("after 18 s with 2 % loss: {last:#}");
    let watched: Vec<f64> = within(&seen, 3.0, 18.0).map(|v| num(v, &["receiving", "fps"])).collect();
    eprintln!("fps each second: {watched:?}");
    assert!(num(last, &["frames_decoded"]) >= 18.0 * 20.0, "decoding went on: {last}");
    assert!(num(last, &["longest_stall_ms"]) <= 1000.0, "no stall over 1 s: {last}");
    assert!(num(last, &["keyframe_requests_sent"]) <= 10.0, "keyframe requests bounded: {last}");
    drop(alice);
}
