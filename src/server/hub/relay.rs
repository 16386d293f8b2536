//! What the hub tells and answers about the relay: credentials for devices, the signals a
//! relayed session may carry, and which sessions the relay may serve.

use super::*;

impl Hub {
    /// The ICE servers for a device that reached this server by `host`: the configured ones
    /// and the relay with a credential of its own.
    pub fn ice_servers_for(&self, device_id: i64, host: Option<&str>) -> Vec<IceServer> {
        let mut servers = self.cfg.ice_servers.clone();
        if let (Some(relay), Some(host)) = (self.relay.read().as_ref(), host) {
            servers.push(relay.ice_server(device_id, host));
        }
        servers
    }

    /// How long relay credentials minted now stay valid, if there is a relay.
    pub fn relay_credential_ttl(&self) -> Option<Duration> {
        self.relay.read().as_ref().map(|r| r.credential_ttl())
    }

    /// In a relayed session: refuses a signal naming anything but candidates on the relay.
    pub(super) fn relay_only(&self, data: &SignalData) -> Result<(), String> {
        let relay = self.relay.read().clone();
        match relay {
            Some(r) => crate::server::relay::sdp::check(data, |ip| r.is_relay_ip(ip)),
            None => crate::server::relay::sdp::check(data, |_| false),
        }
    }

    /// The user of `device` and the other device of its running session, if any.
    pub fn session_peer(&self, device: i64) -> Option<(i64, i64)> {
        let inner = self.lock();
        // A device whose connection dropped keeps its sessions (and relay) for the grace time.
        let (user, sessions) = match inner.devices.get(&device) {
            Some(d) => (d.user_id, d.sessions.as_slice()),
            None => {
                let away = inner.away.get(&device)?;
                let s = away.sessions.iter().find_map(|id| inner.sessions.get(id))?;
                let user = if s.caller_device == device { s.caller_user } else { s.callee_user };
                (user, away.sessions.as_slice())
            }
        };
        // Cluster: a session another node holds, as that node described it.
        let elsewhere = sessions.iter().find_map(|id| {
            let part = inner.remote_sessions.get(&(id.clone(), device))?;
            part.peer.filter(|_| part.active).map(|(peer_device, _)| (user, peer_device))
        });
        if elsewhere.is_some() {
            return elsewhere;
        }
        sessions.iter().find_map(|id| match inner.sessions.get(id)?.state {
            SessionState::Active { callee_device } if callee_device == device => {
                Some((user, inner.sessions.get(id)?.caller_device))
            }
            SessionState::Active { callee_device } if inner.sessions.get(id)?.caller_device == device => {
                Some((user, callee_device))
            }
            _ => None,
        })
    }
}

/// The relay asks the hub through a weak reference (the hub owns the relay).
pub struct HubGate(pub std::sync::Weak<Hub>);

impl crate::server::relay::SessionGate for HubGate {
    fn session_peer(&self, device: i64) -> Option<(i64, i64)> {
        self.0.upgrade()?.session_peer(device)
    }
}
