//! The one connection to Redis that delivery shares (feeder, reconciler, every apalis
//! worker), standalone or behind Sentinel.
//!
//! A standalone server is one `ConnectionManager`, which reconnects by itself. Behind
//! Sentinel (`redis+sentinel://`), the manager is that of the master Sentinel names; when a
//! command fails the way a failover makes it fail (the connection lost or refused, a
//! timeout, `READONLY` from a demoted master), Sentinel is asked again and, if it names
//! another master, later commands go there. The failed command's caller sees its error
//! and does what it does with any Redis error (a worker restarts, the feeder tries again
//! at its next poll), so nothing is lost: the runs table is the record.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture};

use crate::telemetry::redacted;

/// Where delivery's Redis is.
pub(crate) enum Target {
    /// One server (standalone, or a managed service's endpoint).
    Server(Client),
    /// The master of `service`, as the Sentinels name it.
    Sentinel {
        sentinels: Vec<ConnectionInfo>,
        service: String,
        /// How to reach the master: its user, password and database.
        node: SentinelNodeConnectionInfo,
    },
}

/// Parses `redis+sentinel://[user[:password]@]host:port[,host:port…]/service[/db]`
/// `[?sentinel_username=…&sentinel_password=…]`: the user and password are the Redis
/// servers' (the master's, as ACLs name it); the Sentinels' own, when they have one, are
/// in the query. The error never holds a password.
pub(crate) fn parse_sentinel_url(url: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("--queue-url {}: {why}", redacted(url));
    let rest = url
        .strip_prefix("redis+sentinel://")
        .ok_or_else(|| bad("not a redis+sentinel:// URL"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let service = segments
        .next()
        .ok_or_else(|| bad("name the master's service after the hosts, like /mymaster"))?;
    let db = match segments.next() {
        Some(db) => db
            .parse::<i64>()
            .map_err(|_| bad("the database after the service must be a number"))?,
        None => 0,
    };
    if segments.next().is_some() {
        return Err(bad("expected /service[/db] after the hosts"));
    }
    let mut sentinel_username = None;
    let mut sentinel_password = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sentinel_username" => sentinel_username = Some(value.into_owned()),
            "sentinel_password" => sentinel_password = Some(value.into_owned()),
            other => return Err(bad(&format!("unknown parameter `{other}`"))),
        }
    }
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() || !host.contains(':') {
            return Err(bad("each Sentinel is host:port (comma-separated)"));
        }
        let mut info = format!("redis://{host}")
            .into_connection_info()
            .map_err(|e| bad(&format!("Sentinel `{host}`: {e}")))?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &sentinel_username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &sentinel_password {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        sentinels.push(info);
    }
    // the master's user, password and database, decoded as a redis:// URL's would be
    let master = match userinfo {
        Some(userinfo) => format!(
            "redis://{userinfo}@{}/{db}",
            hosts.split(',').next().unwrap_or_default()
        ),
        None => format!(
            "redis://{}/{db}",
            hosts.split(',').next().unwrap_or_default()
        ),
    }
    .into_connection_info()
    .map_err(|_| bad("the user or password does not parse (percent-encode it)"))?;
    let node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(master.redis_settings().clone());
    Ok(Target::Sentinel {
        sentinels,
        service: service.to_owned(),
        node,
    })
}

/// The default 500 ms response timeout would kill workers on a slow script; reconnects
/// back off up to 2 s.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        // a TLS handshake is a few round trips more than a TCP connect
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_max_delay(Duration::from_secs(2))
}

/// How often, at most, Sentinel is asked again after errors.
const RESOLVE_AT_MOST_EVERY: Duration = Duration::from_millis(500);

/// Delivery's connection (see the module docs). Cheap to clone; clones share it.
#[derive(Clone)]
pub(crate) struct QueueConn(Arc<Shared>);

struct Shared {
    current: RwLock<Current>,
    /// Behind Sentinel: how to find the master again.
    sentinel: Option<tokio::sync::Mutex<Resolver>>,
}

struct Current {
    manager: ConnectionManager,
    /// The client of that server, for connections of their own (the wake-up
    /// subscription).
    client: Client,
    /// The server it talks to, as `host:port`.
    address: String,
}

struct Resolver {
    client: SentinelClient,
    last: Option<Instant>,
}

impl QueueConn {
    /// Connects to the server, or to the master Sentinel names.
    pub(crate) async fn connect(target: Target) -> Result<Self, String> {
        match target {
            Target::Server(client) => {
                let address = client.get_connection_info().addr().to_string();
                let manager = client
                    .get_connection_manager_with_config(manager_config())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Self(Arc::new(Shared {
                    current: RwLock::new(Current {
                        manager,
                        address,
                        client,
                    }),
                    sentinel: None,
                })))
            }
            Target::Sentinel {
                sentinels,
                service,
                node,
            } => {
                let mut client = SentinelClient::build(
                    sentinels,
                    service,
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(|e| format!("Sentinel: {e}"))?;
                let current = master(&mut client).await?;
                Ok(Self(Arc::new(Shared {
                    current: RwLock::new(current),
                    sentinel: Some(tokio::sync::Mutex::new(Resolver { client, last: None })),
                })))
            }
        }
    }

    fn manager(&self) -> ConnectionManager {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .manager
            .clone()
    }

    /// The client of the server commands go to now.
    pub(crate) fn client(&self) -> Client {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .client
            .clone()
    }

    /// The server commands go to now (`host:port`).
    pub(crate) fn address(&self) -> String {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .address
            .clone()
    }

    /// After an error a failover causes, asks Sentinel for the master (at most every
    /// [`RESOLVE_AT_MOST_EVERY`], one caller at a time) and moves to it if it moved.
    async fn after_error(&self, error: &RedisError) {
        let Some(sentinel) = &self.0.sentinel else {
            return;
        };
        let failover = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout()
            || error.code() == Some("READONLY");
        if !failover {
            return;
        }
        // another caller is asking already
        let Ok(mut resolver) = sentinel.try_lock() else {
            return;
        };
        if resolver
            .last
            .is_some_and(|at| at.elapsed() < RESOLVE_AT_MOST_EVERY)
        {
            return;
        }
        resolver.last = Some(Instant::now());
        let was = self.address();
        match master(&mut resolver.client).await {
            Ok(now) if now.address != was => {
                tracing::warn!(from = %was, to = %now.address, "Sentinel names another Redis master: delivery moves to it");
                *self.0.current.write().unwrap_or_else(|e| e.into_inner()) = now;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot ask Sentinel for the Redis master"),
        }
    }
}

/// The master Sentinel names now (checked to be one: the client asks it its role), with a
/// manager connected to it.
async fn master(client: &mut SentinelClient) -> Result<Current, String> {
    let master = client
        .async_get_client()
        .await
        .map_err(|e| format!("Sentinel names no reachable master: {e}"))?;
    let address = master.get_connection_info().addr().to_string();
    let manager = master
        .get_connection_manager_with_config(manager_config())
        .await
        .map_err(|e| format!("the master Sentinel names, {address}: {e}"))?;
    Ok(Current {
        manager,
        address,
        client: master,
    })
}

impl ConnectionLike for QueueConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let answer = self.manager().req_packed_command(cmd).await;
            if let Err(e) = &answer {
                self.after_error(e).await;
            }
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let answer = self
                .manager()
                .req_packed_commands(pipeline, offset, count)
                .await;
            if let Err(e) = &answer {
                self.after_error(e).await;
            }
            answer
        })
    }

    fn get_db(&self) -> i64 {
        self.manager().get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> (Vec<String>, String, Option<String>) {
        match parse_sentinel_url(url).unwrap() {
            Target::Sentinel {
                sentinels, service, ..
            } => (
                sentinels.iter().map(|s| s.addr().to_string()).collect(),
                service,
                sentinels[0].redis_settings().password().map(str::to_owned),
            ),
            Target::Server(_) => unreachable!(),
        }
    }

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_service_and_their_own_password() {
        let (hosts, service, password) = sentinel(
            "redis+sentinel://app:p%40ss@s1:26379,s2:26380/mymaster/2?sentinel_password=x%26y",
        );
        assert_eq!(hosts, ["s1:26379", "s2:26380"]);
        assert_eq!(service, "mymaster");
        assert_eq!(password.as_deref(), Some("x&y"));
        for (url, says) in [
            ("redis+sentinel://s1:26379", "service"),
            ("redis+sentinel://s1/mymaster", "host:port"),
            ("redis+sentinel://s1:1,/mymaster", "host:port"),
            ("redis+sentinel://s1:1/mymaster/zero", "number"),
            (
                "redis+sentinel://s1:1/mymaster?tls=1",
                "unknown parameter `tls`",
            ),
            ("redis+sentinel://u:hunter2@s1:1/a/0/c", "expected /service"),
        ] {
            let Err(e) = parse_sentinel_url(url) else {
                panic!("{url} parsed")
            };
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
