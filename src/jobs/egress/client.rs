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

use super::{EgressPolicy, Refused};

/// Redirects followed per request; the next one fails the request.
pub const MAX_REDIRECTS: usize = 10;

/// A `reqwest::Client` bound to a policy. Cheap to clone.
///
/// Its resolver is told a host name, never the port it resolves it for, so it opens a
/// blocked address only through an address pattern without a port. An address allowed
/// with `:port` (`127.0.0.1:18401`) is reached only by URLs naming the address itself, on
/// that port, which the check before sending (and before each redirect) judges in full.
#[derive(Debug, Clone)]
pub struct EgressClient {
    policy: EgressPolicy,
    client: reqwest::Client,
    /// The same checks, following no redirect: for requests carrying a named secret,
    /// which must reach only the hosts it is bound to.
    no_redirects: reqwest::Client,
}

impl EgressClient {
    /// Builds `builder` (timeouts, user agent, …) with the policy's resolver and redirect
    /// check, and without proxies.
    pub fn new(policy: EgressPolicy, builder: reqwest::ClientBuilder) -> reqwest::Result<Self> {
        let client = builder
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .redirect(checked_redirects(policy.clone()))
            .no_proxy()
            .build()?;
        let no_redirects = reqwest::Client::builder()
            .user_agent(super::USER_AGENT)
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .redirect(redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self {
            policy,
            client,
            no_redirects,
        })
    }

    /// As [`EgressClient::request`], for a request that follows no redirect (a 3xx is its
    /// answer).
    pub fn request_without_redirects(
        &self,
        method: Method,
        url: &str,
    ) -> Result<RequestBuilder, Refused> {
        let parsed = reqwest::Url::parse(url);
        if let Ok(parsed) = &parsed {
            self.policy.check_url(parsed)?;
        }
        Ok(match parsed {
            Ok(parsed) => self.no_redirects.request(method, parsed),
            Err(_) => self.no_redirects.request(method, url),
        })
    }

    /// A request to `url`, or the refusal of its host. A URL that does not parse is left
    /// to `reqwest`, whose `send` then fails with a builder error.
    pub fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, Refused> {
        match reqwest::Url::parse(url) {
            Ok(parsed) => {
                self.policy.check_url(&parsed)?;
                Ok(self.client.request(method, parsed))
            }
            Err(_) => Ok(self.client.request(method, url)),
        }
    }
}

fn checked_redirects(policy: EgressPolicy) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        // `previous` starts with the first URL, as in reqwest's own limit
        if attempt.previous().len() > MAX_REDIRECTS {
            let error = format!("more than {MAX_REDIRECTS} redirects");
            return attempt.error(error);
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(Refused {
                redirect: true,
                ..refused
            }),
        }
    })
}

/// Resolves with the system resolver (as reqwest does by default), then keeps only the
/// addresses the policy allows to a host name, whatever the port.
struct CheckedResolver {
    policy: EgressPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            policy.check_host(&name, None)?;
            let mut refused = None;
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|addr| match policy.check_resolved(&name, addr.ip()) {
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
    use crate::jobs::egress::{Blocked, Reason};

    fn client(patterns: &[&str]) -> EgressClient {
        let policy = EgressPolicy::new(patterns.iter().map(|p| p.parse().unwrap()).collect());
        EgressClient::new(policy, reqwest::Client::builder()).unwrap()
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
