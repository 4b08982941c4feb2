//! Query parameters of `GET /v1/runs` and `GET /v1/runs/counts`, parsed into a `RunFilter`
//! with field-named errors.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::domain::RunStatus;
use crate::store::{Bodies, RunFilter};

use super::error::{ApiError, FieldError};

pub const DEFAULT_LIMIT: u32 = 50;
/// About the most bytes of bodies and metadata one page of runs holds.
pub const PAGE_BYTES: usize = 8 * 1024 * 1024;
pub const MAX_LIMIT: u32 = 500;
/// The most metadata filters one request may carry.
pub const MAX_METADATA_FILTERS: usize = 20;
/// The longest search string.
pub const MAX_SEARCH_CHARS: usize = 200;

/// The description of the `metadata` query parameter. It is documented as an array of
/// `key=value` strings (`metadata=team%3Dgrowth`), the form generated clients send for a
/// list; the deepObject form (`metadata[team]=growth`), which generators send wrongly or
/// not at all, is taken as well.
pub const METADATA_PARAM: &str = "Only runs whose metadata has each of these entries, \
     values compared as text, each written `key=value` (the parameter repeated: \
     `metadata=team%3Dgrowth&metadata=env%3Dprod`, up to 20). The form \
     `metadata[team]=growth` is taken too.";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRunsParams {
    /// Comma-separated statuses (`queued,running`).
    pub status: Option<String>,
    pub agent: Option<String>,
    /// RFC 3339; runs created at or after.
    pub created_after: Option<String>,
    /// RFC 3339; runs created before.
    pub created_before: Option<String>,
    /// Runs whose id or one of whose metadata values contains this (ASCII case ignored).
    pub q: Option<String>,
    /// Runs with this concurrency key (of any agent, unless `agent` is given).
    pub concurrency_key: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 50). A page also ends once its runs' bodies and metadata reach
    /// about 8 MiB (a page holds at least one run).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// The bodies to return, comma-separated: `input`, `result`, `checkpoint`,
    /// `on_failure`. Those not named are null: by default a list returns run summaries.
    pub include: Option<String>,
    /// `metadata` and `metadata[key]` entries (documented as the `metadata` parameter, read
    /// from the raw query: a repeated parameter would keep only its last value here).
    #[serde(flatten)]
    #[param(ignore)]
    pub rest: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountRunsParams {
    pub agent: Option<String>,
    /// RFC 3339; runs created at or after.
    pub created_after: Option<String>,
    /// RFC 3339; runs created before.
    pub created_before: Option<String>,
    /// Runs whose id or one of whose metadata values contains this (ASCII case ignored).
    pub q: Option<String>,
    /// Runs with this concurrency key (of any agent, unless `agent` is given).
    pub concurrency_key: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    pub rest: HashMap<String, String>,
}

impl CountRunsParams {
    /// `query` is the request's raw query string, for the repeated `metadata` parameter.
    pub fn into_filter(self, query: &str) -> Result<RunFilter, ApiError> {
        let mut problems = Vec::new();
        let filter = self.filter(query, &mut problems);
        validated(filter, problems)
    }

    /// The filters listing and counting share; what is wrong goes to `problems`.
    fn filter(self, query: &str, problems: &mut Vec<FieldError>) -> RunFilter {
        let mut filter = RunFilter {
            agent: self
                .agent
                .filter(|a| !a.is_empty() && no_nul("agent", a, problems)),
            limit: DEFAULT_LIMIT,
            ..RunFilter::default()
        };
        filter.created_after = parse_time("created_after", self.created_after, problems);
        filter.created_before = parse_time("created_before", self.created_before, problems);
        let search = self
            .q
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty());
        if let Some(q) = search.filter(|q| no_nul("q", q, problems)) {
            if q.chars().count() > MAX_SEARCH_CHARS {
                problems.push(FieldError::new(
                    "q",
                    "too_long",
                    format!("q must be at most {MAX_SEARCH_CHARS} characters"),
                ));
            } else {
                filter.search = Some(q);
            }
        }
        filter.concurrency_key = self
            .concurrency_key
            .filter(|k| !k.is_empty() && no_nul("concurrency_key", k, problems));
        filter.metadata = metadata_filters(query, self.rest, problems);
        filter
    }
}

impl ListRunsParams {
    /// `query` is the request's raw query string, for the repeated `metadata` parameter.
    pub fn into_filter(self, query: &str) -> Result<RunFilter, ApiError> {
        let mut problems = Vec::new();
        let shared = CountRunsParams {
            agent: self.agent,
            created_after: self.created_after,
            created_before: self.created_before,
            q: self.q,
            concurrency_key: self.concurrency_key,
            rest: self.rest,
        };
        let mut filter = shared.filter(query, &mut problems);
        for status in self.status.iter().flat_map(|s| s.split(',')).map(str::trim) {
            match status.parse::<RunStatus>() {
                Ok(s) => filter.statuses.push(s),
                Err(e) => problems.push(FieldError::new("status", "invalid_value", e)),
            }
        }
        if let Some(cursor) = self.cursor {
            match cursor.parse() {
                Ok(id) => filter.before = Some(id),
                Err(_) => problems.push(FieldError::new(
                    "cursor",
                    "invalid_value",
                    "cursor must be a next_cursor returned by this endpoint",
                )),
            }
        }
        if let Some(limit) = self.limit {
            match limit.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.limit = n,
                _ => problems.push(FieldError::new(
                    "limit",
                    "range",
                    format!("limit must be an integer from 1 to {MAX_LIMIT}"),
                )),
            }
        }
        filter.page_bytes = PAGE_BYTES;
        filter.bodies = Bodies::NONE;
        for part in self
            .include
            .iter()
            .flat_map(|i| i.split(','))
            .map(str::trim)
        {
            match part {
                "" => {}
                "input" => filter.bodies.input = true,
                "result" => filter.bodies.result = true,
                "checkpoint" => filter.bodies.checkpoint = true,
                "on_failure" => filter.bodies.on_failure = true,
                other => problems.push(FieldError::new(
                    "include",
                    "invalid_value",
                    format!(
                        "include names input, result, checkpoint or on_failure, not {:?}",
                        other.chars().take(40).collect::<String>()
                    ),
                )),
            }
        }
        validated(filter, problems)
    }
}

fn validated(filter: RunFilter, problems: Vec<FieldError>) -> Result<RunFilter, ApiError> {
    if problems.is_empty() {
        Ok(filter)
    } else {
        Err(ApiError::Validation(problems))
    }
}

/// PostgreSQL refuses NUL in text: such a filter would fail in the database, not here.
fn no_nul(field: &str, value: &str, problems: &mut Vec<FieldError>) -> bool {
    if value.contains('\0') {
        problems.push(FieldError::new(
            field,
            "invalid_value",
            format!("{field} must not contain NUL characters"),
        ));
        return false;
    }
    true
}

/// The metadata filters: each `metadata=key=value` of the raw `query` and each
/// `metadata[key]=value` of `rest`; any other unknown parameter is a problem.
fn metadata_filters(
    query: &str,
    rest: HashMap<String, String>,
    problems: &mut Vec<FieldError>,
) -> BTreeMap<String, String> {
    // both forms from the raw query: the parsed map keeps one value of a repeated name
    let mut entries = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == "metadata" {
            match value.split_once('=') {
                Some((key, value)) if !key.is_empty() => entries.push((key.to_owned(), value.to_owned())),
                _ => problems.push(FieldError::new(
                    "metadata",
                    "invalid_value",
                    format!("`metadata={value}`: a metadata filter is written metadata=key=value (the `=` inside URL-encoded as %3D, or not)"),
                )),
            }
        } else if let Some(key) = name
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
            .filter(|k| !k.is_empty())
        {
            entries.push((key.to_owned(), value.into_owned()));
        }
    }
    for (name, _) in rest {
        if name == "metadata" {
            continue; // read above, every one of them
        }
        let Some(inner) = name.strip_prefix("metadata") else {
            // a parameter the server does not know would otherwise filter nothing, silently
            problems.push(FieldError::new(
                name.clone(),
                "unknown_parameter",
                format!("`{name}` is not a parameter of this list (a metadata filter is written metadata={name}%3Dvalue)"),
            ));
            continue;
        };
        match inner.strip_prefix('[').and_then(|k| k.strip_suffix(']')) {
            Some(key) if !key.is_empty() => {} // read above, every one of them
            _ => problems.push(FieldError::new(
                "metadata",
                "invalid_value",
                format!("`{name}`: a metadata filter is written metadata=key%3Dvalue or metadata[key]=value"),
            )),
        }
    }
    let mut filters = BTreeMap::new();
    for (key, value) in entries {
        if !(no_nul("metadata", &key, problems) && no_nul("metadata", &value, problems)) {
            continue;
        }
        if let Some(before) = filters.get(&key).filter(|v| **v != value) {
            // a run has one value per key: both could never match
            problems.push(FieldError::new(
                "metadata",
                "invalid_value",
                format!("metadata key `{key}` is given twice, as `{before}` and as `{value}`"),
            ));
            continue;
        }
        filters.insert(key, value);
    }
    if filters.len() > MAX_METADATA_FILTERS {
        problems.push(FieldError::new(
            "metadata",
            "too_many",
            format!("at most {MAX_METADATA_FILTERS} metadata filters"),
        ));
    }
    filters
}

fn parse_time(
    field: &str,
    raw: Option<String>,
    problems: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let raw = raw?;
    match DateTime::parse_from_rfc3339(&raw) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            problems.push(FieldError::new(
                field,
                "invalid_value",
                format!("{field} must be an RFC 3339 time: {e}"),
            ));
            None
        }
    }
}
