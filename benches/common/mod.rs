//! What the process-level benchmarks share: child processes with their stdout as timed
//! lines, the `sidecall` command for a profile, and a running server with two accounts.

#![allow(dead_code)] // each benchmark uses its own part

pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_sidecall-server");
pub const APP: &str = env!("CARGO_BIN_EXE_sidecall");

/// A child process; its stdout lines arrive with the time they were read.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<(Instant, String)>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::null()).stdin(Stdio::null()).spawn().expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// The next line containing `needle`, and when it came.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((t, l)) if l.contains(needle) => return (t, l),
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Peak resident memory so far, KiB (Linux).
    pub fn hwm_kib(&self) -> u64 {
        self.status_field("VmHWM:")
    }

    fn status_field(&self, name: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// CPU time used so far, user + system (Linux).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // After the parenthesised name: state is field 0, utime 11, stime 12 (clock ticks).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        Duration::from_millis((field(11) + field(12)) * 10) // USER_HZ is 100 on Linux
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sidecall --profile PROFILE ARGS…` with WebRTC on loopback.
pub fn app(cfg: &Path, profile: &str, args: &[&str]) -> Command {
    let mut c = Command::new(APP);
    c.env("SIDECALL_CONFIG_DIR", cfg)
        .env("SIDECALL_PASSWORD", "benchmark password")
        .env("SIDECALL_RTC_LOOPBACK", "1")
        .env_remove("RUST_LOG")
        .args(["--profile", profile])
        .args(args);
    c
}

/// A `sidecall-server` in `dir` with profiles `a` (+4930123456) and `b` (+4915123456789)
/// registered; returns it and the config folder.
pub fn server_with_two_accounts(dir: &Path) -> (Proc, PathBuf) {
    let cfg = dir.join("config");
    let server = Proc::spawn(
        Command::new(SERVER)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--relay-listen",
                "127.0.0.1:0",
                // The relay's per-user cap (64 MB/s unless set) would be what a relayed
                // transfer on loopback measures: lifted, the relay itself is measured.
                "--relay-user-rate",
                "10000",
                "--verify",
                "none",
                "--log",
                "warn",
            ])
            .arg("--data-dir")
            .arg(dir.join("server")),
    );
    let (_, banner) = server.wait_line("listening on", Duration::from_secs(10));
    let url = banner.split_whitespace().find(|w| w.starts_with("http://")).expect("url").to_string();
    for (p, n) in [("a", "+4930123456"), ("b", "+4915123456789")] {
        let st = app(&cfg, p, &["account", "register", "--server", &url, "--number", n, "--name", p])
            .stdout(Stdio::null())
            .status()
            .expect("register");
        assert!(st.success(), "register {p}");
    }
    (server, cfg)
}
