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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
