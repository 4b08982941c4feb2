//! [`EgressPolicy`]: the decision, for a URL's host and port and for a resolved address.

use std::net::IpAddr;
use std::sync::Arc;

use super::pattern::{Host, HostPattern};
use super::ranges::{self, Blocked};
use super::refused::{Reason, Refused};

/// Host names of cloud instance metadata services, refused unless a pattern names them.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Which destinations outbound HTTP may reach. The default refuses the blocked ranges and
/// allows every public host; [`EgressPolicy::new`] with patterns allows only what they
/// match. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Arc<[HostPattern]>,
}

impl EgressPolicy {
    /// Only the hosts `allow` matches (see the module docs); an empty list is the default.
    pub fn new(allow: Vec<HostPattern>) -> Self {
        Self {
            allow: allow.into(),
        }
    }

    /// Judges a URL's host and port before anything is sent: in full for an address, by
    /// name and port for a host name (whose addresses the resolver judges).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        match url.host_str() {
            Some(host) => self.check_host(host, url.port_or_known_default()),
            None => Ok(()), // no host, nothing to connect to: the request fails on its own
        }
    }

    /// `host` as a URL names it (an IPv6 address in brackets or not), connected to on
    /// `port`. `port: None` in the resolver, which is not told the port: any pattern's
    /// port then matches the name (the URL's own port was judged before sending), and a
    /// blocked address is opened only by a pattern without a port.
    pub(crate) fn check_host(&self, host: &str, port: Option<u16>) -> Result<(), Refused> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.listed(Host::Addr(ip), port, bare)?;
            return match self.blocked(ip, port) {
                Some(blocked) => Err(Refused::new(bare, Reason::Address(blocked))),
                None => Ok(()),
            };
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if METADATA_NAMES.contains(&name.as_str())
            && !self.allow.iter().any(|p| p.names_exactly(&name))
        {
            return Err(Refused::new(name, Reason::MetadataHost));
        }
        self.listed(Host::Name(&name), port, &name)
    }

    /// Judges an address the host name `name` resolved to: `Err` when it is in a blocked
    /// range that no address pattern without a port opens. The resolver is not told the
    /// port, so an address allowed only with `:port` is never reached through a name.
    pub(crate) fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), Refused> {
        match self.blocked(ip, None) {
            Some(blocked) => Err(Refused::new(name, Reason::ResolvesTo(blocked))),
            None => Ok(()),
        }
    }

    /// Why `ip` is refused on `port` (`None`: a port not known, which only a pattern
    /// without a port covers), whatever host named it.
    fn blocked(&self, ip: IpAddr, port: Option<u16>) -> Option<Blocked> {
        ranges::classify(ip).filter(|_| !self.allow.iter().any(|p| p.covers_address(ip, port)))
    }

    fn listed(&self, host: Host<'_>, port: Option<u16>, target: &str) -> Result<(), Refused> {
        if self.allow.is_empty() || self.allow.iter().any(|p| p.matches(host, port)) {
            Ok(())
        } else {
            Err(Refused::new(target, Reason::NotAllowed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowing(patterns: &[&str]) -> EgressPolicy {
        EgressPolicy::new(patterns.iter().map(|p| p.parse().unwrap()).collect())
    }

    fn url(policy: &EgressPolicy, url: &str) -> Result<(), Reason> {
        policy
            .check_url(&url.parse().unwrap())
            .map_err(|refused| refused.reason)
    }

    fn resolved(policy: &EgressPolicy, ip: &str) -> Result<(), Reason> {
        policy
            .check_resolved("svc.example", ip.parse().unwrap())
            .map_err(|refused| refused.reason)
    }

    #[test]
    fn by_default_public_hosts_pass_and_blocked_addresses_are_refused() {
        let policy = EgressPolicy::default();
        assert_eq!(url(&policy, "https://example.com/x"), Ok(()));
        assert_eq!(url(&policy, "http://93.184.215.14/"), Ok(()));
        for (target, blocked) in [
            ("http://127.0.0.1:8080/", Blocked::Loopback),
            ("http://[::1]/", Blocked::Loopback),
            ("http://169.254.169.254/latest/meta-data", Blocked::Metadata),
            ("http://10.0.0.1/", Blocked::Private),
            ("http://0.0.0.0/", Blocked::Unspecified),
            ("http://[::ffff:127.0.0.1]/", Blocked::Loopback),
            ("http://[fe80::1]/", Blocked::LinkLocal),
            ("http://2130706433/", Blocked::Loopback), // 127.0.0.1, as the URL parser reads it
            ("http://0x7f.1/", Blocked::Loopback),
        ] {
            assert_eq!(
                url(&policy, target),
                Err(Reason::Address(blocked)),
                "{target}"
            );
        }
        assert_eq!(
            resolved(&policy, "127.0.0.1"),
            Err(Reason::ResolvesTo(Blocked::Loopback))
        );
        assert_eq!(resolved(&policy, "1.1.1.1"), Ok(()));
    }

    #[test]
    fn metadata_host_names_are_refused_before_resolution() {
        let policy = EgressPolicy::default();
        for target in [
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://metadata/",
        ] {
            assert_eq!(url(&policy, target), Err(Reason::MetadataHost), "{target}");
        }
        let star = allowing(&["*"]);
        assert_eq!(
            url(&star, "http://metadata.google.internal/"),
            Err(Reason::MetadataHost)
        );
        let named = allowing(&["metadata.google.internal", "169.254.169.254"]);
        assert_eq!(url(&named, "http://metadata.google.internal/"), Ok(()));
    }

    #[test]
    fn with_an_allow_list_only_matching_hosts_and_ports_pass() {
        let policy = allowing(&["api.example.com", "*.hooks.example.com:443", "10.0.5.0/24"]);
        assert_eq!(url(&policy, "https://api.example.com/v1"), Ok(()));
        assert_eq!(url(&policy, "http://api.example.com:8080/"), Ok(()));
        assert_eq!(url(&policy, "https://a.hooks.example.com/"), Ok(()));
        assert_eq!(
            url(&policy, "http://a.hooks.example.com/"),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            url(&policy, "https://example.org/"),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            url(&policy, "http://93.184.215.14/"),
            Err(Reason::NotAllowed)
        );
        assert_eq!(url(&policy, "http://10.0.6.1/"), Err(Reason::NotAllowed));
        assert_eq!(url(&policy, "http://10.0.5.9:9000/"), Ok(()));
    }

    #[test]
    fn only_an_address_pattern_opens_a_blocked_range() {
        let policy = allowing(&["billing.internal", "10.0.5.0/24", "127.0.0.1:9000"]);
        assert_eq!(resolved(&policy, "10.0.5.7"), Ok(()));
        assert_eq!(
            resolved(&policy, "10.0.6.7"),
            Err(Reason::ResolvesTo(Blocked::Private))
        );
        assert_eq!(
            resolved(&policy, "127.0.0.1"),
            Err(Reason::ResolvesTo(Blocked::Loopback)),
            "a name never reaches an address allowed only with a port"
        );
        assert_eq!(url(&policy, "http://127.0.0.1:9000/"), Ok(()));
        assert_eq!(
            url(&policy, "http://127.0.0.1:9001/"),
            Err(Reason::NotAllowed)
        );
        assert_eq!(url(&policy, "http://[::ffff:127.0.0.1]:9000/"), Ok(()));
        let names_only = allowing(&["localhost", "*"]);
        assert_eq!(url(&names_only, "http://localhost:3000/"), Ok(()));
        assert_eq!(
            resolved(&names_only, "127.0.0.1"),
            Err(Reason::ResolvesTo(Blocked::Loopback)),
            "a name pattern never opens a blocked range"
        );
        assert_eq!(
            url(&names_only, "http://10.0.0.1/"),
            Err(Reason::Address(Blocked::Private)),
            "nor does `*`"
        );
    }

    #[test]
    fn an_address_allowed_with_a_port_is_reached_on_that_port_only_whatever_else_is_allowed() {
        // `*` lists every host on every port, but opens no blocked address: only the
        // address pattern does, and only on its port
        let policy = allowing(&["*", "127.0.0.1:18401", "10.0.0.0/8:443", "api.example.com"]);
        assert_eq!(url(&policy, "http://127.0.0.1:18401/"), Ok(()));
        for target in [
            "http://127.0.0.1:18402/",
            "http://127.0.0.1/",
            "https://127.0.0.1/",
            "http://[::ffff:127.0.0.1]:22/",
            "http://2130706433:6379/",
        ] {
            assert_eq!(
                url(&policy, target),
                Err(Reason::Address(Blocked::Loopback)),
                "{target}"
            );
        }
        assert_eq!(url(&policy, "https://10.1.2.3/"), Ok(()));
        assert_eq!(
            url(&policy, "http://10.1.2.3/"),
            Err(Reason::Address(Blocked::Private))
        );
        // a name leading there (`localhost`, or any name resolving to it) is refused on
        // every port: the resolver is not told the port
        assert_eq!(
            resolved(&policy, "127.0.0.1"),
            Err(Reason::ResolvesTo(Blocked::Loopback))
        );
        assert_eq!(
            resolved(&policy, "10.1.2.3"),
            Err(Reason::ResolvesTo(Blocked::Private))
        );
        let open = allowing(&["*", "10.0.0.0/8"]);
        assert_eq!(
            resolved(&open, "10.1.2.3"),
            Ok(()),
            "a network without a port"
        );
    }

    #[test]
    fn the_resolver_judges_names_without_knowing_the_port() {
        let policy = allowing(&["api.example.com:8443"]);
        assert!(policy.check_host("api.example.com", None).is_ok());
        assert!(policy.check_host("other.example.com", None).is_err());
    }

    #[test]
    fn a_refusal_says_what_and_why_without_the_resolved_address() {
        let policy = EgressPolicy::default();
        let refused = policy
            .check_url(&"http://10.0.0.5/x".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refused 10.0.0.5: private address; allow it with --http-allow"
        );
        let refused = policy
            .check_resolved("db.corp", "10.1.2.3".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refused db.corp: it resolves to a private address; allow that address with --http-allow"
        );
        let refused = allowing(&["a.example"])
            .check_url(&"https://b.example/".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refused b.example: not matched by --http-allow"
        );
    }
}
