//! Password hashing on a bounded pool.
//!
//! argon2id with the default parameters takes ~19 MiB and tens of milliseconds of one core per
//! hash. Run unbounded (a blocking task per request), a hundred concurrent registrations add
//! almost 2 GiB to the server, and glibc keeps most of it afterwards. Here at most
//! `workers` hashes run at once, at most `queue` more wait, and the rest are refused at
//! once (the caller answers `429`); allocations of hash-sized blocks are returned to the
//! system when freed (see [`return_large_allocations`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

/// The pool is full: try again shortly.
#[derive(Debug, thiserror::Error)]
#[error("the server is busy checking passwords: try again in a few seconds")]
pub struct Busy;

pub struct HashPool {
    running: Arc<Semaphore>,
    /// Jobs running or waiting.
    admitted: AtomicUsize,
    limit: usize,
}

impl HashPool {
    /// `workers` at once (default: the number of cores), `queue` waiting beyond them.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        HashPool {
            running: Arc::new(Semaphore::new(workers)),
            admitted: AtomicUsize::new(0),
            limit: workers + queue,
        }
    }

    /// Runs `job` (a password hash or check) when a worker is free, or refuses at once when
    /// too many are waiting already.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        struct Admitted<'a>(&'a AtomicUsize);
        impl Drop for Admitted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _admitted = Admitted(&self.admitted);
        let _permit = self.running.clone().acquire_owned().await.map_err(|_| Busy)?;
        tokio::task::spawn_blocking(job).await.map_err(|_| Busy)
    }

    /// Jobs running or waiting now.
    pub fn load(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }
}

/// Makes the allocator hand blocks of 1 MiB and more straight back to the system when they
/// are freed. glibc otherwise raises its mmap threshold after the first such block is freed,
/// and the next ones (each argon2 hash is one 19 MiB block) come from per-thread arenas that
/// are never trimmed: the server's memory stays at its highest point after a burst.
pub fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_workers_and_queue() {
        let pool = Arc::new(HashPool::new(1, 1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        let block =
            |rx: Arc<parking_lot::Mutex<std::sync::mpsc::Receiver<()>>>| move || rx.lock().recv().ok();
        let a = tokio::spawn({
            let (p, r) = (pool.clone(), rx.clone());
            async move { p.run(block(r)).await }
        });
        let b = tokio::spawn({
            let (p, r) = (pool.clone(), rx.clone());
            async move { p.run(block(r)).await }
        });
        while pool.load() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(pool.run(|| ()).await.is_err(), "a third job is refused");
        tx.send(()).expect("send");
        tx.send(()).expect("send");
        assert!(a.await.expect("join").is_ok());
        assert!(b.await.expect("join").is_ok());
        assert_eq!(pool.load(), 0);
        assert!(pool.run(|| ()).await.is_ok(), "free again");
    }
}
