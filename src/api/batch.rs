//! `POST /v1/runs/batch`: up to 1,000 runs in one request, validated together and stored
//! in one transaction (all or none). A run may depend on another run of the batch by its
//! index (`"depends_on": ["#0"]`), so a whole graph (plan → parallel steps → summary) is one
//! request, checked as a graph.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{IdempotencyKey, RunId, Scope};
use crate::store::{BatchInserted, StoreError};

use super::ApiState;
use super::auth::Caller;
use super::create::{CreateRunRequest, KnownAgents, idempotency_key};
use super::error::{ApiError, FieldError, Problem};
use super::extract::{JsonBody, from_value};
use super::runs::CreatedRun;

/// The most runs one batch may hold.
pub const MAX_BATCH: usize = 1000;

/// Runs to create together.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunsRequest {
    /// 1 to 1,000 runs, each the body of `POST /v1/runs`; `depends_on` may also name a run
    /// of this batch by its index: `"#0"`.
    #[schema(value_type = Vec<CreateRunRequest>, min_items = 1, max_items = 1000)]
    pub runs: Vec<Value>,
}

/// The runs created, in the order given.
#[derive(Serialize, ToSchema)]
pub struct CreatedRuns {
    pub runs: Vec<CreatedRun>,
}

/// Submit up to 1,000 runs at once: every run is validated first (a problem names the run's
/// index and the field, `runs/2/input/text`), then all are stored in one transaction, or
/// none. `depends_on` may name another run of the batch by its index (`"#0"`): the batch is
/// checked as a graph (indexes in range, no run depending on itself, no cycle), and such a
/// run starts blocked until those runs succeed. An `Idempotency-Key` covers the batch: the
/// same request again (same key, same JSON body) answers `200` with the runs it created.
#[utoipa::path(post, path = "/v1/runs/batch", tag = "runs", operation_id = "create_runs",
    request_body = CreateRunsRequest,
    responses(
        (status = 200, description = "The same request again (its Idempotency-Key): the runs it created, as they are now", body = CreatedRuns),
        (status = 202, description = "All accepted and stored", body = CreatedRuns),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid runs: nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A run whose policy is `reject` finds its concurrency key full (`concurrency_key_busy`, the detail names `runs/<index>`), or the Idempotency-Key was used with a different request: nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's request rate or its cap on runs not finished", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key with the same body returns the runs the batch created (200); with another body, 409. Keys live 24 h (--idempotency-ttl)."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: every run of the batch continues the caller's trace.")))]
pub async fn create_runs(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::RunsWrite)?;
    // keys are per tenant, like a single run's; each run of the batch carries it with its
    // index after a space (which no key a client sends holds), and the whole body's
    // fingerprint
    let tenant = caller.tenant();
    let key = idempotency_key(&headers, &body, state.defaults.idempotency_ttl)?;
    let request: CreateRunsRequest = from_value(body)?;
    if request.runs.is_empty() || request.runs.len() > MAX_BATCH {
        return Err(ApiError::Validation(vec![FieldError::new(
            "runs",
            "length",
            format!("a batch holds 1 to {MAX_BATCH} runs"),
        )]));
    }
    let declared = state.declared.current().await?;
    let agents = KnownAgents {
        registry: &state.registry,
        declared: &declared,
        secrets: &state.secrets,
    };
    let trace_parent = crate::telemetry::trace_parent_for_new_run(&headers);
    let ids: Vec<RunId> = request.runs.iter().map(|_| RunId::new()).collect();
    let mut problems = Vec::new();
    // by index; `None` where the run did not parse (its problems are listed)
    let mut runs: Vec<Option<crate::domain::NewRun>> = Vec::with_capacity(ids.len());
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ids.len()];
    for (i, mut raw) in request.runs.into_iter().enumerate() {
        let at = |field: &str| {
            if field.is_empty() {
                format!("runs/{i}")
            } else {
                format!("runs/{i}/{field}")
            }
        };
        // "#N" names a run of the batch: kept apart, the rest is a single run's body
        if let Some(list) = raw.get_mut("depends_on").and_then(Value::as_array_mut) {
            let mut kept = Vec::with_capacity(list.len());
            for (j, entry) in std::mem::take(list).into_iter().enumerate() {
                match entry.as_str().and_then(|s| s.strip_prefix('#')) {
                    Some(index) => match index.parse::<usize>() {
                        Ok(n) if n < ids.len() && n != i => {
                            edges[i].insert(n);
                        }
                        Ok(n) if n == i => problems.push(FieldError::new(
                            at(&format!("depends_on/{j}")),
                            "invalid_value",
                            "a run cannot depend on itself",
                        )),
                        _ => problems.push(FieldError::new(
                            at(&format!("depends_on/{j}")),
                            "invalid_value",
                            format!(
                                "`#{index}` names no run of this batch (#0 to #{})",
                                ids.len() - 1
                            ),
                        )),
                    },
                    None => kept.push(entry),
                }
            }
            *list = kept;
        }
        let parsed: Result<CreateRunRequest, ApiError> = from_value(raw);
        let new_run =
            parsed.and_then(|r| r.into_new_run(&agents, &state.defaults, None, tenant.clone()));
        match new_run {
            Ok(mut run) => {
                run.id = ids[i];
                run.idempotency = key.as_ref().map(|k| IdempotencyKey {
                    key: format!("{tenant}:{} #{i}", k.key),
                    ..k.clone()
                });
                run.created_by = Some(caller.actor());
                run.trace_parent = trace_parent.clone();
                runs.push(Some(run));
            }
            Err(ApiError::Validation(fields)) => {
                runs.push(None);
                problems.extend(fields.into_iter().map(|mut f| {
                    f.field = at(&f.field);
                    f
                }))
            }
            Err(ApiError::MalformedBody(mut f)) => {
                runs.push(None);
                f.field = at(&f.field);
                problems.push(f);
            }
            Err(other) => return Err(other),
        }
    }
    if let Some(i) = in_a_cycle(&edges) {
        problems.push(FieldError::new(
            format!("runs/{i}/depends_on"),
            "cycle",
            "the runs of the batch depend on each other in a cycle: none could ever start",
        ));
    }
    for (i, (run, batch_deps)) in runs.iter_mut().zip(&edges).enumerate() {
        let Some(run) = run else { continue };
        for &j in batch_deps {
            if !run.depends_on.contains(&ids[j]) {
                run.depends_on.push(ids[j]);
            }
        }
        if run.depends_on.len() > 100 {
            problems.push(FieldError::new(
                format!("runs/{i}/depends_on"),
                "length",
                "depends_on takes at most 100 runs, of the batch and stored ones together",
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let runs: Vec<crate::domain::NewRun> = runs.into_iter().flatten().collect();
    // the tenant's cap on runs not finished holds for the whole batch, under one lock
    let count = runs.len() as u64;
    if let Err(refused) = state
        .limits
        .admit_runs(&state.store, tenant.as_str(), count)
        .await
    {
        // at the cap, the retry of a batch that was stored is still answered with its runs
        let mut ids = Vec::with_capacity(runs.len());
        for key in runs.iter().filter_map(|r| r.idempotency.as_ref()) {
            match state.store.idempotent_run(key).await? {
                Some(id) => ids.push(id),
                None => return Err(refused),
            }
        }
        if ids.is_empty() {
            return Err(refused);
        }
        return created(&state, ids).await;
    }
    let stored = match state.store.insert_batch(runs).await {
        Ok(BatchInserted::New(stored)) => stored,
        Ok(BatchInserted::Existing(ids)) => {
            state.limits.unreserve_n(tenant.as_str(), count).await;
            return created(&state, ids).await;
        }
        Err(e) => {
            state.limits.unreserve_n(tenant.as_str(), count).await;
            return Err(match e {
                StoreError::BadBatchDependencies(found) => ApiError::Validation(
                    found
                        .into_iter()
                        .map(|(i, code, message)| {
                            FieldError::new(format!("runs/{i}/depends_on"), code, message)
                        })
                        .collect(),
                ),
                other => other.into(),
            });
        }
    };
    let runs = stored
        .into_iter()
        .map(|run| {
            state.metrics.run_created(&run.agent);
            CreatedRun::new(run, &state.auth)
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(CreatedRuns { runs })).into_response())
}

/// The same request again: `200` with the runs it created, as they are now.
async fn created(state: &ApiState, ids: Vec<RunId>) -> Result<Response, ApiError> {
    let mut runs = Vec::with_capacity(ids.len());
    for id in ids {
        runs.push(CreatedRun::new(state.store.get_run(id).await?, &state.auth));
    }
    Ok((StatusCode::OK, Json(CreatedRuns { runs })).into_response())
}

/// A run in a dependency cycle among the batch's runs, if there is one (Kahn's order:
/// what it cannot place is in a cycle or waits on one).
fn in_a_cycle(edges: &[BTreeSet<usize>]) -> Option<usize> {
    let mut waiting: Vec<usize> = edges.iter().map(BTreeSet::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
    for (i, deps) in edges.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..edges.len()).filter(|&i| waiting[i] == 0).collect();
    let mut placed = 0;
    while let Some(i) = ready.pop() {
        placed += 1;
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    (placed < edges.len())
        .then(|| waiting.iter().position(|&w| w > 0))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::in_a_cycle;
    use std::collections::BTreeSet;

    fn graph(edges: &[&[usize]]) -> Vec<BTreeSet<usize>> {
        edges.iter().map(|e| e.iter().copied().collect()).collect()
    }

    #[test]
    fn a_cycle_is_found_and_a_diamond_is_not_one() {
        assert_eq!(in_a_cycle(&graph(&[&[], &[0], &[0], &[1, 2]])), None);
        assert_eq!(in_a_cycle(&graph(&[&[2], &[0], &[1]])), Some(0));
        assert_eq!(in_a_cycle(&graph(&[&[], &[2], &[1]])), Some(1));
    }
}
