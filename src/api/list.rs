//! Query parameters of `GET /v1/runs`, parsed into a `RunFilter` with field-named errors.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::domain::RunStatus;
use crate::store::RunFilter;

use super::error::{ApiError, FieldError};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

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
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 50).
    pub limit: Option<String>,
}

impl ListRunsParams {
    pub fn into_filter(self) -> Result<RunFilter, ApiError> {
        let mut problems = Vec::new();
        let mut filter = RunFilter {
            agent: self.agent.filter(|a| !a.is_empty()),
            limit: DEFAULT_LIMIT,
            ..RunFilter::default()
        };
        for status in self.status.iter().flat_map(|s| s.split(',')).map(str::trim) {
            match status.parse::<RunStatus>() {
                Ok(s) => filter.statuses.push(s),
                Err(e) => problems.push(FieldError::new("status", "invalid_value", e)),
            }
        }
        filter.created_after = parse_time("created_after", self.created_after, &mut problems);
        filter.created_before = parse_time("created_before", self.created_before, &mut problems);
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
        if problems.is_empty() {
            Ok(filter)
        } else {
            Err(ApiError::Validation(problems))
        }
    }
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
