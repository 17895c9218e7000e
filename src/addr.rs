//! Addresses users give: `HOST:PORT`, where HOST is an IP address or a
//! host name (`localhost:7101`, `coord-1.example:7101`, `[::1]:7101`).
//!
//! Names are resolved with the system resolver (`ToSocketAddrs`) where the
//! address is read (command-line arguments, `ctl`), never inside a
//! replica's event loop. A name with IPv4 and IPv6 addresses resolves to
//! its first IPv4 address, so that a process listening on `localhost:P`
//! and one dialling `localhost:P` agree whatever order the resolver gives.

use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `HOST:PORT`; an error names what could not be resolved.
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "{s:?} is not HOST:PORT (a host name or IP address, then a port number)"
        ));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?} (in {s:?}): {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("host {host:?} (in {s:?}) has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_names_and_errors() {
        assert_eq!(
            resolve("127.0.0.1:7101"),
            Ok("127.0.0.1:7101".parse().unwrap())
        );
        assert_eq!(resolve("[::1]:7101"), Ok("[::1]:7101".parse().unwrap()));
        let a = resolve("localhost:7101").unwrap();
        assert!(a.ip().is_loopback() && a.port() == 7101, "{a}");
        for bad in [
            "7101",
            "localhost",
            ":7101",
            "localhost:port",
            "localhost:70000",
        ] {
            let e = resolve(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let e = resolve("no-such-host.invalid:7101").unwrap_err();
        assert!(e.contains("\"no-such-host.invalid\""), "{e}");
    }
}
