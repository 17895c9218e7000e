//! Addresses users give: `HOST:PORT`, where HOST is an IP address or a
//! host name (`localhost:7101`, `coord-1.example:7101`, `[::1]:7101`).
//!
//! Names are resolved with the system resolver (`ToSocketAddrs`) where the
//! address is read (command-line arguments, `ctl`), never inside a
//! replica's event loop. A name with IPv4 and IPv6 addresses resolves to
//! its first IPv4 address, so that a process listening on `localhost:P`
//! and one dialling `localhost:P` agree whatever order the resolver gives.

use std::net::{SocketAddr, ToSocketAddrs};

/// Why an address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    /// Not of the form `HOST:PORT`.
    #[error("{0:?} is not HOST:PORT (a host name or IP address, then a port number)")]
    NotHostPort(String),
    /// The resolver failed.
    #[error("cannot resolve host {host:?} (in {addr:?}): {source}")]
    Resolve {
        /// The host part.
        host: String,
        /// The whole address.
        addr: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The name resolved to nothing.
    #[error("host {host:?} (in {addr:?}) has no address")]
    NoAddress {
        /// The host part.
        host: String,
        /// The whole address.
        addr: String,
    },
}

/// Resolves `HOST:PORT`; an error names what could not be resolved.
pub fn resolve(s: &str) -> Result<SocketAddr, AddrError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(AddrError::NotHostPort(s.to_string()));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(AddrError::NotHostPort(s.to_string()));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|source| AddrError::Resolve {
            host: host.to_string(),
            addr: s.to_string(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| AddrError::NoAddress {
            host: host.to_string(),
            addr: s.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_names_and_errors() {
        assert_eq!(
            resolve("127.0.0.1:7101").unwrap(),
            "127.0.0.1:7101".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]:7101").unwrap(),
            "[::1]:7101".parse().unwrap()
        );
        let a = resolve("localhost:7101").unwrap();
        assert!(a.ip().is_loopback() && a.port() == 7101, "{a}");
        for bad in [
            "7101",
            "localhost",
            ":7101",
            "localhost:port",
            "localhost:70000",
        ] {
            let e = resolve(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let e = resolve("no-such-host.invalid:7101")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"no-such-host.invalid\""), "{e}");
    }
}
