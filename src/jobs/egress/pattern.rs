//! `--http-allow` patterns: which hosts (and ports) a URL may name.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::net::IpNet;

/// One `--http-allow` entry: a host part, optionally with `:port`.
///
/// - `api.example.com`: that host name (letters, digits, `-`, `_`, `.`; case-insensitive);
/// - `*.example.com`: any name ending in `.example.com` (not `example.com` itself);
/// - `127.0.0.1`, `::1`, `10.0.0.0/8`, `fd00::/8`: an address or network;
/// - `*`: any host.
///
/// With a port (`api.example.com:8443`, `[::1]:8080`, `10.0.0.0/8:443`; an IPv6 address
/// or network in brackets) only that port matches; without one, any port does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostPart,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPart {
    Any,
    Name(String),
    /// The suffix after `*`, starting with its dot.
    Subdomains(String),
    Net(IpNet),
}

/// Why a pattern was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{pattern}`: {problem}")]
pub struct PatternError {
    pattern: String,
    problem: String,
}

/// A host a URL names, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host<'a> {
    /// Lower-case, without a trailing dot.
    Name(&'a str),
    Addr(IpAddr),
}

impl HostPattern {
    /// `host` on `port` (`None`: whatever the port) is what this pattern names.
    pub(crate) fn matches(&self, host: Host<'_>, port: Option<u16>) -> bool {
        let port_ok = match (self.port, port) {
            (Some(wanted), Some(port)) => wanted == port,
            (Some(_), None) | (None, _) => true,
        };
        port_ok && self.matches_host(host)
    }

    fn matches_host(&self, host: Host<'_>) -> bool {
        match (&self.host, host) {
            (HostPart::Any, _) => true,
            (HostPart::Name(name), Host::Name(host)) => name == host,
            (HostPart::Subdomains(suffix), Host::Name(host)) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            (HostPart::Net(net), Host::Addr(ip)) => net.contains(ip.to_canonical()),
            _ => false,
        }
    }

    /// This pattern names `host` exactly (no wildcard): how a metadata host is allowed.
    pub(crate) fn names_exactly(&self, host: &str) -> bool {
        matches!(&self.host, HostPart::Name(name) if name == host)
    }

    /// This is an address or network holding `ip` on `port`: how a blocked range is
    /// opened. `port: None` stands for a port that no pattern names, which only a pattern
    /// without a port covers: an address allowed with `:port` is opened on that port alone.
    pub(crate) fn covers_address(&self, ip: IpAddr, port: Option<u16>) -> bool {
        let port_ok = self.port.is_none() || self.port == port;
        port_ok && matches!(&self.host, HostPart::Net(net) if net.contains(ip.to_canonical()))
    }
}

impl FromStr for HostPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |problem: &str| PatternError {
            pattern: s.to_owned(),
            problem: problem.to_owned(),
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(fail(
                "empty pattern (unset --http-allow to reach any public host)",
            ));
        }
        if text.contains("://") || text.contains('?') || text.contains('@') {
            return Err(fail(
                "a host pattern, not a URL (like api.example.com or 10.0.0.0/8)",
            ));
        }
        let (host, port) = split_port(text).map_err(|p| fail(&p))?;
        let host = if host == "*" {
            HostPart::Any
        } else if host.contains('/') || host.parse::<IpAddr>().is_ok() {
            let net: IpNet = host.parse().map_err(|p: String| fail(&p))?;
            HostPart::Net(net.to_canonical())
        } else if let Some(suffix) = host.strip_prefix('*') {
            let name = suffix
                .strip_prefix('.')
                .ok_or_else(|| fail("a wildcard is `*.` then a domain"))?;
            HostPart::Subdomains(format!(".{}", domain(name).map_err(|p| fail(&p))?))
        } else {
            HostPart::Name(domain(host).map_err(|p| fail(&p))?)
        };
        Ok(Self { host, port })
    }
}

/// Splits `host:port`, `[v6]:port`, `[v6]` or a bare IPv6 address or network.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` is not a port"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("a `[` without its `]`")?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, Some(port(p)?))),
                None => Err(format!("`{after}` after `]`")),
            },
        };
    }
    match text.split_once(':') {
        None => Ok((text, None)),
        Some((_, p)) if p.contains(':') => Ok((text, None)), // IPv6, without a port
        Some((host, p)) => Ok((host, Some(port(p)?))),
    }
}

/// A host name, lower-cased and without its trailing dot.
fn domain(name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(name)
    } else {
        Err("not a host name (letters, digits, `-`, `_`, dots; IDNs in their xn-- form)".into())
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostPart::Any => "*".to_owned(),
            HostPart::Name(name) => name.clone(),
            HostPart::Subdomains(suffix) => format!("*{suffix}"),
            HostPart::Net(net) => net.to_string(),
        };
        match self.port {
            Some(port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> HostPattern {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> Host<'static> {
        Host::Addr(s.parse().unwrap())
    }

    #[test]
    fn an_exact_name_matches_that_name_only_whatever_its_case() {
        let p = pattern("API.Example.com.");
        assert!(p.matches(Host::Name("api.example.com"), Some(443)));
        assert!(!p.matches(Host::Name("example.com"), Some(443)));
        assert!(!p.matches(Host::Name("evil-api.example.com"), Some(443)));
        assert!(!p.matches(Host::Name("api.example.com.evil.org"), Some(443)));
        assert!(p.names_exactly("api.example.com"));
    }

    #[test]
    fn a_wildcard_matches_subdomains_at_any_depth_but_not_the_domain_itself() {
        let p = pattern("*.example.com");
        assert!(p.matches(Host::Name("a.example.com"), None));
        assert!(p.matches(Host::Name("a.b.example.com"), None));
        assert!(!p.matches(Host::Name("example.com"), None));
        assert!(!p.matches(Host::Name("badexample.com"), None));
        assert!(!p.matches(ip("93.184.215.14"), None));
        assert!(!p.names_exactly("a.example.com"));
    }

    #[test]
    fn addresses_and_networks_match_addresses_including_ipv4_mapped_ones() {
        let p = pattern("10.0.0.0/8");
        assert!(p.matches(ip("10.1.2.3"), Some(80)));
        assert!(p.matches(ip("::ffff:10.1.2.3"), Some(80)));
        assert!(!p.matches(ip("11.0.0.1"), Some(80)));
        assert!(!p.matches(Host::Name("ten.example"), Some(80)));
        assert!(p.covers_address("10.9.9.9".parse().unwrap(), None));
        let p = pattern("::ffff:127.0.0.1");
        assert!(p.matches(ip("127.0.0.1"), None));
        assert!(pattern("::1").matches(ip("::1"), None));
        assert!(pattern("fd00::/8").matches(ip("fd12::1"), None));
        assert!(!pattern("127.0.0.1").matches(ip("127.0.0.2"), None));
    }

    #[test]
    fn a_port_restricts_the_match_to_that_port() {
        let p = pattern("api.example.com:8443");
        assert!(p.matches(Host::Name("api.example.com"), Some(8443)));
        assert!(!p.matches(Host::Name("api.example.com"), Some(443)));
        assert!(pattern("[::1]:8080").matches(ip("::1"), Some(8080)));
        assert!(!pattern("[::1]:8080").matches(ip("::1"), Some(8081)));
        assert!(pattern("10.0.0.0/8:443").matches(ip("10.0.0.1"), Some(443)));
        assert!(!pattern("10.0.0.0/8:443").matches(ip("10.0.0.1"), Some(80)));
        assert!(pattern("[fd00::/8]:443").matches(ip("fd00::1"), Some(443)));
        assert!(pattern("*:443").matches(Host::Name("anything.example"), Some(443)));
        let limited = pattern("10.0.0.0/8:443");
        let ten = "10.0.0.1".parse().unwrap();
        assert!(limited.covers_address(ten, Some(443)));
        assert!(
            !limited.covers_address(ten, Some(80)) && !limited.covers_address(ten, None),
            "a network allowed with a port opens its addresses on that port only"
        );
    }

    #[test]
    fn the_star_matches_every_host_but_opens_no_blocked_address() {
        let p = pattern("*");
        assert!(p.matches(Host::Name("example.org"), Some(1)));
        assert!(p.matches(ip("10.0.0.1"), Some(1)));
        assert!(!p.covers_address("10.0.0.1".parse().unwrap(), Some(1)));
        assert!(!p.names_exactly("metadata.google.internal"));
    }

    #[test]
    fn patterns_print_as_they_parse() {
        for s in [
            "api.example.com",
            "*.example.com:8443",
            "10.0.0.0/8",
            "127.0.0.1:9000",
            "[::1]:8080",
            "*",
        ] {
            assert_eq!(pattern(s).to_string(), s);
        }
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        for (bad, says) in [
            ("", "empty"),
            ("https://api.example.com", "not a URL"),
            ("api.example.com:http", "not a port"),
            ("api.example.com:0", "not a port"),
            ("api.example.com:70000", "not a port"),
            ("*example.com", "wildcard"),
            ("a.*.example.com", "not a host name"),
            ("10.0.0.5/8", "not a network"),
            ("bad host", "not a host name"),
            ("[::1", "`]`"),
            ("a..b", "not a host name"),
        ] {
            let e = bad.parse::<HostPattern>().expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
