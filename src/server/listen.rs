//! The server's accept loop: every TCP connection, before HTTP sees it.
//!
//! What `axum::serve` does not do and a server on the internet needs:
//! - **timeouts**: request headers within `header_timeout` (hyper; its timer also runs while
//!   a keep-alive connection waits for its next request, so an idle keep-alive connection is
//!   closed after that long), bodies within `body_timeout` (the router), and any connection
//!   on which nothing moved for `idle_timeout` closed — a backstop for upgraded WebSockets
//!   (the heartbeat closes a silent one first; a live one is pinged every heartbeat);
//! - **a cap per address** (`connections_per_address`; trusted proxies are exempt);
//! - **file-descriptor headroom**: beyond `nofile - RESERVED_FDS` connections new sockets are
//!   closed at once, and WebSocket upgrades are refused `HTTP_HEADROOM` earlier, so that
//!   health checks and logins still get through when the server is full;
//! - **TLS** (rustls) on the same port for HTTPS and WSS, when a certificate is configured.

use crate::server::metrics::Metrics;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// File descriptors kept free of client connections: the database, the relay's sockets,
/// log files, and the socket `accept` needs to refuse one cleanly.
pub const RESERVED_FDS: usize = 128;
/// Connections kept free of WebSockets for short requests (health, login, register).
pub const HTTP_HEADROOM: usize = 64;

/// Who is connected, counted per address and in all.
pub struct Admission {
    per_address: Mutex<HashMap<IpAddr, usize>>,
    open: AtomicUsize,
    /// Most connections at once (`nofile - RESERVED_FDS`).
    pub max_open: usize,
    pub max_per_address: usize,
    /// Proxies whose connections carry many clients (`--trusted-proxy`).
    pub trusted_proxies: Vec<IpAddr>,
    metrics: Arc<Metrics>,
}

/// One admitted connection; dropping it gives its place back.
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
        self.admission.metrics.tcp_connections.dec();
        let mut map = self.admission.per_address.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    pub fn new(max_per_address: usize, trusted_proxies: Vec<IpAddr>, metrics: Arc<Metrics>) -> Arc<Self> {
        let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024);
        let max_open = (nofile as usize).saturating_sub(RESERVED_FDS).max(HTTP_HEADROOM + 16);
        tracing::debug!(nofile, max_open, "connection limits");
        Arc::new(Admission {
            per_address: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            max_open,
            max_per_address,
            trusted_proxies,
            metrics,
        })
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, &'static str> {
        if self.open.load(Ordering::Acquire) >= self.max_open {
            return Err("fd_headroom");
        }
        {
            let mut map = self.per_address.lock();
            let n = map.entry(ip).or_insert(0);
            if *n >= self.max_per_address && !self.trusted_proxies.contains(&ip) {
                return Err("per_address");
            }
            *n += 1;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        self.metrics.tcp_connections.inc();
        Ok(Admitted { admission: self.clone(), ip })
    }

    /// Whether a long-lived connection (a WebSocket) may take one more place: not within
    /// [`HTTP_HEADROOM`] of the limit.
    pub fn room_for_long_lived(&self) -> bool {
        self.open.load(Ordering::Acquire) + HTTP_HEADROOM <= self.max_open
    }
}

/// A socket that fails its reads once nothing moved either way for `idle`, and holds its
/// place in [`Admission`] for as long as it lives (after a WebSocket upgrade too: the
/// upgraded connection owns this).
pub struct IdleIo<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// When something last moved; the timer is moved on only when it fires (not on every
    /// read and write: this is every byte of every connection).
    last: tokio::time::Instant,
    _admitted: Admitted,
}

impl<S> IdleIo<S> {
    pub fn new(inner: S, idle: Duration, admitted: Admitted) -> Self {
        let now = tokio::time::Instant::now();
        IdleIo {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep_until(now + idle)),
            last: now,
            _admitted: admitted,
        }
    }

    fn moved(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// Whether the connection has been idle for `idle`: when the timer fires after activity,
    /// it is set again from the last activity (and polled, so it wakes us then).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadline.as_mut().poll(cx).is_ready() {
            let due = self.last + self.idle;
            if due <= tokio::time::Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending if this.poll_idle(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How connections are served.
#[derive(Clone)]
pub struct Serving {
    pub router: Router,
    pub admission: Arc<Admission>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// Accepts and serves connections until `stop` turns true; then asks every HTTP connection
/// to finish its request and waits for them (briefly).
pub async fn serve(listener: TcpListener, serving: Serving, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): refuse
                // quietly and go on; the backlog waits meanwhile.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let admitted = match serving.admission.admit(remote.ip()) {
            Ok(a) => a,
            Err(reason) => {
                serving.metrics.connections_refused.get_or_create(&vec![("reason", reason)]).inc();
                tracing::debug!(%remote, reason, "connection refused");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let serving = serving.clone();
        let stop = stop.clone();
        tokio::spawn(serve_one(tcp, admitted, remote, serving, stop));
    }
    // Each connection finishes its request (WebSockets are closed by the hub meanwhile).
    let admission = serving.admission.clone();
    let drained = async {
        while admission.open.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
}

async fn serve_one(
    tcp: TcpStream,
    admitted: Admitted,
    remote: SocketAddr,
    serving: Serving,
    stop: watch::Receiver<bool>,
) {
    let io = IdleIo::new(tcp, serving.idle_timeout, admitted);
    match &serving.tls {
        None => serve_http(io, remote, serving, stop).await,
        Some(acceptor) => {
            // The handshake counts against the header timeout too.
            match tokio::time::timeout(serving.header_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => serve_http(tls, remote, serving, stop).await,
                Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<S>(io: S, remote: SocketAddr, serving: Serving, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tower::Layer;
    let service = axum::Extension(axum::extract::ConnectInfo(remote)).layer(serving.router.clone());
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(serving.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%remote, "connection ended: {e}");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connection_is_closed_only_once_idle() {
        let admission = Admission::new(4, Vec::new(), Arc::new(Metrics::new()));
        let admitted = admission.admit("127.0.0.1".parse().expect("ip")).expect("admitted");
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = IdleIo::new(near, Duration::from_millis(150), admitted);
        let t0 = tokio::time::Instant::now();
        let mut buf = [0u8; 8];
        // Traffic every 50 ms keeps it open well past the idle time ...
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            far.write_all(b"x").await.expect("write");
            assert_eq!(io.read(&mut buf).await.expect("open"), 1);
        }
        assert!(t0.elapsed() > Duration::from_millis(350));
        // ... and silence closes it after the idle time.
        let quiet = tokio::time::Instant::now();
        let e = io.read(&mut buf).await.expect_err("idle");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(quiet.elapsed() >= Duration::from_millis(100), "{:?}", quiet.elapsed());
    }
}
