//! EC2's instance metadata service, IMDSv2: a session token from `PUT /latest/api/token`, sent
//! with every GET; the ENIs under `/latest/meta-data/network/interfaces/macs/<mac>/`.
//!
//! What a key's absence means is decided per key ([`Key::optional`]): a 404 on a key an ENI
//! may lack (prefixes, IPv6, the network card of a single-card instance) is "none"; a 404 on
//! one every ENI has is a key not propagated yet (amazon-ec2-net-utils#38), so the ENI is
//! unknown, never empty.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};

use super::{EniMetadata, transport::Transport};
use crate::model::{Cidr, MacAddr, fmt_mac};

/// The service's addresses: IPv4 link-local, then the IPv6 one (Nitro instances with IPv6
/// metadata enabled). Never contacted by the tests, which pass `--metadata-endpoint`.
pub(crate) const ENDPOINTS: [&str; 2] = ["http://169.254.169.254", "http://[fd00:ec2::254]"];
/// The token's life asked for: six hours, the service's maximum.
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const MACS: &str = "/latest/meta-data/network/interfaces/macs/";

/// An IMDSv2 session.
pub(crate) struct Aws {
    endpoints: Vec<String>,
    /// The endpoint that answered last.
    current: usize,
    token: Option<Token>,
    pub(crate) http: Transport,
}

struct Token {
    value: String,
    /// Renewed from then on: a tenth of its life before it expires.
    renew_at: Instant,
}

/// What a GET found.
enum Got {
    Body(String),
    /// 404.
    Absent,
}

/// The keys of one ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    InterfaceId,
    DeviceNumber,
    NetworkCard,
    LocalIpv4s,
    Ipv6s,
    Ipv4Prefix,
    Ipv6Prefix,
    SubnetV4,
    SubnetV6,
}

impl Key {
    const ALL: [Key; 9] = [
        Key::InterfaceId,
        Key::DeviceNumber,
        Key::NetworkCard,
        Key::LocalIpv4s,
        Key::Ipv6s,
        Key::Ipv4Prefix,
        Key::Ipv6Prefix,
        Key::SubnetV4,
        Key::SubnetV6,
    ];

    fn path(self) -> &'static str {
        match self {
            Key::InterfaceId => "interface-id",
            Key::DeviceNumber => "device-number",
            Key::NetworkCard => "network-card",
            Key::LocalIpv4s => "local-ipv4s",
            Key::Ipv6s => "ipv6s",
            Key::Ipv4Prefix => "ipv4-prefix",
            Key::Ipv6Prefix => "ipv6-prefix",
            Key::SubnetV4 => "subnet-ipv4-cidr-block",
            Key::SubnetV6 => "subnet-ipv6-cidr-blocks",
        }
    }

    /// An ENI may lack it: a 404 means none. The others every ENI has (an IPv4-less ENI
    /// still lists its primary private IPv4): a 404 means not propagated yet.
    fn optional(self) -> bool {
        matches!(
            self,
            Key::NetworkCard | Key::Ipv6s | Key::Ipv4Prefix | Key::Ipv6Prefix | Key::SubnetV6
        )
    }
}

impl Aws {
    /// `endpoint`: `--metadata-endpoint`; `None`: [`ENDPOINTS`], in that order.
    pub(crate) fn new(endpoint: Option<&str>) -> Self {
        let endpoints = match endpoint {
            Some(e) => vec![e.trim_end_matches('/').to_owned()],
            None => ENDPOINTS.iter().map(|e| e.to_string()).collect(),
        };
        Self {
            endpoints,
            current: 0,
            token: None,
            http: Transport::new(),
        }
    }

    /// The endpoints it asks, in order.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A valid token: the cached one, or a new one from the first endpoint that gives one
    /// (starting with the one that answered last).
    async fn token(&mut self) -> Result<String, String> {
        if let Some(t) = &self.token
            && Instant::now() < t.renew_at
        {
            return Ok(t.value.clone());
        }
        self.token = None;
        let mut errors = Vec::new();
        for n in 0..self.endpoints.len() {
            let i = (self.current + n) % self.endpoints.len();
            match self.new_token(i).await {
                Ok(t) => {
                    self.current = i;
                    let value = t.value.clone();
                    self.token = Some(t);
                    return Ok(value);
                }
                Err(e) => errors.push(e),
            }
        }
        Err(format!("no IMDSv2 token: {}", errors.join("; ")))
    }

    async fn new_token(&mut self, endpoint: usize) -> Result<Token, String> {
        let uri = format!("{}/latest/api/token", self.endpoints[endpoint]);
        let req = Request::builder()
            .method(Method::PUT)
            .uri(&uri)
            .header(TOKEN_TTL_HEADER, TOKEN_TTL.as_secs())
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("PUT {uri}: {e}"))?;
        let a = self.http.send(req).await?;
        if a.status != StatusCode::OK {
            return Err(format!("PUT {uri}: HTTP {}", a.status));
        }
        let value = std::str::from_utf8(&a.body)
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| format!("PUT {uri}: the token is not printable ASCII"))?
            .to_owned();
        // The service says how long it granted; a shorter grant is renewed sooner.
        let ttl = a
            .headers
            .get(TOKEN_TTL_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(TOKEN_TTL, Duration::from_secs);
        Ok(Token {
            value,
            renew_at: Instant::now() + ttl - ttl / 10,
        })
    }

    /// GET `path` with the token; a 401 (the token expired or the service restarted) takes a
    /// new token and tries once more.
    async fn get(&mut self, path: &str) -> Result<Got, String> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let uri = format!("{}{path}", self.endpoints[self.current]);
            let req = Request::builder()
                .method(Method::GET)
                .uri(&uri)
                .header(TOKEN_HEADER, token)
                .body(Full::new(Bytes::new()))
                .map_err(|e| format!("GET {uri}: {e}"))?;
            let a = self.http.send(req).await?;
            match a.status {
                StatusCode::OK => {
                    return String::from_utf8(a.body.to_vec())
                        .map(Got::Body)
                        .map_err(|_| format!("GET {uri}: the body is not UTF-8"));
                }
                StatusCode::NOT_FOUND => return Ok(Got::Absent),
                StatusCode::UNAUTHORIZED if attempt == 0 => self.token = None,
                s => return Err(format!("GET {uri}: HTTP {s}")),
            }
        }
        Err(format!("GET {path}: HTTP 401 with a token just granted"))
    }

    /// The ENIs' MACs, and the primary ENI's (`/latest/meta-data/mac`).
    pub(crate) async fn macs(&mut self) -> Result<(Vec<MacAddr>, MacAddr), String> {
        let listing = match self.get(MACS).await? {
            Got::Body(b) => b,
            Got::Absent => return Err(format!("GET {MACS}: HTTP 404")),
        };
        let macs = lines(&listing)
            .map(|l| parse_mac(l.trim_end_matches('/')))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{MACS}: {e}"))?;
        let primary = match self.get("/latest/meta-data/mac").await? {
            Got::Body(b) => {
                parse_mac(b.trim()).map_err(|e| format!("/latest/meta-data/mac: {e}"))?
            }
            Got::Absent => return Err("GET /latest/meta-data/mac: HTTP 404".into()),
        };
        Ok((macs, primary))
    }

    /// Every key of the ENI `mac`; the first failure ends the lookup (the rest would say
    /// nothing more, and cost requests).
    pub(crate) async fn eni(&mut self, mac: MacAddr, primary: bool) -> Result<EniMetadata, String> {
        let base = format!("{MACS}{}/", fmt_mac(&mac));
        let mut m = EniMetadata {
            mac,
            ..EniMetadata::default()
        };
        for key in Key::ALL {
            let body = match self.get(&format!("{base}{}", key.path())).await? {
                Got::Body(b) => b,
                Got::Absent if key.optional() => continue,
                Got::Absent => {
                    return Err(format!(
                        "{base}{}: HTTP 404, though every ENI has it: not propagated yet",
                        key.path()
                    ));
                }
            };
            fill(&mut m, key, &body).map_err(|e| format!("{base}{}: {e}", key.path()))?;
        }
        // A new ENI's device number reads 0 until it propagates (amazon-ec2-net-utils#90): only
        // the primary ENI is device 0.
        if m.device_number == 0 && !primary {
            return Err(format!(
                "{base}device-number: 0, but {} is not the primary ENI: not propagated yet",
                fmt_mac(&mac)
            ));
        }
        Ok(m)
    }
}

/// Parses one key's body into `m`.
fn fill(m: &mut EniMetadata, key: Key, body: &str) -> Result<(), String> {
    match key {
        Key::InterfaceId => {
            let id = body.trim();
            if !id.starts_with("eni-")
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(format!("{id:?} is not an ENI id (eni-...)"));
            }
            m.interface_id = id.to_owned();
        }
        Key::DeviceNumber => m.device_number = number(body)?,
        Key::NetworkCard => m.network_card = Some(number(body)?),
        Key::LocalIpv4s => {
            m.ipv4s = parse_all::<Ipv4Addr>(body)?;
            if m.ipv4s.is_empty() {
                return Err("empty, though every ENI has a primary private IPv4".into());
            }
        }
        Key::Ipv6s => m.ipv6s = parse_all::<Ipv6Addr>(body)?,
        Key::Ipv4Prefix => m.prefixes.extend(networks(body, false)?),
        Key::Ipv6Prefix => m.prefixes.extend(networks(body, true)?),
        Key::SubnetV4 => {
            m.subnets.extend(networks(body, false)?);
        }
        Key::SubnetV6 => m.subnets.extend(networks(body, true)?),
    }
    Ok(())
}

fn lines(body: &str) -> impl Iterator<Item = &str> {
    body.lines().map(str::trim).filter(|l| !l.is_empty())
}

fn number(body: &str) -> Result<u32, String> {
    body.trim()
        .parse()
        .map_err(|_| format!("{:?} is not a number", body.trim()))
}

fn parse_all<T: std::str::FromStr>(body: &str) -> Result<Vec<T>, String> {
    lines(body)
        .map(|l| l.parse().map_err(|_| format!("{l:?} is not an address")))
        .collect()
}

/// CIDRs of the family `v6`, each a network (no host bits).
fn networks(body: &str, v6: bool) -> Result<Vec<Cidr>, String> {
    lines(body)
        .map(|l| {
            let c: Cidr = l.parse()?;
            if c.is_ipv6() != v6 || c.network() != c {
                return Err(format!(
                    "{l:?} is not an IPv{} network",
                    if v6 { 6 } else { 4 }
                ));
            }
            Ok(c)
        })
        .collect()
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?} is not a MAC address"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{s:?} is not a MAC address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_or_say_why() {
        let mut m = EniMetadata::default();
        fill(&mut m, Key::LocalIpv4s, "198.18.0.11\n198.18.0.21\n").unwrap();
        fill(&mut m, Key::Ipv6s, "2001:db8::11").unwrap();
        fill(&mut m, Key::Ipv4Prefix, "198.18.0.64/28").unwrap();
        fill(&mut m, Key::Ipv6Prefix, "2001:db8:0:0:1::/80").unwrap();
        fill(&mut m, Key::SubnetV4, "198.18.0.0/24").unwrap();
        fill(&mut m, Key::InterfaceId, "eni-0123abcd").unwrap();
        fill(&mut m, Key::DeviceNumber, "1\n").unwrap();
        assert_eq!(m.addresses().count(), 3);
        assert_eq!(m.prefixes.len(), 2);
        assert_eq!(m.device_number, 1);
        let e = |k, b| fill(&mut EniMetadata::default(), k, b).unwrap_err();
        assert_eq!(e(Key::LocalIpv4s, "<html>"), "\"<html>\" is not an address");
        assert_eq!(
            e(Key::LocalIpv4s, ""),
            "empty, though every ENI has a primary private IPv4"
        );
        assert_eq!(
            e(Key::Ipv4Prefix, "198.18.0.65/28"),
            "\"198.18.0.65/28\" is not an IPv4 network"
        );
        assert_eq!(
            e(Key::Ipv4Prefix, "2001:db8::/80"),
            "\"2001:db8::/80\" is not an IPv4 network"
        );
        assert_eq!(e(Key::DeviceNumber, "one"), "\"one\" is not a number");
        assert!(e(Key::InterfaceId, "i-123").contains("not an ENI id"));
        assert_eq!(
            parse_mac("02:e0:00:00:00:11").unwrap(),
            [2, 0xe0, 0, 0, 0, 0x11]
        );
        assert!(parse_mac("02:e0:00:00:00").is_err());
        assert!(Key::ALL.iter().filter(|k| k.optional()).count() == 5);
    }
}
