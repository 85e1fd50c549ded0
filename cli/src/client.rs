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

async fn open<B>(
    api: &str,
    req: Request<B>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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

/// A request body streamed from `reader` in 256 KiB chunks, counting what hyper has taken
/// into `sent` (the node takes it only as fast as its stream to the peer does).
fn upload<R>(
    reader: R,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> http_body_util::StreamBody<
    impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>> + Unpin,
>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    use tokio::io::AsyncReadExt as _;
    let chunks = futures_util::stream::unfold(Some(reader), move |state| {
        let sent = sent.clone();
        async move {
            let mut reader = state?;
            let mut buf = vec![0u8; 256 * 1024];
            match reader.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    Some((Ok(hyper::body::Frame::data(Bytes::from(buf))), Some(reader)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    http_body_util::StreamBody::new(Box::pin(chunks))
}

/// Streams `reader` to `path` with `headers`; draws progress on stderr (when it is a
/// terminal and `total` is known); returns the node's JSON answer.
async fn stream_up<R>(
    api: &str,
    path: &str,
    headers: &[(&str, String)],
    reader: R,
    total: Option<u64>,
) -> Result<Value, ClientError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(hyper::header::HOST, api);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req
        .body(upload(reader, sent.clone()))
        .map_err(|e| ClientError::Http {
            api: api.to_owned(),
            reason: e.to_string(),
        })?;
    let progress = total.filter(|_| std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let bar = progress.map(|total| {
        let sent = sent.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let n = sent.load(std::sync::atomic::Ordering::Relaxed);
                let pct = if total == 0 {
                    100.0
                } else {
                    n as f64 * 100.0 / total as f64
                };
                let filled = usize::try_from(n.saturating_mul(20) / total.max(1)).unwrap_or(20);
                let rate = n as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64().max(1e-9);
                eprint!(
                    "\r[{:<20}] {pct:5.1}% {n}/{total} bytes {rate:.1} MiB/s ",
                    "#".repeat(filled.min(20))
                );
            }
        })
    });
    let result = async {
        let resp = open(api, req).await?;
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
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            return Err(ClientError::Status { status, body: text });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Http {
            api: api.to_owned(),
            reason: format!("the answer is not JSON: {e}"),
        })
    }
    .await;
    if let Some(bar) = bar {
        bar.abort();
        eprintln!();
    }
    result
}

/// `nodenet send-file`: streams `file` to the node for `to`.
pub(crate) async fn send_file(
    api: &str,
    to: &str,
    file: &std::path::Path,
) -> Result<Value, ClientError> {
    let local = |e: std::io::Error| ClientError::Http {
        api: api.to_owned(),
        reason: format!("{}: {e}", file.display()),
    };
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| local(std::io::Error::other("no UTF-8 file name")))?;
    let f = tokio::fs::File::open(file).await.map_err(local)?;
    let size = f.metadata().await.map_err(local)?.len();
    let headers = [
        ("x-nodenet-to", to.to_owned()),
        ("x-nodenet-name", hex::encode(name)),
        ("x-nodenet-size", size.to_string()),
    ];
    stream_up(api, "/send-file", &headers, f, Some(size)).await
}

/// `nodenet pipe <to>`: streams stdin to the node for `to`.
pub(crate) async fn pipe_in(api: &str, to: &str) -> Result<Value, ClientError> {
    let headers = [("x-nodenet-to", to.to_owned())];
    stream_up(api, "/pipe", &headers, tokio::io::stdin(), None).await
}

/// `nodenet pipe --accept`: the next pipe a peer opens, to stdout.
pub(crate) async fn pipe_out(api: &str) -> Result<(), ClientError> {
    use tokio::io::AsyncWriteExt as _;
    let resp = open(api, build(api, Method::GET, "/pipe", None)).await?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(ClientError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let mut body = resp.into_body();
    let mut out = tokio::io::stdout();
    let http = |reason: String| ClientError::Http {
        api: api.to_owned(),
        reason,
    };
    while let Some(frame) = body.frame().await {
        // A pipe cut short ends the body with an error: never mistaken for its end.
        let frame = frame.map_err(|e| http(format!("the pipe was cut: {e}")))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)
                .await
                .map_err(|e| http(format!("stdout: {e}")))?;
        }
    }
    out.flush()
        .await
        .map_err(|e| http(format!("stdout: {e}")))?;
    Ok(())
}
