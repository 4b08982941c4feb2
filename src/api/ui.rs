//! The dashboard at `/ui/`: plain HTML, CSS and JavaScript modules from `ui/`, compiled
//! into the binary. The page holds no data of its own: everything it shows it fetches
//! from the API with the visitor's key, so serving it needs none.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::conditional::{etag_of, if_none_match};
use super::error::ApiError;

/// One file of the dashboard.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! assets {
    ($($path:literal => $type:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $type,
            body: include_str!(concat!("../../ui/", $path)),
        }),*]
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = assets! {
    "index.html" => HTML,
    "style.css" => CSS,
    "app.js" => JS,
    "api.js" => JS,
    "dom.js" => JS,
    "views/runs.js" => JS,
    "views/run.js" => JS,
    "views/timeline.js" => JS,
    "views/queues.js" => JS,
    "views/schedules.js" => JS,
    "views/workers.js" => JS,
    "favicon.svg" => "image/svg+xml",
};

/// Each asset's ETag, its content's hash (computed once), as the API's responses have.
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| etag_of(a.body.as_bytes())).collect());

/// The page may load only its own files and talk only to its own origin; it is never
/// framed (no clickjacking of its cancel and approve buttons).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/` and `/ui` lead to the dashboard; `/ui/…` serves its files.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                serve(&path, &headers)
            }),
        )
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return ApiError::Status(
            StatusCode::NOT_FOUND,
            "no such file of the dashboard".into(),
        )
        .into_response();
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let mut response = if if_none_match(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("a hex ETag is a valid header"),
    );
    // always revalidated: a new binary's files are picked up at once, unchanged ones cost a 304
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_known_type_and_the_page_loads_only_listed_modules() {
        for asset in ASSETS {
            assert!(
                [HTML, JS, CSS, "image/svg+xml"].contains(&asset.content_type),
                "{}",
                asset.path
            );
        }
        // every relative module import of every script names a listed file
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in asset
                .body
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let Some(spec) = line.split(['"', '\'']).nth(1) else {
                    continue;
                };
                let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                for part in spec.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p),
                    }
                }
                let target = parts.join("/");
                assert!(
                    ASSETS.iter().any(|a| a.path == target),
                    "{} imports {spec}, which is not served ({target})",
                    asset.path
                );
            }
        }
    }
}
