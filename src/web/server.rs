//! The HTTP server: `/metrics`, a landing page, health, readiness, status
//! pages and `/-/reload`.
//!
//! `run` takes its listener and shutdown handle (as mini-redis does) so tests
//! bind `127.0.0.1:0`. Which connections stay open is [`crate::web::conns`]'s
//! decision; header reads are timed out and request bodies are never read, so
//! a slow or hostile client cannot starve a scrape.
//!
//! Every request is checked against the security settings in force when it
//! arrives, not those its connection was accepted under: a user removed by a
//! reload gets 401 on a connection she already holds, and a connection of the
//! wrong kind (plain HTTP once TLS is on, or the reverse) is closed at once.
//! Password checks go through one [`AuthGate`] for the life of the server, so
//! reloads neither empty its cache nor add a second bcrypt worker.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ListenAddress;
use crate::expose::exposition::{self, Inflating};
use crate::web::authgate::AuthGate;
use crate::web::conns::{
    self, Activity, InFlight, Limits, REQUEST_REFUSALS, Table, Tracked, WebMetrics,
};

use crate::shutdown::Shutdown;
use crate::web::websec::{Access, WebSecurity};

/// How long in-flight responses may take to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);

/// TLS, basic auth, headers and rate limit in force: replaced as a whole on
/// reload (`send_replace`), and watched by every connection.
pub type SharedSecurity = Arc<watch::Sender<Arc<WebSecurity>>>;

/// A [`SharedSecurity`] holding `security`.
pub fn shared_security(security: WebSecurity) -> SharedSecurity {
    Arc::new(watch::Sender::new(Arc::new(security)))
}

/// What the web layer serves. Every request that passed its checks (the
/// transport, the rate limit, the credentials) goes to `route`, with a way
/// to count a refusal of the routes' own (a `Host` not allowed); the web
/// layer knows nothing of what the routes do.
pub trait Routes: Send + Sync + 'static {
    fn route<'a>(
        &'a self,
        req: Request<Incoming>,
        refused: &'a (dyn Fn(&str) + Sync),
    ) -> Pin<Box<dyn Future<Output = Response<Chunks>> + Send + 'a>>;
}

#[derive(Clone)]
pub struct ServerOptions {
    /// Caps and timeouts, the header read timeout among them.
    pub limits: Limits,
    pub security: SharedSecurity,
    /// The web layer's counters, registered by whoever wires the server.
    pub metrics: WebMetrics,
}

impl ServerOptions {
    pub fn from_config(c: &crate::config::WebConfig) -> ServerOptions {
        ServerOptions {
            limits: Limits {
                max_connections: c.max_connections,
                max_per_source: c.max_connections_per_source,
                header_read_timeout: c.header_read_timeout,
                idle_timeout: c.idle_timeout,
                write_stall_timeout: c.write_stall_timeout,
            },
            security: shared_security(WebSecurity::none()),
            metrics: WebMetrics::new(),
        }
    }
}

/// What every request on one connection shares.
struct Conn {
    routes: Arc<dyn Routes>,
    opts: Arc<ServerOptions>,
    gate: Arc<AuthGate>,
    peer: IpAddr,
    /// Whether the connection speaks TLS.
    tls: bool,
}

/// Connections the kernel completes before `accept` takes them (Linux caps it
/// at `net.core.somaxconn`, 4096 by default). Deep enough that a burst of
/// hostile connects does not drop a scraper's SYN, which costs it a
/// one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket with [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    bind_socket(addr, false)
}

fn bind_socket(addr: std::net::SocketAddr, dual_stack: bool) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    TcpListener::from_std(socket.into())
}

/// Binds `web.listen_address` as Go's `net.Listen` would: `:port` on every
/// IPv4 and IPv6 address (IPv4 only where the host has no IPv6), a host
/// name on the first address it resolves to, IPv4 first.
pub fn bind_listen(addr: &ListenAddress) -> std::io::Result<TcpListener> {
    match addr {
        ListenAddress::Addr(a) => bind(*a),
        ListenAddress::Any(port) => {
            let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, *port));
            bind_socket(v6, true)
                .or_else(|_| bind(std::net::SocketAddr::from(([0, 0, 0, 0], *port))))
        }
        ListenAddress::Host(host, port) => {
            use std::net::ToSocketAddrs as _;
            let mut addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs()?.collect();
            addrs.sort_by_key(|a| a.is_ipv6());
            let first = addrs.first().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} resolves to no address"),
                )
            })?;
            bind(*first)
        }
    }
}

/// The listening socket systemd passes with socket activation
/// (`LISTEN_FDS`, `LISTEN_PID`), as exporter-toolkit's
/// `--web.systemd-socket`: exactly one TCP stream socket is served.
/// Call it before any other thread starts, as it clears those variables.
pub fn systemd_listener() -> Result<std::net::TcpListener, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let flag = "--web.systemd-socket";
    match fds.len() {
        0 => {
            return Err(format!(
                "{flag}: systemd passed no socket (LISTEN_FDS is unset or meant for another process); \
                 start the exporter through its .socket unit, or drop the flag"
            ));
        }
        1 => {}
        n => {
            return Err(format!(
                "{flag}: systemd passed {n} sockets and one is served; give the .socket unit a single ListenStream="
            ));
        }
    }
    let listener = fds
        .take_tcp_listener(0)
        .map_err(|e| format!("{flag}: the socket passed is not a listening TCP socket: {e}"))?
        .ok_or_else(|| format!("{flag}: the socket passed was already taken"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{flag}: {e}"))?;
    Ok(listener)
}

/// Serves until shutdown, then stops accepting and lets in-flight responses
/// finish (up to [`DRAIN_TIMEOUT`]).
///
/// Every connection is accepted at once and handed to the [`Table`], which
/// keeps it, sheds another to make room, or refuses it; nothing waits in a
/// queue behind a hostile client.
pub async fn run(
    listener: TcpListener,
    routes: Arc<dyn Routes>,
    opts: ServerOptions,
    shutdown: Shutdown,
) {
    let graceful = GracefulShutdown::new();
    let table = Table::counting(opts.limits, opts.metrics.connections.clone());
    let gate = AuthGate::new();
    let opts = Arc::new(opts);
    let reaper = tokio::spawn(reap(table.clone(), opts.metrics.clone(), shutdown.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = shutdown.wait() => break,
                    }
                }
            },
            _ = shutdown.wait() => break,
        };
        let Some(ticket) = table.admit(peer.ip()) else {
            // Every other connection is busy answering: this one waits its turn
            // by reconnecting, not by holding a descriptor.
            continue;
        };
        let _ = stream.set_nodelay(true);
        conns::cap_send_buffer(&stream);
        let io = Tracked::new(stream, ticket.activity.clone());
        let acceptor = opts.security.borrow().tls.clone();
        let conn = Arc::new(Conn {
            routes: routes.clone(),
            opts: opts.clone(),
            gate: gate.clone(),
            peer: peer.ip(),
            tls: acceptor.is_some(),
        });
        let mut changes = opts.security.subscribe();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let activity = ticket.activity.clone();
            let idle_check = ticket.activity.clone();
            let timeout = conn.opts.limits.header_read_timeout;
            let is_tls = conn.tls;
            let serve = async {
                match acceptor {
                    None => {
                        let _ = watcher
                            .watch(connection(TokioIo::new(io), conn, activity))
                            .await;
                    }
                    Some(acceptor) => {
                        // The handshake counts against the header read timeout too.
                        if let Ok(Ok(tls)) =
                            tokio::time::timeout(timeout, acceptor.accept(io)).await
                        {
                            let _ = watcher
                                .watch(connection(TokioIo::new(tls), conn, activity))
                                .await;
                        }
                    }
                }
            };
            // A reload that turns TLS on or off ends connections of the old
            // kind: idle ones now, one answering after its response (which
            // says `Connection: close`, see `handle`).
            let outdated = async {
                loop {
                    if changes.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                    if changes.borrow_and_update().tls.is_some() != is_tls
                        && !idle_check.answering()
                    {
                        return;
                    }
                }
            };
            // Dropping the connection closes the socket.
            tokio::select! {
                _ = serve => {}
                _ = ticket.closed() => {}
                _ = outdated => {}
            }
        });
    }
    drop(listener);
    reaper.abort();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after the drain timeout; closing them");
        }
    }
}

/// How often connections shed or refused are logged, at most.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// Applies the table's timeouts four times a second until shutdown, and
/// logs what was shed or refused at most once a minute.
async fn reap(table: Arc<Table>, metrics: WebMetrics, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged = Refusals::now(&metrics);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                table.reap();
                if logged.at.elapsed() >= REFUSALS_LOGGED_EVERY {
                    let now = Refusals::now(&metrics);
                    now.log_since(&logged);
                    logged = now;
                }
            }
            _ = shutdown.wait() => return,
        }
    }
}

/// The connection and request counters at one moment, for the log.
struct Refusals {
    at: Instant,
    counts: Vec<(String, u64)>,
}

impl Refusals {
    fn now(metrics: &WebMetrics) -> Refusals {
        let requests = &metrics.requests_refused;
        let mut counts: Vec<(String, u64)> = metrics
            .connections
            .totals()
            .into_iter()
            .map(|(why, n)| {
                let (which, reason) = why.label();
                (format!("connections_{which}_{reason}"), n)
            })
            .collect();
        for reason in REQUEST_REFUSALS {
            let n = requests.with_label_values(&[reason]).get();
            counts.push((format!("requests_refused_{reason}"), n));
        }
        Refusals {
            at: Instant::now(),
            counts,
        }
    }

    /// One warning with every count that grew since `before`, if any did.
    fn log_since(&self, before: &Refusals) {
        let grown: Vec<String> = self
            .counts
            .iter()
            .zip(&before.counts)
            .filter(|((_, n), (_, m))| n > m)
            .map(|((k, n), (_, m))| format!("{k}={}", n - m))
            .collect();
        if !grown.is_empty() {
            tracing::warn!(
                since_seconds = before.at.elapsed().as_secs(),
                counts = %grown.join(" "),
                "connections shed or refused, or requests refused (see the exporter's *_shed_total and *_refused_total metrics)"
            );
        }
    }
}

/// One HTTP/1.1 connection over any transport (plain TCP or TLS).
fn connection<IO>(
    io: IO,
    conn: Arc<Conn>,
    activity: Arc<Activity>,
) -> impl hyper_util::server::graceful::GracefulConnection
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        activity.header_read();
        let conn = conn.clone();
        let activity = activity.clone();
        async move { Ok::<_, Infallible>(handle(req, &conn, &activity).await) }
    });
    // hyper's header timer would also run while a keep-alive connection is
    // idle, cutting it at the header timeout instead of `web.idle_timeout`;
    // the table times headers from a request's first byte instead.
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service)
}

/// A response body made of shared chunks: the cached exposition is sent
/// without copying it.
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    /// After the chunks: plain text inflated as it is written.
    inflating: Option<Inflating>,
    in_flight: Option<InFlight>,
}

impl Chunks {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunks {
        Chunks {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            inflating: None,
            in_flight: None,
        }
    }

    /// A scrape's body, as the exposition made it.
    pub fn exposition(body: exposition::Body) -> Chunks {
        match body {
            exposition::Body::Whole(chunks) => Chunks::new(chunks),
            exposition::Body::Inflating(inflating) => Chunks {
                chunks: VecDeque::new(),
                inflating: Some(inflating),
                in_flight: None,
            },
        }
    }

    /// Keeps the connection marked busy until hyper has taken the body.
    fn held_by(mut self, in_flight: InFlight) -> Chunks {
        self.in_flight = Some(in_flight);
        self
    }

    pub fn text(s: impl Into<String>) -> Chunks {
        Chunks::new([Bytes::from(s.into())])
    }

    fn remaining(&self) -> u64 {
        self.chunks.iter().map(|b| b.len() as u64).sum::<u64>()
            + self.inflating.as_ref().map_or(0, Inflating::remaining)
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match self.chunks.pop_front() {
            Some(chunk) => Some(chunk),
            None => self.inflating.as_mut().and_then(Iterator::next),
        };
        if next.is_none() || self.is_end_stream() {
            self.in_flight = None;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.inflating.as_ref().is_none_or(Inflating::is_done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

pub fn respond(status: StatusCode, content_type: &'static str, body: Chunks) -> Response<Chunks> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const HTML: &str = "text/html; charset=utf-8";
pub const JSON: &str = "application/json";

/// Answers one request under the security settings in force now, with the
/// configured extra headers.
async fn handle(req: Request<Incoming>, conn: &Conn, activity: &Arc<Activity>) -> Response<Chunks> {
    let security = conn.opts.security.borrow().clone();
    let mut r = admitted(req, conn, &security, activity).await;
    for (name, value) in &security.headers {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    if conn.opts.security.borrow().tls.is_some() != conn.tls {
        // TLS was switched while this request was answered (the reload
        // itself, say): answer it, then close.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Transport, rate limit and credentials first; the request counts as in
/// flight (not sheddable) only once it has passed them.
async fn admitted(
    req: Request<Incoming>,
    conn: &Conn,
    security: &WebSecurity,
    activity: &Arc<Activity>,
) -> Response<Chunks> {
    let refused = |reason: &str| {
        conn.opts
            .metrics
            .requests_refused
            .with_label_values(&[reason])
            .inc();
    };
    if security.tls.is_some() != conn.tls {
        // A reload switched TLS since this connection was accepted; it is
        // being closed, and this request must not be answered on it.
        let mut r = respond(
            StatusCode::BAD_REQUEST,
            TEXT,
            Chunks::text("TLS was switched on or off: reconnect\n"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if !security.within_rate_limit() {
        refused("rate_limited");
        return respond(
            StatusCode::TOO_MANY_REQUESTS,
            TEXT,
            Chunks::text("Too Many Requests\n"),
        );
    }
    match security
        .authorize(
            &conn.gate,
            conn.peer,
            req.headers().get(header::AUTHORIZATION),
        )
        .await
    {
        Access::Allowed => {}
        Access::Denied => {
            refused("unauthorized");
            let mut r = respond(
                StatusCode::UNAUTHORIZED,
                TEXT,
                Chunks::text("Unauthorized\n"),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"compute-optimizer-exporter\""),
            );
            return r;
        }
        Access::Busy => {
            // Too many password checks waiting: a cached login never gets
            // here, and a new one may try again in a second.
            refused("auth_busy");
            let mut r = respond(
                StatusCode::TOO_MANY_REQUESTS,
                TEXT,
                Chunks::text("Too many password checks waiting; retry shortly\n"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    }
    let in_flight = activity.request();
    let r = conn.routes.route(req, &refused).await;
    r.map(|body| body.held_by(in_flight))
}

/// True when a request's `Host` is one this exporter is known by: an IP
/// address, `localhost`, or a name in `allowed` (case-insensitive, any
/// port). No `Host` at all (HTTP/1.0 tools) passes: browsers always send it.
pub fn host_allowed(host: Option<&HeaderValue>, allowed: &[String]) -> bool {
    let Some(host) = host else { return true };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]:port`: only an IPv6 literal is written in brackets.
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .any(|a| a.strip_suffix('.').unwrap_or(a).eq_ignore_ascii_case(name))
}

/// True when `Accept-Encoding` allows gzip. As RFC 9110 12.5.3 has it, the
/// most specific entry decides: an entry naming gzip (`x-gzip` is gzip,
/// 8.4.1.3) wins over `*`, which only speaks for codings not named; a
/// weight of 0 refuses. `*` alone accepts gzip, as client_golang serves.
pub fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (mut named, mut any) = (None::<bool>, None::<bool>);
    for item in v.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let allowed = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
            })
            .all(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0));
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            // Named twice: accepted if either entry accepts it.
            named = Some(named.unwrap_or(false) || allowed);
        } else if coding == "*" {
            any = Some(any.unwrap_or(false) || allowed);
        }
    }
    named.or(any).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(accepts_gzip(h("gzip").as_ref()));
        assert!(accepts_gzip(h("deflate, GZIP;q=0.5").as_ref()));
        assert!(!accepts_gzip(h("gzip;q=0").as_ref()));
        assert!(!accepts_gzip(h("identity").as_ref()));
        assert!(!accepts_gzip(None));
        assert!(accepts_gzip(h("x-gzip").as_ref()));
        assert!(accepts_gzip(h("*").as_ref()));
        assert!(!accepts_gzip(h("br, *;q=0").as_ref()));
        // An explicit refusal wins over `*`, in either order.
        assert!(!accepts_gzip(h("gzip;q=0, *").as_ref()));
        assert!(!accepts_gzip(h("*, gzip;q=0").as_ref()));
        assert!(!accepts_gzip(h("*;q=1, GZIP; Q=0.000").as_ref()));
        // And an explicit acceptance wins over `*;q=0`.
        assert!(accepts_gzip(h("*;q=0, gzip;q=0.1").as_ref()));
    }

    #[test]
    fn hosts_answered_are_addresses_localhost_and_the_allowed_names() {
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        let allowed = ["exporter.monitoring.svc".to_owned()];
        for ok in [
            "127.0.0.1:9746",
            "10.1.2.3",
            "[::1]:9746",
            "[2001:db8::1]",
            "localhost:9746",
            "LOCALHOST",
            "exporter.monitoring.svc:9746",
            "Exporter.Monitoring.Svc.",
        ] {
            assert!(host_allowed(h(ok).as_ref(), &allowed), "{ok}");
        }
        for bad in [
            "evil.example:9746",
            "evil.example",
            "127.0.0.1.evil.example",
            "[evil.example]:80",
            "localhost.evil.example",
            "monitoring.svc",
        ] {
            assert!(!host_allowed(h(bad).as_ref(), &allowed), "{bad}");
        }
        assert!(host_allowed(None, &[]));
    }
}
