//! The IMDSv2 client against the test metadata server, one fault at a time: every failure makes
//! the ENI unknown (its last known metadata standing in), never empty; the client recovers
//! after its backoff; the token is cached, renewed on 401; the request rate stays under the
//! budget. The client runs on a thread inside the server's namespace.

use std::time::{Duration, Instant};

use enipin::{
    metadata::{EniMetadata, Scope, Tracker, View},
    settings::config::{Config, MetadataSource},
};
use enipin_tests::{
    Netns,
    imds::{FakeEni, Fault, Imds},
    in_ns, require,
};

const PRIMARY: &str = "02:e0:00:00:00:10";
const SECOND: &str = "02:e0:00:00:00:11";
const MACS: [[u8; 6]; 2] = [[2, 0xe0, 0, 0, 0, 0x10], [2, 0xe0, 0, 0, 0, 0x11]];
/// The longest first backoff (1 s, jittered down to 0.5 s), and a margin.
const AFTER_BACKOFF: Duration = Duration::from_millis(1100);

fn server(ns: &Netns) -> Imds {
    let mut second = FakeEni::new(SECOND, 1, &["198.18.0.11", "198.18.0.21"], "198.18.0.0/24");
    second
        .keys
        .insert("ipv4-prefix".into(), "198.18.0.64/28".into());
    second.keys.insert("ipv6s".into(), "2001:db8::11".into());
    second
        .keys
        .insert("subnet-ipv6-cidr-blocks".into(), "2001:db8::/64".into());
    Imds::start(
        ns,
        vec![
            FakeEni::new(PRIMARY, 0, &["198.18.0.10"], "198.18.0.0/24"),
            second,
        ],
    )
    .expect("starting the metadata server")
}

/// Runs `body` with a tracker for `imds`, on a thread in `ns` with a runtime of its own.
fn with_client<T: Send>(
    ns: &Netns,
    imds: &Imds,
    body: impl AsyncFnOnce(&mut Tracker) -> T + Send,
) -> T {
    require();
    let cfg = Config {
        metadata: MetadataSource::Aws,
        metadata_endpoint: Some(imds.url()),
        ..Config::default()
    };
    in_ns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut t = Tracker::new(&cfg).expect("a tracker for --metadata aws");
            body(&mut t).await
        })
    })
}

fn second(v: &View) -> &EniMetadata {
    v.known
        .get(&MACS[1])
        .unwrap_or_else(|| panic!("no metadata for {SECOND}: {v:?}"))
}

fn addrs(v: &View) -> Vec<String> {
    second(v).addresses().map(|a| a.to_string()).collect()
}

#[test]
fn every_key_of_every_eni_and_the_token_cached() {
    let ns = Netns::new("md-").unwrap();
    let imds = server(&ns);
    let (v1, v2) = with_client(&ns, &imds, async |t| {
        (
            t.refresh(&MACS, Scope::All).await,
            t.refresh(&MACS, Scope::All).await,
        )
    });
    assert!(v1.unknown.is_empty(), "{v1:?}");
    let m = second(&v1);
    assert_eq!(addrs(&v1), ["198.18.0.11", "198.18.0.21", "2001:db8::11"]);
    assert_eq!(m.prefixes, ["198.18.0.64/28".parse().unwrap()]);
    assert_eq!(m.subnets.len(), 2);
    assert_eq!((m.device_number, m.network_card), (1, None));
    assert_eq!(m.interface_id, "eni-00000001");
    assert_eq!(
        v1.known[&MACS[0]].device_number, 0,
        "the primary is device 0"
    );
    // The token, the listing and the primary's MAC, then 9 keys per ENI; one token for both.
    assert_eq!(v1.requests, 1 + 2 + 9 * 2, "{:?}", imds.log(0));
    assert_eq!(v2.requests, 2 + 9 * 2, "{:?}", imds.log(0));
    assert_eq!(imds.tokens_granted(), 1);
}

/// What a reconcile that finds a new ENI asks ([`Scope::New`]): nothing while every wanted ENI
/// was asked about before (what is known stands), then the listing and the new ENI's 9 keys
/// only, never the others'.
#[test]
fn a_new_scope_asks_only_about_enis_never_asked() {
    let ns = Netns::new("md-").unwrap();
    let imds = server(&ns);
    const THIRD: &str = "02:e0:00:00:00:12";
    let third = [2, 0xe0, 0, 0, 0, 0x12];
    let (full, same, new) = with_client(&ns, &imds, async |t| {
        let full = t.refresh(&MACS, Scope::All).await;
        let same = t.refresh(&MACS, Scope::New).await;
        imds.add_eni(FakeEni::new(THIRD, 2, &["198.18.0.12"], "198.18.0.0/24"));
        let new = t.refresh(&[MACS[0], MACS[1], third], Scope::New).await;
        (full, same, new)
    });
    assert_eq!(same.requests, 0, "{:?}", imds.log(0));
    assert_eq!(same.known, full.known, "what is known stands");
    assert_eq!(new.requests, 2 + 9, "{:?}", imds.log(0));
    let asked = imds.log(0).into_iter().skip(full.requests as usize);
    assert!(
        asked
            .filter(|l| l.contains("/macs/02:"))
            .all(|l| l.contains(THIRD)),
        "{:?}",
        imds.log(0)
    );
    assert_eq!(new.known.len(), 3, "{new:?}");
    assert_eq!(
        new.known[&third].ipv4s,
        ["198.18.0.12".parse::<std::net::Ipv4Addr>().unwrap()]
    );
}

#[test]
fn an_expired_token_is_renewed_on_401_and_nothing_is_unknown() {
    let ns = Netns::new("md-").unwrap();
    let imds = server(&ns);
    let v = with_client(&ns, &imds, async |t| {
        t.refresh(&MACS, Scope::All).await;
        imds.expire_tokens();
        t.refresh(&MACS, Scope::All).await
    });
    assert!(v.unknown.is_empty(), "{v:?}\n{:?}", imds.log(0));
    assert_eq!(imds.tokens_granted(), 2);
    assert_eq!(addrs(&v).len(), 3);
}

/// One fault: the ENI (or all of them) is unknown and its last known metadata stands in; the
/// next pass within the backoff sends nothing; after the fault and the backoff it is known.
fn outage(fault: impl Fn(&Imds) + Sync, clear: impl Fn(&Imds) + Sync, expect: &str) {
    let ns = Netns::new("md-").unwrap();
    let imds = server(&ns);
    let (during, held, after) = with_client(&ns, &imds, async |t| {
        t.refresh(&MACS, Scope::All).await;
        fault(&imds);
        let during = t.refresh(&MACS, Scope::All).await;
        let held = t.refresh(&MACS, Scope::All).await;
        clear(&imds);
        tokio::time::sleep(AFTER_BACKOFF).await;
        (during, held, t.refresh(&MACS, Scope::All).await)
    });
    let why = during
        .unknown
        .get(&MACS[1])
        .unwrap_or_else(|| panic!("not unknown: {during:?}"));
    assert!(why.contains(expect), "{why}");
    assert_eq!(
        addrs(&during).len(),
        3,
        "the last known metadata stands in: {during:?}"
    );
    assert_eq!(held.requests, 0, "backing off: {held:?}");
    assert_eq!(addrs(&held).len(), 3);
    assert!(after.unknown.is_empty(), "{after:?}\n{:?}", imds.log(0));
}

#[test]
fn server_errors_keep_the_last_known_metadata() {
    outage(
        |i| i.fault(Fault::Status(500)),
        |i| i.fault(Fault::None),
        "HTTP 500",
    );
}

#[test]
fn answers_slower_than_the_timeout_keep_the_last_known_metadata() {
    let t = Instant::now();
    outage(
        |i| i.fault(Fault::Slow(Duration::from_millis(1500))),
        |i| i.fault(Fault::None),
        "no answer within 1000 ms",
    );
    // One timeout per pass, not one per key: the first failure ends the lookup.
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
}

#[test]
fn a_refused_connection_keeps_the_last_known_metadata() {
    // The kept connection is closed first ("connection closed before message completed"), then
    // connections are refused.
    outage(|i| i.refuse(true), |i| i.refuse(false), "connection");
    let ns = Netns::new("md-").unwrap();
    let imds = server(&ns);
    let refused = with_client(&ns, &imds, async |t| {
        t.refresh(&MACS, Scope::All).await;
        imds.refuse(true);
        t.refresh(&MACS, Scope::All).await;
        tokio::time::sleep(AFTER_BACKOFF).await;
        t.refresh(&MACS, Scope::All).await
    });
    let why = refused.unknown.get(&MACS[1]).cloned().unwrap_or_default();
    assert!(why.contains("Connection refused"), "{refused:?}");
    assert_eq!(
        addrs(&refused).len(),
        3,
        "the last known metadata stands in"
    );
}

#[test]
fn a_garbage_body_keeps_the_last_known_metadata() {
    outage(
        |i| i.fault(Fault::Garbage),
        |i| i.fault(Fault::None),
        "is not",
    );
}

/// A new ENI's device number reads 0 before it propagates (amazon-ec2-net-utils#90), and a key
/// 404s for a while after its ENI is listed (#38): unknown, never device 0 or no addresses.
#[test]
fn a_new_eni_is_unknown_until_its_keys_propagate() {
    let ns = Netns::new("md-").unwrap();
    let imds = server(&ns);
    imds.set(SECOND, "device-number", Some("0"));
    imds.set(SECOND, "local-ipv4s", None);
    let (missing, zero, known) = with_client(&ns, &imds, async |t| {
        let missing = t.refresh(&MACS, Scope::All).await;
        imds.set(SECOND, "local-ipv4s", Some("198.18.0.11"));
        tokio::time::sleep(AFTER_BACKOFF).await;
        let zero = t.refresh(&MACS, Scope::All).await;
        imds.set(SECOND, "device-number", Some("1"));
        // The second failure backs off 1-2 s.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        (missing, zero, t.refresh(&MACS, Scope::All).await)
    });
    let why = |v: &View| v.unknown.get(&MACS[1]).cloned().unwrap_or_default();
    assert!(
        why(&missing).contains("local-ipv4s: HTTP 404"),
        "{missing:?}"
    );
    assert!(
        !missing.known.contains_key(&MACS[1]),
        "never known: nothing stands in"
    );
    assert!(why(&zero).contains("device-number: 0"), "{zero:?}");
    assert!(
        zero.known.contains_key(&MACS[0]),
        "the primary is device 0 and known"
    );
    assert_eq!(second(&known).device_number, 1, "{known:?}");
}

/// Passes back to back for 1.5 s: the token bucket keeps the rate at 20 requests/s after a
/// burst of 20, whatever the caller does.
#[test]
fn the_request_rate_stays_under_the_budget() {
    let ns = Netns::new("md-").unwrap();
    let imds = server(&ns);
    let t = Instant::now();
    with_client(&ns, &imds, async |tr| {
        while t.elapsed() < Duration::from_millis(1500) {
            tr.refresh(&MACS, Scope::All).await;
        }
    });
    let (n, secs) = (imds.requests(), t.elapsed().as_secs_f64());
    assert!(
        n as f64 <= 20.0 + 20.0 * secs + 1.0,
        "{n} requests in {secs:.2} s"
    );
    assert!(
        n >= 30,
        "{n} requests in {secs:.2} s: the client is slower than the budget"
    );
    let peak = imds.peak_per_second(0);
    assert!(peak <= 41, "{peak} requests in one second");
    println!("{n} requests in {secs:.2} s, at most {peak} in one second");
}

/// Issue 26, item 2: an address metadata lists that no ENI can own (the metadata service's own,
/// one outside the ENI's subnet, the subnet's broadcast address) is left out of what the client
/// returns, and so of what it keeps for an outage: it was planned, and with
/// `--configure-addresses` added and routed, and the service's own address made local locked
/// enipin out of the service for good.
#[test]
fn addresses_no_eni_can_own_are_left_out_and_never_kept() {
    let ns = Netns::new("md-").unwrap();
    let imds = server(&ns);
    let url = imds.url();
    let endpoint = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let listed = format!("198.18.0.11\n198.18.0.21\n{endpoint}\n198.18.7.7\n198.18.0.255");
    imds.set(SECOND, "local-ipv4s", Some(&listed));
    let (fresh, kept) = with_client(&ns, &imds, async |t| {
        let fresh = t.refresh(&MACS, Scope::All).await;
        imds.fault(Fault::Status(500));
        (fresh, t.refresh(&MACS, Scope::All).await)
    });
    assert!(fresh.unknown.is_empty(), "{fresh:?}");
    assert_eq!(
        addrs(&fresh),
        ["198.18.0.11", "198.18.0.21", "2001:db8::11"],
        "listed: {listed:?}"
    );
    assert_eq!(fresh.refused, 3, "{fresh:?}");
    assert!(kept.unknown.contains_key(&MACS[1]), "{kept:?}");
    assert_eq!(kept.refused, 3, "still said while the last known stands in");
    assert_eq!(
        addrs(&kept),
        addrs(&fresh),
        "the last known is the validated one"
    );
}
