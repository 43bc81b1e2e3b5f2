//! The per-connection IO wrapper that lets a request handler misbehave at the
//! socket level, below HTTP.
//!
//! hyper owns the socket while it serves a connection, so a handler cannot
//! write raw bytes itself. Instead it flips a flag in the connection's
//! [`ConnCtl`]; from then on [`ConnIo`] replaces whatever hyper writes with
//! [`GARBAGE`], half-closes the socket and reports EOF to hyper's reads, so
//! hyper winds the connection down by itself. This works on reused
//! keep-alive connections and on h2c alike, which matters because a proxy's
//! pool will usually send the request that should get garbage over an
//! already-open connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Bytes that are neither an HTTP/1 status line nor a valid h2 frame.
pub(crate) const GARBAGE: &[u8] =
    b"\x00\x01\xfe\xffSWITCHYARD-GARBAGE this is not HTTP\r\n\x00\x00\r\n\r\n";

/// Shared between a connection's task, its IO and the handlers of its requests.
#[derive(Debug, Default)]
pub(crate) struct ConnCtl {
    /// Set by a handler in `Mode::Garbage`: the next write becomes garbage.
    pub(crate) garbage: AtomicBool,
    /// Notified by a handler in `Mode::CloseWithoutResponse`: the connection
    /// task drops the connection (and so the socket) without answering.
    pub(crate) close: Notify,
}

/// A `TcpStream` whose writes can be turned into garbage mid-connection.
#[derive(Debug)]
pub(crate) struct ConnIo {
    inner: TcpStream,
    ctl: std::sync::Arc<ConnCtl>,
    garbage_sent: usize,
    write_closed: bool,
}

impl ConnIo {
    pub(crate) fn new(inner: TcpStream, ctl: std::sync::Arc<ConnCtl>) -> Self {
        Self {
            inner,
            ctl,
            garbage_sent: 0,
            write_closed: false,
        }
    }

    fn garbage_mode(&self) -> bool {
        self.ctl.garbage.load(Ordering::Acquire)
    }

    /// Writes the rest of [`GARBAGE`], then sends FIN so the peer reads the
    /// garbage followed by a clean EOF (not a reset that could discard it).
    fn poll_send_garbage(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.garbage_sent < GARBAGE.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &GARBAGE[self.garbage_sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.garbage_sent += n;
        }
        if !self.write_closed {
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.write_closed = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_closed {
            // Pretend the peer went away so hyper ends the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.garbage_mode() {
            ready!(this.poll_send_garbage(cx))?;
            // Swallow hyper's bytes: the peer must only ever see garbage.
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.garbage_mode() {
            return this.poll_send_garbage(cx);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.garbage_mode() {
            return this.poll_send_garbage(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
