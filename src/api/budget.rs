//! What request bodies may cost this process at once (`--max-inflight-bytes`), and what
//! one body may hold (`--max-body-values`).
//!
//! A body costs memory twice: its bytes while they are read, then the values parsed from
//! them (a JSON object of 80,000 small keys is 0.9 MB of text and about 35 MB while it is
//! handled). The budget is two pools: a quarter for reading, the rest for handling. A
//! request with a body takes its announced length from the reading pool before the body is
//! read (the whole `--body-limit` when no length is announced); once it is read and its
//! shape counted (one pass, nothing allocated), it takes what handling it will cost from the
//! handling pool (measured: about 4 bytes per byte and 448 per value). Whoever holds a
//! handling share waits for nothing more, so requests holding reading shares always get
//! through in turn; a share bigger than its pool takes the whole pool. A request that does
//! not find its share within a moment is answered `503 too_busy` with `Retry-After: 1`; a
//! body with more values than allowed, or nested deeper, is `413` before it is parsed. The
//! shares are given back when the answer's head is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The budget is counted in units of this many bytes (a semaphore counts in `u32`s).
const UNIT: usize = 1024;
/// How long a request waits for its share before it is refused.
const WAIT: Duration = Duration::from_millis(250);
/// What a body costs per byte of text while it is handled (the text is held, parsed, and
/// written again to store it and to answer).
const COST_PER_BYTE: usize = 4;
/// What a body costs per JSON value while it is handled: a `serde_json::Value` node, a map
/// entry and its key, and the copies the run's validation, storing and answer make. Measured
/// (`scripts/bench-edges.sh`, 2026-12-06): 100 concurrent bodies of 80,000 keys (0.87 MB)
/// peaked at about 35 MB each, 440 bytes a value.
const COST_PER_VALUE: usize = 448;
/// The deepest nesting a body may have.
pub const MAX_DEPTH: usize = 64;

/// The process's budget for request bodies.
#[derive(Debug)]
pub struct BodyBudget {
    /// Bodies being read.
    reading: Pool,
    /// Bodies read and being handled.
    handling: Pool,
    /// The most values one body may hold.
    pub max_values: usize,
    /// The most bytes a body may have (`--body-limit`), taken when none is announced.
    body_limit: usize,
}

/// Shares of memory, counted in [`UNIT`]s.
#[derive(Debug)]
struct Pool {
    permits: Arc<Semaphore>,
    units: usize,
}

impl Pool {
    fn new(bytes: usize) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(units)),
            units,
        }
    }

    /// Takes `bytes`, waiting a moment for them; `None` when they did not come. A share
    /// bigger than the pool takes the whole pool.
    async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.units);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        let wanted = self.permits.clone().acquire_many_owned(units);
        tokio::time::timeout(WAIT, wanted).await.ok()?.ok()
    }
}

/// The shares a request holds, given back when it is answered.
#[derive(Clone, Default)]
pub(super) struct Held(Arc<Mutex<Vec<OwnedSemaphorePermit>>>);

impl BodyBudget {
    /// `bytes` in all: a quarter for reading (at least one body of `body_limit`), the rest
    /// for handling.
    pub fn new(bytes: usize, max_values: usize, body_limit: usize) -> Self {
        let reading = (bytes / 4).max(body_limit);
        Self {
            reading: Pool::new(reading),
            handling: Pool::new(bytes.saturating_sub(reading).max(UNIT)),
            max_values,
            body_limit,
        }
    }

    /// Counts `body`'s shape and takes what parsing it will cost; the error to answer when
    /// the body is too complex or the budget has no room.
    pub(super) async fn admit(&self, body: &[u8], held: Option<&Held>) -> Result<(), ApiError> {
        let values = count_values(body, self.max_values)?;
        let Some(held) = held else {
            return Ok(());
        };
        let cost = body.len().saturating_mul(COST_PER_BYTE) + values.saturating_mul(COST_PER_VALUE);
        let permit = self.handling.take(cost).await.ok_or_else(too_busy)?;
        held.0.lock().expect("held shares").push(permit);
        Ok(())
    }
}

fn too_busy() -> ApiError {
    ApiError::Overloaded {
        code: "too_busy",
        detail: "this server is reading as many request bodies as it may at once (--max-inflight-bytes): try again shortly".into(),
        retry_after: 1,
    }
}

/// Takes a request's announced body length from the budget before its body is read, and
/// holds that and what its extractor takes until the answer's head is sent.
pub(super) async fn hold(
    State(budget): State<Arc<BodyBudget>>,
    mut req: Request,
    next: Next,
) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let has_body =
        announced.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    // over the body limit, the limit layer refuses it without reading it all
    let bytes = announced
        .unwrap_or(budget.body_limit)
        .min(budget.body_limit);
    let Some(permit) = budget.reading.take(bytes).await else {
        return too_busy().into_response();
    };
    let held = Held::default();
    held.0.lock().expect("held shares").push(permit);
    req.extensions_mut().insert(held.clone());
    req.extensions_mut().insert(budget);
    let response = next.run(req).await;
    drop(held);
    response
}

/// The number of values in the JSON text `body` (every object, array, string, number,
/// literal; an object's keys not counted apart), in one pass that allocates nothing: an
/// error once it passes `max_values` or nests deeper than [`MAX_DEPTH`]. Text that is not
/// JSON is counted as far as it goes; the parser names what is wrong with it.
pub fn count_values(body: &[u8], max_values: usize) -> Result<usize, ApiError> {
    let mut values = 0usize;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // a value starts after these, or at the start: the next token that is not a closing
    // bracket, a separator or white space begins one
    let mut expecting = true;
    let mut in_key = false;
    // per open container: whether it is an object (its strings alternate key, value)
    let mut object_key_next = [false; MAX_DEPTH + 1];
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            b'"' => {
                in_string = true;
                if in_key {
                    in_key = false;
                    expecting = false;
                    continue;
                }
            }
            b',' => {
                expecting = true;
                in_key = depth > 0 && object_key_next[depth];
                continue;
            }
            b':' => {
                expecting = true;
                continue;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                expecting = false;
                in_key = false;
                continue;
            }
            _ => {}
        }
        if !expecting {
            continue; // the rest of a number or literal
        }
        expecting = false;
        values += 1;
        if values > max_values {
            return Err(ApiError::Status(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body holds more than {max_values} JSON values (--max-body-values)"),
            ));
        }
        if b == b'{' || b == b'[' {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(ApiError::Status(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body nests deeper than {MAX_DEPTH} levels"),
                ));
            }
            object_key_next[depth] = b == b'{';
            in_key = b == b'{';
            expecting = b == b'[';
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str) -> usize {
        count_values(text.as_bytes(), usize::MAX).unwrap()
    }

    #[test]
    fn every_value_is_counted_once_and_keys_are_not() {
        assert_eq!(count("1"), 1);
        assert_eq!(count("\"a,b:{c}[\""), 1);
        assert_eq!(count("[]"), 1);
        assert_eq!(count("{}"), 1);
        assert_eq!(count("[1, 2.5e3, true, null, \"x\"]"), 6);
        assert_eq!(count(r#"{"a": 1, "b": {"c": [1, 2], "d\"": "e"}}"#), 7);
        assert_eq!(count(r#"{"k0":0,"k1":1,"k2":"two"}"#), 4);
        assert_eq!(count(r#"[{"a":[]},{"b":{}}]"#), 5);
    }

    #[test]
    fn too_many_values_or_too_deep_is_refused() {
        let keys: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":{i}")).collect();
        let wide = format!("{{{}}}", keys.join(","));
        assert_eq!(count_values(wide.as_bytes(), 1001).unwrap(), 1001);
        assert!(count_values(wide.as_bytes(), 1000).is_err());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(count_values(deep.as_bytes(), usize::MAX).is_ok());
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(count_values(deeper.as_bytes(), usize::MAX).is_err());
    }

    #[tokio::test]
    async fn a_share_waits_a_moment_then_is_refused_and_comes_back_once_given_back() {
        let pool = Pool::new(10 * UNIT);
        let first = pool.take(8 * UNIT).await.expect("room");
        assert!(pool.take(4 * UNIT).await.is_none());
        drop(first);
        assert!(pool.take(4 * UNIT).await.is_some());
        // bigger than the whole pool: all of it
        assert!(pool.take(100 * UNIT).await.is_some());
    }

    #[tokio::test]
    async fn reading_shares_never_keep_a_body_from_being_handled() {
        // every reading share taken, as by many bodies being read at once
        let budget = BodyBudget::new(64 * UNIT, 1000, 16 * UNIT);
        let _readers: Vec<_> = [budget.reading.take(16 * UNIT).await.unwrap()]
            .into_iter()
            .collect();
        assert!(budget.reading.take(UNIT).await.is_none());
        // a body already read is handled all the same, even one costing more than the pool
        let held = Held::default();
        let body = format!("[{}]", vec!["1"; 500].join(","));
        budget.admit(body.as_bytes(), Some(&held)).await.unwrap();
        assert_eq!(held.0.lock().unwrap().len(), 1);
    }
}
