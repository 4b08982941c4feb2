//! The server's connections: closed when they send no request head for `--idle-timeout`,
//! and capped by `--max-connections`, past which health checks are still answered and
//! every other request is refused with a problem.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// Waits until the server closes `stream` (a read returns end of file or an error),
/// reading and dropping what it sends; the time it took, or `None` after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// One HTTP/1.1 request on a connection of its own: the status and body, or the error.
async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {answer:?}"))?;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, body))
}

#[tokio::test]
async fn silent_half_sent_and_idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| c.http.idle_timeout = Duration::from_millis(500)).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // a whole request, answered, then nothing more on the kept-alive connection
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    for (what, stream) in [
        ("silent", &mut silent),
        ("half-sent head", &mut half),
        ("idle keep-alive", &mut idle),
    ] {
        let took = closed_within(stream, Duration::from_secs(5)).await;
        let took = took.unwrap_or_else(|| panic!("the {what} connection is still open after 5 s"));
        assert!(
            took < Duration::from_secs(3),
            "the {what} connection closed after {took:?}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn past_max_connections_health_checks_are_answered_and_other_requests_refused() {
    let app = TestApp::spawn_with(|c| c.http.max_connections = 16).await;
    // every connection the cap allows, held open without a word
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // and more than the reserve past it
    for _ in 0..40 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let (status, body) = get(app.addr, "/healthz").await.expect("a health check");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(app.addr, "/readyz").await.expect("a readiness check");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(app.addr, "/v1/runs").await.expect("an answer");
    assert_eq!(status, 503, "{body}");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "too_many_connections", "{problem}");
    // the metrics count the refusals
    drop(held);
    let page = crate::support::eventually::eventually(
        Duration::from_secs(5),
        "the metrics page answers",
        || async {
            match get(app.addr, "/metrics").await {
                Ok((200, body)) => Ok(body),
                other => Err(other),
            }
        },
    )
    .await;
    let refused = page
        .lines()
        .find_map(|l| l.strip_prefix("agentq_http_connections_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no refusal counter: {page}"));
    assert!(refused >= 40.0, "{refused}");
    app.shutdown().await;
}

/// A write the request time limit cuts short may still be stored by the writer: the answer
/// says the outcome is unknown (here the body never came, so nothing was stored).
#[tokio::test]
async fn a_write_cut_short_by_the_request_timeout_answers_outcome_unknown() {
    let app = TestApp::spawn_with(|c| c.http.request_timeout = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"agent\"",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let problem: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(problem["code"], "outcome_unknown", "{problem}");
    app.shutdown().await;
}
