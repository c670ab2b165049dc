//! Which addresses article pages may be fetched from: public ones only, unless the user opted in.
//!
//! A feed's items are written by whoever controls the feed, so with `full_text` they could make newsd request
//! internal services (loopback, the LAN, cloud metadata at 169.254.169.254) and store what answers. The check runs
//! on resolved addresses (a DNS resolver for reqwest that drops non-public ones) and on IP literals in URLs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A name that resolved only to non-public addresses (the first one named).
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to non-public address {addr}")]
pub struct NonPublicAddress {
    pub host: String,
    pub addr: IpAddr,
}

/// Whether an address is reachable on the public internet (not loopback, private, link-local, CGNAT, unique-local,
/// documentation, benchmarking, multicast, broadcast, reserved or unspecified; IPv4 embedded in IPv6 is judged as
/// IPv4).
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => is_public_v6(a),
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_broadcast()
        || a.is_documentation()
        || a.is_multicast()
        || o0 == 0 // "this network"
        || (o0 == 100 && (o1 & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o0 == 192 && o1 == 0 && o2 == 0) // IETF protocol assignments 192.0.0.0/24
        || (o0 == 198 && (o1 & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o0 >= 240) // reserved 240.0.0.0/4
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = a.segments();
    // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form (::a.b.c.d) carry an IPv4 address.
    if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) || s[0..6] == [0; 6] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        if s[0..6] == [0; 6] && (a.is_loopback() || a.is_unspecified()) {
            return false;
        }
        return is_public_v4(v4);
    }
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x0100 && s[1..4] == [0; 3])) // discard-only 100::/64
}

/// A reqwest resolver that keeps only public addresses; a name with none left is refused with
/// [`NonPublicAddress`] (found again in the reqwest error's source chain).
pub struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let first_refused = all.iter().find(|a| !is_public(a.ip())).map(|a| a.ip());
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            match (public.is_empty(), first_refused) {
                (true, Some(addr)) => Err(Box::new(NonPublicAddress { host, addr }) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(public.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn refuses_non_public_ranges() {
        for a in [
            "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
            "100.127.255.254", "0.0.0.0", "0.1.2.3", "255.255.255.255", "192.0.2.1", "198.51.100.7", "203.0.113.9",
            "198.18.0.1", "224.0.0.1", "240.0.0.1", "192.0.0.8", "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1",
            "fec0::1", "2001:db8::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254",
            "64:ff9b::a00:1", "::127.0.0.1",
        ] {
            assert!(!public(a), "{a} must be refused");
        }
    }

    #[test]
    fn accepts_public_addresses() {
        for a in ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(public(a), "{a} is public");
        }
    }

    #[test]
    fn url_normalises_numeric_ipv4_forms() {
        // The literal check relies on url's WHATWG parsing turning these into 127.0.0.1.
        for u in ["http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://127.1/", "http://0x7f000001/"] {
            let url = url::Url::parse(u).unwrap();
            assert_eq!(url.host(), Some(url::Host::Ipv4(Ipv4Addr::new(127, 0, 0, 1))), "{u}");
        }
    }
}
