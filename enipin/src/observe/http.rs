//! enipin's HTTP endpoint (`metrics --listen`, and the watcher's metrics and health): hyper's
//! HTTP/1 server, so requests are parsed by a kept library (a request split across TCP segments,
//! pipelining, bad requests), never by hand. What enipin adds is the operations side: bounded
//! connections and time, and an accept loop that survives its errors.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

/// What a handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A `text/plain` reply.
    pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Bounds on what clients can hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connections served at once; further clients wait in the listen backlog. A Prometheus
    /// server holds one keep-alive connection per target, so 64 leaves room for curl and
    /// health checkers while bounding memory and descriptors.
    pub connections: usize,
    /// Time to send a request's headers (slowloris).
    pub header_timeout: Duration,
    /// A connection's whole life (a client that reads its response slowly).
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 64,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(10),
        }
    }
}

/// Binds `addr`, warning when it is reachable from other hosts.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "serving on {addr}, which is not a loopback address: anyone who can \
             reach it can read enipin's metrics. Prefer 127.0.0.1 (a local agent scrapes it), or \
             firewall the port"
        );
    }
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}: choose a free address and port"))
}

/// Serves `handler` on `listener` until the task is dropped. Per-connection errors end that
/// connection only; an accept error (EMFILE under many idle clients, ECONNABORTED) is logged once
/// per run of errors and retried after a pause, never the end of the server.
pub(crate) async fn serve<H>(listener: TcpListener, limits: Limits, handler: H) -> Infallible
where
    H: Fn(&Method, &str) -> Reply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut failing = 0u64;
    loop {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if failing == 0 {
                    tracing::warn!("accepting a connection failed: {e}; retrying every 100 ms");
                }
                failing += 1;
                // EMFILE stays until a connection closes: a pause instead of a busy loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if failing > 0 {
            tracing::info!("accepting connections again after {failing} failed accepts");
            failing = 0;
        }
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let reply = handler(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response(reply)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // One request per connection: a scrape every 15-60 s gains nothing from
                // keep-alive, and no idle connection holds a slot.
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // A timeout or a client's error ends this connection only.
            let _ = tokio::time::timeout(limits.connection_timeout, conn).await;
            drop(slot);
        });
    }
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(reply.content_type),
    );
    resp
}

/// The one route of `enipin metrics --listen`: `GET /metrics`.
pub(crate) fn route_metrics(
    method: &Method,
    path: &str,
    body: impl FnOnce() -> Result<String>,
) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    if path != "/metrics" {
        return Reply::text(StatusCode::NOT_FOUND, "try /metrics\n");
    }
    match body() {
        Ok(text) => Reply {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: text,
        },
        Err(e) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")),
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
    };

    use super::*;

    async fn server(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, limits, |m, p| {
            route_metrics(m, p, || Ok("enipin_up 1\n".into()))
        }));
        addr
    }

    /// Sends `parts` with a pause between them (separate TCP segments), returns the response.
    async fn request(addr: SocketAddr, parts: &[&str]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        for p in parts {
            s.write_all(p.as_bytes()).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("a response within 5 s")
            .unwrap();
        out
    }

    const CLOSE: &str = "Host: x\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn a_request_split_across_segments_is_served() {
        let addr = server(Limits::default()).await;
        let out = request(addr, &["GET /met", "rics HTTP/1.1\r\n", CLOSE]).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("enipin_up 1\n"), "{out}");
    }

    #[tokio::test]
    async fn other_paths_methods_and_garbage_are_refused_and_serving_goes_on() {
        let addr = server(Limits::default()).await;
        let out = request(addr, &["GET / HTTP/1.1\r\n", CLOSE]).await;
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        let out = request(addr, &["POST /metrics HTTP/1.1\r\n", CLOSE]).await;
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        let out = request(addr, &["\x16\x03\x01 not http\r\n\r\n"]).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let out = request(addr, &["GET /metrics HTTP/1.1\r\n", CLOSE]).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }

    #[tokio::test]
    async fn idle_clients_beyond_the_limit_wait_and_time_out_instead_of_starving_the_server() {
        let limits = Limits {
            connections: 4,
            header_timeout: Duration::from_millis(300),
            connection_timeout: Duration::from_secs(1),
        };
        let addr = server(limits).await;
        // Eight idle clients: four hold every slot, four wait in the backlog.
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Served once the header timeout has closed the idle ones (each round: 300 ms).
        let out = request(addr, &["GET /metrics HTTP/1.1\r\n", CLOSE]).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
}
