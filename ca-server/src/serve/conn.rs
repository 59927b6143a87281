//! Connection guard: how many connections the server holds, how long one may
//! sit without a request in progress (idle), and how long a client may take
//! to send a request head once it has started one.
//!
//! hyper's own `header_read_timeout` cannot express this: its clock starts
//! whenever the connection waits for a request head, so it is also the idle
//! keep-alive timeout, and hyper-util's protocol detection ran before it with
//! no timeout at all (a connection that never sent a byte was held forever).
//! Here both clocks live in one place:
//!
//! - [`ConnAcceptor`] takes a permit from the connection cap (over the cap the
//!   connection is closed at once), then holds the bare TCP stream until its
//!   first byte arrives, for at most the idle timeout. Only then do TLS and
//!   HTTP state get allocated, so a connection that never speaks costs a
//!   socket and a small task.
//! - [`Guarded`] wraps the stream handed to hyper and tracks its phase from
//!   the bytes that pass: *idle* (nothing of a request yet; closed after the
//!   idle timeout), *head* (the first byte of a request head arrived; closed if
//!   the blank line ending the head does not follow within the header
//!   timeout), *busy* (the request is being handled; bounded by the request
//!   timeout layer in `http`). Writing a response makes it idle again; a write
//!   that makes no progress for the idle timeout fails too (a client that
//!   never reads its response).
//!
//! This relies on HTTP/1 framing, so the server speaks HTTP/1.1 only.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The bounds one server applies to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// From the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// Connections held at once; more are closed as they arrive.
    pub max_connections: usize,
}

/// Wraps an inner acceptor (plain or TLS) with the cap and the idle wait.
#[derive(Clone)]
pub struct ConnAcceptor<A> {
    inner: A,
    limits: ConnLimits,
    permits: Arc<Semaphore>,
    last_cap_warning: Arc<AtomicU64>,
}

impl<A> std::fmt::Debug for ConnAcceptor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnAcceptor")
            .field("limits", &self.limits)
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

impl<A> ConnAcceptor<A> {
    pub fn new(inner: A, limits: ConnLimits) -> Self {
        ConnAcceptor {
            inner,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            last_cap_warning: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Log that the cap was reached, at most once per 10 s (a flood must not
    /// become a log flood).
    fn warn_cap(&self) {
        let now = crate::clock::now_unix();
        let last = self.last_cap_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_cap_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.limits.max_connections,
                "connection limit reached: closing new connections until others end"
            );
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

impl<A, S> Accept<TcpStream, S> for ConnAcceptor<A>
where
    A: Accept<TcpStream, S> + Clone + Send + Sync + 'static,
    A::Future: Send,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send,
    S: Send + 'static,
{
    type Stream = Guarded<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<(Self::Stream, Self::Service)>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let permit = self.permits.clone().try_acquire_owned();
        if permit.is_err() {
            self.warn_cap();
        }
        let inner = self.inner.clone();
        let limits = self.limits;
        Box::pin(async move {
            // Dropping the stream closes it.
            let permit = permit.map_err(|_| io::Error::other("connection limit reached"))?;
            // `peek`, not `readable`: readiness can be reported before any
            // byte has arrived. A peek of 0 bytes (end of stream) passes
            // too; hyper then sees the close.
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.idle_timeout, stream.peek(&mut first)).await {
                Ok(peeked) => peeked?,
                Err(_) => return Err(timed_out("idle")),
            };
            let (stream, service) = inner.accept(stream, service).await?;
            Ok((Guarded::new(stream, limits, permit), service))
        })
    }
}

fn timed_out(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timeout"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No byte of a request yet: the idle clock runs.
    Idle,
    /// Reading a request head: the header clock runs.
    Head,
    /// The head is complete; the request timeout layer bounds the rest.
    Busy,
}

/// A connection's stream with its phase and deadline; holds its permit.
pub struct Guarded<S> {
    inner: S,
    limits: ConnLimits,
    phase: Phase,
    head_end: HeadEnd,
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    _permit: OwnedSemaphorePermit,
}

impl<S> Guarded<S> {
    fn new(inner: S, limits: ConnLimits, permit: OwnedSemaphorePermit) -> Self {
        Guarded {
            inner,
            limits,
            phase: Phase::Idle,
            head_end: HeadEnd::default(),
            deadline: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            armed: true,
            _permit: permit,
        }
    }

    /// Start the clock and register this task's waker with it: hyper does
    /// not necessarily poll the read side again (it may be waiting on socket
    /// readiness already), so the deadline must wake the task by itself.
    fn arm(&mut self, after: Duration, cx: &mut Context<'_>) {
        self.deadline.as_mut().reset(Instant::now() + after);
        self.armed = true;
        let _ = self.deadline.as_mut().poll(cx);
    }

    fn expired(&self) -> bool {
        self.armed && self.deadline.is_elapsed()
    }

    fn error(&self) -> io::Error {
        timed_out(match self.phase {
            Phase::Idle | Phase::Busy => "idle",
            Phase::Head => "header read",
        })
    }

    /// After the inner stream returned `Pending`: `Ready` with an error when
    /// the deadline has passed (the deadline's waker is registered otherwise).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.armed && self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(self.error());
        }
        Poll::Pending
    }

    fn on_read(&mut self, bytes: &[u8], cx: &mut Context<'_>) {
        if bytes.is_empty() {
            return; // end of stream
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.head_end = HeadEnd::default();
            let header_timeout = self.limits.header_timeout;
            self.arm(header_timeout, cx);
        }
        if self.phase == Phase::Head && self.head_end.feed(bytes) {
            self.phase = Phase::Busy;
            self.armed = false;
        }
    }

    fn on_write_progress(&mut self, cx: &mut Context<'_>) {
        // A response (or part of one) went out: unless the client sends
        // another request, the connection is idle from here.
        self.phase = Phase::Idle;
        let idle_timeout = self.limits.idle_timeout;
        self.arm(idle_timeout, cx);
    }

    fn on_write_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.armed {
            let idle_timeout = self.limits.idle_timeout;
            self.arm(idle_timeout, cx);
        }
        self.poll_deadline(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.expired() {
            return Poll::Ready(Err(this.error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.on_read(&buf.filled()[before..], cx);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// One write (plain or vectored) under the deadline: progress re-arms
    /// the idle timer, a blocked write waits on the deadline.
    fn write_with(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.expired() {
            return Poll::Ready(Err(this.error()));
        }
        match write(Pin::new(&mut this.inner), cx) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.on_write_progress(cx);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.on_write_blocked(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.on_write_blocked(cx).map(Err),
            done => done,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Finds the blank line that ends a request head ("\r\n\r\n", or "\n\n" as
/// hyper also accepts), across reads. Blank lines *before* the request line
/// (which hyper skips) do not count, so a client cannot send "\r\n\r\n" and
/// then take its time over the real head.
#[derive(Debug, Default, Clone, Copy)]
struct HeadEnd {
    /// 0: in a line; 1: just after "\n"; 2: just after "\n\r".
    state: u8,
    /// A byte other than CR/LF has been seen.
    started: bool,
}

impl HeadEnd {
    /// Feed bytes; true once the head is complete.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            self.state = match (self.state, b) {
                (1 | 2, b'\n') if self.started => return true,
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                (_, b'\r') => 0,
                _ => {
                    self.started = true;
                    0
                }
            };
        }
        false
    }
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`
/// (`None` where that file does not exist or says "unlimited").
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn head_end(chunks: &[&[u8]]) -> Option<usize> {
        let mut h = HeadEnd::default();
        chunks.iter().position(|c| h.feed(c))
    }

    #[test]
    fn finds_the_end_of_a_head_across_reads() {
        assert_eq!(head_end(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]), Some(0));
        assert_eq!(
            head_end(&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r\n"]),
            Some(1)
        );
        let bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(head_end(&chunks), Some(bytes.len() - 1));
        assert_eq!(head_end(&[b"GET / HTTP/1.1\nHost: x\n\n"]), Some(0));
        assert_eq!(head_end(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]), None);
        assert_eq!(head_end(&[b"GET / HTTP/1.1\r\nX: a\r\rb\r\n"]), None);
    }

    #[test]
    fn leading_blank_lines_do_not_end_the_head() {
        assert_eq!(
            head_end(&[b"\r\n\r\n\n\n\r\n", b"GET / HTTP/1.1\r\n"]),
            None
        );
        assert_eq!(
            head_end(&[b"\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\n"]),
            Some(2)
        );
    }

    #[test]
    fn reads_the_open_files_limit() {
        if std::path::Path::new("/proc/self/limits").exists() {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }

    /// A pair of connected streams, the server end guarded.
    async fn pair(
        limits: ConnLimits,
    ) -> (Guarded<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(64);
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        (Guarded::new(server, limits, permit), client)
    }

    const IDLE: Duration = Duration::from_millis(1200);
    const HEADER: Duration = Duration::from_millis(300);

    /// A deadline fired, not before its time (the upper bound is only a
    /// liveness check).
    fn assert_fired_after(elapsed: Duration, want: Duration) {
        assert!(
            elapsed >= want && elapsed < want + Duration::from_secs(5),
            "{elapsed:?}, expected {want:?}"
        );
    }

    fn limits() -> ConnLimits {
        ConnLimits {
            idle_timeout: IDLE,
            header_timeout: HEADER,
            max_connections: 1,
        }
    }

    #[tokio::test]
    async fn idle_and_header_clocks_are_separate() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, mut client) = pair(limits()).await;
        let mut buf = [0u8; 64];

        // Idle for longer than the header timeout: still open.
        let read = tokio::time::timeout(HEADER * 2, server.read(&mut buf)).await;
        assert!(read.is_err(), "nothing to read yet, and no error");

        // A request head that starts and stalls is cut after the header timeout.
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 16);
        let started = Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_fired_after(started.elapsed(), HEADER);
    }

    #[tokio::test]
    async fn busy_then_idle_after_the_response() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, mut client) = pair(limits()).await;
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 18);
        // Busy: handling may take longer than either timeout; no clock runs.
        let read = tokio::time::timeout(IDLE * 2, server.read(&mut buf)).await;
        assert!(read.is_err());
        // The response makes it idle: closed after the idle timeout.
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let started = Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_fired_after(started.elapsed(), IDLE);
    }

    #[tokio::test]
    async fn a_client_that_never_reads_is_cut_after_the_idle_timeout() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, mut client) = pair(limits()).await;
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 18);
        let started = Instant::now();
        let err = server.write_all(&[b'x'; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_fired_after(started.elapsed(), IDLE);
    }

    /// hyper does not poll the read side of an idle keep-alive connection
    /// again once a read returned `Pending`: the idle deadline armed by the
    /// response must wake the task on its own.
    #[tokio::test]
    async fn the_idle_deadline_wakes_a_task_that_does_not_read_again() {
        use std::sync::atomic::AtomicBool;
        use std::task::{Wake, Waker};
        use tokio::io::AsyncWriteExt as _;

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);

        let (mut server, mut client) = pair(limits()).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut storage = [0u8; 64];
        let mut buf = ReadBuf::new(&mut storage);
        assert!(matches!(
            Pin::new(&mut server).poll_read(&mut cx, &mut buf),
            Poll::Ready(Ok(()))
        ));
        // Busy; the next read is pending on the socket, as in hyper.
        let mut buf = ReadBuf::new(&mut storage);
        assert!(
            Pin::new(&mut server)
                .poll_read(&mut cx, &mut buf)
                .is_pending()
        );
        assert!(matches!(
            Pin::new(&mut server).poll_write(&mut cx, b"HTTP/1.1 200 OK\r\n\r\n"),
            Poll::Ready(Ok(19))
        ));
        flag.0.store(false, Ordering::SeqCst);
        tokio::time::sleep(IDLE + Duration::from_millis(300)).await;
        assert!(
            flag.0.load(Ordering::SeqCst),
            "the idle deadline woke the task"
        );
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(&mut server).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
            other => panic!("expected the idle timeout, got {other:?}"),
        }
    }

    /// A loopback connection: the server end (as the listener hands it to
    /// the acceptor) and the client end.
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn over_the_cap_connections_are_closed_and_permits_come_back() {
        use tokio::io::AsyncWriteExt as _;
        let acceptor = ConnAcceptor::new(axum_server::accept::DefaultAcceptor, limits());
        let (server, mut client) = tcp_pair().await;
        client.write_all(b"G").await.unwrap();
        let (first, ()) = acceptor.accept(server, ()).await.unwrap();

        let (server, mut client2) = tcp_pair().await;
        client2.write_all(b"G").await.unwrap();
        let refused = acceptor.accept(server, ()).await.err().unwrap();
        assert!(
            refused.to_string().contains("connection limit"),
            "{refused}"
        );
        let mut buf = [0u8; 8];
        let closed = tokio::io::AsyncReadExt::read(&mut client2, &mut buf).await;
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

        drop(first);
        let (server, mut client3) = tcp_pair().await;
        client3.write_all(b"G").await.unwrap();
        assert!(acceptor.accept(server, ()).await.is_ok());
    }

    #[tokio::test]
    async fn a_connection_that_never_speaks_is_closed_after_the_idle_timeout() {
        let acceptor = ConnAcceptor::new(axum_server::accept::DefaultAcceptor, limits());
        let (server, _client) = tcp_pair().await;
        let started = Instant::now();
        let err = acceptor.accept(server, ()).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_fired_after(started.elapsed(), IDLE);
        // Its permit is back.
        assert_eq!(acceptor.permits.available_permits(), 1);
    }
}
