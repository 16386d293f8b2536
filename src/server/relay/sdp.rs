//! Addresses in signaling: in a relayed session the only addresses a peer may see are the
//! relay's. The server checks every signal ([`check`]) and refuses what names anything else;
//! our client removes the related addresses webrtc puts on relay candidates ([`scrub`]).

use crate::protocol::SignalData;
use std::net::{IpAddr, Ipv4Addr};

/// Whether a signal of a relayed session names only relay candidates on the relay
/// (`is_relay`), with their related address hidden, and no other address.
pub fn check(data: &SignalData, is_relay: impl Fn(IpAddr) -> bool) -> Result<(), String> {
    match data {
        SignalData::Candidate { candidate, .. } => check_candidate(candidate, &is_relay),
        SignalData::Offer { sdp } | SignalData::Answer { sdp } => check_sdp(sdp, &is_relay),
        SignalData::EndOfCandidates | SignalData::Video { .. } => Ok(()),
    }
}

fn hidden(addr: &str) -> bool {
    addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

fn check_candidate(line: &str, is_relay: &impl Fn(IpAddr) -> bool) -> Result<(), String> {
    let line = line.trim();
    let line = line.strip_prefix("a=").unwrap_or(line);
    if line.is_empty() {
        return Ok(()); // end of candidates, in some stacks
    }
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 || !f[0].starts_with("candidate:") || f[6] != "typ" {
        return Err("an unreadable candidate".into());
    }
    if f[7] != "relay" {
        return Err(format!("a {} candidate", f[7]));
    }
    match f[4].parse::<IpAddr>() {
        Ok(ip) if is_relay(ip) => {}
        Ok(_) => return Err("a relay candidate of another relay".into()),
        Err(_) => return Err("a relay candidate without an IP address".into()),
    }
    if let Some(i) = f.iter().position(|t| *t == "raddr")
        && !f.get(i + 1).is_some_and(|a| hidden(a) || a.parse().is_ok_and(is_relay))
    {
        return Err("a relay candidate that names its related address".into());
    }
    Ok(())
}

fn check_sdp(sdp: &str, is_relay: &impl Fn(IpAddr) -> bool) -> Result<(), String> {
    for line in sdp.lines() {
        if line.starts_with("a=candidate:") {
            check_candidate(line, is_relay)?;
        } else if let Some(addr) = connection_address(line)
            && !(hidden(addr) || addr.parse().is_ok_and(is_relay))
        {
            return Err("an address in the session description".into());
        }
    }
    Ok(())
}

/// The address of `o=`, `c=` and `a=rtcp:` lines (`… IN IP4 ADDR`).
fn connection_address(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("IN IP4 ").or_else(|| line.split_once("IN IP6 "))?;
    rest.split_whitespace().next()
}

/// Hides what a relayed session must not show: the related address of relay candidates,
/// and the connection addresses of a description.
pub fn scrub(data: SignalData) -> SignalData {
    match data {
        SignalData::Candidate { candidate, sdp_mid, sdp_mline_index } => {
            SignalData::Candidate { candidate: scrub_candidate(&candidate), sdp_mid, sdp_mline_index }
        }
        SignalData::Offer { sdp } => SignalData::Offer { sdp: scrub_sdp(&sdp) },
        SignalData::Answer { sdp } => SignalData::Answer { sdp: scrub_sdp(&sdp) },
        other => other,
    }
}

fn scrub_candidate(line: &str) -> String {
    let mut f: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    for key in ["raddr", "rport"] {
        if let Some(i) = f.iter().position(|t| t == key)
            && let Some(v) = f.get_mut(i + 1)
        {
            *v = if key == "raddr" { Ipv4Addr::UNSPECIFIED.to_string() } else { "0".into() };
        }
    }
    f.join(" ")
}

fn scrub_sdp(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            },
        };
        if body.starts_with("a=candidate:") {
            out.push_str(&scrub_candidate(body));
        } else if let Some(addr) = connection_address(body) {
            let (ip4, ip6) = ("IN IP4 ", "IN IP6 ");
            let (tag, unspecified) = if body.contains(ip6) { (ip6, "::") } else { (ip4, "0.0.0.0") };
            out.push_str(&body.replacen(&format!("{tag}{addr}"), &format!("{tag}{unspecified}"), 1));
        } else {
            out.push_str(body);
        }
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "203.0.113.5";

    fn is_relay(ip: IpAddr) -> bool {
        ip == RELAY.parse::<IpAddr>().expect("ip")
    }

    fn cand(c: &str) -> SignalData {
        SignalData::Candidate { candidate: c.into(), sdp_mid: Some("0".into()), sdp_mline_index: Some(0) }
    }

    #[test]
    fn only_relay_candidates_on_our_relay_pass() {
        let ok = "candidate:1 1 udp 16777215 203.0.113.5 50001 typ relay raddr 0.0.0.0 rport 0";
        assert_eq!(check(&cand(ok), is_relay), Ok(()));
        let refused = [
            "candidate:1 1 udp 2122260223 192.168.178.20 50000 typ host",
            "candidate:2 1 udp 1686052607 198.51.100.7 40000 typ srflx raddr 192.168.178.20 rport 50000",
            "candidate:3 1 udp 1686052607 198.51.100.7 40000 typ prflx",
            "candidate:4 1 udp 16777215 198.51.100.99 50001 typ relay raddr 0.0.0.0 rport 0",
            "candidate:5 1 udp 16777215 203.0.113.5 50001 typ relay raddr 192.168.178.20 rport 50000",
            "candidate:6 1 udp 2122260223 abcd.local 50000 typ host",
            "garbage",
        ];
        for c in refused {
            assert!(check(&cand(c), is_relay).is_err(), "{c}");
        }
    }

    #[test]
    fn descriptions_with_addresses_are_refused_and_scrubbed_ones_pass() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 192.168.178.20\r\ns=-\r\nc=IN IP4 192.168.178.20\r\n\
                   a=candidate:1 1 udp 16777215 203.0.113.5 50001 typ relay raddr 192.168.178.20 rport 50000\r\n";
        let offer = SignalData::Offer { sdp: sdp.into() };
        assert!(check(&offer, is_relay).is_err());
        let clean = scrub(offer);
        assert_eq!(check(&clean, is_relay), Ok(()), "{clean:?}");
        let SignalData::Offer { sdp } = clean else { panic!("an offer") };
        assert!(!sdp.contains("192.168"), "{sdp}");
        assert!(sdp.ends_with("\r\n") && sdp.contains("c=IN IP4 0.0.0.0\r\n"));
        // A host candidate in a description is refused, scrubbed or not.
        let host = SignalData::Answer { sdp: "a=candidate:1 1 udp 1 10.0.0.1 1 typ host\r\n".into() };
        assert!(check(&scrub(host), is_relay).is_err());
    }

    #[test]
    fn other_signals_pass() {
        assert_eq!(check(&SignalData::EndOfCandidates, is_relay), Ok(()));
        assert_eq!(check(&SignalData::Video { sending: true }, is_relay), Ok(()));
    }
}
