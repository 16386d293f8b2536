//! Relay capacity: how many relayed sessions, each carrying a 2 Mbit/s stream, the server's
//! TURN relay forwards on this machine without loss. The relay runs in a process of its own
//! (this benchmark started with `--serve`, on the library's relay with every device pair in
//! a session); the load comes from TURN clients speaking the real protocol on loopback
//! (allocate with the long-term credential dance, permission, channel bind, ChannelData).
//! Prints, per step, packets lost and the relay's CPU, beside the same streams sent straight
//! from socket to socket (no relay) measured in the same run.
//!
//!   cargo bench --bench relay                 # 50 … 300 sessions, 5 s each
//!   cargo bench --bench relay -- --seconds 10
//!
//! Under `cargo test` (no `--bench` argument) it runs as a small smoke test.

mod common;

use rtc_stun::attributes::*;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::*;
use rtc_stun::textattrs::TextAttribute;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::peeraddr::PeerAddress;
use rtc_turn::proto::relayaddr::RelayedAddress;
use rtc_turn::proto::reqtrans::RequestedTransport;
use sidecall::server::metrics::Metrics;
use sidecall::server::relay::creds::Secret;
use sidecall::server::relay::{Relay, RelayConfig, SessionGate};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const SECRET: &str = "relay benchmark secret";
/// 2 Mbit/s: a 1,000-byte packet every 4 ms.
const PACKET: usize = 1000;
const EVERY: Duration = Duration::from_millis(4);

/// Devices 2k and 2k+1 are in a session with each other.
struct Pairs;

impl SessionGate for Pairs {
    fn session_peer(&self, device: i64) -> Option<(i64, i64)> {
        Some((device, device ^ 1))
    }
}

fn crypto() -> Arc<dyn rtc_crypto::RTCCryptoProvider> {
    rtc_crypto::default_provider().expect("crypto")
}

fn serve() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let cfg = RelayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ports: 30000..=39999,
            allow_private: true,
            max_allocations_per_user: 4,
            ..Default::default()
        };
        let relay =
            Relay::start(cfg, Secret::new(SECRET, crypto()), Arc::new(Pairs), Arc::new(Metrics::new()))
                .await
                .expect("relay");
        println!("relay on {}", relay.local_addr());
        // Until the benchmark kills this process.
        std::future::pending::<()>().await;
    });
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One device's TURN client: its socket, credential and relayed address.
struct Turn {
    sock: Arc<UdpSocket>,
    server: SocketAddr,
    user: String,
    pass: String,
    nonce: String,
    relayed: SocketAddr,
}

impl Turn {
    async fn request(&mut self, method: Method, extra: &[&dyn Setter]) -> Message {
        loop {
            let mut m = Message::new();
            m.build(&[Box::new(TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))])
                .expect("build");
            for e in extra {
                e.add_to(&mut m).expect("attribute");
            }
            if !self.nonce.is_empty() {
                for (a, v) in [
                    (ATTR_USERNAME, &self.user),
                    (ATTR_REALM, &"sidecall".to_string()),
                    (ATTR_NONCE, &self.nonce),
                ] {
                    TextAttribute::new(a, v.clone()).add_to(&mut m).expect("text");
                }
                let c = crypto();
                MessageIntegrity::new_long_term_integrity_with_provider(
                    self.user.clone(),
                    "sidecall".into(),
                    self.pass.clone(),
                    c.crypto(),
                )
                .expect("key")
                .add_to(&mut m)
                .expect("integrity");
            }
            self.sock.send_to(&m.raw, self.server).await.expect("send");
            let mut buf = vec![0u8; 1500];
            let n = tokio::time::timeout(Duration::from_secs(5), self.sock.recv(&mut buf))
                .await
                .expect("an answer")
                .expect("recv");
            let mut r = Message::new();
            r.unmarshal_binary(&buf[..n]).expect("stun");
            if r.typ.class == CLASS_ERROR_RESPONSE && self.nonce.is_empty() {
                self.nonce = TextAttribute::get_from_as(&r, ATTR_NONCE).expect("nonce").text;
                continue;
            }
            assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{method:?} refused");
            return r;
        }
    }

    async fn new(server: SocketAddr, device: i64) -> Turn {
        let c = Secret::new(SECRET, crypto()).mint(device, unix_now(), 3600);
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let big = socket2::SockRef::from(&sock);
        let _ = big.set_recv_buffer_size(1 << 20);
        let mut t = Turn {
            sock: Arc::new(sock),
            server,
            user: c.username,
            pass: c.password,
            nonce: String::new(),
            relayed: server,
        };
        let r =
            t.request(METHOD_ALLOCATE, &[&RequestedTransport { protocol: rtc_turn::proto::PROTO_UDP }]).await;
        let mut a = RelayedAddress::default();
        a.get_from(&r).expect("relayed");
        t.relayed = SocketAddr::new(a.ip, a.port);
        t
    }

    async fn bind(&mut self, peer: SocketAddr) {
        let p = PeerAddress { ip: peer.ip(), port: peer.port() };
        self.request(METHOD_CHANNEL_BIND, &[&ChannelNumber(0x4000), &p]).await;
    }
}

struct Step {
    sent: u64,
    received: u64,
    relay_cpu: Duration,
    wall: Duration,
}

/// `n` streams for `secs` seconds: through the relay (`relay: Some`) or socket to socket.
async fn run(n: usize, secs: f64, relay: Option<(SocketAddr, &common::Proc)>, base_device: i64) -> Step {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut turns = Vec::new();
    for i in 0..n {
        match relay {
            Some((server, _)) => {
                let dev = base_device + 2 * i as i64;
                let (mut a, mut b) = (Turn::new(server, dev).await, Turn::new(server, dev + 1).await);
                let (ra, rb) = (a.relayed, b.relayed);
                a.bind(rb).await;
                b.bind(ra).await;
                senders.push((a.sock.clone(), server, true));
                receivers.push(b.sock.clone());
                turns.extend([a, b]);
            }
            None => {
                let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                let _ = socket2::SockRef::from(&b).set_recv_buffer_size(1 << 20);
                let to = b.local_addr().expect("addr");
                senders.push((Arc::new(a), to, false));
                receivers.push(Arc::new(b));
            }
        }
    }
    let (sent, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for sock in receivers {
        let (received, stop) = (received.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
                {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let cpu0 = relay.map(|(_, p)| p.cpu()).unwrap_or_default();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(secs);
    for (i, (sock, to, channel)) in senders.into_iter().enumerate() {
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut packet = vec![7u8; if channel { 4 + PACKET } else { PACKET }];
            if channel {
                packet[..2].copy_from_slice(&0x4000u16.to_be_bytes());
                packet[2..4].copy_from_slice(&(PACKET as u16).to_be_bytes());
            }
            // Spread the streams over the 4 ms.
            tokio::time::sleep(EVERY * (i as u32 % 16) / 16).await;
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while Instant::now() < until {
                tick.tick().await;
                if sock.send_to(&packet, to).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep_until(until.into()).await;
    let wall = t0.elapsed();
    let relay_cpu = relay.map(|(_, p)| p.cpu()).unwrap_or_default().saturating_sub(cpu0);
    // Let the last packets arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    // Release the allocations (their client ports are reused by the next step's sockets).
    for mut t in turns {
        t.request(METHOD_REFRESH, &[&rtc_turn::proto::lifetime::Lifetime(Duration::ZERO)]).await;
    }
    Step { sent: sent.load(Ordering::Relaxed), received: received.load(Ordering::Relaxed), relay_cpu, wall }
}

fn arg(name: &str) -> Option<f64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn main() {
    if std::env::args().any(|a| a == "--serve") {
        return serve();
    }
    let full = std::env::args().any(|a| a == "--bench");
    let secs = arg("--seconds").unwrap_or(if full { 5.0 } else { 1.0 });
    let steps: &[usize] = if full { &[50, 100, 150, 200, 250, 300] } else { &[10] };
    let exe = std::env::current_exe().expect("own path");
    let relay = common::Proc::spawn(std::process::Command::new(exe).arg("--serve"));
    let (_, line) = relay.wait_line("relay on", Duration::from_secs(10));
    let addr: SocketAddr = line.rsplit(' ').next().and_then(|a| a.parse().ok()).expect("relay address");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "sidecall relay benchmark ({} mode, {secs} s per step, 2 Mbit/s per session)",
        if full { "full" } else { "smoke" }
    );
    let mut best = 0;
    let mut device = 0i64;
    for &n in steps {
        let direct = rt.block_on(run(n, secs, None, 0));
        let relayed = rt.block_on(run(n, secs, Some((addr, &relay)), device));
        device += 2 * n as i64;
        let loss = |s: &Step| 1.0 - s.received as f64 / s.sent.max(1) as f64;
        let cpu = relayed.relay_cpu.as_secs_f64() * 100.0 / relayed.wall.as_secs_f64();
        println!(
            "  {n:4} sessions: relayed {:.3} % lost ({} of {} packets), relay CPU {cpu:.0} % of one core; \
             socket to socket {:.3} % lost",
            loss(&relayed) * 100.0,
            relayed.sent - relayed.received.min(relayed.sent),
            relayed.sent,
            loss(&direct) * 100.0
        );
        if loss(&relayed) <= 0.001 {
            best = n;
        }
    }
    println!("  without loss (<= 0.1 %): {best} sessions (goal 200)");
    drop(relay);
}
