//! compute-optimizer-exporter: AWS Compute Optimizer organisation enrollment
//! statuses for Prometheus.
//!
//! Layout, from the edge inwards:
//!
//! * [`cli`]: flags, config loading, logging, runtime; `main.rs` only calls it.
//! * [`config`]: the TOML file, defaults then validation, one-line errors.
//! * [`app`]: wires server, producers and reloads under one [`shutdown`]:
//!   one set of producers per organisation watched.
//! * [`source`]: the traits every source of pages implements, and the
//!   dispatch between them.
//! * [`aws`]: the only module that imports the AWS SDK; a client per
//!   service, one call in, one plain [`model::Page`] or [`error::ApiError`] out.
//! * [`demo`]: a simulated organisation for `--demo`.
//! * [`paging`]: the one paging loop (tokens, caps, retries, deadlines) that
//!   every listing uses.
//! * [`scheduler`]: the enrollment poll loop; [`names`]: account names.
//! * [`state`]: the exporter and its organisations; what each organisation's
//!   producers publish, each swapping its own segment.
//! * [`storage`]: `--storage.path`, the walk's data kept across restarts.
//! * [`authgate`]: the one bcrypt worker, its fair queue, the login cache.
//! * [`websec`] and [`tlsconf`]: exporter-toolkit's web config.
//! * [`metrics`]: the organisation's series rendered, and the exporter's own
//!   live metrics; [`exposition`]: the cached, compressed segments spliced
//!   into a scrape's body (gzip as shared bytes, plain inflated as written);
//!   [`openmetrics`]: OpenMetrics beside the text format 0.0.4;
//!   [`deflate`]: libdeflate pieces that splice in any order.
//! * [`server`] and [`pages`]: HTTP endpoints and the pages for people;
//!   [`conns`]: which connections the server keeps (caps, shedding, timeouts).

pub mod app;
pub mod authgate;
pub mod aws;
pub mod cli;
pub mod config;
pub mod conns;
pub mod deflate;
pub mod demo;
pub mod error;
pub mod exposition;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod names;
pub mod openmetrics;
pub mod pages;
pub mod paging;
pub mod scheduler;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod state;
pub mod storage;
pub mod tlsconf;
pub mod websec;
