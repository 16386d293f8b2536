#![no_main]
use libfuzzer_sys::fuzz_target;
use sidecall::media::video::{Assembled, Assembler};
use sidecall::rtc::RtpVideoPacket;

// RTP payloads of H.264 video from a peer: any bytes, never a panic, in reassembly or in the
// decoder. Input: records of [seq lo, seq hi, marker, len, payload…].
fuzz_target!(|data: &[u8]| {
    let mut asm = Assembler::default();
    let Ok(mut dec) = openh264::decoder::Decoder::new() else { return };
    let mut rest = data;
    let mut ts = 0u32;
    while rest.len() >= 4 {
        let (head, tail) = rest.split_at(4);
        let len = (head[3] as usize).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let marker = head[2] & 1 == 1;
        let p = RtpVideoPacket {
            sequence: u16::from_le_bytes([head[0], head[1]]),
            timestamp: ts,
            marker,
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        if marker {
            ts = ts.wrapping_add(3000);
        }
        if let Some(Assembled::Frame { data, .. }) = asm.push(p) {
            let _ = dec.decode(&data);
        }
    }
});
