//! Leaky-bucket rate limits, per connection and per key.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// A token bucket: `capacity` tokens, refilled at `per_sec`.
#[derive(Clone, Debug)]
pub struct Bucket {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(capacity: f64, per_sec: f64) -> Self {
        Bucket { tokens: capacity, capacity, per_sec, last: Instant::now() }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken for something that turned out not to count.
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }

    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_sec >= self.capacity
    }
}

/// One bucket per key (a number, an address), pruned when it grows large.
pub struct KeyedLimiter<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
    capacity: f64,
    per_sec: f64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(capacity: f64, per_sec: f64) -> Self {
        KeyedLimiter { buckets: Mutex::new(HashMap::new()), capacity, per_sec }
    }

    pub fn check(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets.entry(key.clone()).or_insert_with(|| Bucket::new(self.capacity, self.per_sec)).take(now)
    }

    /// Gives back a token [`KeyedLimiter::check`] took.
    pub fn refund(&self, key: &K) {
        if let Some(b) = self.buckets.lock().get_mut(key) {
            b.refund();
        }
    }
}

/// Which limit refused a login attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Too many failures from this address for this number.
    Pair,
    /// Too many failures from this address (for any numbers).
    Address,
    /// Too many failures for this number from everywhere, and this address never logged in
    /// to it.
    Number,
}

/// Failed logins, counted so that guessing is slow and nobody else can lock an owner out:
/// - per number *and* address: a few failures, then one try every 12 s;
/// - per address: more (many people share an office or carrier NAT);
/// - per number from everywhere: a high ceiling against guessing from many addresses, which
///   does not apply to addresses the number's own devices logged in from.
///
/// A token is taken for every attempt and given back when it succeeds: only failures count.
pub struct LoginLimiter {
    pair: KeyedLimiter<(String, std::net::IpAddr)>,
    address: KeyedLimiter<std::net::IpAddr>,
    number: KeyedLimiter<String>,
}

/// The tokens one attempt holds; give them back with [`LoginLimiter::succeeded`].
pub struct Attempt {
    number: String,
    ip: std::net::IpAddr,
    took_number: bool,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter {
            pair: KeyedLimiter::new(5.0, 1.0 / 12.0),
            address: KeyedLimiter::new(30.0, 0.5),
            number: KeyedLimiter::new(50.0, 1.0 / 6.0),
        }
    }
}

impl LoginLimiter {
    /// Admits an attempt, or says which limit refuses it. `known_address`: a device of the
    /// number logged in from this address before (ask again with `true` after a
    /// [`LoginRefusal::Number`]; nothing is held by a refused attempt).
    pub fn admit(
        &self,
        number: &str,
        ip: std::net::IpAddr,
        known_address: bool,
    ) -> Result<Attempt, LoginRefusal> {
        let pair = (number.to_string(), ip);
        if !self.pair.check(&pair) {
            return Err(LoginRefusal::Pair);
        }
        if !self.address.check(&ip) {
            self.pair.refund(&pair);
            return Err(LoginRefusal::Address);
        }
        let took_number = self.number.check(&number.to_string());
        if !took_number && !known_address {
            self.pair.refund(&pair);
            self.address.refund(&ip);
            return Err(LoginRefusal::Number);
        }
        Ok(Attempt { number: number.to_string(), ip, took_number })
    }

    /// The attempt succeeded: it does not count.
    pub fn succeeded(&self, a: Attempt) {
        self.pair.refund(&(a.number.clone(), a.ip));
        self.address.refund(&a.ip);
        if a.took_number {
            self.number.refund(&a.number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_failures_count_and_owners_keep_their_way_in() {
        let limits = LoginLimiter::default();
        let office: std::net::IpAddr = "198.51.100.7".parse().expect("ip");
        // Fifty colleagues behind one address, each logging in twice: nobody is refused.
        for i in 0..50 {
            for _ in 0..2 {
                let a = limits.admit(&format!("+4930{i:06}"), office, false).expect("admitted");
                limits.succeeded(a);
            }
        }
        // An attacker guessing one number from many addresses reaches its ceiling ...
        let target = "+4930999999";
        let mut refused = None;
        for i in 0..60u8 {
            for _ in 0..5 {
                if let Err(r) = limits.admit(target, std::net::IpAddr::from([203, 0, 113, i]), false) {
                    refused = Some(r);
                }
            }
        }
        assert_eq!(refused, Some(LoginRefusal::Number));
        // ... which stops new addresses, but not the owner's own.
        let home: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(
            limits.admit(target, "192.0.2.2".parse().expect("ip"), false).err(),
            Some(LoginRefusal::Number)
        );
        assert!(limits.admit(target, home, true).is_ok());
        // Failures from one address for one number stop after five.
        let guesser: std::net::IpAddr = "192.0.2.9".parse().expect("ip");
        for _ in 0..5 {
            let _failed = limits.admit("+4930111111", guesser, false).expect("admitted");
        }
        assert_eq!(limits.admit("+4930111111", guesser, false).err(), Some(LoginRefusal::Pair));
    }

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2.0, 1.0);
        assert!(b.take(t0));
        assert!(b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(1100)));
    }
}
