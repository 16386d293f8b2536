//! Two homes behind two NATs, as on the internet: network namespaces made by the test (a
//! "public" segment with the server, two home routers with iptables MASQUERADE — one with
//! `--random-fully`, so its mapping changes per destination — and a home behind each), plus a
//! routed pair on the public segment. The real `sidecall-server` and `sidecall` binaries run in
//! them. Without the relay the session fails (the control); with it a 32 MiB file arrives
//! byte-identical and video flows; the routed pair stays direct; hiding the address leaves no
//! trace of the other side's addresses. Needs root (ip netns, iptables); elsewhere it is
//! skipped with a notice.

use super::cli::{Proc, file_with};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const SERVER: &str = env!("CARGO_BIN_EXE_sidecall-server");
const APP: &str = env!("CARGO_BIN_EXE_sidecall");
const SERVER_IP: &str = "203.0.113.1";
/// Both sides send a small test picture, with figures at the end.
const VIDEO: [&str; 7] =
    ["--video", "test-pattern", "--video-size", "320x240", "--video-fps", "15", "--video-stats"];

/// Runs a command (ip, tc, iptables); its error output on failure.
pub(crate) fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The namespaces of one run; removed when dropped.
struct Topology {
    prefix: String,
}

impl Topology {
    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn build() -> Result<Topology, String> {
        let prefix = format!("sc{}", std::process::id() % 100_000);
        let t = Topology { prefix };
        let p = &t.prefix;
        let names = ["wan", "nat1", "nat2", "home1", "home2", "r1", "r2"];
        for n in names {
            sh(&["ip", "netns", "add", &t.ns(n)])?;
            sh(&["ip", "-n", &t.ns(n), "link", "set", "lo", "up"])?;
        }
        let wan = t.ns("wan");
        sh(&["ip", "-n", &wan, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &wan, "link", "set", "br0", "up"])?;
        sh(&["ip", "-n", &wan, "addr", "add", &format!("{SERVER_IP}/24"), "dev", "br0"])?;
        // Something on the public segment: a NAT router's outside, or a routed host.
        let attach = |ns: &str, dev: &str, ip: &str| -> Result<(), String> {
            let (a, b) = (format!("{p}{dev}w"), format!("{p}{dev}"));
            sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
            sh(&["ip", "link", "set", &a, "netns", &wan])?;
            sh(&["ip", "link", "set", &b, "netns", ns])?;
            sh(&["ip", "-n", &wan, "link", "set", &a, "master", "br0"])?;
            sh(&["ip", "-n", &wan, "link", "set", &a, "up"])?;
            sh(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", &b])?;
            sh(&["ip", "-n", ns, "link", "set", &b, "up"])
        };
        for i in 1..=2 {
            let (nat, home) = (t.ns(&format!("nat{i}")), t.ns(&format!("home{i}")));
            attach(&nat, &format!("o{i}"), &format!("203.0.113.1{i}"))?;
            let (a, b) = (format!("{p}i{i}"), format!("{p}h{i}"));
            sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
            sh(&["ip", "link", "set", &a, "netns", &nat])?;
            sh(&["ip", "link", "set", &b, "netns", &home])?;
            sh(&["ip", "-n", &nat, "addr", "add", &format!("10.{i}.0.1/24"), "dev", &a])?;
            sh(&["ip", "-n", &nat, "link", "set", &a, "up"])?;
            sh(&["ip", "-n", &home, "addr", "add", &format!("10.{i}.0.2/24"), "dev", &b])?;
            sh(&["ip", "-n", &home, "link", "set", &b, "up"])?;
            sh(&["ip", "-n", &home, "route", "add", "default", "via", &format!("10.{i}.0.1")])?;
            sh(&["ip", "netns", "exec", &nat, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            let mut masq = vec!["ip", "netns", "exec", &nat, "iptables", "-t", "nat", "-A", "POSTROUTING"];
            let out = format!("{p}o{i}");
            masq.extend(["-o", &out, "-j", "MASQUERADE"]);
            if i == 2 {
                masq.push("--random-fully");
            }
            sh(&masq)?;
        }
        attach(&t.ns("r1"), "r1", "203.0.113.21")?;
        attach(&t.ns("r2"), "r2", "203.0.113.22")?;
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in ["wan", "nat1", "nat2", "home1", "home2", "r1", "r2"] {
            let _ = sh(&["ip", "netns", "del", &self.ns(n)]);
        }
    }
}

/// `bin ARGS…` inside network namespace `ns`, with the test's config folder under `root`,
/// its password, the log filter `log`, and WebRTC on the real interfaces.
pub(crate) fn in_netns(ns: &str, bin: &str, args: &[&str], root: &Path, log: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, bin])
        .args(args)
        .env("SIDECALL_CONFIG_DIR", root.join("config"))
        .env("SIDECALL_PASSWORD", "correct horse battery")
        .env("RUST_LOG", log)
        .env_remove("SIDECALL_RTC_LOOPBACK")
        .stdin(Stdio::null());
    c
}

struct Run<'a> {
    t: &'a Topology,
    root: PathBuf,
}

impl Run<'_> {
    fn cmd(&self, ns: &str, bin: &str, args: &[&str]) -> Command {
        // webrtc logs every refused permission towards the test range of the other NAT.
        in_netns(
            &self.t.ns(ns),
            bin,
            args,
            &self.root,
            "error,webrtc::peer_connection::transport::turn_relayer=off",
        )
    }

    fn server(&self, extra: &[&str]) -> Proc {
        let data = self.root.join("server");
        let listen = format!("{SERVER_IP}:7480");
        let mut args = vec![
            "--listen",
            &listen,
            "--verify",
            "none",
            "--log",
            "warn",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ];
        args.extend(extra);
        let p = Proc::spawn(&mut self.cmd("wan", SERVER, &args));
        p.wait_line("listening on");
        p
    }

    fn app(&self, ns: &str, profile: &str, args: &[&str]) -> Command {
        let mut all = vec!["--profile", profile];
        all.extend(args);
        self.cmd(ns, APP, &all)
    }

    fn ok(&self, ns: &str, profile: &str, args: &[&str]) -> String {
        let out = self.app(ns, profile, args).stderr(Stdio::piped()).output().expect("run");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "sidecall {args:?} in {ns}: {text}");
        text
    }

    /// A listener in `ns` as `profile` that accepts once, saves into `inbox`, sends video back.
    fn listen(&self, ns: &str, profile: &str, inbox: &Path) -> Proc {
        let inbox = inbox.to_str().expect("utf-8");
        let mut args = vec!["listen", "--accept", "all", "--once", "--json", "--save-dir", inbox];
        args.extend(VIDEO);
        let p = Proc::spawn(&mut self.app(ns, profile, &args));
        p.wait_line(r#""event":"online""#);
        p
    }

    /// `dial` from `ns` as `profile` to `number`, sending `file` with video (and `extra`
    /// arguments); its JSON lines.
    fn dial(
        &self,
        ns: &str,
        profile: &str,
        number: &str,
        file: &Path,
        extra: &[&str],
    ) -> (bool, Vec<String>) {
        let mut args = vec!["dial", number, "--json", "--send", file.to_str().expect("utf-8")];
        args.extend(VIDEO);
        args.extend(extra);
        let out = self.app(ns, profile, &args).stderr(Stdio::null()).output().expect("dial");
        let lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        (out.status.success(), lines)
    }
}

fn path_of(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "channel_open")
        .and_then(|v| v["path"].as_str().map(str::to_string))
}

fn decoded(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "video_stats" && v["final"] == true)
        .filter_map(|v| v["receiving"]["frames_decoded"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn two_homes_behind_nats_connect_only_through_the_relay() {
    let t = match Topology::build() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("NOTICE: NAT test skipped: cannot make network namespaces here ({e}); run as root");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let run = Run { t: &t, root: dir.path().to_path_buf() };
    let server_url = format!("http://{SERVER_IP}:7480");
    let accounts = [("home1", "a", "030 123456", "Alice"), ("home2", "b", "+49 151 23456789", "Bob")];
    let routed = [("r1", "c", "040 123456", "Carol"), ("r2", "d", "+49 160 1234567", "Dave")];

    // The control: no relay, and the session cannot connect across the two NATs.
    {
        let _server = run.server(&["--no-relay"]);
        for (ns, p, n, name) in accounts.iter().chain(&routed) {
            run.ok(ns, p, &["account", "register", "--server", &server_url, "--number", n, "--name", name]);
        }
        let small = dir.path().join("small.bin");
        file_with(&small, 100_000, 3);
        let listener = run.listen("home2", "b", &dir.path().join("inbox0"));
        let t0 = Instant::now();
        let (ok, lines) = run.dial("home1", "a", "+4915123456789", &small, &[]);
        assert!(!ok, "without a relay the NATs cannot be crossed: {lines:#?}");
        assert!(
            lines.iter().any(|l| l.contains(r#""event":"data_failed""#)),
            "the failure is reported: {lines:#?}"
        );
        eprintln!("control: the direct connection failed after {:?}", t0.elapsed());
        drop(listener);
    }

    // With the relay (default flags): a 32 MiB file byte-identical, and video both ways.
    let server = run.server(&[]);
    let big = dir.path().join("big.bin");
    file_with(&big, 32 << 20, 7);
    let inbox = dir.path().join("inbox");
    let listener = run.listen("home2", "b", &inbox);
    let t0 = Instant::now();
    // The session lasts 6 s whatever the transfer takes, so that video has time to flow both
    // ways: a relayed 32 MiB can take little more than a second, too short for ten pictures.
    let (ok, lines) = run.dial("home1", "a", "+4915123456789", &big, &["--hangup-after", "6"]);
    let took = t0.elapsed();
    let theirs = listener.rest(30);
    assert!(ok, "the relayed session works: {lines:#?}");
    assert_eq!(path_of(&lines).as_deref(), Some("relayed"), "{lines:#?}");
    assert_eq!(path_of(&theirs).as_deref(), Some("relayed"));
    let got = std::fs::read(inbox.join("big.bin")).expect("received");
    assert!(got == std::fs::read(&big).expect("sent"), "32 MiB byte-identical");
    assert!(decoded(&theirs) >= 10, "Bob decoded Alice's video through the relay: {}", decoded(&theirs));
    assert!(decoded(&lines) >= 10, "Alice decoded Bob's video through the relay: {}", decoded(&lines));
    eprintln!("relayed: 32 MiB and video in {took:?}");
    // Without hiding the address is told: the checks of the hidden session below can fail.
    assert!(lines.join("\n").contains("203.0.113.12"), "Alice is told Bob's NAT address: {lines:#?}");
    assert!(theirs.join("\n").contains("203.0.113.11"), "Bob is told Alice's NAT address");

    // A routed pair on the public segment connects directly.
    let inbox2 = dir.path().join("inbox2");
    let small = dir.path().join("small.bin");
    let listener = run.listen("r2", "d", &inbox2);
    let (ok, lines) = run.dial("r1", "c", "+491601234567", &small, &[]);
    let _ = listener.rest(30);
    assert!(ok, "{lines:#?}");
    assert_eq!(path_of(&lines).as_deref(), Some("direct"));

    // Bob hides his address: relayed, and neither side sees an address of the other.
    let set = run.ok("home2", "b", &["settings", "--hide-address", "on"]);
    assert!(set.contains("hide my address on"), "{set}");
    let inbox3 = dir.path().join("inbox3");
    let listener = run.listen("home2", "b", &inbox3);
    let (ok, lines) = run.dial("home1", "a", "+4915123456789", &small, &[]);
    let theirs = listener.rest(30);
    assert!(ok, "{lines:#?}");
    assert_eq!(path_of(&lines).as_deref(), Some("relayed"));
    let (alice_text, bob_text) = (lines.join("\n"), theirs.join("\n"));
    for addr in ["10.2.0.2", "203.0.113.12"] {
        assert!(!alice_text.contains(addr), "Alice saw Bob's address {addr}: {alice_text}");
    }
    for addr in ["10.1.0.2", "203.0.113.11"] {
        assert!(!bob_text.contains(addr), "Bob saw Alice's address {addr}: {bob_text}");
    }
    drop(server);
}
