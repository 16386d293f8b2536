//! The async runtime webrtc's driver runs on: tokio, with bigger UDP buffers, a short timer
//! while a connection is being set up or relayed, and relayed datagrams sent in batches.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use webrtc::runtime::{
    AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime, Transmit,
};

/// UDP socket buffer size asked of the kernel (it may grant less: see net.core.rmem_max).
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// How long after a peer starts its driver wakes at least every [`SETUP_TICK`].
const SETUP_PHASE: Duration = Duration::from_secs(3);
/// The driver's longest sleep during set-up.
const SETUP_TICK: Duration = Duration::from_millis(1);
/// A relayed connection that carried a packet this recently is "busy": its driver runs
/// without a timer (every packet through the relay needs two extra driver rounds); idle,
/// it wakes every millisecond.
const RELAYED_BUSY_WINDOW: Duration = Duration::from_millis(2);
/// Largest batch handed to the kernel as one GSO send (its limit is 64 KiB with headers).
const MAX_BATCH_BYTES: usize = 60_000;

/// The tokio runtime with bigger UDP buffers and, while a connection is being set up, a
/// short timer.
///
/// Why the timer: webrtc 0.21.1's driver sends some packets it queued while handling an
/// event (the first DTLS flight, the SCTP INIT, the DCEP open) only when its next timer
/// fires — the ICE check or keepalive timer, up to 200 ms away — so a loopback channel took
/// ~600 ms to open. Waking the driver every millisecond for the first seconds of a
/// connection flushes them at once; afterwards timers run at their own pace again (no idle
/// cost).
///
/// And for relayed connections all along: webrtc 0.21.1's driver hands packets to its TURN
/// client after it has collected the TURN client's output for that round, so every relayed
/// packet waits for the driver's next wake-up (throughput fell to ~1 MB/s). Waking it every
/// millisecond while the connection is relayed sends them within a millisecond.
///
/// Why the batches: the driver sends a direct connection's datagrams with GSO (one system
/// call for a run of datagrams to one peer) but a relayed connection's one system call each,
/// and on loopback those calls were most of the sender's time. While relayed, [`Watched`]
/// collects a round's datagrams to the relay and sends each run as one GSO send when the
/// driver is about to wait (it asks the runtime for its timer then: [`Runtime::sleep`]), or
/// earlier when a datagram cannot join the run.
#[derive(Debug)]
pub(super) struct SidecallRuntime {
    inner: Arc<dyn Runtime>,
    created: std::time::Instant,
    /// The connection goes through a relay: keep the short timer, batch datagrams.
    relayed: Arc<std::sync::atomic::AtomicBool>,
    /// A relayed connection is being set up: no timer at all until its channel opens (each
    /// handshake flight through the relay costs two extra driver rounds; at 1 ms each the
    /// channel took ~70 ms to open).
    racing: Arc<std::sync::atomic::AtomicBool>,
    /// When the driver's sockets last carried a packet (µs since `created`).
    last_packet: Arc<std::sync::atomic::AtomicU64>,
    /// The driver's sockets, whose batches go out before it waits.
    sockets: parking_lot::Mutex<Vec<Weak<Watched>>>,
}

pub(super) fn runtime(
    relayed: Arc<std::sync::atomic::AtomicBool>,
    racing: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Arc<dyn Runtime>, super::RtcError> {
    let inner = webrtc::runtime::default_runtime()
        .ok_or_else(|| super::RtcError::Failed("no async runtime".into()))?;
    Ok(Arc::new(SidecallRuntime {
        inner,
        created: std::time::Instant::now(),
        relayed,
        racing,
        last_packet: Arc::default(),
        sockets: parking_lot::Mutex::new(Vec::new()),
    }))
}

/// The driver's UDP socket, noting when it last sent or received, and batching a relayed
/// connection's datagrams.
#[derive(Debug)]
struct Watched {
    inner: Arc<dyn AsyncUdpSocket>,
    last_packet: Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
    /// Only a relayed connection needs the time (a direct one pays one load per packet).
    relayed: Arc<std::sync::atomic::AtomicBool>,
    batch: parking_lot::Mutex<Batch>,
}

/// Datagrams to one destination, back to back: all `size` bytes long but the last, which
/// may be shorter (and then ends the run), as GSO requires.
#[derive(Debug, Default)]
struct Batch {
    to: Option<SocketAddr>,
    buf: Vec<u8>,
    size: usize,
    count: usize,
    /// Datagrams already sent one by one (the socket lost GSO after they were batched).
    sent: usize,
    /// The last datagram was shorter than `size`: nothing more may join.
    closed: bool,
}

impl Batch {
    /// Whether a datagram of `len` bytes to `to` may join this run.
    fn fits(&self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.count == 0
            || (self.to == Some(to)
                && !self.closed
                && len <= self.size
                && self.count < max_segments
                && self.buf.len() + len <= MAX_BATCH_BYTES)
    }

    fn push(&mut self, to: SocketAddr, data: &[u8]) {
        if self.count == 0 {
            self.to = Some(to);
            self.size = data.len();
            self.closed = false;
        }
        self.closed = data.len() < self.size;
        self.buf.extend_from_slice(data);
        self.count += 1;
    }
}

impl Watched {
    fn touch<T>(&self, r: Poll<T>) -> Poll<T> {
        if r.is_ready() && self.relayed.load(std::sync::atomic::Ordering::Relaxed) {
            let us = self.epoch.elapsed().as_micros() as u64;
            self.last_packet.store(us, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// Sends the waiting batch: as one GSO send, or datagram by datagram if the socket has
    /// given up GSO since (quinn-udp turns it off when the kernel refuses it). A send error
    /// drops what it sent, as it would have dropped the datagrams one by one (UDP: the
    /// peers' transports recover).
    fn flush(&self, cx: &mut Context<'_>, b: &mut Batch) -> Poll<()> {
        let Some(to) = b.to.filter(|_| b.count > 0) else {
            return Poll::Ready(());
        };
        if b.sent == 0 && (b.count == 1 || self.inner.max_gso_segments() >= b.count) {
            let segment = (b.count > 1).then_some(b.size);
            if self.send(cx, to, &b.buf, segment, b.count).is_pending() {
                return Poll::Pending;
            }
        } else {
            while b.sent < b.count {
                let (start, end) = (b.sent * b.size, ((b.sent + 1) * b.size).min(b.buf.len()));
                if self.send(cx, to, &b.buf[start..end], None, 1).is_pending() {
                    return Poll::Pending;
                }
                b.sent += 1;
            }
        }
        b.buf.clear();
        b.count = 0;
        b.sent = 0;
        b.to = None;
        Poll::Ready(())
    }

    fn send(
        &self,
        cx: &mut Context<'_>,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
        datagrams: usize,
    ) -> Poll<()> {
        let t = Transmit { destination: to, ecn: None, contents, segment_size, src_ip: None };
        match self.inner.poll_send(cx, &t) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                tracing::debug!(%to, datagrams, "relayed send failed: {e}");
                Poll::Ready(())
            }
            Poll::Ready(Ok(_)) => Poll::Ready(()),
        }
    }

    /// Sends the waiting batch, if the socket takes it now.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut b = self.batch.lock();
        self.flush(cx, &mut b)
    }
}

impl AsyncUdpSocket for Watched {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let mut b = self.batch.lock();
        let single = transmit.segment_size.is_none() && transmit.ecn.is_none() && transmit.src_ip.is_none();
        let len = transmit.contents.len();
        // A direct connection's packets (most of them) stop at the first test.
        let relayed = self.relayed.load(std::sync::atomic::Ordering::Relaxed) && single && len > 0;
        let max_segments = if relayed { self.inner.max_gso_segments() } else { 1 };
        let batching = relayed && max_segments > 1;
        // In order: what waits goes first, unless this datagram joins it.
        if !(batching && b.fits(transmit.destination, len, max_segments))
            && self.flush(cx, &mut b).is_pending()
        {
            return Poll::Pending;
        }
        if batching {
            b.push(transmit.destination, transmit.contents);
            return self.touch(Poll::Ready(Ok(len)));
        }
        drop(b);
        self.touch(self.inner.poll_send(cx, transmit))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.touch(self.inner.poll_recv(cx, bufs, meta))
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

impl Drop for Watched {
    /// The driver stopped: what waits goes out now if the socket takes it (the last
    /// packets of a connection say goodbye to the peer and the relay).
    fn drop(&mut self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = self.poll_flush(&mut cx);
    }
}

impl SidecallRuntime {
    /// Sends every socket's waiting batch: the driver is about to wait.
    fn flush_batches(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut blocked = Vec::new();
        self.sockets.lock().retain(|s| match s.upgrade() {
            Some(s) => {
                if s.poll_flush(&mut cx).is_pending() {
                    blocked.push(s);
                }
                true
            }
            None => false,
        });
        // A full socket buffer: the rest goes out as soon as the socket is writable.
        (!blocked.is_empty()).then(|| -> Pin<Box<dyn Future<Output = ()> + Send>> {
            Box::pin(async move {
                for s in blocked {
                    std::future::poll_fn(|cx| s.poll_flush(cx)).await;
                }
            })
        })
    }
}

impl Runtime for SidecallRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let sock = socket2::SockRef::from(&socket);
        for (what, r) in [
            ("receive", sock.set_recv_buffer_size(UDP_BUFFER_BYTES)),
            ("send", sock.set_send_buffer_size(UDP_BUFFER_BYTES)),
        ] {
            if let Err(e) = r {
                tracing::debug!("cannot enlarge the UDP {what} buffer: {e}");
            }
        }
        let inner = self.inner.wrap_udp_socket(socket)?;
        let watched = Arc::new(Watched {
            inner,
            last_packet: self.last_packet.clone(),
            epoch: self.created,
            relayed: self.relayed.clone(),
            batch: parking_lot::Mutex::new(Batch::default()),
        });
        self.sockets.lock().push(Arc::downgrade(&watched));
        Ok(watched)
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }

    /// The driver asks for its timer right before it waits: the batches go out first.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let sleep = self.timer(duration);
        match self.flush_batches() {
            None => sleep,
            Some(rest) => Box::pin(async move {
                rest.await;
                sleep.await
            }),
        }
    }

    fn interval(&self, period: Duration) -> Box<dyn webrtc::runtime::AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "sidecall-tokio"
    }
}

impl SidecallRuntime {
    /// The driver's timer: none while a relayed connection is set up or busy, at most
    /// [`SETUP_TICK`] in the first seconds of any connection and while relayed.
    fn timer(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        if self.racing.load(std::sync::atomic::Ordering::Relaxed) && self.created.elapsed() < SETUP_PHASE {
            return self.inner.sleep(Duration::ZERO);
        }
        let relayed = self.relayed.load(std::sync::atomic::Ordering::Relaxed);
        if relayed {
            let last = Duration::from_micros(self.last_packet.load(std::sync::atomic::Ordering::Relaxed));
            if self.created.elapsed().saturating_sub(last) < RELAYED_BUSY_WINDOW {
                return self.inner.sleep(Duration::ZERO);
            }
        }
        let short = self.created.elapsed() < SETUP_PHASE || relayed;
        let duration = if short { duration.min(SETUP_TICK) } else { duration };
        self.inner.sleep(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn send(s: &Arc<dyn AsyncUdpSocket>, to: SocketAddr, data: &[u8]) {
        let t = Transmit { destination: to, ecn: None, contents: data, segment_size: None, src_ip: None };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(s.poll_send(&mut cx, &t), Poll::Ready(Ok(n)) if n == data.len()));
    }

    /// What arrives at `rx` within a short wait, datagram by datagram.
    async fn received(rx: &tokio::net::UdpSocket) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), rx.recv(&mut buf)).await {
            got.push(buf[..n].to_vec());
        }
        got
    }

    #[tokio::test]
    async fn relayed_datagrams_wait_for_the_round_and_arrive_one_by_one_in_order() {
        let relayed = Arc::new(AtomicBool::new(true));
        let rt = runtime(relayed.clone(), Arc::new(AtomicBool::new(false))).expect("runtime");
        let sock = rt.wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).expect("wrap");
        if sock.max_gso_segments() < 2 {
            eprintln!("skipped: no UDP GSO on this kernel");
            return;
        }
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = rx.local_addr().expect("addr");
        // A run of equal datagrams, a shorter one that ends it, one elsewhere, then more.
        let sent: Vec<Vec<u8>> = (0u8..5).map(|i| vec![i; 1200]).chain([vec![9; 300]]).collect();
        for d in &sent {
            send(&sock, to, d);
        }
        assert!(received(&rx).await.is_empty(), "relayed datagrams go out when the driver waits");
        send(&sock, other.local_addr().expect("addr"), b"elsewhere");
        // Another destination sends what waited first.
        assert_eq!(received(&rx).await, sent);
        send(&sock, to, b"after");
        let _timer = rt.sleep(Duration::from_millis(1));
        assert_eq!(received(&other).await, vec![b"elsewhere".to_vec()]);
        assert_eq!(received(&rx).await, vec![b"after".to_vec()]);

        // A direct connection's datagrams are not held back.
        relayed.store(false, Ordering::Relaxed);
        send(&sock, to, b"direct");
        assert_eq!(received(&rx).await, vec![b"direct".to_vec()]);
    }

    /// A socket that records what it is asked to send, with GSO that can be taken away.
    #[derive(Debug, Default)]
    struct Recorder {
        gso: std::sync::atomic::AtomicUsize,
        sent: parking_lot::Mutex<Vec<(Vec<u8>, Option<usize>)>>,
    }

    impl AsyncUdpSocket for Recorder {
        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
        }
        fn poll_send(&self, _: &mut Context<'_>, t: &Transmit<'_>) -> Poll<io::Result<usize>> {
            self.sent.lock().push((t.contents.to_vec(), t.segment_size));
            Poll::Ready(Ok(t.contents.len()))
        }
        fn poll_recv(
            &self,
            _: &mut Context<'_>,
            _: &mut [io::IoSliceMut<'_>],
            _: &mut [RecvMeta],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn max_gso_segments(&self) -> usize {
            self.gso.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn a_batch_goes_out_datagram_by_datagram_when_the_socket_lost_gso_meanwhile() {
        let rec = Arc::new(Recorder::default());
        rec.gso.store(64, Ordering::Relaxed);
        let sock: Arc<dyn AsyncUdpSocket> = Arc::new(Watched {
            inner: rec.clone(),
            last_packet: Arc::default(),
            epoch: std::time::Instant::now(),
            relayed: Arc::new(AtomicBool::new(true)),
            batch: parking_lot::Mutex::new(Batch::default()),
        });
        let to = SocketAddr::from(([127, 0, 0, 1], 2));
        for d in [[1u8; 100].as_slice(), &[2; 100], &[3; 40]] {
            send(&sock, to, d);
        }
        assert!(rec.sent.lock().is_empty(), "held for the round");
        rec.gso.store(1, Ordering::Relaxed);
        drop(sock); // flushes what waits
        let sent = rec.sent.lock().clone();
        assert_eq!(sent, vec![(vec![1; 100], None), (vec![2; 100], None), (vec![3; 40], None)]);
    }
}
