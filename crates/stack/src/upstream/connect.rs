//! TCP connection establishment with a timeout.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

use crate::error::{ErrorKind, ProxyError};

/// Connects to `addr` within `timeout`, with Nagle disabled: proxied requests
/// are written whole, and delaying their last segment only adds latency.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            // A socket that refuses TCP_NODELAY still works, only slower.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(ProxyError::with_source(ErrorKind::ConnectFailed, e).at(addr)),
        Err(_) => Err(ProxyError::new(ErrorKind::ConnectTimeout).at(addr)),
    }
}
