//! Free loopback ports for tests that need to know an address before binding
//! it (e.g. to write it into a proxy configuration).
//!
//! The port is found by binding `127.0.0.1:0` and dropping the listener, so
//! another process could grab it in between; prefer binding `:0` yourself and
//! reading the address back whenever the code under test allows it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    free_addr().port()
}

/// `127.0.0.1:<port>` for a TCP port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("reading the address of a freshly bound listener")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addr_is_loopback_and_bindable() {
        let addr = free_addr();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        TcpListener::bind(addr).expect("the port should still be free");
    }
}
