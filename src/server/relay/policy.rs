//! Which peers the relay sends to: never an open relay. coturn's `denied-peer-ip` list is
//! the model: loopback, private, link-local, CGNAT, multicast and unspecified addresses are
//! refused (unless a LAN deployment allows private ones), and so is the server itself except
//! for its own relay allocations.

use std::net::IpAddr;

/// Why a peer address is refused; also the label of the refusal counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Loopback,
    Private,
    LinkLocal,
    Cgnat,
    Multicast,
    Unspecified,
    /// Reserved, documentation or benchmarking ranges: no host lives there.
    Reserved,
    /// The server's own address (its other services), not one of its relay allocations.
    Server,
    /// Not a relay allocation of the other device of the same session.
    NotSessionPeer,
    WrongCredentials,
    /// No session running for the device (allocations exist only during one).
    NoSession,
    Quota,
    Bandwidth,
    BadRequest,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::LinkLocal => "link_local",
            Refusal::Cgnat => "cgnat",
            Refusal::Multicast => "multicast",
            Refusal::Unspecified => "unspecified",
            Refusal::Reserved => "reserved",
            Refusal::Server => "server_address",
            Refusal::NotSessionPeer => "not_session_peer",
            Refusal::WrongCredentials => "wrong_credentials",
            Refusal::NoSession => "no_session",
            Refusal::Quota => "quota",
            Refusal::Bandwidth => "bandwidth",
            Refusal::BadRequest => "bad_request",
        }
    }
}

/// The address rules of one relay.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    /// Allow private, loopback and link-local peers (a relay for one LAN, or tests).
    pub allow_private: bool,
    /// The addresses the relay allocates on: peers there are checked against allocations.
    pub relay_ips: Vec<IpAddr>,
}

impl PeerPolicy {
    /// Whether a permission towards `ip` may be installed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.relay_ips.contains(&ip) {
            // Its own allocations: which one is checked packet by packet.
            return Ok(());
        }
        if ip.is_unspecified() {
            return Err(Refusal::Unspecified);
        }
        if ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
            return Err(Refusal::Multicast);
        }
        let class = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if v4.is_loopback() {
                    Some(Refusal::Loopback)
                } else if v4.is_private() {
                    Some(Refusal::Private)
                } else if v4.is_link_local() {
                    Some(Refusal::LinkLocal)
                } else if o[0] == 100 && (64..128).contains(&o[1]) {
                    Some(Refusal::Cgnat)
                } else if o[0] == 0
                    || o[0] >= 240
                    || v4.is_documentation()
                    || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                    || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                {
                    return Err(Refusal::Reserved);
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                if v6.is_loopback() {
                    Some(Refusal::Loopback)
                } else if (s[0] & 0xfe00) == 0xfc00 {
                    Some(Refusal::Private)
                } else if (s[0] & 0xffc0) == 0xfe80 {
                    Some(Refusal::LinkLocal)
                } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                    return Err(Refusal::Reserved);
                } else {
                    None
                }
            }
        };
        match class {
            Some(_) if self.allow_private => Ok(()),
            Some(r) => Err(r),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_public_peers_and_own_allocations_by_default() {
        let p = PeerPolicy { allow_private: false, relay_ips: vec![ip("203.0.113.9")] };
        let cases = [
            ("127.0.0.1", Err(Refusal::Loopback)),
            ("10.1.2.3", Err(Refusal::Private)),
            ("172.16.0.1", Err(Refusal::Private)),
            ("192.168.178.20", Err(Refusal::Private)),
            ("169.254.1.1", Err(Refusal::LinkLocal)),
            ("100.64.0.1", Err(Refusal::Cgnat)),
            ("224.0.0.1", Err(Refusal::Multicast)),
            ("255.255.255.255", Err(Refusal::Multicast)),
            ("0.0.0.0", Err(Refusal::Unspecified)),
            ("198.51.100.7", Err(Refusal::Reserved)),
            ("::1", Err(Refusal::Loopback)),
            ("fd00::1", Err(Refusal::Private)),
            ("fe80::1", Err(Refusal::LinkLocal)),
            ("::ffff:127.0.0.1", Err(Refusal::Loopback)),
            ("ff02::1", Err(Refusal::Multicast)),
            ("8.8.8.8", Ok(())),
            ("2a00:1450::1", Ok(())),
            ("203.0.113.9", Ok(())),
        ];
        for (addr, want) in cases {
            assert_eq!(p.check(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn a_lan_relay_allows_private_peers_but_never_multicast() {
        let p = PeerPolicy { allow_private: true, relay_ips: vec![] };
        assert_eq!(p.check(ip("192.168.1.5")), Ok(()));
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("224.0.0.251")), Err(Refusal::Multicast));
        assert_eq!(p.check(ip("0.0.0.0")), Err(Refusal::Unspecified));
    }
}
