//! Free loopback ports for tests that need to know an address before binding
//! it (e.g. to write it into a proxy configuration).
//!
//! The port is found by binding `127.0.0.1:0` and dropping the listener, so
//! another process could grab it in between; prefer binding `:0` yourself and
//! reading the address back whenever the code under test allows it.
//!
//! An address that must stay dead (an endpoint that refuses connections) is
//! a [`RefusedAddr`]: its port stays bound for the guard's life, so no other
//! test can start listening on it, and a connect is answered with a reset.

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

/// A loopback address that refuses TCP connections for as long as the
/// guard lives: the port is bound but never listened on, so the kernel
/// answers a SYN with a reset and no other socket can take the port.
#[derive(Debug)]
pub struct RefusedAddr {
    socket: socket2::Socket,
    addr: SocketAddr,
}

impl RefusedAddr {
    /// Binds a fresh loopback port without listening on it.
    pub fn new() -> Self {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .expect("creating a TCP socket");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("binding 127.0.0.1:0");
        let addr = socket
            .local_addr()
            .expect("reading a bound socket's address")
            .as_socket()
            .expect("an IPv4 socket has an IP address");
        Self { socket, addr }
    }

    /// The address; valid (and refusing) while `self` lives.
    pub fn addr(&self) -> SocketAddr {
        let _ = &self.socket;
        self.addr
    }
}

impl Default for RefusedAddr {
    fn default() -> Self {
        Self::new()
    }
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

    #[test]
    fn refused_addr_refuses_and_cannot_be_taken() {
        let dead = RefusedAddr::new();
        let err = std::net::TcpStream::connect(dead.addr()).expect_err("nothing listens");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(TcpListener::bind(dead.addr()).is_err(), "the port is held");
    }
}
