//! A TCP echo server on loopback, for L4 proxy tests.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Starts a server on 127.0.0.1 (ephemeral port) that writes `greeting`
/// first (empty: none; a non-empty one plays a server-speaks-first
/// protocol such as SMTP or MySQL), then echoes every byte until the client
/// closes. Runs until the test's runtime ends.
pub async fn tcp_echo(greeting: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback echo server");
    let addr = l.local_addr().expect("reading a bound listener's address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if !greeting.is_empty() && s.write_all(greeting).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
