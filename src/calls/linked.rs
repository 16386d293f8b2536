//! Does a data-session request belong to the call on this user's phone? The incoming calls
//! the watchers saw lately, matched against the number of a request's caller.

use super::{CallEvent, Source, WatcherStatus};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What the callee's own phone line says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallMatch {
    /// The caller's number is ringing on this user's phone, or the call was answered (and is
    /// going on, or ended within the last minute).
    Matches,
    /// A watcher that sees incoming calls runs, and saw no such call.
    NotLinked,
}

impl CallMatch {
    pub fn describe(self) -> &'static str {
        match self {
            CallMatch::Matches => "Matches the call on your phone",
            CallMatch::NotLinked => "Not linked to a call on your phone",
        }
    }
}

/// How long after it ended an answered call still vouches for a request.
pub const ANSWERED_WITHIN: Duration = Duration::from_secs(60);
/// A call whose end was never reported stops counting after this.
const STALE: Duration = Duration::from_secs(4 * 3600);
const KEEP: usize = 32;

#[derive(Clone, Debug)]
struct Seen {
    call_ref: String,
    /// E.164, when the number could be read.
    caller: Option<String>,
    began: Instant,
    answered: bool,
    ended: Option<Instant>,
}

/// The last incoming calls (at most 32).
#[derive(Clone, Debug, Default)]
pub struct RecentCalls {
    calls: Vec<Seen>,
}

impl RecentCalls {
    /// Notes an event of a watcher; `region`/`area` read national caller numbers.
    pub fn observe(&mut self, ev: &CallEvent, now: Instant, region: &str, area: Option<&str>) {
        match ev {
            CallEvent::Incoming { call_ref, caller } => {
                let caller =
                    caller.as_deref().and_then(|c| match crate::number::read_dialed(c, region, area) {
                        Ok(crate::number::Dialed::Number(n)) => Some(n.to_string()),
                        _ => None,
                    });
                self.calls.retain(|c| c.call_ref != *call_ref);
                self.calls.push(Seen {
                    call_ref: call_ref.clone(),
                    caller,
                    began: now,
                    answered: false,
                    ended: None,
                });
                if self.calls.len() > KEEP {
                    self.calls.remove(0);
                }
            }
            CallEvent::Connected { call_ref } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.call_ref == *call_ref) {
                    c.answered = true;
                }
            }
            CallEvent::Ended { call_ref } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.call_ref == *call_ref && c.ended.is_none())
                {
                    c.ended = Some(now);
                }
            }
            CallEvent::Outgoing { .. } => {}
        }
    }

    /// Whether `number` (E.164) is on this user's phone now (ringing or talking) or talked
    /// within [`ANSWERED_WITHIN`].
    pub fn check(&self, number: &str, now: Instant) -> CallMatch {
        let linked = self.calls.iter().any(|c| {
            c.caller.as_deref() == Some(number)
                && match c.ended {
                    None => now.saturating_duration_since(c.began) < STALE,
                    Some(end) => c.answered && now.saturating_duration_since(end) <= ANSWERED_WITHIN,
                }
        });
        if linked { CallMatch::Matches } else { CallMatch::NotLinked }
    }
}

/// Whether any watcher that sees incoming calls is working (`tel:` links only see outgoing
/// ones). Without one, nothing is claimed about a request.
pub fn sees_incoming(watchers: &[(Source, WatcherStatus)]) -> bool {
    watchers.iter().any(|(src, st)| {
        *src != Source::Tel && matches!(st, WatcherStatus::Connected | WatcherStatus::Listening { .. })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(r: &str, caller: &str) -> CallEvent {
        CallEvent::Incoming { call_ref: r.into(), caller: Some(caller.into()) }
    }

    #[test]
    fn ringing_and_recently_answered_calls_match_others_do_not() {
        let t0 = Instant::now();
        let mut calls = RecentCalls::default();
        let alice = "+4930123456";
        assert_eq!(calls.check(alice, t0), CallMatch::NotLinked);
        calls.observe(&incoming("fritz:1", "030 123456"), t0, "DE", None);
        assert_eq!(calls.check(alice, t0), CallMatch::Matches, "ringing, read in the national form");
        assert_eq!(calls.check("+4940999999", t0), CallMatch::NotLinked, "another caller");
        calls.observe(&CallEvent::Connected { call_ref: "fritz:1".into() }, t0, "DE", None);
        calls.observe(
            &CallEvent::Ended { call_ref: "fritz:1".into() },
            t0 + Duration::from_secs(5),
            "DE",
            None,
        );
        assert_eq!(calls.check(alice, t0 + Duration::from_secs(60)), CallMatch::Matches);
        assert_eq!(calls.check(alice, t0 + Duration::from_secs(70)), CallMatch::NotLinked, "a minute after");
        // Rang and was never answered: over once it stops ringing.
        calls.observe(&incoming("fritz:2", "+4930123456"), t0, "DE", None);
        calls.observe(&CallEvent::Ended { call_ref: "fritz:2".into() }, t0, "DE", None);
        assert_eq!(calls.check(alice, t0 + Duration::from_secs(70)), CallMatch::NotLinked);
        for i in 0..100 {
            calls.observe(&incoming(&format!("x{i}"), "+4940999999"), t0, "DE", None);
        }
        assert!(calls.calls.len() <= KEEP);
    }

    #[test]
    fn only_working_watchers_of_incoming_calls_count() {
        assert!(!sees_incoming(&[]));
        assert!(!sees_incoming(&[(Source::Tel, WatcherStatus::Listening { at: "x".into() })]));
        assert!(!sees_incoming(&[(Source::Fritz, WatcherStatus::Connecting)]));
        assert!(sees_incoming(&[(Source::Fritz, WatcherStatus::Connected)]));
        assert!(sees_incoming(&[(Source::Phone, WatcherStatus::Listening { at: "x".into() })]));
    }
}
