#![no_main]
use libfuzzer_sys::fuzz_target;

// What a client or a peer may send: WebSocket messages and file-transfer control messages.
fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<sidecall::protocol::ClientMsg>(data);
    let _ = serde_json::from_slice::<sidecall::protocol::ServerMsg>(data);
    let _ = sidecall::client::transfer::wire::decode(data);
    let _ = sidecall::client::transfer::sanitize_name(&String::from_utf8_lossy(data));
});
