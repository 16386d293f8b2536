#![no_main]
use libfuzzer_sys::fuzz_target;

// tel: links and the number parser behind them.
fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(n) = sidecall::calls::tel::parse_tel(&text) {
        let _ = sidecall::number::normalize(&n, Some("DE"));
    }
    let _ = sidecall::number::normalize_dialed(&text, "DE", Some("30"));
});
