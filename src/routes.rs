//! The exporter's endpoints, handed to the web layer ([`crate::web`]) as
//! its [`Routes`]: the metrics (negotiated format, gzip or plain), health
//! and readiness, the lifecycle reload, and the pages for people, with the
//! rule of which `Host` each answers to (a defence against DNS rebinding).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

use crate::config::{ENDPOINTS, WebConfig};
use crate::pages;
use crate::state::State;
use crate::web::server::{Chunks, HTML, JSON, Routes, TEXT, accepts_gzip, host_allowed, respond};

/// Asks the owner of the configuration to reload it; answers with the outcome.
pub type ReloadHandle = mpsc::Sender<oneshot::Sender<Result<(), String>>>;

/// The exporter's endpoints.
pub struct Endpoints {
    state: Arc<State>,
    pages: pages::PageCache,
    telemetry_path: String,
    /// Host names `/-/reload` and the pages for people answer to, besides
    /// IP addresses and `localhost` (`web.allowed_hosts`).
    allowed_hosts: Vec<String>,
    /// `--web.enable-lifecycle`: where `POST /-/reload` is sent.
    reload: Option<ReloadHandle>,
}

impl Endpoints {
    pub fn new(state: Arc<State>, web: &WebConfig, reload: Option<ReloadHandle>) -> Endpoints {
        Endpoints {
            state,
            pages: pages::PageCache::default(),
            telemetry_path: web.telemetry_path.clone(),
            allowed_hosts: web.allowed_hosts.clone(),
            reload,
        }
    }
}

impl Routes for Endpoints {
    fn route<'a>(
        &'a self,
        req: Request<Incoming>,
        refused: &'a (dyn Fn(&str) + Sync),
    ) -> Pin<Box<dyn Future<Output = Response<Chunks>> + Send + 'a>> {
        Box::pin(route(self, req, refused))
    }
}

async fn route(
    opts: &Endpoints,
    req: Request<Incoming>,
    refused: &(dyn Fn(&str) + Sync),
) -> Response<Chunks> {
    let state = &*opts.state;
    let path = req.uri().path();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let known = path == opts.telemetry_path || ENDPOINTS.contains(&path);
    if !known {
        return respond(
            StatusCode::NOT_FOUND,
            TEXT,
            Chunks::text("404 page not found\n"),
        );
    }
    // DNS rebinding: a page on evil.example whose name now resolves to this
    // host sends `Host: evil.example`. Everything but the scrape and health
    // endpoints answers only to the names it is known by.
    if path != opts.telemetry_path
        && !matches!(path, "/-/healthy" | "/-/ready")
        && !host_allowed(req.headers().get(header::HOST), &opts.allowed_hosts)
    {
        refused("host");
        return respond(
            StatusCode::FORBIDDEN,
            TEXT,
            Chunks::text(
                "Host not allowed: add this host name to web.allowed_hosts, or use an IP address\n",
            ),
        );
    }
    if path == "/-/reload" {
        if *req.method() != Method::POST && *req.method() != Method::PUT {
            return not_allowed("POST, PUT");
        }
        let Some(handle) = &opts.reload else {
            // As Prometheus answers without --web.enable-lifecycle.
            return respond(
                StatusCode::FORBIDDEN,
                TEXT,
                Chunks::text("Lifecycle API is not enabled.\n"),
            );
        };
        if !same_origin(&req) {
            return respond(
                StatusCode::FORBIDDEN,
                TEXT,
                Chunks::text("cross-origin request refused\n"),
            );
        }
        return reload(handle).await;
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
            let pages = opts.pages.get(state, &opts.telemetry_path);
            match path {
                "/status" => respond(
                    StatusCode::OK,
                    HTML,
                    Chunks::new([pages.status_html.clone()]),
                ),
                "/status.json" => respond(
                    StatusCode::OK,
                    JSON,
                    Chunks::new([pages.status_json.clone()]),
                ),
                _ => respond(StatusCode::OK, HTML, Chunks::new([pages.landing.clone()])),
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
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (format, content_type) = crate::expose::openmetrics::negotiate(accept);
    let body = Chunks::exposition(exposition.body(format, gzip, || state.encode_live(format)));
    let mut r = respond(StatusCode::OK, content_type, body);
    let h = r.headers_mut();
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

async fn reload(handle: &ReloadHandle) -> Response<Chunks> {
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
