//! The address ranges refused by default: everything that is not the public internet.
//!
//! From the IANA special-purpose registries (RFC 6890 and successors). An IPv4-mapped IPv6
//! address (`::ffff:a.b.c.d`) and a NAT64 one (`64:ff9b::a.b.c.d`) are judged as the IPv4
//! address they carry, so neither is a way around the IPv4 table.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::net::{IpNet, v4, v6};

/// Why an address is not on the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    Loopback,
    Unspecified,
    Private,
    LinkLocal,
    /// A cloud provider's instance metadata service (169.254.169.254, `fd00:ec2::254`).
    Metadata,
    /// Carrier-grade NAT (100.64.0.0/10).
    Shared,
    Documentation,
    Benchmarking,
    Multicast,
    Broadcast,
    Reserved,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blocked::Loopback => "loopback",
            Blocked::Unspecified => "unspecified",
            Blocked::Private => "private",
            Blocked::LinkLocal => "link-local",
            Blocked::Metadata => "cloud metadata",
            Blocked::Shared => "shared (CGNAT)",
            Blocked::Documentation => "documentation",
            Blocked::Benchmarking => "benchmarking",
            Blocked::Multicast => "multicast",
            Blocked::Broadcast => "broadcast",
            Blocked::Reserved => "reserved",
        })
    }
}

/// First match wins: the more specific entries come first.
const V4: &[(IpNet, Blocked)] = &[
    (v4(169, 254, 169, 254, 32), Blocked::Metadata),
    (v4(255, 255, 255, 255, 32), Blocked::Broadcast),
    (v4(0, 0, 0, 0, 8), Blocked::Unspecified),
    (v4(10, 0, 0, 0, 8), Blocked::Private),
    (v4(100, 64, 0, 0, 10), Blocked::Shared),
    (v4(127, 0, 0, 0, 8), Blocked::Loopback),
    (v4(169, 254, 0, 0, 16), Blocked::LinkLocal),
    (v4(172, 16, 0, 0, 12), Blocked::Private),
    (v4(192, 0, 0, 0, 24), Blocked::Reserved),
    (v4(192, 0, 2, 0, 24), Blocked::Documentation),
    (v4(192, 88, 99, 0, 24), Blocked::Reserved),
    (v4(192, 168, 0, 0, 16), Blocked::Private),
    (v4(198, 18, 0, 0, 15), Blocked::Benchmarking),
    (v4(198, 51, 100, 0, 24), Blocked::Documentation),
    (v4(203, 0, 113, 0, 24), Blocked::Documentation),
    (v4(224, 0, 0, 0, 4), Blocked::Multicast),
    (v4(240, 0, 0, 0, 4), Blocked::Reserved),
];

/// Inside 2000::/3, the only IPv6 block with global unicast addresses; everything outside
/// it is refused too (see [`classify`]).
const V6: &[(IpNet, Blocked)] = &[
    (v6([0x64, 0xff9b, 1], 48), Blocked::Private), // local-use NAT64
    (v6([0x2001, 0, 0], 32), Blocked::Reserved),   // Teredo
    (v6([0x2001, 0x2, 0], 48), Blocked::Benchmarking),
    (v6([0x2001, 0xdb8, 0], 32), Blocked::Documentation),
    (v6([0x2002, 0, 0], 16), Blocked::Reserved), // 6to4: an IPv4 address through a relay
    (v6([0x3fff, 0, 0], 20), Blocked::Documentation),
    (v6([0xfc00, 0, 0], 7), Blocked::Private),
    (v6([0xfe80, 0, 0], 10), Blocked::LinkLocal),
    (v6([0xfec0, 0, 0], 10), Blocked::Private), // site-local, deprecated
    (v6([0xff00, 0, 0], 8), Blocked::Multicast),
];

const GLOBAL_UNICAST_V6: IpNet = v6([0x2000, 0, 0], 3);
const NAT64_V6: IpNet = v6([0x64, 0xff9b, 0], 96);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Why `ip` is refused by default, or `None` for a public address.
pub(crate) fn classify(ip: IpAddr) -> Option<Blocked> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Blocked> {
    lookup(V4, IpAddr::V4(ip))
}

fn classify_v6(ip: Ipv6Addr) -> Option<Blocked> {
    if ip == METADATA_V6 {
        return Some(Blocked::Metadata);
    }
    if ip.is_unspecified() {
        return Some(Blocked::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Blocked::Loopback);
    }
    if NAT64_V6.contains(IpAddr::V6(ip)) {
        let [.., a, b, c, d] = ip.octets();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    lookup(V6, IpAddr::V6(ip))
        .or_else(|| (!GLOBAL_UNICAST_V6.contains(IpAddr::V6(ip))).then_some(Blocked::Reserved))
}

fn lookup(table: &[(IpNet, Blocked)], ip: IpAddr) -> Option<Blocked> {
    table
        .iter()
        .find(|(net, _)| net.contains(ip))
        .map(|(_, blocked)| *blocked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<Blocked> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn loopback_unspecified_and_private_ipv4_ranges_are_blocked() {
        for (ip, blocked) in [
            ("127.0.0.1", Blocked::Loopback),
            ("127.255.0.9", Blocked::Loopback),
            ("0.0.0.0", Blocked::Unspecified),
            ("0.1.2.3", Blocked::Unspecified),
            ("10.0.0.5", Blocked::Private),
            ("172.16.0.1", Blocked::Private),
            ("172.31.255.255", Blocked::Private),
            ("192.168.1.1", Blocked::Private),
            ("169.254.169.254", Blocked::Metadata),
            ("169.254.170.2", Blocked::LinkLocal),
            ("100.64.0.1", Blocked::Shared),
            ("100.127.255.255", Blocked::Shared),
            ("192.0.2.1", Blocked::Documentation),
            ("198.51.100.7", Blocked::Documentation),
            ("203.0.113.9", Blocked::Documentation),
            ("198.18.0.1", Blocked::Benchmarking),
            ("198.19.255.255", Blocked::Benchmarking),
            ("224.0.0.1", Blocked::Multicast),
            ("239.255.255.250", Blocked::Multicast),
            ("240.0.0.1", Blocked::Reserved),
            ("255.255.255.255", Blocked::Broadcast),
            ("192.0.0.8", Blocked::Reserved),
        ] {
            assert_eq!(class(ip), Some(blocked), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_addresses_next_to_the_blocked_ranges_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "93.184.215.14",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv6_special_ranges_are_blocked_and_global_unicast_passes() {
        for (ip, blocked) in [
            ("::1", Blocked::Loopback),
            ("::", Blocked::Unspecified),
            ("fc00::1", Blocked::Private),
            ("fd12:3456::1", Blocked::Private),
            ("fd00:ec2::254", Blocked::Metadata),
            ("fe80::1", Blocked::LinkLocal),
            ("fec0::1", Blocked::Private),
            ("ff02::1", Blocked::Multicast),
            ("2001:db8::1", Blocked::Documentation),
            ("3fff::1", Blocked::Documentation),
            ("2001::1", Blocked::Reserved),
            ("2001:2::1", Blocked::Benchmarking),
            ("2002:a00:1::1", Blocked::Reserved),
            ("64:ff9b:1::1", Blocked::Private),
            ("100::1", Blocked::Reserved),
            ("::10.0.0.1", Blocked::Reserved),
            ("4000::1", Blocked::Reserved),
        ] {
            assert_eq!(class(ip), Some(blocked), "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:82a::200e",
            "2001:4860::8888",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn an_ipv4_mapped_or_nat64_address_is_judged_as_its_ipv4_address() {
        assert_eq!(class("::ffff:127.0.0.1"), Some(Blocked::Loopback));
        assert_eq!(class("::ffff:169.254.169.254"), Some(Blocked::Metadata));
        assert_eq!(class("::ffff:10.0.0.1"), Some(Blocked::Private));
        assert_eq!(class("::ffff:1.1.1.1"), None);
        assert_eq!(class("64:ff9b::10.0.0.1"), Some(Blocked::Private));
        assert_eq!(class("64:ff9b::7f00:1"), Some(Blocked::Loopback));
        assert_eq!(class("64:ff9b::1.1.1.1"), None);
    }
}
