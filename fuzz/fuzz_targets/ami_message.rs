#![no_main]
use libfuzzer_sys::fuzz_target;

// An Asterisk manager message and the call tracker that reads it.
fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let msg = sidecall::calls::ami::parse_message(&lines);
    let mut t = sidecall::calls::ami::Tracker::default();
    let _ = t.event(&msg, "201");
    let _ = t.event(&msg, "201");
});
