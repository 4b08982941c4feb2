//! Outbound safety: which destinations the `http` agent, completion webhooks and any agent
//! using [`RunContext::http`](super::RunContext::http) may reach, so that a run cannot be
//! used to probe the network agentq runs in.
//!
//! A destination is judged twice: by the host and port its URL names, before anything is
//! sent (and again for every redirect), and by the addresses that host resolves to, in the
//! client's DNS resolver, so the address connected to is the address checked (a name that
//! resolves to a public address when checked and to a private one when connecting cannot
//! slip through). A URL naming an address is judged in full before sending, since such a
//! URL never reaches the resolver.
//!
//! - **Without `--http-allow`** any host is named, and an address in a blocked range
//!   (loopback, private, link-local with the cloud metadata address, CGNAT, multicast,
//!   documentation and other non-public ranges; see `ranges.rs`) is refused, as are the
//!   cloud metadata host names (`metadata.google.internal`, …).
//! - **With `--http-allow`** a URL's host (and port) must match one of its patterns (see
//!   [`HostPattern`]): names match name patterns, addresses match address and network
//!   patterns, `*` matches any host. The blocked ranges stay refused, except for the
//!   addresses an address or network pattern covers: naming `10.0.5.0/24` is how an
//!   operator opts in to an internal service. A host name pattern never opens a blocked
//!   range, so a name that resolves (or is made to resolve) to `127.0.0.1` is refused even
//!   when the name is allowed; allow the address too (`billing.internal,10.0.5.0/24`).
//!   A metadata host name is reached only when a pattern names it exactly. An address or
//!   network pattern with a port (`127.0.0.1:18401`) opens its addresses on that port
//!   only, and only to URLs (and redirects) naming the address itself: the resolver is
//!   not told the port, so a host name never reaches an address allowed only with a port.
//!
//! A refusal is an error that says what was refused and why, not the resolved address
//! (that would tell a client what the internal DNS answers).

mod client;
mod net;
mod pattern;
mod policy;
mod ranges;
mod refused;

pub use client::{EgressClient, MAX_REDIRECTS};

/// What every outbound request of agentq says it is.
pub(crate) const USER_AGENT: &str = concat!("agentq/", env!("CARGO_PKG_VERSION"));
pub use pattern::{HostPattern, PatternError};
pub use policy::EgressPolicy;
pub use ranges::Blocked;
pub use refused::{Reason, Refused};
