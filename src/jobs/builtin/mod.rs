//! Agents that ship with the binary: `echo` for trying the service, `http` as a connector.

mod echo;
mod http;

pub use echo::Echo;
pub use http::{Http, HttpOptions, secret_may_go_to, secret_references};
