//! The HTTP server: `/metrics`, a landing page, health, readiness, status
//! pages and `/-/reload`.
//!
//! `run` takes its listener and shutdown handle (as mini-redis does) so tests
//! bind `127.0.0.1:0`. Which connections stay open is [`crate::conns`]'s
//! decision; header reads are timed out and request bodies are never read, so
//! a slow or hostile client cannot starve a scrape.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::conns::{self, InFlight, Limits, Table, Ticket, Tracked};

use crate::metrics::CONTENT_TYPE;
use crate::pages;
use crate::shutdown::Shutdown;
use crate::state::State;
use crate::websec::WebSecurity;

/// How long in-flight responses may take to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);

/// Asks the owner of the configuration to reload it; answers with the outcome.
pub type ReloadHandle = mpsc::Sender<oneshot::Sender<Result<(), String>>>;

/// TLS and basic auth in force; swapped as a whole on reload.
pub type SharedSecurity = Arc<RwLock<Arc<WebSecurity>>>;

#[derive(Clone)]
pub struct ServerOptions {
    pub telemetry_path: String,
    /// Caps and timeouts, the header read timeout among them.
    pub limits: Limits,
    pub reload: Option<ReloadHandle>,
    pub security: SharedSecurity,
}

fn current(security: &SharedSecurity) -> Arc<WebSecurity> {
    security.read().unwrap_or_else(|e| e.into_inner()).clone()
}

impl ServerOptions {
    pub fn from_config(c: &crate::config::WebConfig) -> ServerOptions {
        ServerOptions {
            telemetry_path: c.telemetry_path.clone(),
            limits: Limits {
                max_connections: c.max_connections,
                max_per_source: c.max_connections_per_source,
                header_read_timeout: c.header_read_timeout,
                idle_timeout: c.idle_timeout,
                write_stall_timeout: c.write_stall_timeout,
            },
            reload: None,
            security: Arc::new(RwLock::new(Arc::new(WebSecurity::none()))),
        }
    }
}

/// Connections the kernel completes before `accept` takes them (Linux caps it
/// at `net.core.somaxconn`, 4096 by default). Deep enough that a burst of
/// hostile connects does not drop a scraper's SYN, which costs it a
/// one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket with [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until shutdown, then stops accepting and lets in-flight responses
/// finish (up to [`DRAIN_TIMEOUT`]).
///
/// Every connection is accepted at once and handed to the [`Table`], which
/// keeps it, sheds another to make room, or refuses it; nothing waits in a
/// queue behind a hostile client.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    opts: ServerOptions,
    shutdown: Shutdown,
) {
    let graceful = GracefulShutdown::new();
    let table = Table::new(opts.limits);
    let opts = Arc::new(opts);
    let reaper = tokio::spawn(reap(table.clone(), shutdown.clone()));
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
        let security = current(&opts.security);
        let state = state.clone();
        let opts = opts.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let serve = async {
                match security.tls.clone() {
                    None => {
                        let conn = connection(TokioIo::new(io), state, opts, security, &ticket);
                        let _ = watcher.watch(conn).await;
                    }
                    Some(acceptor) => {
                        // The handshake counts against the header read timeout too.
                        let timeout = opts.limits.header_read_timeout;
                        if let Ok(Ok(tls)) =
                            tokio::time::timeout(timeout, acceptor.accept(io)).await
                        {
                            let conn =
                                connection(TokioIo::new(tls), state, opts, security, &ticket);
                            let _ = watcher.watch(conn).await;
                        }
                    }
                }
            };
            // Dropping the connection closes the socket.
            tokio::select! {
                _ = serve => {}
                _ = ticket.closed() => {}
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

/// Applies the table's timeouts four times a second until shutdown.
async fn reap(table: Arc<Table>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => table.reap(),
            _ = shutdown.wait() => return,
        }
    }
}

/// One HTTP/1.1 connection over any transport (plain TCP or TLS).
fn connection<IO>(
    io: IO,
    state: Arc<State>,
    opts: Arc<ServerOptions>,
    security: Arc<WebSecurity>,
    ticket: &Ticket,
) -> impl hyper_util::server::graceful::GracefulConnection
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let timeout = opts.limits.header_read_timeout;
    let activity = ticket.activity.clone();
    let service = service_fn(move |req| {
        let state = state.clone();
        let opts = opts.clone();
        let security = security.clone();
        let in_flight = activity.request();
        async move {
            let response = handle(req, &state, &opts, &security).await;
            Ok::<_, Infallible>(response.map(|body| body.held_by(in_flight)))
        }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service)
}

/// A response body made of shared chunks: the cached exposition is sent
/// without copying it.
pub struct Chunks(VecDeque<Bytes>, Option<InFlight>);

impl Chunks {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunks {
        Chunks(chunks.into_iter().filter(|c| !c.is_empty()).collect(), None)
    }

    /// Keeps the connection marked busy until hyper has taken the body.
    fn held_by(mut self, in_flight: InFlight) -> Chunks {
        self.1 = Some(in_flight);
        self
    }

    fn text(s: impl Into<String>) -> Chunks {
        Chunks::new([Bytes::from(s.into())])
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.0.pop_front();
        if self.0.is_empty() {
            self.1 = None;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Chunks) -> Response<Chunks> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

async fn handle(
    req: Request<Incoming>,
    state: &State,
    opts: &ServerOptions,
    security: &WebSecurity,
) -> Response<Chunks> {
    if security.requires_auth()
        && !security
            .authorize(req.headers().get(header::AUTHORIZATION))
            .await
    {
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
    let path = req.uri().path();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let known = path == opts.telemetry_path
        || matches!(
            path,
            "/" | "/-/healthy" | "/-/ready" | "/-/reload" | "/status" | "/status.json"
        );
    if !known {
        return respond(
            StatusCode::NOT_FOUND,
            TEXT,
            Chunks::text("404 page not found\n"),
        );
    }
    if path == "/-/reload" {
        if *req.method() != Method::POST && *req.method() != Method::PUT {
            return not_allowed("POST, PUT");
        }
        if opts.reload.is_none() {
            // As Prometheus answers without --web.enable-lifecycle.
            return respond(
                StatusCode::FORBIDDEN,
                TEXT,
                Chunks::text("Lifecycle API is not enabled.\n"),
            );
        }
        if !same_origin(&req) {
            return respond(
                StatusCode::FORBIDDEN,
                TEXT,
                Chunks::text("cross-origin request refused\n"),
            );
        }
        return reload(opts).await;
    }
    if !get {
        return not_allowed("GET, HEAD");
    }
    if path == opts.telemetry_path {
        return metrics(&req, state);
    }
    match path {
        "/-/healthy" => respond(StatusCode::OK, TEXT, Chunks::text("Healthy\n")),
        "/-/ready" if state.is_ready() => respond(StatusCode::OK, TEXT, Chunks::text("Ready\n")),
        "/-/ready" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            Chunks::text("Not ready: no poll has completed yet\n"),
        ),
        _ => {
            let mut report = pages::report(
                &state.snapshot(),
                &state.names(),
                state.last_poll().as_ref(),
                SystemTime::now(),
            );
            report.simulated = state.is_simulated();
            match path {
                "/status" => respond(
                    StatusCode::OK,
                    HTML,
                    Chunks::text(pages::status_html(&report)),
                ),
                "/status.json" => {
                    let body = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
                    respond(StatusCode::OK, JSON, Chunks::text(body + "\n"))
                }
                _ => respond(
                    StatusCode::OK,
                    HTML,
                    Chunks::text(pages::landing(state.version, &opts.telemetry_path, &report)),
                ),
            }
        }
    }
}

fn not_allowed(allow: &'static str) -> Response<Chunks> {
    let mut r = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        TEXT,
        Chunks::text("405 method not allowed\n"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn metrics(req: &Request<Incoming>, state: &State) -> Response<Chunks> {
    let exposition = state.exposition();
    let gzip = accepts_gzip(req.headers().get(header::ACCEPT_ENCODING));
    let body = Chunks::new(exposition.body(gzip, || state.metrics.encode()));
    let mut r = respond(StatusCode::OK, CONTENT_TYPE, body);
    let h = r.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

async fn reload(opts: &ServerOptions) -> Response<Chunks> {
    let Some(handle) = &opts.reload else {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            Chunks::text("reload is not available\n"),
        );
    };
    let (tx, rx) = oneshot::channel();
    if handle.send(tx).await.is_err() {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            Chunks::text("shutting down\n"),
        );
    }
    match rx.await {
        Ok(Ok(())) => respond(
            StatusCode::OK,
            TEXT,
            Chunks::text("configuration reloaded\n"),
        ),
        Ok(Err(e)) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            Chunks::text(format!("failed to reload config: {e}\n")),
        ),
        Err(_) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            Chunks::text("shutting down\n"),
        ),
    }
}

/// False when a browser says the request comes from another site: an
/// `Origin` header whose host is not the `Host` the request was sent to. A
/// page open in an operator's browser cannot make it reload the exporter.
/// Tools such as curl and Prometheus send no `Origin` and pass.
fn same_origin(req: &Request<Incoming>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// True when `Accept-Encoding` allows gzip (a `q=0` refuses it).
pub fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        if !coding.eq_ignore_ascii_case("gzip") {
            return false;
        }
        parts
            .filter_map(|p| p.strip_prefix("q="))
            .all(|q| q.parse::<f32>().map(|q| q > 0.0).unwrap_or(false))
    })
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
    }
}
