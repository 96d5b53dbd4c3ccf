//! The exposition: what a scrape is made of.
//!
//! * [`metrics`]: the producers' renderers (the poll's series, the walk's
//!   `account_info`) and the exporter's own live metrics;
//! * [`exposition`]: the cached, compressed segments spliced into a
//!   scrape's body (gzip as shared bytes, plain inflated as written);
//! * [`openmetrics`]: OpenMetrics beside the text format 0.0.4, and the
//!   negotiation between them;
//! * [`deflate`]: libdeflate pieces that splice in any order.

pub mod deflate;
pub mod exposition;
pub mod metrics;
pub mod openmetrics;
