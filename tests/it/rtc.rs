//! Two WebRTC peers on loopback, signaling handed across directly.

use bytes::BytesMut;
use sidecall::protocol::Role;
use sidecall::rtc::{Channel, Peer, PeerEvent};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Connects two peers; returns both open channels and the time from start to open.
pub async fn connected_pair() -> ((Peer, Channel), (Peer, Channel), Duration) {
    sidecall::init_logging(&std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()));
    let t0 = Instant::now();
    let (caller, mut a_events) = Peer::start(Role::Caller, &[], true, false).await.expect("caller peer");
    let (callee, mut b_events) = Peer::start(Role::Callee, &[], true, false).await.expect("callee peer");
    let (a_tx, mut a_rx) = mpsc::unbounded_channel::<PeerEvent>();
    let (b_tx, mut b_rx) = mpsc::unbounded_channel::<PeerEvent>();
    let (mut a_ch, mut b_ch) = (None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while a_ch.is_none() || b_ch.is_none() {
        tokio::select! {
            ev = a_events.recv() => match ev.expect("caller events") {
                PeerEvent::Signal(s) => { eprintln!("caller signal {:?} at {:?}", std::mem::discriminant(&s), t0.elapsed()); callee.signal(s, &b_tx).await.expect("callee takes signal") }
                PeerEvent::ChannelOpen(c) => { eprintln!("caller channel open after {:?}", t0.elapsed()); a_ch = Some(c) }
                PeerEvent::Closed(why) => panic!("caller closed: {why}"),
                PeerEvent::Connected => eprintln!("caller connected after {:?}", t0.elapsed()),
                PeerEvent::RemoteVideo(_) => {}
            },
            ev = b_events.recv() => match ev.expect("callee events") {
                PeerEvent::Signal(s) => caller.signal(s, &a_tx).await.expect("caller takes signal"),
                PeerEvent::ChannelOpen(c) => b_ch = Some(c),
                PeerEvent::Closed(why) => panic!("callee closed: {why}"),
                PeerEvent::Connected | PeerEvent::RemoteVideo(_) => {}
            },
            Some(ev) = a_rx.recv() => if let PeerEvent::Signal(s) = ev { callee.signal(s, &b_tx).await.expect("signal") },
            Some(ev) = b_rx.recv() => if let PeerEvent::Signal(s) = ev { caller.signal(s, &a_tx).await.expect("signal") },
            _ = tokio::time::sleep_until(deadline) => panic!("channel did not open in 15 s"),
        }
    }
    let open = t0.elapsed();
    ((caller, a_ch.expect("a")), (callee, b_ch.expect("b")), open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channel_opens_and_carries_bytes_both_ways() {
    let ((_a, mut a), (_b, mut b), open) = connected_pair().await;
    eprintln!("data channel open after {open:?}");
    a.send(BytesMut::from(&b"hello from the caller"[..])).await.expect("send");
    assert_eq!(&b.recv().await.expect("message")[..], b"hello from the caller");
    b.send(BytesMut::from(&b"and back"[..])).await.expect("send");
    assert_eq!(&a.recv().await.expect("message")[..], b"and back");
    // Many messages arrive complete and in order.
    let sender = tokio::spawn(async move {
        for i in 0u32..2000 {
            let mut m = BytesMut::from(&i.to_be_bytes()[..]);
            m.extend_from_slice(&[7u8; 16_000]);
            a.send(m).await.expect("send");
        }
        a
    });
    for i in 0u32..2000 {
        let m = b.recv().await.expect("message");
        assert_eq!(m.len(), 16_004);
        assert_eq!(&m[..4], &i.to_be_bytes());
    }
    let _ = sender.await;
}
