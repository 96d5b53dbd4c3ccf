//! The one place bcrypt runs, for the life of the process.
//!
//! bcrypt is slow on purpose (about 70 ms at cost 10), so an attacker who
//! can make the exporter hash at will owns its CPU. exporter-toolkit holds a
//! mutex around a synchronous compare; the async equivalent has two traps we
//! fell into once: a permit owned by the request future is released when the
//! client hangs up while the blocking hash runs on, and an unbounded FIFO of
//! waiters makes the first login after a restart wait behind every wrong
//! password sent before it. So:
//!
//! * **One worker thread** does every hash, so at most one runs at any
//!   moment, whoever hangs up. A job whose requester is gone is skipped.
//! * **A bounded queue, shared by source** ([`source_key`]: an IPv4 address
//!   or an IPv6 /64, as the connection table counts them). The waiting
//!   source that has had the fewest hashes goes next, so a newcomer (a
//!   scraper's first login after a restart) waits for the hash running and
//!   no more, however many wrong passwords a crowd has queued. A source may have [`PER_SOURCE`] jobs waiting; when the queue
//!   is full, a source holding fewer than the largest takes the largest's
//!   newest place. Everyone else is answered at once: [`Verdict::Busy`].
//! * **Verified logins are cached** here, keyed by user, password and hash,
//!   so the cache survives a reload and a changed password cannot match.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::web::conns::source_key;

/// Jobs waiting for the worker at most, all sources together.
pub const QUEUE_CAPACITY: usize = 16;
/// Jobs one source may have waiting.
pub const PER_SOURCE: usize = 2;
/// A request waits this long at most for its turn and its hash.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// Sources whose check counts are remembered for the turn order.
const REMEMBERED_SOURCES: usize = 4096;
/// Verified logins remembered; the cache is cleared when it is full (a few
/// users is the toolkit's stated use).
const MAX_CACHED: usize = 256;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// No room in the queue, or no answer within [`MAX_WAIT`]: try later.
    Busy,
}

struct Job {
    password: String,
    hash: String,
    reply: oneshot::Sender<bool>,
}

#[derive(Default)]
struct Queue {
    waiting: HashMap<IpAddr, VecDeque<Job>>,
    /// Sources with jobs waiting, in the order they queued.
    turns: VecDeque<IpAddr>,
    /// Checks done per source: the waiting source with the fewest goes
    /// next, so a newcomer's first login is next in line however long a
    /// crowd has been guessing. Forgotten when it grows past
    /// [`REMEMBERED_SOURCES`].
    done: HashMap<IpAddr, u64>,
    len: usize,
    closed: bool,
}

impl Queue {
    fn count(&self, source: &IpAddr) -> usize {
        self.waiting.get(source).map_or(0, VecDeque::len)
    }

    /// Drops jobs whose requester has gone (hung up or timed out).
    fn forget_abandoned(&mut self) {
        for jobs in self.waiting.values_mut() {
            jobs.retain(|j| !j.reply.is_closed());
        }
        self.waiting.retain(|_, jobs| !jobs.is_empty());
        let waiting = &self.waiting;
        self.turns.retain(|s| waiting.contains_key(s));
        self.len = self.waiting.values().map(VecDeque::len).sum();
    }

    /// Queues a job, or gives it back when there is no fair room for it.
    fn push(&mut self, source: IpAddr, job: Job) -> Result<(), Job> {
        if self.count(&source) >= PER_SOURCE || self.len >= QUEUE_CAPACITY {
            self.forget_abandoned();
        }
        let mine = self.count(&source);
        if mine >= PER_SOURCE {
            return Err(job);
        }
        if self.len >= QUEUE_CAPACITY {
            // The source holding the most gives up its newest place, if it
            // holds more than this one does.
            let largest = self
                .waiting
                .iter()
                .map(|(s, jobs)| (jobs.len(), *s))
                .max()
                .filter(|(n, _)| *n > mine + 1);
            let Some((_, victim)) = largest else {
                return Err(job);
            };
            if let Some(jobs) = self.waiting.get_mut(&victim) {
                // Dropping the job drops its reply: that waiter is Busy.
                jobs.pop_back();
                self.len -= 1;
            }
        }
        let jobs = self.waiting.entry(source).or_default();
        if jobs.is_empty() {
            self.turns.push_back(source);
        }
        jobs.push_back(job);
        self.len += 1;
        Ok(())
    }

    /// The next job: the oldest of the waiting source that has had the
    /// fewest checks (the earliest queued among equals).
    fn pop(&mut self) -> Option<Job> {
        loop {
            let done = &self.done;
            let (at, _) = self
                .turns
                .iter()
                .enumerate()
                .min_by_key(|(i, s)| (done.get(*s).copied().unwrap_or(0), *i))?;
            let source = self.turns.remove(at)?;
            if self.done.len() >= REMEMBERED_SOURCES {
                self.done.clear();
            }
            *self.done.entry(source).or_default() += 1;
            let Some(jobs) = self.waiting.get_mut(&source) else {
                continue;
            };
            let job = jobs.pop_front();
            if jobs.is_empty() {
                self.waiting.remove(&source);
            } else {
                self.turns.push_back(source);
            }
            if let Some(job) = job {
                self.len -= 1;
                return Some(job);
            }
        }
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        crate::sync::lock(&self.queue)
    }
}

/// The bcrypt worker, its queue and the cache of verified logins. Made once
/// by the server and kept across reloads.
pub struct AuthGate {
    shared: Arc<Shared>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl AuthGate {
    pub fn new() -> Arc<AuthGate> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let worker = shared.clone();
        // If the thread cannot start, every check answers Busy: auth fails
        // closed rather than open.
        let _ = std::thread::Builder::new()
            .name("bcrypt".into())
            .spawn(move || work(&worker));
        Arc::new(AuthGate {
            shared,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Checks `password` against `hash` for a request from `source`. `known`
    /// is false when `hash` is a decoy for an unknown user: the check costs
    /// the same and never succeeds.
    pub async fn check(
        &self,
        source: IpAddr,
        user: &str,
        password: &str,
        hash: &str,
        known: bool,
    ) -> Verdict {
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if known && self.cache().contains(&key) {
            return Verdict::Valid;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password: password.to_owned(),
            hash: hash.to_owned(),
            reply,
        };
        if self.shared.lock().push(source_key(source), job).is_err() {
            return Verdict::Busy;
        }
        self.shared.ready.notify_one();
        match tokio::time::timeout(MAX_WAIT, answer).await {
            Ok(Ok(true)) if known => {
                let mut cache = self.cache();
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(key);
                Verdict::Valid
            }
            Ok(Ok(_)) => Verdict::Invalid,
            // Evicted for a fairer claimant, or out of time.
            Ok(Err(_)) | Err(_) => Verdict::Busy,
        }
    }

    /// Jobs waiting for the worker now.
    pub fn queued(&self) -> usize {
        self.shared.lock().len
    }

    fn cache(&self) -> MutexGuard<'_, HashSet<[u8; 32]>> {
        crate::sync::lock(&self.verified)
    }
}

impl Drop for AuthGate {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// The worker: one hash at a time, skipping requesters that have gone.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.lock();
            loop {
                if q.closed {
                    return;
                }
                if let Some(job) = q.pop() {
                    break job;
                }
                q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        if job.reply.is_closed() {
            continue;
        }
        let ok = bcrypt::verify(&job.password, &job.hash).unwrap_or(false);
        let _ = job.reply.send(ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<bool>) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            password: String::new(),
            hash: String::new(),
            reply,
        };
        (job, rx)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn sources_take_turns_whatever_order_they_queued_in() {
        let mut q = Queue::default();
        let mut keep = Vec::new();
        for (i, source) in [1, 1, 2, 3].into_iter().enumerate() {
            let (mut j, rx) = job();
            j.password = i.to_string();
            q.push(ip(source), j).ok().unwrap();
            keep.push(rx);
        }
        // 1, 2, 3, then 1's second job.
        let mut order = Vec::new();
        while let Some(j) = q.pop() {
            order.push(j.password);
        }
        assert_eq!(order, ["0", "2", "3", "1"]);
        assert_eq!(q.len, 0);
    }

    #[test]
    fn a_newcomer_goes_before_sources_that_have_had_their_turns() {
        let mut q = Queue::default();
        let mut keep = Vec::new();
        for round in 0..3 {
            for source in [1, 2] {
                let (mut j, rx) = job();
                j.password = format!("{source}-{round}");
                q.push(ip(source), j).ok().unwrap();
                keep.push(rx);
            }
            // The crowd's jobs are taken as they come...
            assert!(q.pop().is_some() && q.pop().is_some());
        }
        let (mut a, _ra) = job();
        a.password = "crowd".into();
        q.push(ip(1), a).ok().unwrap();
        let (mut b, _rb) = job();
        b.password = "newcomer".into();
        q.push(ip(9), b).ok().unwrap();
        // ...and the newcomer, queued last, is next.
        assert_eq!(q.pop().unwrap().password, "newcomer");
        assert_eq!(q.pop().unwrap().password, "crowd");
    }

    #[test]
    fn a_source_at_its_share_is_answered_at_once() {
        let mut q = Queue::default();
        let _rx: Vec<_> = (0..PER_SOURCE)
            .map(|_| {
                let (j, rx) = job();
                q.push(ip(1), j).ok().unwrap();
                rx
            })
            .collect();
        let (j, _rx2) = job();
        assert!(q.push(ip(1), j).is_err());
        let (j, _rx3) = job();
        assert!(q.push(ip(2), j).is_ok(), "another source still has room");
    }

    #[test]
    fn a_full_queue_makes_room_for_a_newcomer_out_of_the_largest_share() {
        let mut q = Queue::default();
        let mut held = Vec::new();
        // Four sources fill the queue with their full share each.
        for source in 1..=(QUEUE_CAPACITY / PER_SOURCE) as u8 {
            for _ in 0..PER_SOURCE {
                let (j, rx) = job();
                q.push(ip(source), j).ok().unwrap();
                held.push(rx);
            }
        }
        assert_eq!(q.len, QUEUE_CAPACITY);
        let (j, _newcomer) = job();
        assert!(q.push(ip(100), j).is_ok());
        assert_eq!(q.len, QUEUE_CAPACITY);
        // Exactly one attacker lost its newest place, and learns it at once.
        let evicted = held
            .iter_mut()
            .map(|rx| rx.try_recv())
            .filter(|r| matches!(r, Err(oneshot::error::TryRecvError::Closed)))
            .count();
        assert_eq!(evicted, 1);
        // A second newcomer evicts again; one holding as much as any does not.
        let (j, _second) = job();
        assert!(q.push(ip(101), j).is_ok());
        let mut level = Queue::default();
        let mut keep = Vec::new();
        for source in 1..=QUEUE_CAPACITY as u8 {
            let (j, rx) = job();
            level.push(ip(source), j).ok().unwrap();
            keep.push(rx);
        }
        let (j, _rx) = job();
        assert!(level.push(ip(200), j).is_err(), "no source holds more");
    }

    #[test]
    fn abandoned_jobs_give_their_places_back() {
        let mut q = Queue::default();
        for _ in 0..PER_SOURCE {
            let (j, rx) = job();
            q.push(ip(1), j).ok().unwrap();
            drop(rx);
        }
        let (j, _rx) = job();
        assert!(q.push(ip(1), j).is_ok());
        assert_eq!(q.len, 1);
    }

    #[tokio::test]
    async fn one_worker_checks_caches_and_skips_requesters_that_left() {
        let gate = AuthGate::new();
        let hash = bcrypt::hash("right", 4).unwrap();
        let check = |password: &'static str, known| {
            let (gate, hash) = (gate.clone(), hash.clone());
            async move { gate.check(ip(1), "u", password, &hash, known).await }
        };
        assert_eq!(check("right", true).await, Verdict::Valid);
        assert_eq!(check("wrong", true).await, Verdict::Invalid);
        // A decoy never succeeds, even with the right password.
        assert_eq!(check("right", false).await, Verdict::Invalid);
        // Cached: answered with the worker's queue full of others.
        let slow = bcrypt::hash("x", 12).unwrap();
        let mut busy = Vec::new();
        for source in 10..10 + QUEUE_CAPACITY as u8 {
            let (gate, slow) = (gate.clone(), slow.clone());
            busy.push(tokio::spawn(async move {
                gate.check(ip(source), "u", "y", &slow, true).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(check("right", true).await, Verdict::Valid);
        for b in busy {
            b.abort();
        }
    }
}
