//! A metadata server for the lab and the tests: IMDSv2 (token `PUT`, token-checked `GET`s, the ENI keys
//! under `/latest/meta-data/network/interfaces/macs/`) over a real TCP socket, served by hyper on
//! a thread that entered a test namespace, at [`ADDR`] on that namespace's loopback (so the
//! client in the namespace reaches it without any packet leaving it). Never 169.254.169.254.
//!
//! [`Imds`] is the handle: the ENIs' keys can be changed while a client runs (an address added
//! or removed, `device-number` 0 then the real one, a key missing for a while), faults injected
//! ([`Fault`]: 500s, answers slower than the client's timeout, garbage bodies), tokens expired
//! (401), the port closed (connection refused), and every request is counted with its time.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};

use crate::lab::testbed::Netns;

/// The server's address, on the namespace's loopback: inside 198.18.0.0/15, clear of the lab's
/// subnets (198.18.0.0/24, 198.18.1.0/24).
pub const ADDR: &str = "198.19.169.254";

/// A fault every request meets until cleared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Every request is answered as IMDSv2 would.
    #[default]
    None,
    /// Every request answers this status (500: the service failing).
    Status(u16),
    /// Every answer waits this long first (longer than the client's 1 s timeout).
    Slow(Duration),
    /// The ENI keys answer 200 with a body that is no metadata.
    Garbage,
}

/// One ENI: MAC (`02:..`) and its keys (`local-ipv4s` → "198.18.0.11\n198.18.0.21").
#[derive(Clone, Debug, Default)]
pub struct FakeEni {
    /// `02:...`, as the service lists it.
    pub mac: String,
    /// Key (`local-ipv4s`) → body.
    pub keys: BTreeMap<String, String>,
}

impl FakeEni {
    /// An ENI with every key AWS always has, IPv4 only.
    pub fn new(mac: &str, device: u32, ipv4s: &[&str], subnet: &str) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert("interface-id".into(), format!("eni-0{device:07x}"));
        keys.insert("device-number".into(), device.to_string());
        keys.insert("local-ipv4s".into(), ipv4s.join("\n"));
        keys.insert("subnet-ipv4-cidr-block".into(), subnet.into());
        Self {
            mac: mac.into(),
            keys,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    enis: Vec<FakeEni>,
    /// `/latest/meta-data/mac`.
    primary: String,
    fault: Fault,
    /// Tokens granted and still valid.
    tokens: Vec<String>,
    granted: u64,
    /// Every request: when, method, path, status answered.
    log: Vec<(Instant, String)>,
}

/// The running server; stopped (and its thread joined) on drop.
pub struct Imds {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    /// `true`: the port is closed (connection refused).
    refuse: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Imds {
    /// Adds [`ADDR`] to `ns`'s loopback and serves `enis` (the first is the primary) there.
    pub fn start(ns: &Netns, enis: Vec<FakeEni>) -> Result<Self> {
        ns.ip(&["addr", "add", &format!("{ADDR}/32"), "dev", "lo"])?;
        let shared = Arc::new(Mutex::new(Shared {
            primary: enis.first().map(|e| e.mac.clone()).unwrap_or_default(),
            enis,
            ..Shared::default()
        }));
        let (refuse, refuse_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let (tx, rx) = std::sync::mpsc::channel();
        let name = ns.name().to_owned();
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let run = || -> Result<()> {
                crate::kernel::netns::enter(&name)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(serve(s, refuse_rx, stop_rx, &tx))
            };
            if let Err(e) = run() {
                let _ = tx.send(Err(e));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(5))
            .context("the metadata server did not start within 5 s")??;
        Ok(Self {
            addr,
            shared,
            refuse,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://ADDR:PORT`: what `--metadata-endpoint` gets.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets (`Some`) or removes (`None`) a key of the ENI `mac`.
    pub fn set(&self, mac: &str, key: &str, value: Option<&str>) {
        let mut s = self.shared.lock().unwrap();
        let eni = s
            .enis
            .iter_mut()
            .find(|e| e.mac == mac)
            .unwrap_or_else(|| panic!("no ENI {mac} in the metadata server"));
        match value {
            Some(v) => eni.keys.insert(key.into(), v.into()),
            None => eni.keys.remove(key),
        };
    }

    /// Lists another ENI (after the ones it has).
    pub fn add_eni(&self, eni: FakeEni) {
        self.shared.lock().unwrap().enis.push(eni);
    }

    /// Every request meets `f` from now on (`Fault::None` clears it).
    pub fn fault(&self, f: Fault) {
        self.shared.lock().unwrap().fault = f;
    }

    /// Every token granted so far stops being valid: the next GET with one answers 401.
    pub fn expire_tokens(&self) {
        self.shared.lock().unwrap().tokens.clear();
    }

    /// Closes the port (`true`: connections are refused) or opens it again.
    pub fn refuse(&self, on: bool) {
        self.refuse.send_replace(on);
        // The accept loop drops or binds the listener on its next turn.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.shared.lock().unwrap().log.len()
    }

    /// Tokens granted so far.
    pub fn tokens_granted(&self) -> u64 {
        self.shared.lock().unwrap().granted
    }

    /// `METHOD PATH -> STATUS` of every request since the `since`-th, for failure messages.
    pub fn log(&self, since: usize) -> Vec<String> {
        let s = self.shared.lock().unwrap();
        s.log[since.min(s.log.len())..]
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The most requests served in any one-second window, from the `since`-th request on.
    pub fn peak_per_second(&self, since: usize) -> usize {
        let s = self.shared.lock().unwrap();
        let times: Vec<Instant> = s.log.iter().skip(since).map(|(t, _)| *t).collect();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds an ephemeral port on [`ADDR`], reports it, then accepts until `stop`; while `refuse`
/// the listener is dropped (the port refuses) and bound again on the same port after.
async fn serve(
    shared: Arc<Mutex<Shared>>,
    mut refuse: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    started: &std::sync::mpsc::Sender<Result<SocketAddr>>,
) -> Result<()> {
    let mut listener = Some(TcpListener::bind((ADDR, 0)).await?);
    let addr = listener.as_ref().unwrap().local_addr()?;
    let _ = started.send(Ok(addr));
    // The connections, aborted when the port closes (a kept connection would go on answering).
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let refused = *refuse.borrow();
        match (&listener, refused) {
            (Some(_), true) => {
                listener = None;
                conns.abort_all();
            }
            (None, false) => listener = Some(TcpListener::bind(addr).await?),
            _ => {}
        }
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = refuse.changed() => continue,
            accepted = async { listener.as_ref().unwrap().accept().await }, if listener.is_some() => {
                let Ok((stream, _)) = accepted else { continue };
                let s = Arc::clone(&shared);
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        let s = Arc::clone(&s);
                        async move { Ok::<_, Infallible>(answer(&s, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

const MACS: &str = "/latest/meta-data/network/interfaces/macs/";

async fn answer(
    shared: &Mutex<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let fault = shared.lock().unwrap().fault;
    if let Fault::Slow(d) = fault {
        tokio::time::sleep(d).await;
    }
    let mut s = shared.lock().unwrap();
    let (status, body, ttl) = route(&mut s, &req, fault);
    let line = format!(
        "{} {} -> {}",
        req.method(),
        req.uri().path(),
        status.as_u16()
    );
    s.log.push((Instant::now(), line));
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Some(ttl) = ttl {
        resp.headers_mut().insert(
            "x-aws-ec2-metadata-token-ttl-seconds",
            ttl.parse().expect("digits"),
        );
    }
    resp
}

/// What IMDSv2 answers: (status, body, the token TTL header for a PUT).
fn route(
    s: &mut Shared,
    req: &Request<hyper::body::Incoming>,
    fault: Fault,
) -> (StatusCode, String, Option<String>) {
    let status = |c: u16| StatusCode::from_u16(c).expect("a status code");
    if let Fault::Status(c) = fault {
        return (status(c), "fault\n".into(), None);
    }
    let path = req.uri().path();
    if req.method() == Method::PUT && path == "/latest/api/token" {
        let Some(ttl) = req
            .headers()
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.parse::<u32>().is_ok_and(|t| (1..=21600).contains(&t)))
        else {
            return (status(400), "bad ttl\n".into(), None);
        };
        s.granted += 1;
        let token = format!("token-{}", s.granted);
        s.tokens.push(token.clone());
        return (StatusCode::OK, token, Some(ttl.to_owned()));
    }
    if req.method() != Method::GET {
        return (status(405), String::new(), None);
    }
    let token = req
        .headers()
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok());
    if !token.is_some_and(|t| s.tokens.iter().any(|x| x == t)) {
        return (status(401), String::new(), None);
    }
    if path == "/latest/meta-data/mac" {
        return (StatusCode::OK, s.primary.clone(), None);
    }
    if path == MACS {
        let list: Vec<String> = s.enis.iter().map(|e| format!("{}/", e.mac)).collect();
        return (StatusCode::OK, list.join("\n"), None);
    }
    let Some((mac, key)) = path.strip_prefix(MACS).and_then(|r| r.split_once('/')) else {
        return (status(404), String::new(), None);
    };
    match s
        .enis
        .iter()
        .find(|e| e.mac == mac)
        .and_then(|e| e.keys.get(key))
    {
        Some(_) if fault == Fault::Garbage => (StatusCode::OK, "<html>oops</html>".into(), None),
        Some(v) => (StatusCode::OK, v.clone(), None),
        None => (status(404), String::new(), None),
    }
}
