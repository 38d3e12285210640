//! Bounds on connections, so that clients which connect and then say nothing (or trickle)
//! cannot hold the console's file descriptors: a cap on open connections and an idle timeout
//! on each. The third bound, the time to send a request head, is hyper's own
//! (`header_read_timeout`, set in [`super::Server::start`]).
//!
//! ```text
//! accept ─► LimitAcceptor: a permit of max_connections free?
//!             no  → "503 too many connections" (plain HTTP; TLS: closed), dropped at once
//!             yes → Limited<TcpStream> holds the permit until the connection ends
//!                   ─► (TLS handshake, bounded by the header timeout) ─► hyper
//! Limited: no byte read or written for idle_timeout → the next read/write fails (TimedOut)
//!          and hyper closes the connection.
//! ```
//!
//! Every connection counts, long-lived push streams included: they are most of a console's
//! connections (one per device). They stay open past the idle timeout because the console
//! pings on them more often than that (see [`stream_ping`]).

use std::future::{ready, Future, Ready};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// What a refused plain-HTTP client reads before the connection closes.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 72\r\n\r\n\
{\"error\":\"the console has too many open connections; try again shortly\"}";

/// How often the push stream pings for a given idle timeout: often enough that an otherwise
/// quiet stream is never idle that long (a third of it), and at most every 15 s (what devices
/// and proxies expect; a device reconnects after 45 s of silence).
pub fn stream_ping(idle_timeout: Duration) -> Duration {
    (idle_timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(15))
}

/// Admits a connection only while fewer than the cap are open, and wraps it in [`Limited`].
#[derive(Clone, Debug)]
pub struct LimitAcceptor {
    permits: Arc<Semaphore>,
    idle: Duration,
    /// Whether a refused client speaks plain HTTP (and can be told why in a 503).
    plain: bool,
    /// When a refusal was last logged (Unix ms): at most one warning per 10 s under a flood.
    last_warned_ms: Arc<AtomicI64>,
}

impl LimitAcceptor {
    pub fn new(max_connections: usize, idle: Duration, plain: bool) -> LimitAcceptor {
        LimitAcceptor {
            permits: Arc::new(Semaphore::new(max_connections)),
            idle,
            plain,
            last_warned_ms: Arc::default(),
        }
    }

    fn refuse(&self, stream: TcpStream) -> io::Error {
        if self.plain {
            // Best effort and never waiting: a client that does not read loses the answer.
            let _ = stream.try_write(BUSY);
        }
        let now = crate::store::now_ms();
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        if now - last >= 10_000
            && self
                .last_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "connection limit reached: refusing new connections (--max-connections)"
            );
        }
        io::Error::other("connection limit reached")
    }
}

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Limited<TcpStream>;
    type Service = S;
    type Future = Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => ready(Ok((Limited::new(stream, self.idle, permit), service))),
            Err(_) => ready(Err(self.refuse(stream))),
        }
    }
}

/// A connection that holds one permit of the cap and fails once idle too long.
pub struct Limited<S> {
    inner: S,
    idle: Duration,
    /// When a byte last moved either way.
    last: Instant,
    /// Wakes the connection to look at `last` again; re-armed lazily, not on every byte.
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl<S> Limited<S> {
    fn new(inner: S, idle: Duration, permit: OwnedSemaphorePermit) -> Limited<S> {
        let now = Instant::now();
        Limited {
            inner,
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _permit: permit,
        }
    }

    /// On a read or write that has to wait: fails once nothing moved for the idle timeout,
    /// else makes sure the timer will wake this connection when it might have.
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            let due = self.last + self.idle;
            if Instant::now() >= due {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle past the idle timeout",
                )));
            }
            if self.timer.deadline() != due {
                self.timer.as_mut().reset(due);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<S> Limited<S> {
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.poll_idle(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
