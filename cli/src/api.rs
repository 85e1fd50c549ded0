//! The local control and monitor API: JSON over HTTP/1.1, events as Server-Sent Events.
//!
//! | route | does |
//! |---|---|
//! | `GET /health` | `{"status":"ok",...}` |
//! | `GET /info` | NodeId, addresses, edge and table counts, version |
//! | `GET /metrics` | every counter, Prometheus text exposition |
//! | `POST /send` | `{"to":"<hex>","data":"<base64>"}`: a routed send |
//! | `POST /send-direct` | the same over a direct edge |
//! | `POST /connect` | `{"to":"<hex>"}` → `{"path":..,"ms":..}` |
//! | `POST /disconnect` | `{"to":"<hex>"}`: closes our edge to it → `{"closed":true}` if there was one |
//! | `POST /call` | `{"to":"<hex>","secs":3,"fps":50,"size":200}`: a test call's media, echoed by a node that takes calls → path, sent, echoed, round-trip p50/p99 |
//! | `POST /send-file` | body: the file's bytes; headers `x-nodenet-to` (hex NodeId), `x-nodenet-name` (the name's UTF-8 in hex), `x-nodenet-size` (bytes) → bytes, secs, MiB/s, path, blake2b once the receiver verified it |
//! | `POST /pipe` | body: the bytes; header `x-nodenet-to` → bytes, secs, MiB/s, path once the peer holds them all |
//! | `GET /pipe` | waits for the next pipe a peer opens to this node and streams its bytes as the body (409 while another client waits) |
//! | `GET /events` | one JSON object per event |
//!
//! A request the API cannot use (malformed JSON, a bad NodeId, bad base64, data over one
//! frame, a body over [`MAX_BODY`]) is answered 400 with `{"error":"..."}`; nothing a client
//! sends stops the node.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::Stream;
use nodenet::{Error as NodeError, Node, NodeId};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// The largest request body read: one frame's payload (64 KiB) in base64, with room to spare.
pub(crate) const MAX_BODY: usize = 128 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) node: Node,
    /// The address the node listens on.
    pub(crate) listen: String,
    /// JSON events for `/events` subscribers.
    pub(crate) events: broadcast::Sender<Arc<str>>,
    pub(crate) started: Instant,
    /// Becomes true when the node stops; `/events` streams end then.
    pub(crate) stop: watch::Receiver<bool>,
}

/// The router over `api`.
pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/send", post(send))
        .route("/send-direct", post(send_direct))
        .route("/connect", post(connect))
        .route("/call", post(call))
        .route("/disconnect", post(disconnect))
        .route("/send-file", post(send_file))
        .route("/pipe", post(send_pipe).get(accept_pipe))
        .route("/events", get(events))
        .with_state(api)
}

/// An answer other than success, as `{"error": ...}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        use nodenet::{ConnectError, DirectSendError, OpenMediaError, SendError};
        let status = match &e {
            // What the caller asked for can never work.
            NodeError::Send(SendError::TooLarge { .. })
            | NodeError::DirectSend(DirectSendError::TooLarge { .. })
            | NodeError::Connect(ConnectError::SelfTarget)
            | NodeError::DirectSend(DirectSendError::Connect(ConnectError::SelfTarget))
            | NodeError::Media(OpenMediaError::Connect(ConnectError::SelfTarget)) => {
                StatusCode::BAD_REQUEST
            }
            // The peer, or the way to it, failed.
            NodeError::Connect(ConnectError::Failed { .. })
            | NodeError::DirectSend(DirectSendError::Connect(ConnectError::Failed { .. }))
            | NodeError::Media(_) => StatusCode::BAD_GATEWAY,
            // This node cannot do it now (not joined, shutting down, an edge just closed).
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self(status, e.to_string())
    }
}

impl From<crate::transfer::TransferError> for ApiError {
    fn from(e: crate::transfer::TransferError) -> Self {
        use crate::transfer::TransferError as T;
        match e {
            T::Connect(c) => NodeError::from(c).into(),
            T::Open(o) => {
                let status = match &o {
                    nodenet::OpenStreamError::BadProtocol(_) => StatusCode::BAD_REQUEST,
                    nodenet::OpenStreamError::Connect(nodenet::ConnectError::SelfTarget) => {
                        StatusCode::BAD_REQUEST
                    }
                    nodenet::OpenStreamError::Connect(nodenet::ConnectError::Closed) => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => StatusCode::BAD_GATEWAY,
                };
                Self(status, o.to_string())
            }
            T::BadName(_) | T::Length { .. } | T::Upload(_) => Self::bad(e.to_string()),
            _ => Self(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }
}

/// A header of a streaming request, as text.
fn header_text<'a>(headers: &'a header::HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .ok_or_else(|| ApiError::bad(format!("header {name} is missing")))?
        .to_str()
        .map_err(|_| ApiError::bad(format!("header {name} is not ASCII")))
}

async fn send_file(
    State(api): State<Api>,
    headers: header::HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, ApiError> {
    let to = node_id(header_text(&headers, "x-nodenet-to")?)?;
    let name = hex::decode(header_text(&headers, "x-nodenet-name")?)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::bad("x-nodenet-name must be the name's UTF-8 bytes in hex"))?;
    let size: u64 = header_text(&headers, "x-nodenet-size")?
        .parse()
        .map_err(|_| ApiError::bad("x-nodenet-size must be a byte count"))?;
    let mut data = body.into_data_stream();
    match crate::transfer::send_file(&api.node, to, &name, size, &mut data).await {
        Ok(report) => Ok(axum::Json(report)),
        Err(e) => {
            crate::transfer::drain(&mut data).await;
            Err(e.into())
        }
    }
}

async fn send_pipe(
    State(api): State<Api>,
    headers: header::HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, ApiError> {
    let to = node_id(header_text(&headers, "x-nodenet-to")?)?;
    let mut data = body.into_data_stream();
    match crate::transfer::send_pipe(&api.node, to, &mut data).await {
        Ok(report) => Ok(axum::Json(report)),
        Err(e) => {
            crate::transfer::drain(&mut data).await;
            Err(e.into())
        }
    }
}

async fn accept_pipe(State(api): State<Api>) -> Result<Response, ApiError> {
    let mut listener = api
        .node
        .accept_streams(crate::transfer::PIPE_PROTOCOL)
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
    let mut stop = api.stop.clone();
    let next = tokio::select! {
        next = listener.accept() => next,
        _ = stop.wait_for(|s| *s) => None,
    };
    // One pipe per request: later ones are refused until a client waits again.
    drop(listener);
    let (send, recv) =
        next.ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the node stopped".into()))?;
    let from = recv.remote_id().to_string();
    Ok((
        [("x-nodenet-from", from)],
        crate::transfer::pipe_body(send, recv),
    )
        .into_response())
}

/// Each operation's error turns into an answer through [`NodeError`].
macro_rules! api_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                NodeError::from(e).into()
            }
        }
    )*};
}
api_error_from!(
    nodenet::SendError,
    nodenet::DirectSendError,
    nodenet::ConnectError,
    nodenet::OpenMediaError
);

async fn health(State(api): State<Api>) -> axum::Json<Value> {
    axum::Json(json!({
        "status": "ok",
        "id": api.node.id().to_string(),
        "edges": api.node.edges().len(),
        "uptime_s": api.started.elapsed().as_secs(),
    }))
}

async fn info(State(api): State<Api>) -> axum::Json<Value> {
    let node = &api.node;
    axum::Json(json!({
        "id": node.id().to_string(),
        "listen": api.listen,
        // Our address as neighbours see it, once corroborated; null until then.
        "reflexive": node.reflexive().map(|a| a.endpoint),
        "nat_type": node.nat_type().as_str(),
        "edges": node.edges().len(),
        "outbound_edges": node.outbound_edges(),
        "relayed_edges": node.relayed_edges(),
        "known": node.known(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn metrics(State(api): State<Api>) -> Response {
    let mut out = String::new();
    for (name, help, value) in api.node.stats().counters() {
        let _ = write!(
            out,
            "# HELP nodenet_{name}_total {help}\n# TYPE nodenet_{name}_total counter\n\
             nodenet_{name}_total {value}\n"
        );
    }
    for (name, help, value) in api.node.transport_stats().counters() {
        let _ = write!(
            out,
            "# HELP nodenet_transport_{name}_total {help}\n# TYPE nodenet_transport_{name}_total counter\n\
             nodenet_transport_{name}_total {value}\n"
        );
    }
    let gauges = [
        ("edges", "Live edges.", api.node.edges().len()),
        (
            "outbound_edges",
            "Live edges we dialed.",
            api.node.outbound_edges(),
        ),
        (
            "relayed_edges",
            "Live edges through a volunteer relay.",
            api.node.relayed_edges(),
        ),
        (
            "known",
            "Contacts in the knowledge table.",
            api.node.known(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = write!(
            out,
            "# HELP nodenet_{name} {help}\n# TYPE nodenet_{name} gauge\nnodenet_{name} {value}\n"
        );
    }
    // The NAT type as an enum gauge: 1 for the node's current type, 0 for the others.
    let current = api.node.nat_type().as_str();
    out.push_str("# HELP nodenet_nat_type What the node concludes about the NAT in front of it.\n");
    out.push_str("# TYPE nodenet_nat_type gauge\n");
    for t in ["unknown", "public", "cone", "symmetric"] {
        let _ = writeln!(
            out,
            "nodenet_nat_type{{type=\"{t}\"}} {}",
            u8::from(t == current)
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    to: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectRequest {
    to: String,
}

/// Reads and parses a JSON body of at most [`MAX_BODY`] bytes.
async fn json_body<T: for<'de> Deserialize<'de>>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::bad(format!("request body over {MAX_BODY} bytes")))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))
}

fn node_id(hex: &str) -> Result<NodeId, ApiError> {
    hex.parse()
        .map_err(|e| ApiError::bad(format!("\"to\" is not a NodeId (64 hex digits): {e}")))
}

fn payload(data: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = BASE64
        .decode(data)
        .map_err(|e| ApiError::bad(format!("\"data\" is not base64: {e}")))?;
    // The exact limit depends on the operation (the node answers PayloadTooLarge, also a 400);
    // this bound only spares the node a payload that cannot fit any frame.
    if bytes.len() > nodenet_wire::MAX_PACKET_LEN {
        return Err(ApiError::bad(format!(
            "\"data\" is {} bytes, over the {}-byte frame",
            bytes.len(),
            nodenet_wire::MAX_PACKET_LEN
        )));
    }
    Ok(bytes)
}

async fn send(State(api): State<Api>, body: Body) -> Result<axum::Json<Value>, ApiError> {
    let req: SendRequest = json_body(body).await?;
    let (to, data) = (node_id(&req.to)?, payload(&req.data)?);
    api.node.send(to, &data)?;
    Ok(axum::Json(json!({ "sent": data.len() })))
}

async fn send_direct(State(api): State<Api>, body: Body) -> Result<axum::Json<Value>, ApiError> {
    let req: SendRequest = json_body(body).await?;
    let (to, data) = (node_id(&req.to)?, payload(&req.data)?);
    api.node.send_direct(to, &data).await?;
    Ok(axum::Json(json!({ "sent": data.len() })))
}

async fn connect(State(api): State<Api>, body: Body) -> Result<axum::Json<Value>, ApiError> {
    let req: ConnectRequest = json_body(body).await?;
    let to = node_id(&req.to)?;
    let started = Instant::now();
    let conn = api.node.connect(to).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(axum::Json(json!({
        "path": conn.path().as_str(),
        "ms": (ms * 1000.0).round() / 1000.0,
    })))
}

async fn disconnect(State(api): State<Api>, body: Body) -> Result<axum::Json<Value>, ApiError> {
    let req: ConnectRequest = json_body(body).await?;
    let to = node_id(&req.to)?;
    Ok(axum::Json(json!({ "closed": api.node.disconnect(&to) })))
}

async fn call(State(api): State<Api>, body: Body) -> Result<axum::Json<Value>, ApiError> {
    let req: crate::call::CallRequest = json_body(body).await?;
    let to = node_id(&req.to)?;
    req.check().map_err(ApiError::bad)?;
    Ok(axum::Json(
        crate::call::test_call(&api.node, to, &req).await?,
    ))
}

async fn events(State(api): State<Api>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = api.events.subscribe();
    let stream = futures_util::stream::unfold((rx, api.stop), |(mut rx, mut stop)| async move {
        let data: Arc<str> = tokio::select! {
            r = rx.recv() => match r {
                Ok(json) => json,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    json!({ "type": "lagged", "missed": n }).to_string().into()
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = stop.wait_for(|s| *s) => return None,
        };
        Some((Ok(SseEvent::default().data(&*data)), (rx, stop)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
