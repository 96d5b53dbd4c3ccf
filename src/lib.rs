//! compute-optimizer-exporter: AWS Compute Optimizer organisation enrollment
//! statuses for Prometheus.
//!
//! Layout, from the edge inwards (ARCHITECTURE.md draws it):
//!
//! * [`cli`]: flags, config loading, logging, runtime; `main.rs` only calls it.
//! * [`app`]: the wiring: the web server, the fleet and the reload loop
//!   under one [`shutdown`].
//! * [`fleet`]: the organisations watched and their lifecycle: apply a
//!   configuration (plan, then act), start and stop each one's producers.
//! * [`config`]: the TOML file, defaults then validation, one-line errors.
//! * [`web`]: the web layer (listening, connections, TLS, basic auth);
//!   [`routes`]: the exporter's endpoints it serves; [`pages`]: the pages
//!   for people.
//! * [`produce`]: the producers (the enrollment poll, the organisation walk,
//!   Compute Optimizer Automation, trusted access) and their one driver.
//! * [`state`]: the store a scrape reads: each organisation's data and its
//!   producers' segments; [`storage`]: `--storage.path`.
//! * [`expose`]: renderers, the exposition, OpenMetrics, deflate.
//! * [`source`]: the AWS edge, the demo, the one paging loop, errors.
//! * [`model`], [`logging`], [`shutdown`], [`sync`]: plain types and plumbing.

pub mod app;
pub mod cli;
pub mod config;
pub mod expose;
pub mod fleet;
pub mod logging;
pub mod model;
pub mod pages;
pub mod produce;
pub mod routes;
pub mod shutdown;
pub mod source;
pub mod state;
pub mod storage;
pub mod sync;
pub mod web;
