//! The connections the broker keeps, and for how long. Without limits a client that opens
//! connections and sends nothing (or a header a byte at a time) held each one forever: 20,000
//! such connections kept 0.9 GB. Now:
//!
//! - at most `max_connections` are served at once; further ones wait in the kernel's accept
//!   queue until one closes (counted before a TLS handshake, so half-open TLS counts too);
//! - a request's headers must arrive within `header_timeout` of the connection's start, or of
//!   the first byte of a following request;
//! - a kept-alive connection waits at most `idle_timeout` for its next request, and a client
//!   that stops reading an answer is dropped after as long.
//!
//! A request being handled has no deadline here: `listen` waits for minutes on purpose.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The limits (`EXTAUTH_HTTP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a request's headers.
    pub header_timeout: Duration,
    /// Longest idle wait between requests, or for a client to read an answer.
    pub idle_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

/// Accepts TCP connections while fewer than the limit are open.
pub struct Gate {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: Limits,
    full_since: Option<Instant>,
}

/// A connection's place under the limit; given back when the connection is dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Connections open now, and the most open since memory was last given back.
static OPEN: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Called when a wave of connections has drained (set by the binary: it returns freed memory
/// to the system, which takes the crate's one `unsafe` call).
static ON_DRAINED: OnceLock<fn()> = OnceLock::new();
/// A wave is at least this many connections, and has drained when a quarter of its peak is left.
const WAVE: usize = 512;

/// Sets what runs when a wave of connections has drained.
pub fn on_drained(hook: fn()) {
    let _ = ON_DRAINED.set(hook);
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("extauth_http_connections").increment(1.0);
        let open = OPEN.fetch_add(1, Ordering::Relaxed) + 1;
        PEAK.fetch_max(open, Ordering::Relaxed);
        Self { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("extauth_http_connections").decrement(1.0);
        let open = OPEN.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        let peak = PEAK.load(Ordering::Relaxed);
        if peak >= WAVE
            && open <= peak / 4
            && PEAK
                .compare_exchange(peak, open, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if let Some(hook) = ON_DRAINED.get() {
                tracing::info!(
                    peak,
                    open,
                    "a wave of connections has drained; giving memory back"
                );
                hook();
            }
        }
    }
}

impl Gate {
    /// Guards `listener` with `limits`.
    pub fn new(listener: TcpListener, limits: Limits) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            full_since: None,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The listening address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, once a slot is free.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Slot) {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self
                    .full_since
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                {
                    self.full_since = Some(Instant::now());
                    tracing::warn!(
                        max_connections = self.limits.max_connections,
                        "connection limit reached (EXTAUTH_HTTP_MAX_CONNECTIONS); new connections wait until others close"
                    );
                }
                metrics::counter!("extauth_http_connection_limit_reached_total").increment(1);
                match self.permits.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => return std::future::pending().await,
                }
            }
        };
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    // No answer held back by Nagle's algorithm waiting for an acknowledgement.
                    let _ = tcp.set_nodelay(true);
                    return (tcp, peer, Slot::new(permit));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Plain HTTP connections through a [`Gate`], each [`Watched`], for `axum::serve`.
pub struct PlainListener(pub Gate);

impl axum::serve::Listener for PlainListener {
    type Io = Watched<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let limits = self.0.limits();
        let (tcp, peer, slot) = self.0.accept().await;
        (Watched::new(tcp, slot, limits), peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The peer of a request's connection, for `ConnectInfo<Peer>` (axum only knows its own
/// listeners' addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PlainListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, PlainListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Where a connection is between requests, as seen from its bytes (HTTP/1.1: a request's
/// headers end at the first empty line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request's headers; `matched` counts the bytes of
    /// `\r\n\r\n` seen at the end of what came so far.
    Headers { matched: u8 },
    /// The request is being handled: no deadline.
    Handling,
    /// An answer was written: waiting for the client to read it or send its next request.
    Answered,
}

/// A connection with deadlines: the I/O fails with `TimedOut` once one passes, which makes the
/// HTTP server close it.
pub struct Watched<S> {
    inner: S,
    limits: Limits,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl<S> Watched<S> {
    /// Watches a new connection: its first headers are due within the header timeout.
    pub fn new(inner: S, slot: Slot, limits: Limits) -> Self {
        Self {
            inner,
            limits,
            phase: Phase::Headers { matched: 0 },
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            _slot: slot,
        }
    }

    fn set_deadline(&mut self, after: Duration) {
        self.deadline.as_mut().reset(Instant::now() + after);
    }

    /// Fails when the phase has a deadline and it has passed (registering the wake-up otherwise).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.phase == Phase::Handling || self.deadline.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        let reason = match self.phase {
            Phase::Headers { .. } => "header_timeout",
            _ => "idle_timeout",
        };
        metrics::counter!("extauth_http_connections_timed_out_total", "reason" => reason)
            .increment(1);
        Err(io::Error::new(io::ErrorKind::TimedOut, reason))
    }

    /// Follows the request's headers through `bytes` just read.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut matched = match self.phase {
            Phase::Headers { matched } => matched,
            Phase::Handling => return,
            Phase::Answered => {
                // The next request has begun: its headers are due.
                self.set_deadline(self.limits.header_timeout);
                0
            }
        };
        const END: &[u8; 4] = b"\r\n\r\n";
        for &b in bytes {
            matched = if b == END[usize::from(matched)] {
                matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if matched == 4 {
                self.phase = Phase::Handling;
                return;
            }
        }
        self.phase = Phase::Headers { matched };
    }

    /// An answer is being written: the idle deadline starts. It is registered with this task
    /// now: the server's pending read was polled while the request was handled, without a
    /// deadline, and would not be polled again before the client sends something.
    fn wrote(&mut self, cx: &mut Context<'_>) {
        self.phase = Phase::Answered;
        self.set_deadline(self.limits.idle_timeout);
        let _ = self.deadline.as_mut().poll(cx);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.check(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<S> Watched<S> {
    /// What a write returned, with the deadline kept: progress starts the idle wait, a stall
    /// past the deadline fails.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                self.wrote(cx);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                self.check(cx)?;
                Poll::Pending
            }
            failed => failed,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> Watched<tokio::io::Empty> {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        Watched::new(
            tokio::io::empty(),
            Slot::new(permit),
            Limits {
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                max_connections: 1,
            },
        )
    }

    #[tokio::test]
    async fn headers_end_at_the_first_empty_line_even_across_reads() {
        let mut w = watched();
        w.saw(b"GET / HTTP/1.1\r\nHost: x\r");
        assert_eq!(w.phase, Phase::Headers { matched: 1 });
        w.saw(b"\n\r");
        assert_eq!(w.phase, Phase::Headers { matched: 3 });
        w.saw(b"\nbody");
        assert_eq!(w.phase, Phase::Handling);
        w.saw(b"more body \r\n\r\n");
        assert_eq!(w.phase, Phase::Handling, "a body is not headers");
        w.wrote(&mut Context::from_waker(std::task::Waker::noop()));
        assert_eq!(w.phase, Phase::Answered);
        w.saw(b"GET /next");
        assert_eq!(w.phase, Phase::Headers { matched: 0 });
        w.saw(b"\r\r\n\r\n");
        assert_eq!(w.phase, Phase::Handling, "a stray \\r restarts the match");
    }
}
