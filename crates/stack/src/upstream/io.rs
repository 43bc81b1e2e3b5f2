//! A connection to an endpoint: plaintext TCP, or TLS over it when the
//! cluster has `tls`.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use super::{connect, tls::UpstreamTls};
use crate::error::{ErrorKind, ProxyError};

/// An open connection to an endpoint.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and plaintext connections should not
    /// carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to `addr`, writes `preface` (a PROXY protocol header) if any
/// and, with `tls`, completes the handshake, all within `timeout`.
pub async fn open(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    preface: Option<&[u8]>,
) -> Result<UpstreamIo, ProxyError> {
    let started = tokio::time::Instant::now();
    let mut stream = connect(addr, timeout).await?;
    if let Some(bytes) = preface {
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.write_all(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(ProxyError::with_source(ErrorKind::ConnectFailed, e).at(addr));
            }
            Err(_) => return Err(ProxyError::new(ErrorKind::ConnectTimeout).at(addr)),
        }
    }
    let Some(tls) = tls else {
        return Ok(UpstreamIo::Plain(stream));
    };
    let left = timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, tls.handshake(stream, addr)).await {
        Ok(Ok(stream)) => Ok(UpstreamIo::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProxyError::new(ErrorKind::ConnectTimeout).at(addr)),
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
