//! The metadata client's HTTP: hyper's HTTP/1 client (no TLS: the services are plain HTTP on
//! link-local addresses), one pooled connection, a short timeout on every request, a cap on the
//! body, and a token bucket in front of it all.
//!
//! The bucket is the request budget. EC2's link-local services share about 1024 packets/s per
//! ENI and drop the excess silently, so throttling looks like timeouts (amazon-ec2-net-utils#120).
//! A request and its answer on a kept connection are 4-6 packets, so [`RATE`] requests/s stay
//! under a tenth of that budget even with every ENI of a large instance asked at once.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, StatusCode};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

/// Requests per second, sustained.
pub(crate) const RATE: f64 = 20.0;
/// Requests sent back to back before the rate applies: one ENI's keys and the listings.
pub(crate) const BURST: f64 = 20.0;
/// Every request's limit, connect included. IMDS answers in about a millisecond; one second
/// tells an outage from a slow answer, and bounds a pass over N ENIs to about N seconds.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(1);
/// A body larger than this is not metadata (the largest, a list of 50 IPv6 addresses, is 2 KiB).
const MAX_BODY: usize = 64 * 1024;

/// A token bucket: at most `burst` requests at once, `rate` per second after that.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token at `now`; returns how long to wait before sending (zero: at once). Tokens
    /// may go negative: each waiting request has reserved its slot.
    pub(crate) fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        // Within rounding of a whole token is a whole token.
        if self.tokens >= -1e-9 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A status and a body, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
}

/// The HTTP client with its budget.
pub(crate) struct Transport {
    client: Client<HttpConnector, Full<Bytes>>,
    bucket: Bucket,
    timeout: Duration,
    /// Requests sent since the start (what the budget is checked against).
    pub(crate) sent: u64,
    /// Those requests by outcome.
    pub(crate) outcomes: Outcomes,
}

/// Requests by outcome, for `enipin_metadata_requests_total{result}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Answered 2xx, or 404 (a key an ENI does not have).
    pub ok: u64,
    /// Answered with another status (5xx, 401, ...).
    pub error: u64,
    /// No answer: refused, timed out, the body cut.
    pub no_answer: u64,
}

impl Outcomes {
    /// What happened since `before`.
    pub fn since(self, before: Outcomes) -> Outcomes {
        Outcomes {
            ok: self.ok - before.ok,
            error: self.error - before.error,
            no_answer: self.no_answer - before.no_answer,
        }
    }

    fn count(&mut self, r: &Result<Answer, String>) {
        match r {
            Ok(a) if a.status.is_success() || a.status == StatusCode::NOT_FOUND => self.ok += 1,
            Ok(_) => self.error += 1,
            Err(_) => self.no_answer += 1,
        }
    }
}

impl Transport {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Kept between passes a few seconds apart; closed when idle longer.
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        Self {
            client,
            bucket: Bucket::new(RATE, BURST),
            timeout: TIMEOUT,
            sent: 0,
            outcomes: Outcomes::default(),
        }
    }

    /// Sends `req` once the budget allows; an error says what failed (timeout, connection,
    /// body), in words for the log.
    pub(crate) async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, String> {
        let wait = self.bucket.take(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.sent += 1;
        let what = format!("{} {}", req.method(), req.uri());
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{what}: {}", describe(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("{what}: reading the body: {e}"))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let r = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{what}: no answer within {} ms",
                self.timeout.as_millis()
            )),
        };
        self.outcomes.count(&r);
        r
    }
}

/// The client error with its causes (hyper's own Display says only "client error (Connect)").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s += &format!(": {c}");
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::new(20.0, 20.0);
        let t0 = b.last;
        for _ in 0..20 {
            assert_eq!(b.take(t0), Duration::ZERO);
        }
        // The 21st waits 50 ms, the 22nd 100 ms: 20 per second.
        assert_eq!(b.take(t0), Duration::from_millis(50));
        assert_eq!(b.take(t0), Duration::from_millis(100));
        // A second later the reservations are paid back and 18 tokens are there again.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..18 {
            assert_eq!(b.take(t1), Duration::ZERO);
        }
        assert!(b.take(t1) > Duration::ZERO);
    }
}
