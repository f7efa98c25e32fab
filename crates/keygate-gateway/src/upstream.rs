//! Connections to the upstream: hyper's low-level HTTP/1 client over a pool of keep-alive
//! connections per thread (issue 13's decision: no task or thread hop per request that nginx
//! does not make).
//!
//! keygate serves on one thread per core, and a connection's task runs on the thread that opened
//! it, so each thread keeps its own connections: checking one out is a look at a short list, with
//! no lock and no hashing of a pool key (hyper-util's pooled client hashed the upstream's scheme
//! and authority with SipHash three times per request and took a lock twice; docs/benchmarks.md).
//!
//! A connection is back in its thread's list as soon as the response's head has arrived; hyper
//! reports it ready for the next request ([`SendRequest::is_ready`]) only once that response has
//! arrived whole, so a checkout takes the most recently used ready one and drops closed ones
//! (the upstream closed an idle connection, or a response was abandoned midway, which closes it).
//! A connection left unused for the pool's idle timeout is closed at the next checkout rather
//! than used (a firewall or load balancer between keygate and the upstream may have dropped it
//! without a word, and a request written into it would wait for the response timeout). A
//! request that a pooled connection refused before sending anything (it was closing) is tried
//! on the next one, then on a new connection; one that was sent is never sent again (a POST must
//! not run twice).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use thread_local::ThreadLocal;
use tower_service::Service as _;

/// Connections kept per thread at most, idle or busy; beyond that a connection is closed after
/// its exchange. More than the concurrent requests one thread forwards in any sane deployment.
const MAX_PER_THREAD: usize = 1_024;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made within the connect timeout (or at all): nothing reached the
    /// upstream.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange failed once the request was on its way (or the upstream closed a new
    /// connection before taking it).
    Exchange(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "could not connect: {e}"),
            Self::Exchange(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) => Some(&**e),
            Self::Exchange(e) => Some(e),
        }
    }
}

/// Keep-alive HTTP/1.1 connections to one upstream `host:port`, per thread. Requests with a body
/// of type `B` (streamed as it arrives).
pub struct Pool<B: Send> {
    /// `http://host:port`, what a new connection is opened to.
    uri: Uri,
    /// Opens connections: hyper-util's connector, which resolves the name, spreads the connect
    /// timeout over its addresses and falls back from IPv6 to IPv4 (happy eyeballs).
    connector: HttpConnector,
    /// The `Host` header every request carries.
    host: HeaderValue,
    idle_timeout: Duration,
    connections: ThreadLocal<RefCell<Vec<Kept<B>>>>,
}

/// A connection a thread keeps, with when it was last handed a request.
type Kept<B> = (SendRequest<B>, Instant);

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A pool for the upstream at `authority` (its `host[:port]` is the `Host` header; the port
    /// is 80 when it names none), opening connections within `connect_timeout` and closing one
    /// left unused for `idle_timeout`.
    #[must_use]
    pub fn new(authority: &Authority, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        // A request is small and complete when written: Nagle's algorithm would only delay it.
        connector.set_nodelay(true);
        // `Host` as HTTP clients write it (RFC 9110 §7.2): the host, and the port unless it is
        // the scheme's default; never userinfo.
        let host = match authority.port_u16() {
            Some(port) if port != 80 => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        Self {
            // The connector takes the host and port (80 when none is named) from this URI.
            uri: Uri::builder()
                .scheme("http")
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .unwrap_or_default(),
            connector,
            host: HeaderValue::from_str(&host).unwrap_or_else(|_| HeaderValue::from_static("")),
            idle_timeout,
            connections: ThreadLocal::new(),
        }
    }

    /// Sends `request` (origin-form target, `/path?query`; its `Host` is set to the upstream's)
    /// on a ready connection of this thread, or a new one, and answers the response's head; its
    /// body streams from the connection.
    ///
    /// # Errors
    /// [`SendError::Connect`] when no connection could be opened, [`SendError::Exchange`] when the
    /// exchange failed.
    pub async fn send(&self, mut request: Request<B>) -> Result<Response<Incoming>, SendError> {
        request.headers_mut().insert(HOST, self.host.clone());
        // When the connection is handed this request: its idle time starts from here.
        let now = Instant::now();
        loop {
            let (mut connection, pooled) = match self.checkout(now) {
                Some(connection) => (connection, true),
                None => (self.connect().await?, false),
            };
            match connection.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(connection, now);
                    return Ok(response);
                }
                Err(mut refused) => match refused.take_message() {
                    // Not sent: a pooled connection was closing. The next one may take it.
                    Some(unsent) if pooled => request = unsent,
                    _ => return Err(SendError::Exchange(refused.into_error())),
                },
            }
        }
    }

    /// This thread's most recently used connection that is ready for a request (the one least
    /// likely to have been closed by the upstream meanwhile). Closed ones, and ready ones unused
    /// for the idle timeout, are dropped on the way; a busy one (its response still streaming)
    /// counts as used now, so its idle time starts when it is free.
    fn checkout(&self, now: Instant) -> Option<SendRequest<B>> {
        let mut connections = self.connections.get_or_default().borrow_mut();
        connections.retain_mut(|(c, used)| {
            if c.is_closed() {
                return false;
            }
            if !c.is_ready() {
                *used = now;
                return true;
            }
            now.saturating_duration_since(*used) < self.idle_timeout
        });
        // Kept in the order they were last used: the most recent is last.
        let ready = connections.iter().rposition(|(c, _)| c.is_ready())?;
        Some(connections.remove(ready).0)
    }

    /// Keeps `connection`, handed a request at `used`, for a later request on this thread (it is
    /// ready again once the current response has arrived).
    fn checkin(&self, connection: SendRequest<B>, used: Instant) {
        let mut connections = self.connections.get_or_default().borrow_mut();
        if connections.len() < MAX_PER_THREAD && !connection.is_closed() {
            connections.push((connection, used));
        }
    }

    /// A new connection, its task spawned on this thread's runtime.
    async fn connect(&self) -> Result<SendRequest<B>, SendError> {
        let stream = self.connector.clone().call(self.uri.clone()).await.map_err(|e| SendError::Connect(e.into()))?;
        let (sender, connection) = http1::handshake(stream).await.map_err(SendError::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "an upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// An upstream answering each request with the number of its connection (`1`, `2`, …) on
    /// keep-alive connections; counts the connections made.
    async fn upstream() -> (Authority, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = listener.local_addr().expect("an address").to_string().parse().expect("an authority");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let connection = counted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0; 1024];
                    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let slow = buf.starts_with(b"GET /slow ");
                            buf.drain(..end + 4);
                            // `/slow`: the body's last byte comes 200 ms after the rest.
                            let body = format!("{connection}{}", if slow { "." } else { "" });
                            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                            let (now, later) = answer.split_at(answer.len() - usize::from(slow));
                            if stream.write_all(now.as_bytes()).await.is_err() {
                                return;
                            }
                            if slow {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                if stream.write_all(later.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    async fn read(response: Response<Incoming>) -> String {
        let body = response.into_body().collect().await.expect("a body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The number of the upstream connection that answered.
    async fn get(pool: &Pool<Empty<Bytes>>) -> String {
        let request = Request::get("/v1/calls").body(Empty::new()).expect("a request");
        read(pool.send(request).await.expect("an answer")).await
    }

    #[tokio::test]
    async fn connections_are_reused_until_idle_too_long() {
        let (authority, accepted) = upstream().await;
        let idle = Duration::from_millis(200);
        let pool = Pool::new(&authority, Duration::from_secs(5), idle);
        assert_eq!(get(&pool).await, "1");
        assert_eq!(get(&pool).await, "1", "the second request reused the first connection");
        tokio::time::sleep(idle * 2).await;
        assert_eq!(get(&pool).await, "2", "a connection idle too long is not used again");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A connection whose response is still arriving is not handed another request; once free,
    /// the most recently used one is taken (the others may close idle).
    #[tokio::test]
    async fn a_busy_connection_waits_and_the_last_used_is_taken() {
        let (authority, accepted) = upstream().await;
        let pool = Pool::new(&authority, Duration::from_secs(5), Duration::from_secs(60));
        let request = Request::get("/slow").body(Empty::new()).expect("a request");
        let arriving = pool.send(request).await.expect("an answer");
        assert_eq!(get(&pool).await, "2", "the first connection is still receiving a body");
        assert_eq!(read(arriving).await, "1.");
        for _ in 0..3 {
            assert_eq!(get(&pool).await, "2", "the connection used last");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        // Bound and never listening, so connecting is refused, and held so nothing else takes it.
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let port = socket.local_addr().expect("an address");
        let pool: Pool<Empty<Bytes>> = Pool::new(
            &port.to_string().parse().expect("an authority"),
            Duration::from_secs(5),
            Duration::from_secs(60),
        );
        let request = Request::get("/").body(Empty::new()).expect("a request");
        assert!(matches!(pool.send(request).await, Err(SendError::Connect(_))));
    }
}
