//! Placing phone calls through the office's PBX (click-to-call): the server asks the PBX to
//! ring the caller's own phone and, once it is picked up, to dial the target; it follows the
//! call and reports its stages. The hub sends the data-session initiation only once the
//! target answered the phone.
//!
//! One trait, [`Pbx`]; connectors: Asterisk AMI ([`ami`]).

pub mod ami;

use crate::protocol::{CallFailure, CallStage};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What happens to a placed call, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallUpdate {
    Stage(CallStage),
    /// The call did not come about (final).
    Failed(CallFailure),
    /// The call ended after it was answered, or was cancelled (final).
    HungUp,
}

/// A call being placed: its id on the PBX, and its updates.
pub struct PlacedCall {
    pub id: String,
    pub updates: mpsc::UnboundedReceiver<CallUpdate>,
}

/// Whether the connector can place calls now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxHealth {
    Connecting,
    Ready,
    /// Why not (a refused login, an unreachable PBX), for `/healthz` and the log.
    Down(String),
}

pub trait Pbx: Send + Sync {
    /// Rings the phone on `extension`; once picked up, dials `number` (E.164 or as the dial
    /// plan wants it), showing `caller_id` to the target.
    fn originate(&self, extension: &str, number: &str, caller_id: &str) -> Result<PlacedCall, CallFailure>;
    /// Hangs a placed call up (cancel before the answer, or end it).
    fn hangup(&self, call_id: &str);
    fn health(&self) -> PbxHealth;
}

/// How the server reaches its PBX (`--pbx ami://USER:SECRET@HOST:5038`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxConfig {
    Ami(ami::AmiConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum PbxConfigError {
    #[error("cannot read the PBX address {0:?}: use ami://USER:SECRET@HOST:5038")]
    BadUrl(String),
    #[error("unsupported PBX {0:?}: use ami://USER:SECRET@HOST:5038")]
    Scheme(String),
}

impl PbxConfig {
    /// `ami://USER:SECRET@HOST[:5038][?context=CTX]`.
    pub fn parse(url: &str) -> Result<PbxConfig, PbxConfigError> {
        let u = url::Url::parse(url).map_err(|_| PbxConfigError::BadUrl(url.to_string()))?;
        match u.scheme() {
            "ami" => {
                let host = u.host_str().ok_or_else(|| PbxConfigError::BadUrl(url.to_string()))?;
                let decode = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                let context = u
                    .query_pairs()
                    .find(|(k, _)| k == "context")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| "from-internal".into());
                let channel = u
                    .query_pairs()
                    .find(|(k, _)| k == "channel")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| "PJSIP/{ext}".into());
                Ok(PbxConfig::Ami(ami::AmiConfig {
                    addr: format!("{host}:{}", u.port().unwrap_or(5038)),
                    username: decode(u.username()),
                    secret: decode(u.password().unwrap_or("")),
                    context,
                    channel,
                }))
            }
            other => Err(PbxConfigError::Scheme(other.to_string())),
        }
    }

    /// Starts the connector (it connects, and reconnects, in the background).
    pub fn start(&self) -> Arc<dyn Pbx> {
        match self {
            PbxConfig::Ami(cfg) => ami::Ami::start(cfg.clone()),
        }
    }
}

/// An extension as a user may set it: 1–32 of digits, letters, `*#+_-`.
pub fn valid_extension(ext: &str) -> bool {
    (1..=32).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphanumeric() || "*#+_-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbx_urls() {
        let PbxConfig::Ami(a) =
            PbxConfig::parse("ami://sidecall:s%40cret@pbx.local?context=office").expect("url");
        assert_eq!(
            (a.addr.as_str(), a.username.as_str(), a.secret.as_str()),
            ("pbx.local:5038", "sidecall", "s@cret")
        );
        assert_eq!(a.context, "office");
        assert!(PbxConfig::parse("sip://x").is_err());
        assert!(PbxConfig::parse("nonsense").is_err());
        assert!(
            valid_extension("201")
                && valid_extension("*97")
                && !valid_extension("")
                && !valid_extension("2 1")
        );
    }
}
