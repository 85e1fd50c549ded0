//! A small HTTP/1.1 client for the control API (`nodenet send`, `info`, `listen`), on the same
//! hyper that serves it.

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cannot reach the node's API at {api}: {source}")]
    Connect { api: String, source: std::io::Error },
    #[error("HTTP exchange with {api} failed: {reason}")]
    Http { api: String, reason: String },
    #[error("the node answered {status}: {body}")]
    Status { status: StatusCode, body: String },
}

async fn open(
    api: &str,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let http = |e: hyper::Error| ClientError::Http {
        api: api.to_owned(),
        reason: e.to_string(),
    };
    let stream = TcpStream::connect(api)
        .await
        .map_err(|source| ClientError::Connect {
            api: api.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(http)
}

fn build(api: &str, method: Method, path: &str, body: Option<&Value>) -> Request<Full<Bytes>> {
    let bytes = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, api);
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    // Every part above is valid by construction (a fixed method, a path of ours, a host
    // header that is ASCII), so building cannot fail.
    req.body(Full::new(bytes))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// One request; the status and the whole body.
pub(crate) async fn call(
    api: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let resp = open(api, build(api, method, path, body)).await?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http {
            api: api.to_owned(),
            reason: e.to_string(),
        })?
        .to_bytes();
    Ok((status, bytes))
}

/// One request that must succeed; its body as JSON.
pub(crate) async fn call_ok(
    api: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, ClientError> {
    let (status, bytes) = call(api, method, path, body).await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        return Err(ClientError::Status { status, body: text });
    }
    serde_json::from_str(&text).map_err(|e| ClientError::Http {
        api: api.to_owned(),
        reason: format!("the answer is not JSON: {e}"),
    })
}

/// Follows `GET /events`, calling `on_event` with each event's JSON text until the stream
/// ends or `on_event` returns false.
pub(crate) async fn follow_events(
    api: &str,
    mut on_event: impl FnMut(&str) -> bool,
) -> Result<(), ClientError> {
    let resp = open(api, build(api, Method::GET, "/events", None)).await?;
    if !resp.status().is_success() {
        return Err(ClientError::Status {
            status: resp.status(),
            body: String::new(),
        });
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Http {
            api: api.to_owned(),
            reason: e.to_string(),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        // Events end with a blank line; a keep-alive is a comment (":") and carries no data.
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|l| l.strip_prefix(' ').unwrap_or(l))
                .collect();
            if !data.is_empty() && !on_event(&data.join("\n")) {
                return Ok(());
            }
        }
    }
    Ok(())
}
