//! A hostile crowd on loopback: connections from 127.0.0.2–127.0.0.9 that
//! hold the exporter's port in every way a client can without sending a
//! complete request, or by never reading what it asked for.
//!
//! The crowd runs on its own thread and runtime, so it competes with the
//! exporter for CPU as a separate process would, not for the test's workers.
//! Every connection reconnects when the server closes it, at most
//! [`MAX_CONNECTS`] times and [`RECONNECT_DELAY`] apart; everything stops at
//! [`Attack::stop`] or at the time limit given to [`Attack::start`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

pub const MAX_CONNECTS: u64 = 200;
pub const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// The source addresses the crowd connects from.
pub fn sources() -> Vec<IpAddr> {
    (2..=9)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// Half a request, then one header byte a second.
    Slowloris,
    /// Sends requests for `/metrics` and never reads the answers.
    Pipelined,
    /// The first bytes of a TLS record that never completes.
    StalledTls,
    /// Requests with a wrong basic-auth password, one after another on a
    /// keep-alive connection, each answer read (plain HTTP).
    WrongPassword,
}

pub const ALL: [Kind; 4] = [
    Kind::Idle,
    Kind::Slowloris,
    Kind::Pipelined,
    Kind::StalledTls,
];

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    failed_connects: AtomicU64,
    closed_by_server: AtomicU64,
    held: AtomicU64,
    refused_guesses: AtomicU64,
}

/// What the crowd did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub connects: u64,
    pub failed_connects: u64,
    pub closed_by_server: u64,
    /// Wrong passwords answered with 401.
    pub refused_guesses: u64,
}

pub struct Attack {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Attack {
    /// `count` connections to `target`, the kinds taken in turn and the
    /// sources round-robin; runs until [`Attack::stop`] or `limit`.
    pub fn start(target: SocketAddr, count: usize, kinds: &[Kind], limit: Duration) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let kinds = kinds.to_vec();
        let (s, c) = (stop.clone(), counters.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("attack runtime");
            rt.block_on(async move {
                let deadline = Instant::now() + limit;
                let sources = sources();
                let mut tasks = Vec::with_capacity(count);
                for i in 0..count {
                    let kind = kinds[i % kinds.len()];
                    let source = sources[i % sources.len()];
                    let (s, c) = (s.clone(), c.clone());
                    tasks.push(tokio::spawn(hold(target, source, kind, s, c, deadline)));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Attack {
            stop,
            counters,
            thread: Some(thread),
        }
    }

    /// Connections open right now, as the crowd sees them.
    pub fn held(&self) -> u64 {
        self.counters.held.load(Ordering::Relaxed)
    }

    /// Connection attempts so far, successful or not.
    pub fn attempts(&self) -> u64 {
        self.counters.connects.load(Ordering::Relaxed)
            + self.counters.failed_connects.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Report {
            connects: self.counters.connects.load(Ordering::Relaxed),
            failed_connects: self.counters.failed_connects.load(Ordering::Relaxed),
            closed_by_server: self.counters.closed_by_server.load(Ordering::Relaxed),
            refused_guesses: self.counters.refused_guesses.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One hostile connection slot: connect, misbehave until the server closes
/// it, wait, reconnect.
async fn hold(
    target: SocketAddr,
    source: IpAddr,
    kind: Kind,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    deadline: Instant,
) {
    let done = || stop.load(Ordering::Relaxed) || Instant::now() >= deadline;
    for _ in 0..MAX_CONNECTS {
        if done() {
            return;
        }
        match connect(source, target).await {
            Some(mut stream) => {
                counters.connects.fetch_add(1, Ordering::Relaxed);
                counters.held.fetch_add(1, Ordering::Relaxed);
                let closed = misbehave(&mut stream, kind, &done, &counters).await;
                counters.held.fetch_sub(1, Ordering::Relaxed);
                if closed {
                    counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                counters.failed_connects.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn connect(source: IpAddr, target: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(target))
        .await
        .ok()?
        .ok()
}

/// Plays `kind` on the connection until the server closes it (true) or the
/// attack ends (false). Checks every 100 ms; never reads a response except
/// to notice the end of the stream.
async fn misbehave(
    stream: &mut TcpStream,
    kind: Kind,
    done: &impl Fn() -> bool,
    counters: &Counters,
) -> bool {
    let opening: &[u8] = match kind {
        Kind::Idle => b"",
        Kind::Slowloris => b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
        Kind::Pipelined => b"",
        Kind::StalledTls => &[0x16, 0x03, 0x01, 0x02, 0x00],
        Kind::WrongPassword => return guess_passwords(stream, done, counters).await,
    };
    if stream.write_all(opening).await.is_err() {
        return true;
    }
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut ticks = 0u64;
    while !done() {
        match kind {
            // Up to 64 more requests a tick, as many as the socket takes.
            Kind::Pipelined => {
                for _ in 0..64 {
                    match stream.try_write(request) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => return true,
                    }
                }
            }
            // One header byte a second.
            Kind::Slowloris
                if ticks.is_multiple_of(10)
                    && stream
                        .try_write(b"X")
                        .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock) =>
            {
                return true;
            }
            _ => {}
        }
        if kind != Kind::Pipelined && closed(stream) {
            return true;
        }
        if kind == Kind::Pipelined && reset(stream) {
            return true;
        }
        ticks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Sends wrong passwords until the server closes the connection (true) or
/// the attack ends (false); reads each 401 before the next guess.
async fn guess_passwords(
    stream: &mut TcpStream,
    done: &impl Fn() -> bool,
    counters: &Counters,
) -> bool {
    use tokio::io::AsyncReadExt;
    // "prometheus:guess" in base64.
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cHJvbWV0aGV1czpndWVzcw==\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    while !done() {
        if stream.write_all(request).await.is_err() {
            return true;
        }
        // Up to the end of the 401's small body; the answer may take a
        // while, as bcrypt checks queue.
        let mut seen = Vec::new();
        while !seen.ends_with(b"Unauthorized\n") {
            match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                Err(_) if done() => return false,
                Err(_) => {}
            }
        }
        if seen.starts_with(b"HTTP/1.1 401") {
            counters.refused_guesses.fetch_add(1, Ordering::Relaxed);
        }
    }
    false
}

/// True once the server has closed the stream (reads and drops any answer,
/// such as a 400 or 408, on the way).
fn closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// True once the server has reset the stream; reads nothing.
fn reset(stream: &TcpStream) -> bool {
    matches!(stream.take_error(), Ok(Some(_)))
}

/// Bytes queued in the kernel for each of the server's open connections on
/// `port` (the `tx_queue` column of `/proc/net/tcp`).
pub fn server_send_queues(port: u16) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            let established = *cols.get(3)? == "01";
            let tx = u64::from_str_radix(cols.get(4)?.split(':').next()?, 16).ok()?;
            (local_port == port && established).then_some(tx)
        })
        .collect()
}
