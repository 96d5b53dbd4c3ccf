//! `web.listen_address`: `host:port`, `[v6]:port`, `name:port` or `:port`.
use std::net::SocketAddr;

use super::DEFAULT_PORT;

/// Parses `host:port`, `[v6]:port` or Prometheus-style `:port`.
pub fn parse_listen_address(s: &str) -> Result<ListenAddress, String> {
    let bad = || {
        format!(
            "{s:?} is not a listen address such as \":{DEFAULT_PORT}\", \"127.0.0.1:{DEFAULT_PORT}\", \"[::1]:{DEFAULT_PORT}\" or \"localhost:{DEFAULT_PORT}\""
        )
    };
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(ListenAddress::Addr(addr));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Ok(ListenAddress::Any(port));
    }
    if is_host_name(host) && host.parse::<std::net::IpAddr>().is_err() {
        return Ok(ListenAddress::Host(host.to_owned(), port));
    }
    Err(bad())
}

/// Where the server listens, as `web.listen_address` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `:port`: every address, IPv4 and IPv6 (as Go's `:port`).
    Any(u16),
    Addr(SocketAddr),
    /// A host name, resolved when the server binds.
    Host(String, u16),
}

/// A DNS host name: dot-separated labels of letters, digits and hyphens.
pub(crate) fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}
