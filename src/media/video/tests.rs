use super::send::Sink;
use super::*;
use crate::media::camera::CameraError;
use crate::media::codec::{H264Decoder, H264Encoder};
use crate::media::pattern::{I420, TestPattern, read_marks};
use crate::media::source::Source;
use crate::rtc::RtpVideoPacket;
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Packetizes encoded pictures like the sending side does.
fn packets(frames: &[Vec<u8>]) -> Vec<RtpVideoPacket> {
    let mut pay = H264Payloader::default();
    let mut out = Vec::new();
    let mut seq = 65_500u16; // wraps during the test
    for (i, f) in frames.iter().enumerate() {
        let parts = pay.payload(1200, &Bytes::from(f.clone())).expect("payload");
        let n = parts.len();
        for (j, payload) in parts.into_iter().enumerate() {
            out.push(RtpVideoPacket {
                sequence: seq,
                timestamp: 3000 * i as u32,
                marker: j + 1 == n,
                payload,
            });
            seq = seq.wrapping_add(1);
        }
    }
    out
}

/// A camera that delivers a few pictures, then is unplugged.
struct Unplugged {
    left: u32,
}

impl Source for Unplugged {
    fn next(&mut self) -> Result<I420, CameraError> {
        std::thread::sleep(Duration::from_millis(5));
        match self.left.checked_sub(1) {
            Some(l) => {
                self.left = l;
                Ok(TestPattern::new(320, 240).frame(u64::from(l), 0))
            }
            None => Err(CameraError::Stopped("No such device".into())),
        }
    }
}

#[test]
fn an_unplugged_camera_ends_the_video_with_its_reason_and_a_blank_preview() {
    let (tx, mut frames) = mpsc::channel(64);
    let (ev_tx, mut events) = mpsc::unbounded_channel();
    let preview = FrameSlot::new();
    let writer = preview.take_over();
    let open = || Ok((Box::new(Unplugged { left: 5 }) as Box<dyn Source>, "Fake camera".to_owned()));
    let sink = Sink { out: tx, preview: Some(writer), events: ev_tx, link: None };
    let _capture = Capture::start_with(open, 30, 300_000, sink);
    assert_eq!(events.blocking_recv(), Some(CaptureEvent::Started { what: "Fake camera".into() }));
    match events.blocking_recv() {
        Some(CaptureEvent::Failed(why)) => {
            assert_eq!(why, VideoFailure::Source(CameraError::Stopped("No such device".into())));
            assert_eq!(why.to_string(), "the camera stopped delivering pictures: No such device");
        }
        other => panic!("expected the failure, got {other:?}"),
    }
    let mut sent = 0;
    while let Ok(f) = frames.try_recv() {
        assert!(sent > 0 || f.keyframe, "the first picture is a keyframe");
        sent += 1;
    }
    // Rate control may skip one; the pictures before the unplug went out.
    assert!((1..=5).contains(&sent), "{sent} pictures sent");
    // The thread is gone and took the preview with it.
    for _ in 0..100 {
        if preview.latest().1.is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the preview still shows the last picture");
}

#[test]
fn the_preview_of_a_large_picture_is_shrunk() {
    let p = TestPattern::new(1280, 720).frame(7, 1234);
    let small = preview_size(&p).expect("shrunk");
    assert_eq!((small.width, small.height), (640, 360));
    assert_eq!(small.y[small.width * 100 + 50], p.y[p.width * 200 + 100]);
    assert!(preview_size(&TestPattern::new(640, 480).frame(0, 0)).is_none());
    let odd = I420::new(1922, 1082);
    let s = preview_size(&odd).expect("shrunk");
    assert_eq!((s.width, s.height), (480, 270), "a whole factor (4) keeps it within 640");
}

#[test]
fn sources_and_sizes_parse() {
    assert_eq!("test-pattern".parse::<VideoSource>(), Ok(VideoSource::TestPattern));
    assert_eq!("camera:2".parse::<VideoSource>(), Ok(VideoSource::Camera(Some(2))));
    assert!("webcam".parse::<VideoSource>().is_err());
    assert_eq!("1280x720".parse::<Size>(), Ok(Size { width: 1280, height: 720 }));
    assert!("1280".parse::<Size>().is_err());
    assert!("99999x1".parse::<Size>().is_err());
}

#[test]
fn pictures_survive_packetization_and_loss_waits_for_a_keyframe() {
    let p = TestPattern::new(640, 480);
    let mut enc = H264Encoder::new(1_000_000, 30.0).expect("encoder");
    let mut frames = Vec::new();
    for n in 0..30u64 {
        if n == 20 {
            enc.request_keyframe();
        }
        frames.push(enc.encode(&p.frame(n, n * 33)).expect("encode"));
    }
    // Rate control may skip a picture (no output); count only those that exist.
    let present: Vec<u32> = (0..30).filter(|&n| !frames[n as usize].is_empty()).collect();
    assert!(present.contains(&20), "the requested keyframe is there");
    let pkts = packets(&frames);
    assert!(pkts.len() > frames.len(), "pictures span several packets");
    // Lose one packet of the first picture from 10 on.
    let first = *present.iter().find(|&&n| n >= 10).expect("a picture after 10");
    let lost = pkts.iter().position(|p| p.timestamp == 3000 * first).expect("its packets");
    // A picture of one packet vanishes whole: nothing of it arrives to be dropped.
    let whole = pkts.iter().filter(|p| p.timestamp == 3000 * first).count() == 1;
    let mut asm = Assembler::default();
    let mut dec = H264Decoder::new().expect("decoder");
    let mut counters = Vec::new();
    let mut dropped = 0;
    for (i, p) in pkts.into_iter().enumerate() {
        if i == lost {
            continue;
        }
        match asm.push(p) {
            Some(Assembled::Frame { data, .. }) => {
                if let Some(pic) = dec.decode(&data).expect("decodes") {
                    counters.push(read_marks(&pic.y, pic.width, pic.width, pic.height).expect("marks").0);
                }
            }
            Some(Assembled::Dropped) => dropped += 1,
            None => {}
        }
    }
    assert_eq!(asm.lost_packets, 1);
    let (waiting, shown): (Vec<u32>, Vec<u32>) = present.iter().partition(|&&n| (first..20).contains(&n));
    assert_eq!(
        dropped,
        waiting.len() - usize::from(whole),
        "pictures {waiting:?} are dropped until the keyframe at 20"
    );
    assert_eq!(counters, shown);
}

/// A hostile or broken peer: mutated packets of real pictures go through reassembly and
/// the decoder without a panic (a light fuzz run; `fuzz/` has the libFuzzer target).
#[test]
fn mutated_packets_never_panic() {
    let p = TestPattern::new(320, 240);
    let mut enc = H264Encoder::new(300_000, 30.0).expect("encoder");
    let frames: Vec<Vec<u8>> = (0..8u64).map(|n| enc.encode(&p.frame(n, n)).expect("encode")).collect();
    let clean = packets(&frames);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut dec = H264Decoder::new().expect("decoder");
    let mut asm = Assembler::default();
    for round in 0..3000 {
        let mut pk = clean[round % clean.len()].clone();
        let mut payload = pk.payload.to_vec();
        for _ in 0..(rnd() % 4) {
            let pos = (rnd() as usize) % (payload.len() + 1);
            match rnd() % 4 {
                0 if pos < payload.len() => payload[pos] = rnd() as u8,
                1 => payload.insert(pos, rnd() as u8),
                2 => payload.truncate(pos),
                _ => pk.sequence = pk.sequence.wrapping_add(rnd() as u16 % 3),
            }
        }
        pk.payload = Bytes::from(payload);
        pk.marker ^= rnd() % 7 == 0;
        if let Some(Assembled::Frame { data, .. }) = asm.push(pk) {
            let _ = dec.decode(&data);
        }
    }
    // Damaged pictures straight into the decoder (what a peer could send as one frame).
    for round in 0..1500 {
        let mut f = frames[round % frames.len()].clone();
        for _ in 0..(1 + rnd() % 8) {
            let pos = (rnd() as usize) % f.len().max(1);
            if let Some(b) = f.get_mut(pos) {
                *b = rnd() as u8;
            }
        }
        let _ = dec.decode(&f);
    }
}

#[test]
fn garbage_packets_are_dropped_not_fatal() {
    let mut asm = Assembler::default();
    for (i, payload) in
        [&[][..], &[0x1c][..], &[0x18, 0xff, 0xff][..], &[0x7c, 0x85, 1, 2][..]].iter().enumerate()
    {
        let r = asm.push(RtpVideoPacket {
            sequence: i as u16,
            timestamp: i as u32,
            marker: true,
            payload: Bytes::copy_from_slice(payload),
        });
        assert_eq!(r, Some(Assembled::Dropped));
    }
}

#[test]
fn slot_keeps_only_the_latest_picture_of_its_current_owner() {
    let slot = FrameSlot::new();
    let woke = Arc::new(AtomicU64::new(0));
    let w = woke.clone();
    slot.set_notify(move || {
        w.fetch_add(1, Ordering::Relaxed);
    });
    let pic = |v: u8| RgbaFrame { width: 1, height: 1, rgba: vec![v, 0, 0, 255] };
    let first = slot.take_over();
    for i in 0..5u8 {
        first.put(pic(i));
    }
    let (seq, f) = slot.latest();
    assert_eq!(seq, 6, "taken over, then five pictures");
    assert_eq!(f.expect("a picture").rgba[0], 4);
    assert_eq!(woke.load(Ordering::Relaxed), 6);
    first.clear();
    assert!(slot.latest().1.is_none());
    first.put(pic(9));
    first.close();
    first.put(pic(10));
    assert!(slot.latest().1.is_none(), "a closed slot refuses late pictures");
    first.open();
    first.put(pic(11));
    assert_eq!(slot.latest().1.expect("open again").rgba[0], 11);
    // The next session takes over: the old writer can neither show nor clear anything.
    let second = slot.take_over();
    assert!(slot.latest().1.is_none());
    first.put(pic(12));
    assert!(slot.latest().1.is_none(), "a writer of an ended session is refused");
    second.put(pic(13));
    first.clear();
    first.close();
    assert_eq!(slot.latest().1.expect("the new owner's picture").rgba[0], 13);
}

fn pkt(sequence: u16) -> RtpVideoPacket {
    RtpVideoPacket { sequence, timestamp: u32::from(sequence), marker: true, payload: Bytes::new() }
}

fn seqs(out: &mut std::collections::VecDeque<RtpVideoPacket>) -> Vec<u16> {
    out.drain(..).map(|p| p.sequence).collect()
}

#[test]
fn a_missing_packet_is_waited_for_and_given_up_after_the_loss_wait() {
    let t = std::time::Instant::now();
    let ms = |n: u64| t + Duration::from_millis(n);
    let mut r = Reorder::default();
    let mut out = std::collections::VecDeque::new();
    // Across the wrap of the sequence number.
    r.push(pkt(65534), t, &mut out);
    r.push(pkt(65535), t, &mut out);
    assert_eq!(seqs(&mut out), [65534, 65535]);
    // 0 is lost; 1 and 2 wait for it.
    r.push(pkt(1), ms(10), &mut out);
    r.push(pkt(2), ms(20), &mut out);
    assert!(out.is_empty() && r.waiting());
    // The retransmission fills the gap: everything in order.
    r.push(pkt(0), ms(60), &mut out);
    assert_eq!(seqs(&mut out), [0, 1, 2]);
    assert!(!r.waiting());
    // A late copy is dropped.
    r.push(pkt(1), ms(70), &mut out);
    assert!(out.is_empty());
    // 3 never comes: 4 waits the loss wait out, then goes on (the assembler sees the gap).
    r.push(pkt(4), ms(100), &mut out);
    r.push(pkt(5), ms(110), &mut out);
    r.expire(ms(100) + LOSS_WAIT - Duration::from_millis(1), &mut out);
    assert!(out.is_empty());
    r.expire(ms(100) + LOSS_WAIT, &mut out);
    assert_eq!(seqs(&mut out), [4, 5]);
    // Two gaps: each is given up in its own time.
    r.push(pkt(7), ms(400), &mut out);
    r.push(pkt(9), ms(500), &mut out);
    r.expire(ms(400) + LOSS_WAIT, &mut out);
    assert_eq!(seqs(&mut out), [7]);
    r.push(pkt(8), ms(610), &mut out);
    assert_eq!(seqs(&mut out), [8, 9]);
}

#[test]
fn a_hole_too_long_to_wait_for_is_given_up_at_once() {
    let t = std::time::Instant::now();
    let mut r = Reorder::default();
    let mut out = std::collections::VecDeque::new();
    r.push(pkt(10), t, &mut out);
    for s in 12..12 + 513 {
        r.push(pkt(s), t, &mut out);
    }
    let got = seqs(&mut out);
    assert_eq!(got.len(), 514, "memory stays bounded whatever arrives");
    assert!(got.windows(2).all(|w| w[1] == w[0].wrapping_add(1) || w == [10, 12]));
}

#[test]
fn the_bitrate_changes_in_place_without_a_keyframe() {
    let p = TestPattern::new(640, 480).noisy(6);
    let mut enc = H264Encoder::new(500_000, 30.0).expect("encoder");
    let bytes = |enc: &mut H264Encoder, from: u64| -> (usize, usize) {
        let mut total = 0;
        let mut keyframes = 0;
        for n in from..from + 30 {
            let d = enc.encode(&p.frame(n, n * 33)).expect("encode");
            total += d.len();
            keyframes += usize::from(crate::media::codec::has_keyframe(&d));
        }
        (total, keyframes)
    };
    let (start, _) = bytes(&mut enc, 0);
    // Above what it was made with.
    enc.set_bitrate(2_000_000).expect("raise");
    let _ = bytes(&mut enc, 30);
    let (high, keyframes) = bytes(&mut enc, 60);
    assert_eq!(keyframes, 0, "no keyframe for a bitrate change");
    assert!(high > start * 2, "one second at 2 Mbit/s ({high} B) is far more than at 500 kbit/s ({start} B)");
    enc.set_bitrate(300_000).expect("lower");
    let _ = bytes(&mut enc, 90);
    let (low, keyframes) = bytes(&mut enc, 120);
    assert_eq!(keyframes, 0);
    assert!(low * 3 < high, "one second at 300 kbit/s ({low} B) is far less than at 2 Mbit/s ({high} B)");
    assert!(low * 8 < 450_000, "{} bit/s for 300 kbit/s", low * 8);
}
