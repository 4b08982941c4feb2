//! IP networks (`10.0.0.0/8`, `fe80::/10`): parsing and membership, for the blocked ranges
//! and for `--http-allow` patterns.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address and a prefix length; a single address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `addr`'s first `prefix` bits; `None` when `prefix` is too long or
    /// `addr` has bits set past it (`10.0.0.5/8` is more likely a typo than a network).
    pub(crate) fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let net = Self { addr, prefix };
        (prefix <= net.width() && net.mask_of(addr) == bits(addr)).then_some(net)
    }

    /// The network holding only `addr`.
    pub(crate) fn single(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix }
    }

    /// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it maps,
    /// since addresses are matched in their canonical form.
    pub(crate) fn to_canonical(self) -> Self {
        match self.addr {
            IpAddr::V6(v6) if self.prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Self {
                    addr: IpAddr::V4(v4),
                    prefix: self.prefix - 96,
                },
                None => self,
            },
            _ => self,
        }
    }

    /// `ip` is in this network (an IPv4 network holds no IPv6 address and back).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4() && self.mask_of(ip) == bits(self.addr)
    }

    fn width(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// `ip`'s bits with those past the prefix cleared (in the low bits of a u128 for IPv4).
    fn mask_of(&self, ip: IpAddr) -> u128 {
        let host_bits = u32::from(self.width() - self.prefix);
        bits(ip)
            .checked_shr(host_bits)
            .unwrap_or(0)
            .checked_shl(host_bits)
            .unwrap_or(0)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// `ADDR` or `ADDR/PREFIX`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((addr, prefix)) = s.split_once('/') else {
            let addr: IpAddr = s
                .parse()
                .map_err(|_| format!("`{s}` is not an IP address"))?;
            return Ok(Self::single(addr));
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("`{prefix}` is not a prefix length"))?;
        Self::new(addr, prefix).ok_or_else(|| {
            format!(
                "`{s}` is not a network: the prefix is too long or the address has bits set past it"
            )
        })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == self.width() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// A network known to be well formed, for the tables of blocked ranges.
pub(crate) const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpNet {
    IpNet {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)),
        prefix,
    }
}

/// An IPv6 network known to be well formed (the first segments; the rest are zero).
pub(crate) const fn v6(head: [u16; 3], prefix: u8) -> IpNet {
    IpNet {
        addr: IpAddr::V6(std::net::Ipv6Addr::new(
            head[0], head[1], head[2], 0, 0, 0, 0, 0,
        )),
        prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_network_holds_the_addresses_under_its_prefix_only() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.0.0.0")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("::ffff:10.0.0.1")), "families do not mix");
        let net: IpNet = "fe80::/10".parse().unwrap();
        assert!(net.contains(ip("febf::1")));
        assert!(!net.contains(ip("fec0::1")));
    }

    #[test]
    fn a_single_address_and_the_zero_prefix_are_networks_too() {
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        let all6: IpNet = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn parsing_refuses_typos_rather_than_guessing() {
        for bad in [
            "10.0.0.5/8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "host",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_constructors_build_what_parsing_builds() {
        assert_eq!(v4(172, 16, 0, 0, 12), "172.16.0.0/12".parse().unwrap());
        assert_eq!(v6([0xfe80, 0, 0], 10), "fe80::/10".parse().unwrap());
        assert_eq!(v6([0x64, 0xff9b, 1], 48).to_string(), "64:ff9b:1::/48");
    }

    #[test]
    fn an_ipv4_mapped_network_becomes_the_ipv4_network_it_maps() {
        let net: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(net.to_canonical(), "10.0.0.0/8".parse().unwrap());
        let one: IpNet = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(one.to_canonical().to_string(), "127.0.0.1");
        let v6net: IpNet = "fd00::/8".parse().unwrap();
        assert_eq!(v6net.to_canonical(), v6net);
    }
}
