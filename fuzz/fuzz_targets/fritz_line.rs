#![no_main]
use libfuzzer_sys::fuzz_target;

// A FRITZ!Box call-monitor line: any bytes, never a panic.
fuzz_target!(|data: &[u8]| {
    let _ = sidecall::calls::fritz::parse_line(&String::from_utf8_lossy(data));
});
