//! The listener's batched I/O: datagrams are read in batches (recvmmsg, GRO) and what a batch
//! answers is sent per client as one GSO send.

use super::*;

impl Shared {
    /// Sends what a batch queued: runs of datagrams to one client, of one size, go out as
    /// one GSO send (the kernel splits them; one system call instead of dozens).
    pub(super) fn flush(&self, o: &mut Outbox) {
        let max_segments = self.udp.max_gso_segments().max(1);
        let mut i = 0;
        while i < o.items.len() {
            let (dest, start, len) = o.items[i];
            let (mut end, mut total) = (i + 1, len);
            while end < o.items.len() && end - i < max_segments {
                let (d, _, l) = o.items[end];
                if d != dest || l > len || l == 0 || total + l > MAX_GSO_BYTES {
                    break;
                }
                total += l;
                end += 1;
                if l < len {
                    break; // a shorter datagram can only end a run
                }
            }
            let t = quinn_udp::Transmit {
                destination: dest,
                ecn: None,
                contents: &o.buf[start..start + total],
                segment_size: (end - i > 1).then_some(len),
                src_ip: None,
            };
            let sent = self
                .socket
                .try_io(tokio::io::Interest::WRITABLE, || self.udp.try_send((&*self.socket).into(), &t));
            match sent {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    for _ in i..end {
                        self.dropped("socket_full");
                    }
                }
                Err(e) => tracing::debug!(client = %dest, "relay send failed: {e}"),
            }
            i = end;
        }
        o.buf.clear();
        o.items.clear();
    }
}

/// Largest GSO send (the kernel's limit is 64 KiB including headers).
const MAX_GSO_BYTES: usize = 60_000;

/// Datagrams the listener's current batch will send, back to back in one buffer.
#[derive(Default)]
pub(super) struct Outbox {
    buf: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
}

impl Outbox {
    pub(super) fn push(&mut self, to: SocketAddr, data: &[u8]) {
        self.items.push((to, self.buf.len(), data.len()));
        self.buf.extend_from_slice(data);
    }
}

thread_local! {
    /// Set while the listener handles a batch (no await in between, so one thread).
    pub(super) static OUTBOX: std::cell::RefCell<Option<Outbox>> = const { std::cell::RefCell::new(None) };
}

pub(super) async fn serve(s: Arc<Shared>) {
    let batch = quinn_udp::BATCH_SIZE.max(1);
    // Room for GRO: one receive may hold many datagrams of one sender.
    let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; 64 * 1024]).collect();
    let mut metas = vec![quinn_udp::RecvMeta::default(); batch];
    let mut outbox = Some(Outbox::default());
    loop {
        if let Err(e) = s.socket.readable().await {
            tracing::warn!("relay listener: {e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let received = {
            let mut iovs: Vec<std::io::IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| std::io::IoSliceMut::new(b)).collect();
            s.socket.try_io(tokio::io::Interest::READABLE, || {
                s.udp.recv((&*s.socket).into(), &mut iovs, &mut metas)
            })
        };
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors surface here on some systems; the socket stays usable.
                tracing::debug!("relay listener: {e}");
                continue;
            }
        };
        OUTBOX.set(outbox.take());
        for (buf, meta) in bufs.iter().zip(&metas).take(n) {
            let data = &buf[..meta.len.min(buf.len())];
            for packet in data.chunks(meta.stride.max(1)) {
                s.on_datagram(meta.addr, packet);
            }
        }
        let mut o = OUTBOX.take().unwrap_or_default();
        s.flush(&mut o);
        outbox = Some(o);
    }
}
