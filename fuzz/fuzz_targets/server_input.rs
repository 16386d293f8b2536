#![no_main]
use libfuzzer_sys::fuzz_target;
use sidecall::protocol::{ClientMsg, limits};

// Everything a hostile client sends the server before it acts: a WebSocket message, the
// field limits, the relay's candidate and SDP checks, names and numbers.
fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(msg) = serde_json::from_slice::<ClientMsg>(data) {
        if limits::check(&msg).is_ok() {
            if let ClientMsg::Signal { data, .. } = msg {
                let _ = sidecall::server::relay::sdp::check(&data, |ip| ip.is_loopback());
                let _ = sidecall::server::relay::sdp::scrub(data);
            }
        }
    }
    let _ = limits::check_name("display_name", &text, limits::DISPLAY_NAME_CHARS);
    let _ = limits::clip(text.to_string());
    let _ = sidecall::number::normalize(&text, Some("DE"));
});
