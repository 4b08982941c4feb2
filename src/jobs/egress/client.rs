//! [`EgressClient`]: a `reqwest` client that reaches only what an [`EgressPolicy`] allows.
//!
//! Three checks, so none can be skipped: the URL before sending (a URL naming an address
//! never reaches a resolver), each redirect's URL in the redirect policy, and every
//! address a host name resolves to in the client's DNS resolver, which drops the refused
//! ones and fails when none remain. Proxies from the environment are not used: through a
//! proxy, the proxy would resolve and connect, out of the policy's sight.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, redirect};

use super::{EgressPolicy, Reason, Refused};

/// Redirects followed per request; the next one fails the request.
pub const MAX_REDIRECTS: usize = 10;

/// A `reqwest::Client` bound to a policy. Cheap to clone.
///
/// A resolver is told a host name, never the port it is resolved for, yet an address
/// allowed with `:port` may be opened on that port only. So there is one client per port
/// class ([`EgressPolicy::port_class`]: each port an address pattern names, and one class
/// for every other port), whose resolver judges for its class, and a request goes through
/// the client of its URL's port. A redirect to an address is judged in full before it is
/// followed; one to a host name stays within its class, or is refused when it would leave
/// a port that an address pattern names for another (the resolver would judge it for the
/// wrong port). Redirects from any other port are followed, judged at least as strictly.
#[derive(Debug, Clone)]
pub struct EgressClient {
    policy: EgressPolicy,
    /// By port class; the first is `None`'s, for every port no address pattern names.
    clients: Arc<[(Option<u16>, reqwest::Client)]>,
}

impl EgressClient {
    /// Builds one client per port class from `builder` (timeouts, user agent, …), each
    /// with the policy's resolver and redirect check, and without proxies.
    pub fn new(
        policy: EgressPolicy,
        builder: impl Fn() -> reqwest::ClientBuilder,
    ) -> reqwest::Result<Self> {
        let clients = policy
            .port_classes()
            .into_iter()
            .map(|class| {
                let client = builder()
                    .dns_resolver(Arc::new(CheckedResolver {
                        policy: policy.clone(),
                        class,
                    }))
                    .redirect(checked_redirects(policy.clone(), class))
                    .no_proxy()
                    .build()?;
                Ok((class, client))
            })
            .collect::<reqwest::Result<Vec<_>>>()?;
        Ok(Self {
            policy,
            clients: clients.into(),
        })
    }

    /// A request to `url`, or the refusal of its host. A URL that does not parse is left
    /// to `reqwest`, whose `send` then fails with a builder error.
    pub fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, Refused> {
        match reqwest::Url::parse(url) {
            Ok(parsed) => {
                self.policy.check_url(&parsed)?;
                let class = parsed
                    .port_or_known_default()
                    .and_then(|port| self.policy.port_class(port));
                Ok(self.client(class).request(method, parsed))
            }
            Err(_) => Ok(self.client(None).request(method, url)),
        }
    }

    fn client(&self, class: Option<u16>) -> &reqwest::Client {
        let (_, client) = self
            .clients
            .iter()
            .find(|(c, _)| *c == class)
            .unwrap_or(&self.clients[0]);
        client
    }
}

/// The redirect check of the client serving port class `class`.
fn checked_redirects(policy: EgressPolicy, class: Option<u16>) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        // `previous` starts with the first URL, as in reqwest's own limit
        if attempt.previous().len() > MAX_REDIRECTS {
            let error = format!("more than {MAX_REDIRECTS} redirects");
            return attempt.error(error);
        }
        let url = attempt.url();
        let refused = match policy.check_url(url) {
            Err(refused) => Some(refused),
            Ok(()) => leaves_port(&policy, class, url),
        };
        match refused {
            None => attempt.follow(),
            Some(refused) => attempt.error(Refused {
                redirect: true,
                ..refused
            }),
        }
    })
}

/// A redirect to a host name on another port class than `class`, when `class` is a port
/// an address pattern names: this client's resolver would open that port's addresses for
/// it. (From the class of other ports it only judges more strictly, so it may follow.)
fn leaves_port(policy: &EgressPolicy, class: Option<u16>, url: &reqwest::Url) -> Option<Refused> {
    let from = class?;
    let host = url.host_str()?;
    let names_address = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    let to = url
        .port_or_known_default()
        .and_then(|p| policy.port_class(p));
    (!names_address && to != class).then(|| Refused::new(host, Reason::LeavesPort(from)))
}

/// Resolves with the system resolver (as reqwest does by default), then keeps only the
/// addresses the policy allows on the ports of `class`.
struct CheckedResolver {
    policy: EgressPolicy,
    class: Option<u16>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let class = self.class;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            policy.check_host(&name, class)?;
            let mut refused = None;
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|addr| match policy.check_resolved(&name, addr.ip(), class) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(host = %name, addr = %addr.ip(), "refused an address the host resolved to");
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match refused {
                Some(refused) if allowed.is_empty() => Err(refused.into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::egress::Blocked;

    fn client(patterns: &[&str]) -> EgressClient {
        let policy = EgressPolicy::new(patterns.iter().map(|p| p.parse().unwrap()).collect());
        EgressClient::new(policy, reqwest::Client::builder).unwrap()
    }

    #[test]
    fn a_url_naming_a_blocked_address_is_refused_before_a_request_exists() {
        let refused = client(&[])
            .request(Method::GET, "http://127.0.0.1:9/")
            .unwrap_err();
        assert_eq!(refused.reason, Reason::Address(Blocked::Loopback));
        assert!(
            client(&[]).request(Method::GET, "not a url").is_ok(),
            "left to reqwest"
        );
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_blocked_address_fails_with_the_refusal_in_the_error_chain() {
        let error = client(&[])
            .request(Method::GET, "http://localhost:9/")
            .unwrap()
            .send()
            .await
            .unwrap_err();
        let refused = Refused::find_in(&error).expect("the refusal is in the chain");
        assert_eq!(refused.target, "localhost");
        assert_eq!(refused.reason, Reason::ResolvesTo(Blocked::Loopback));
    }

    #[tokio::test]
    async fn an_allowed_name_is_still_refused_at_a_blocked_address() {
        let error = client(&["localhost"])
            .request(Method::GET, "http://localhost:9/")
            .unwrap()
            .send()
            .await
            .unwrap_err();
        let refused = Refused::find_in(&error).expect("the refusal is in the chain");
        assert_eq!(refused.reason, Reason::ResolvesTo(Blocked::Loopback));
    }
}
