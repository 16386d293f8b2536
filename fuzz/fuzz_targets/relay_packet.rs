#![no_main]
use libfuzzer_sys::fuzz_target;
use rtc_stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use rtc_stun::message::{Getter, Message};
use rtc_stun::textattrs::TextAttribute;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::data::Data;
use rtc_turn::proto::lifetime::Lifetime;
use rtc_turn::proto::peeraddr::PeerAddress;
use rtc_turn::proto::reqtrans::RequestedTransport;
use std::sync::OnceLock;

// A UDP datagram to the relay from anyone on the internet: the STUN/TURN message and every
// attribute the relay reads from it, and the credential check on its username.
fuzz_target!(|data: &[u8]| {
    static SECRET: OnceLock<sidecall::server::relay::creds::Secret> = OnceLock::new();
    let secret = SECRET.get_or_init(|| {
        let crypto = rtc_crypto::default_provider().expect("crypto");
        sidecall::server::relay::creds::Secret::new("fuzz", crypto)
    });
    let mut m = Message::new();
    if m.unmarshal_binary(data).is_ok() {
        for a in [ATTR_USERNAME, ATTR_REALM, ATTR_NONCE] {
            if let Ok(t) = TextAttribute::get_from_as(&m, a) {
                let _ = secret.check(&t.text, 1_700_000_000);
            }
        }
        let _ = Lifetime::default().get_from(&m);
        let _ = PeerAddress::default().get_from(&m);
        let _ = ChannelNumber::default().get_from(&m);
        let _ = RequestedTransport::default().get_from(&m);
        let _ = Data::default().get_from(&m);
    }
    let _ = secret.check(&String::from_utf8_lossy(data), 1_700_000_000);
});
