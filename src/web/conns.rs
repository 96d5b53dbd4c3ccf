//! Which connections the server keeps, so no client can starve a scrape.
//!
//! The server accepts every connection at once and decides here whether it
//! may stay. The rules, all in [`Table`]:
//!
//! * **A cap sized to the file descriptors** (`web.max_connections`, lowered
//!   to what `RLIMIT_NOFILE` leaves after a reserve).
//! * **A per-source cap** (`web.max_connections_per_source`): a few
//!   addresses cannot fill the table. A source is an IPv4 address or an
//!   IPv6 /64 ([`source_key`]): one IPv6 host usually holds a whole /64.
//! * **Shedding instead of queueing.** When a cap is reached, a connection
//!   of the source holding the most is closed to make room: the oldest that
//!   has never completed a request (an idle socket, a slowloris header, a
//!   stalled TLS handshake), else one whose reader has not read for a
//!   second (requests pipelined and never read), else the longest-idle
//!   keep-alive one. A crowd
//!   from a few addresses so only ever sheds its own connections, and a
//!   scraper's one connection is never chosen while anyone holds more. A
//!   connection younger than [`GRACE`] that has not completed a request yet
//!   (a scraper in its TCP or TLS handshake) is shed only when nothing else
//!   can be. A request waiting for its password check is not "busy": its
//!   connection can be shed like one that never sent anything. A new
//!   connection is refused only when every other one is busy answering.
//! * **Timeouts that need no cooperation from the client**, enforced by one
//!   reaper: a response that makes no progress for `web.write_stall_timeout`
//!   (requests pipelined and never read), a keep-alive connection idle for
//!   `web.idle_timeout`, a connection with no complete request after
//!   `web.header_read_timeout`, and a request whose header has not ended
//!   `web.header_read_timeout` after its first byte (hyper's own header
//!   timer also runs while a keep-alive connection is idle, which would
//!   make `web.idle_timeout` unreachable, so it is off).
//! * **Counted:** every connection shed, timed out or refused, by reason, in
//!   the exporter's own metrics.
//! * **Bounded kernel memory:** each socket's send buffer is capped at
//!   [`SEND_BUFFER_BYTES`], so unread responses pin at most that much each
//!   instead of the kernel's autotuned megabytes.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Opts};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The kernel doubles this for bookkeeping: about 256 KiB per socket at most,
/// enough to keep a LAN link busy with the gzip body.
pub const SEND_BUFFER_BYTES: usize = 128 * 1024;

/// A response blocked this long on a reader that does not read may be shed
/// to make room; a reader that keeps up never blocks this long.
pub const STALLED: Duration = Duration::from_secs(1);

/// How long a new connection that has not completed a request is spared
/// from shedding while anything else can go: enough for a TCP and TLS
/// handshake and a first request over a slow link.
pub const GRACE: Duration = Duration::from_secs(2);

/// The key connections and password checks are counted under: an IPv4
/// address, or an IPv6 /64 (IPv4-mapped IPv6 addresses count as IPv4).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// Why the table closed a connection early, or refused one: the `reason`
/// label of the exporter's connection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Shed to make room: it never completed a request.
    ShedNeverServed,
    /// Shed to make room: its reader stopped reading.
    ShedStalledReader,
    /// Shed to make room: an idle keep-alive connection.
    ShedIdle,
    /// Shed to make room, as a last resort: younger than [`GRACE`].
    ShedNew,
    HeaderReadTimeout,
    IdleTimeout,
    WriteStallTimeout,
    /// Refused: every other connection was busy answering.
    RefusedAllBusy,
}

impl Closed {
    /// Every reason, so each series exists from the start.
    pub const ALL: [Closed; 8] = [
        Closed::ShedNeverServed,
        Closed::ShedStalledReader,
        Closed::ShedIdle,
        Closed::ShedNew,
        Closed::HeaderReadTimeout,
        Closed::IdleTimeout,
        Closed::WriteStallTimeout,
        Closed::RefusedAllBusy,
    ];

    /// The counter this reason is counted in and its `reason` label.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Closed::ShedNeverServed => ("shed", "never_served"),
            Closed::ShedStalledReader => ("shed", "stalled_reader"),
            Closed::ShedIdle => ("shed", "idle"),
            Closed::ShedNew => ("shed", "new"),
            Closed::HeaderReadTimeout => ("shed", "header_read_timeout"),
            Closed::IdleTimeout => ("shed", "idle_timeout"),
            Closed::WriteStallTimeout => ("shed", "write_stall_timeout"),
            Closed::RefusedAllBusy => ("refused", "all_busy"),
        }
    }
}

/// The web layer's own metrics: its connection counters (counted by the
/// table) and the requests it refused before any endpoint. The wiring
/// registers their [`WebMetrics::collectors`] in the exporter's registry;
/// nothing here knows what the server serves.
#[derive(Clone)]
pub struct WebMetrics {
    pub connections: Counters,
    /// Requests answered 401, 403 or 429 before reaching an endpoint.
    pub requests_refused: IntCounterVec,
}

/// The `reason` values of `aws_compute_optimizer_exporter_requests_refused_total`.
pub const REQUEST_REFUSALS: [&str; 4] = ["unauthorized", "auth_busy", "rate_limited", "host"];

impl Default for WebMetrics {
    fn default() -> Self {
        WebMetrics::new()
    }
}

impl WebMetrics {
    pub fn new() -> WebMetrics {
        let requests_refused = IntCounterVec::new(
            Opts::new(
                "aws_compute_optimizer_exporter_requests_refused_total",
                "HTTP requests refused before reaching an endpoint, by reason: unauthorized (401), auth_busy (429: too many password checks waiting), rate_limited (429: the web config's rate_limit), host (403: a Host header not in web.allowed_hosts).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in REQUEST_REFUSALS {
            requests_refused.with_label_values(&[reason]);
        }
        WebMetrics {
            connections: Counters::new(),
            requests_refused,
        }
    }

    /// Every series, for the exporter's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.connections.shed.clone()),
            Box::new(self.connections.refused.clone()),
            Box::new(self.requests_refused.clone()),
        ]
    }
}

/// The connection counters, by reason.
#[derive(Clone)]
pub struct Counters {
    pub shed: IntCounterVec,
    pub refused: IntCounterVec,
}

impl Counters {
    pub fn new() -> Counters {
        let vec = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["reason"]).expect("valid metric")
        };
        let c = Counters {
            shed: vec(
                "aws_compute_optimizer_exporter_connections_shed_total",
                "Connections the exporter closed early, by reason: to make room for another (never_served, stalled_reader, idle, new) or past a timeout (header_read_timeout, idle_timeout, write_stall_timeout).",
            ),
            refused: vec(
                "aws_compute_optimizer_exporter_connections_refused_total",
                "Connections closed as soon as they were accepted, by reason (all_busy: every open connection was answering a request).",
            ),
        };
        for reason in Closed::ALL {
            c.count(reason, 0);
        }
        c
    }

    /// The series `reason` is counted in.
    fn series(&self, reason: Closed) -> prometheus::IntCounter {
        let (which, label) = reason.label();
        let vec = if which == "shed" {
            &self.shed
        } else {
            &self.refused
        };
        vec.with_label_values(&[label])
    }

    fn count(&self, reason: Closed, n: u64) {
        self.series(reason).inc_by(n);
    }

    /// Every reason with its count so far.
    pub fn totals(&self) -> Vec<(Closed, u64)> {
        Closed::ALL
            .iter()
            .map(|&r| (r, self.series(r).get()))
            .collect()
    }
}

impl Default for Counters {
    fn default() -> Counters {
        Counters::new()
    }
}

/// File descriptors kept back from connections: the AWS clients, the log,
/// config and TLS files read on reload.
pub const FD_RESERVE: u64 = 64;

/// What the table enforces (from `[web]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_source: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_stall_timeout: Duration,
}

/// Raises the soft open-files limit to the hard one, as Go's runtime does at
/// start, and returns how many connections that leaves room for.
pub fn connection_budget() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                if lim.rlim_cur < lim.rlim_max {
                    let raised = libc::rlimit {
                        rlim_cur: lim.rlim_max,
                        rlim_max: lim.rlim_max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                        lim.rlim_cur = lim.rlim_max;
                    }
                }
                // `rlim_t` is not u64 on every platform.
                #[allow(clippy::unnecessary_cast)]
                return (lim.rlim_cur as u64).saturating_sub(FD_RESERVE).max(1);
            }
        }
    }
    u64::MAX
}

/// Milliseconds since the table was made; 0 means "never" in the atomics.
fn millis(base: Instant) -> u64 {
    (base.elapsed().as_millis() as u64).max(1)
}

/// What a connection has done, updated lock-free by its IO and service.
pub struct Activity {
    base: Instant,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    last_io: AtomicU64,
    /// When the first byte of a request whose header has not been read yet
    /// arrived; 0 when no such request is pending.
    reading_since: AtomicU64,
    /// When a write first returned `Pending` without progress since; 0 if
    /// the last write went through.
    write_blocked_since: AtomicU64,
}

impl Activity {
    fn new(base: Instant) -> Activity {
        Activity {
            base,
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_io: AtomicU64::new(millis(base)),
            reading_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
        }
    }

    /// A request's header has been read: its header timer stops.
    pub fn header_read(&self) {
        self.reading_since.store(0, Ordering::Relaxed);
    }

    /// A request was admitted (past authentication); the returned guard
    /// marks it answered when dropped (with the response body).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn io(&self) {
        self.last_io.store(millis(self.base), Ordering::Relaxed);
    }

    /// Bytes arrived: outside a response they start a request, whose header
    /// timer starts now. (Bytes pipelined during a response are timed from
    /// the next read after it, or by the idle timeout.)
    fn read(&self) {
        self.io();
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.reading_since.compare_exchange(
                0,
                millis(self.base),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn wrote(&self) {
        self.io();
        self.write_blocked_since.store(0, Ordering::Relaxed);
    }

    fn write_pending(&self) {
        let _ = self.write_blocked_since.compare_exchange(
            0,
            millis(self.base),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// True while a response is being produced or sent.
    pub fn answering(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    fn served(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.write_blocked_since.load(Ordering::Relaxed) == 0
    }
}

/// Held by a response body until it has been handed to the connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Entry {
    /// The [`source_key`] of the peer.
    source: IpAddr,
    accepted: u64,
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&e.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&e.source);
            }
        }
        Some(e)
    }

    /// The connection to close to make room, among those `eligible`. From
    /// the source holding the most connections (so a crowd from a few
    /// addresses makes room out of its own share, never a lone scraper's):
    /// the oldest that never completed a request (ids only grow), else the
    /// one whose reader stalled longest ago (blocked for [`STALLED`] or
    /// more: requests pipelined and never read), else the longest idle.
    /// A connection answering a reader that keeps up is never chosen; one
    /// younger than [`GRACE`] that never completed a request only last.
    fn victim(&self, now: u64, eligible: impl Fn(&Entry) -> bool) -> Option<(u64, Closed)> {
        let stalled = STALLED.as_millis() as u64;
        let grace = GRACE.as_millis() as u64;
        self.conns
            .iter()
            .filter_map(|(id, e)| {
                let a = &e.activity;
                let blocked = a.write_blocked_since.load(Ordering::Relaxed);
                let (tier, age, why) = if !a.served() && now.saturating_sub(e.accepted) >= grace {
                    (0, *id, Closed::ShedNeverServed)
                } else if !a.served() {
                    (3, *id, Closed::ShedNew)
                } else if blocked != 0 && now.saturating_sub(blocked) >= stalled {
                    (1, blocked, Closed::ShedStalledReader)
                } else if a.idle() {
                    (2, a.last_io.load(Ordering::Relaxed), Closed::ShedIdle)
                } else {
                    return None;
                };
                let held = self.per_source.get(&e.source).copied().unwrap_or(0);
                // A source's own crowd first; then the least valuable tier.
                eligible(e).then_some((std::cmp::Reverse(held), tier, age, *id, why))
            })
            .min_by_key(|(held, tier, age, id, _)| (*held, *tier, *age, *id))
            .map(|(_, _, _, id, why)| (id, why))
    }

    fn evict(&mut self, id: u64) {
        if let Some(e) = self.remove(id) {
            // `notify_one` stores a permit, so a task not yet waiting still sees it.
            e.close.notify_one();
        }
    }
}

/// Every open connection, with the limits that decide which may stay.
pub struct Table {
    limits: Limits,
    base: Instant,
    inner: Mutex<Inner>,
    counters: Counters,
}

/// Why connections were closed early, for the exporter's own metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub open: usize,
    pub shed: u64,
    pub refused: u64,
}

impl Table {
    /// A table that counts what it closes in `counters`. A per-source cap
    /// above the total means the total: one place for the rule, whether the
    /// config or the open-files limit set the total.
    pub fn counting(mut limits: Limits, counters: Counters) -> Arc<Table> {
        limits.max_per_source = limits.max_per_source.min(limits.max_connections);
        Arc::new(Table {
            limits,
            base: Instant::now(),
            inner: Mutex::new(Inner::default()),
            counters,
        })
    }

    fn closed(&self, why: Closed) {
        self.counters.count(why, 1);
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Open connections, and those shed and refused so far (all reasons).
    pub fn counts(&self) -> Counts {
        let (mut shed, mut refused) = (0, 0);
        for (why, n) in self.counters.totals() {
            match why {
                Closed::RefusedAllBusy => refused += n,
                _ => shed += n,
            }
        }
        Counts {
            open: self.lock().conns.len(),
            shed,
            refused,
        }
    }

    /// Admits a connection from `source`, closing another to make room if a
    /// cap is reached; `None` means refuse it (every other one is busy).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let source = source_key(peer);
        let now = millis(self.base);
        let mut inner = self.lock();
        let from_source = inner.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.max_per_source {
            let Some((id, why)) = inner.victim(now, |e| e.source == source) else {
                self.closed(Closed::RefusedAllBusy);
                return None;
            };
            inner.evict(id);
            self.closed(why);
        }
        if inner.conns.len() >= self.limits.max_connections {
            let Some((id, why)) = inner.victim(now, |_| true) else {
                self.closed(Closed::RefusedAllBusy);
                return None;
            };
            inner.evict(id);
            self.closed(why);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let activity = Arc::new(Activity::new(self.base));
        let close = Arc::new(Notify::new());
        inner.conns.insert(
            id,
            Entry {
                source,
                accepted: millis(self.base),
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        *inner.per_source.entry(source).or_default() += 1;
        Some(Ticket {
            id,
            table: self.clone(),
            activity,
            close,
        })
    }

    /// Closes every connection past one of its timeouts; the server calls
    /// this four times a second.
    pub fn reap(&self) {
        let now = millis(self.base);
        let past = |since: u64, limit: Duration| {
            since != 0 && now.saturating_sub(since) >= limit.as_millis() as u64
        };
        let l = self.limits;
        let mut inner = self.lock();
        let expired: Vec<(u64, Closed)> = inner
            .conns
            .iter()
            .filter_map(|(id, e)| {
                let a = &e.activity;
                let blocked = a.write_blocked_since.load(Ordering::Relaxed);
                let last_io = a.last_io.load(Ordering::Relaxed);
                let reading = a.reading_since.load(Ordering::Relaxed);
                let idle = a.in_flight.load(Ordering::Relaxed) == 0;
                let why = if past(blocked, l.write_stall_timeout) {
                    Closed::WriteStallTimeout
                } else if (!a.served() && past(e.accepted, l.header_read_timeout))
                    || (idle && past(reading, l.header_read_timeout))
                {
                    Closed::HeaderReadTimeout
                } else if a.served() && a.idle() && past(last_io, l.idle_timeout) {
                    Closed::IdleTimeout
                } else {
                    return None;
                };
                Some((*id, why))
            })
            .collect();
        for (id, why) in expired {
            inner.evict(id);
            self.closed(why);
        }
    }
}

/// A connection's place in the table, released when dropped.
pub struct Ticket {
    id: u64,
    table: Arc<Table>,
    pub activity: Arc<Activity>,
    close: Arc<Notify>,
}

impl Ticket {
    /// Resolves when the table wants this connection closed.
    pub async fn closed(&self) {
        self.close.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.table.lock().remove(self.id);
    }
}

/// Caps a socket's send buffer (see [`SEND_BUFFER_BYTES`]).
pub fn cap_send_buffer(stream: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_send_buffer_size(SEND_BUFFER_BYTES);
}

/// A transport that reports its reads and writes to an [`Activity`], below
/// TLS so a handshake counts too.
pub struct Tracked<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Tracked<IO> {
    pub fn new(io: IO, activity: Arc<Activity>) -> Tracked<IO> {
        Tracked { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> Tracked<IO> {
    fn track<T>(&self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &r {
            Poll::Ready(Ok(_)) => self.activity.wrote(),
            Poll::Pending => self.activity.write_pending(),
            Poll::Ready(Err(_)) => {}
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.track(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.track(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.track(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table counting into counters of its own.
    fn table(limits: Limits) -> Arc<Table> {
        Table::counting(limits, Counters::new())
    }

    fn limits(max: usize, per_source: usize) -> Limits {
        Limits {
            max_connections: max,
            max_per_source: per_source,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(10),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_full_table_sheds_the_oldest_connection_that_never_sent_a_request() {
        let t = table(limits(3, 10));
        let a = t.admit(ip(2)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        let _served = b.activity.request();
        let c = t.admit(ip(3)).unwrap();
        // Full: `a` is the oldest that never completed a request.
        let d = t.admit(ip(1)).unwrap();
        assert_eq!(t.counts().open, 3);
        assert_eq!(t.counts().shed, 1);
        assert!(polled_ready(a.closed()));
        for other in [&b, &c, &d] {
            assert!(!polled_ready(other.closed()));
        }
    }

    #[test]
    fn busy_connections_are_never_shed_and_a_newcomer_is_refused_instead() {
        let t = table(limits(2, 10));
        let a = t.admit(ip(2)).unwrap();
        let b = t.admit(ip(3)).unwrap();
        let _ga = a.activity.request();
        let _gb = b.activity.request();
        assert!(t.admit(ip(1)).is_none());
        assert_eq!(t.counts().refused, 1);
        // Once `b` has answered and gone idle, it makes room.
        drop(_gb);
        assert!(t.admit(ip(1)).is_some());
        assert!(polled_ready(b.closed()));
    }

    #[test]
    fn a_full_table_sheds_from_the_source_holding_the_most() {
        let t = table(limits(4, 10));
        let lone = t.admit(ip(1)).unwrap();
        let crowd: Vec<Ticket> = (0..3).map(|_| t.admit(ip(2)).unwrap()).collect();
        // `lone` is the oldest, but 127.0.0.2 holds three.
        let _newcomer = t.admit(ip(3)).unwrap();
        assert!(!polled_ready(lone.closed()));
        assert!(polled_ready(crowd[0].closed()));
    }

    #[test]
    fn a_source_at_its_cap_sheds_its_own_connections_only() {
        let t = table(limits(100, 2));
        let other = t.admit(ip(9)).unwrap();
        let a = t.admit(ip(2)).unwrap();
        let _b = t.admit(ip(2)).unwrap();
        let _c = t.admit(ip(2)).unwrap();
        assert!(polled_ready(a.closed()));
        assert!(!polled_ready(other.closed()));
        assert_eq!(t.counts().open, 3);
    }

    #[test]
    fn a_reader_stalled_for_a_second_is_shed_before_an_idle_keep_alive() {
        let t = table(limits(3, 10));
        let keep_alive = t.admit(ip(2)).unwrap();
        drop(keep_alive.activity.request());
        let answering = t.admit(ip(3)).unwrap();
        let _a = answering.activity.request();
        answering.activity.write_pending();
        let stalled = t.admit(ip(4)).unwrap();
        let _s = stalled.activity.request();
        stalled.activity.write_pending();
        // Blocked for a second: fair game; `answering` blocked just now.
        stalled
            .activity
            .write_blocked_since
            .store(1, Ordering::Relaxed);
        std::thread::sleep(STALLED + Duration::from_millis(50));
        answering
            .activity
            .write_blocked_since
            .store(millis(answering.activity.base), Ordering::Relaxed);
        let _new = t.admit(ip(5)).unwrap();
        assert!(polled_ready(stalled.closed()));
        assert!(!polled_ready(keep_alive.closed()));
        assert!(!polled_ready(answering.closed()));
    }

    #[test]
    fn a_new_connection_is_shed_only_when_nothing_else_can_be() {
        // One served, idle connection per source: the scraper's connection,
        // still in its handshake, has the same count as each attacker's.
        let t = table(limits(3, 10));
        let a = t.admit(ip(2)).unwrap();
        drop(a.activity.request());
        let b = t.admit(ip(3)).unwrap();
        drop(b.activity.request());
        let scraper = t.admit(ip(1)).unwrap();
        let _attacker = t.admit(ip(4)).unwrap();
        assert!(!polled_ready(scraper.closed()), "the newcomer was shed");
        assert!(polled_ready(a.closed()) || polled_ready(b.closed()));
        assert_eq!(t.counters.totals()[2], (Closed::ShedIdle, 1));
    }

    #[test]
    fn a_request_waiting_for_its_password_check_does_not_pin_its_connection() {
        // Requests are "in flight" only past authentication: a table full
        // of connections whose requests wait for bcrypt still makes room.
        let t = table(limits(2, 10));
        let waiting: Vec<Ticket> = (2..4).map(|i| t.admit(ip(i)).unwrap()).collect();
        for w in &waiting {
            w.activity.header_read();
        }
        let scraper = t.admit(ip(1));
        assert!(
            scraper.is_some(),
            "refused while others only waited for auth"
        );
        assert_eq!(t.counts().refused, 0);
        assert_eq!(t.counts().shed, 1);
    }

    #[test]
    fn header_timer_starts_at_a_requests_first_byte_not_when_idle() {
        let mut l = limits(10, 10);
        l.header_read_timeout = Duration::from_millis(1);
        l.idle_timeout = Duration::from_secs(3600);
        let t = table(l);
        let keep_alive = t.admit(ip(2)).unwrap();
        keep_alive.activity.header_read();
        drop(keep_alive.activity.request());
        std::thread::sleep(Duration::from_millis(5));
        t.reap();
        assert!(
            !polled_ready(keep_alive.closed()),
            "idle is not a slow header"
        );
        // A byte of the next request arrives; its header never ends.
        keep_alive.activity.read();
        std::thread::sleep(Duration::from_millis(5));
        t.reap();
        assert!(polled_ready(keep_alive.closed()));
        assert!(
            t.counters
                .totals()
                .contains(&(Closed::HeaderReadTimeout, 1))
        );
    }

    #[test]
    fn a_per_source_cap_above_the_total_is_the_total() {
        let t = table(limits(2, 64));
        assert_eq!(t.limits().max_per_source, 2);
    }

    #[test]
    fn a_dropped_ticket_frees_its_place() {
        let t = table(limits(1, 1));
        let a = t.admit(ip(2)).unwrap();
        let _g = a.activity.request();
        assert!(t.admit(ip(2)).is_none());
        drop(_g);
        drop(a);
        assert_eq!(t.counts().open, 0);
        assert!(t.admit(ip(2)).is_some());
    }

    #[test]
    fn the_reaper_closes_stalled_writes_and_connections_that_never_send_a_request() {
        let mut l = limits(10, 10);
        l.header_read_timeout = Duration::ZERO;
        l.write_stall_timeout = Duration::ZERO;
        l.idle_timeout = Duration::from_secs(3600);
        let t = table(l);
        let fresh = t.admit(ip(2)).unwrap();
        let stalled = t.admit(ip(3)).unwrap();
        let _g = stalled.activity.request();
        stalled.activity.write_pending();
        let idle = t.admit(ip(4)).unwrap();
        drop(idle.activity.request());
        std::thread::sleep(Duration::from_millis(5));
        t.reap();
        assert!(polled_ready(fresh.closed()));
        assert!(polled_ready(stalled.closed()));
        assert!(
            !polled_ready(idle.closed()),
            "idle for less than idle_timeout"
        );
        assert_eq!(t.counts().open, 1);

        l.idle_timeout = Duration::ZERO;
        let t = table(l);
        let idle = t.admit(ip(4)).unwrap();
        drop(idle.activity.request());
        let busy = t.admit(ip(5)).unwrap();
        let _answering = busy.activity.request();
        std::thread::sleep(Duration::from_millis(5));
        t.reap();
        assert!(polled_ready(idle.closed()));
        assert!(
            !polled_ready(busy.closed()),
            "still answering, writes not stalled"
        );
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(source_key(mapped), ip(2));
        assert_eq!(source_key(ip(3)), ip(3));
    }

    /// Polls a future once: true if it is ready.
    fn polled_ready(f: impl std::future::Future<Output = ()>) -> bool {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        f.as_mut().poll(&mut Context::from_waker(waker)).is_ready()
    }
}
