//! The web layer, in the manner of Prometheus' exporter-toolkit: listening
//! (an address or the socket systemd passes), the accept loop and its
//! connection table (caps, shedding, timeouts), TLS and basic auth from the
//! web config file, and the one bcrypt worker. It serves what the exporter
//! hands it and counts its own series ([`conns::WebMetrics`]).
//!
//! * [`server`]: listening, the accept loop, the endpoints' routing;
//! * [`conns`]: which connections the server keeps;
//! * [`websec`] and [`tlsconf`]: exporter-toolkit's web configuration;
//! * [`authgate`]: the bcrypt worker, its fair queue and login cache.

pub mod authgate;
pub mod conns;
pub mod server;
pub mod tlsconf;
pub mod websec;
