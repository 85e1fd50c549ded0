//! Files and pipes between two running nodes, over a stream (`nodenet send-file`,
//! `nodenet pipe`, `run --accept-files`).
//!
//! The client never hands the node a path: it streams the bytes in the body of its API
//! request (`POST /send-file`, `POST /pipe`), so a local process can send only what it can
//! read itself. The node passes them on as fast as the stream takes them (a slow peer slows
//! the upload), and answers once the peer holds them.
//!
//! A file travels on protocol [`FILE_PROTOCOL`]:
//! `name_len(2, BE) | name | size(8, BE) | data(size) | blake2b-256(data)(32)`, then FIN.
//! The receiver writes it to `DIR/.nodenet-<random>.part`, checks the length and the hash,
//! links it in as `DIR/name` (or `name.1`, `name.2`, … if taken: a link never replaces a
//! file) and answers `0 | hash(32)`; on any failure it deletes the part and answers
//! `1 | reason (UTF-8)`. Parts a stopped node left behind are removed when it starts again. A pipe ([`PIPE_PROTOCOL`]) is the raw
//! bytes, and `GET /pipe` on the receiving node streams the next one out as its body.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, BodyDataStream};
use blake2::{Blake2b256, Digest};
use futures_util::StreamExt as _;
use nodenet::{Node, NodeId, RecvStream, SendStream};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

/// The stream protocol of files.
pub(crate) const FILE_PROTOCOL: &str = "nodenet-file/1";
/// The stream protocol of pipes.
pub(crate) const PIPE_PROTOCOL: &str = "nodenet-pipe/1";
/// Longest file name, in bytes (room left for a `.N` suffix within the usual 255).
pub(crate) const MAX_NAME: usize = 240;
/// Longest wait for a sender's next bytes, or for a receiver's answer once it has them all.
pub(crate) const STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// Files a node takes at once; more are refused as busy.
pub(crate) const MAX_RECEIVING: usize = 4;
/// The prefix of part files in the receiving directory (removed at startup if left over).
const PART_PREFIX: &str = ".nodenet-";
/// Longest answer a receiver sends.
const MAX_ANSWER: usize = 1 + 512;

type Hasher = Blake2b256;

/// Why a transfer failed, as the API reports it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    #[error(
        "bad file name {0:?}: 1 to 240 bytes, no '/', '\\' or control characters, not '.' or '..'"
    )]
    BadName(String),
    #[error(transparent)]
    Connect(#[from] nodenet::ConnectError),
    #[error(transparent)]
    Open(#[from] nodenet::OpenStreamError),
    #[error("stream: {0}")]
    Stream(#[from] nodenet::StreamError),
    #[error("reading the upload: {0}")]
    Upload(String),
    #[error("the upload carried {got} bytes, not the {size} announced")]
    Length { got: u64, size: u64 },
    #[error("the receiver refused the file: {0}")]
    Refused(String),
    #[error("the receiver's hash {theirs} is not ours {ours}")]
    HashMismatch { ours: String, theirs: String },
    #[error("the receiver's answer is malformed")]
    BadAnswer,
    #[error("the receiver sent no answer within {0:?} of the last byte")]
    NoAnswer(std::time::Duration),
}

/// Checks a file name a peer or a user gave: a plain name, never a path.
pub(crate) fn check_name(name: &str) -> Result<(), TransferError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(TransferError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Sends the upload `body` (`size` bytes) to `to` as the file `name`; returns the report.
pub(crate) async fn send_file(
    node: &Node,
    to: NodeId,
    name: &str,
    size: u64,
    body: &mut BodyDataStream,
) -> Result<Value, TransferError> {
    check_name(name)?;
    let started = Instant::now();
    let path = node.connect(to).await?.path();
    let (mut send, mut recv) = node.open_stream(to, FILE_PROTOCOL).await?;
    let mut header = Vec::with_capacity(10 + name.len());
    // check_name bounds the name to MAX_NAME bytes.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(name.as_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    send.write_all(&header).await?;
    let mut hasher = Hasher::new();
    let got = copy_upload(body, &mut send, Some(&mut hasher)).await?;
    if got != size {
        send.reset(1);
        return Err(TransferError::Length { got, size });
    }
    let ours: [u8; 32] = hasher.finalize().into();
    send.write_all(&ours).await?;
    let answer = tokio::time::timeout(STALL, async {
        send.finish().await?;
        recv.read_to_end(MAX_ANSWER).await
    })
    .await
    .map_err(|_| TransferError::NoAnswer(STALL))??;
    match answer.split_first() {
        Some((0, theirs)) if theirs == ours => {}
        Some((0, theirs)) => {
            return Err(TransferError::HashMismatch {
                ours: hex::encode(ours),
                theirs: hex::encode(theirs),
            });
        }
        Some((1, why)) => {
            return Err(TransferError::Refused(
                String::from_utf8_lossy(why).into_owned(),
            ));
        }
        _ => return Err(TransferError::BadAnswer),
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "to": to.to_string(),
        "name": name,
        "bytes": size,
        "secs": secs,
        "mib_s": size as f64 / (1024.0 * 1024.0) / secs.max(1e-9),
        "path": path.as_str(),
        "blake2b": hex::encode(ours),
        "verified": true,
    }))
}

/// Sends the upload `body` to `to` as a pipe; returns the report.
pub(crate) async fn send_pipe(
    node: &Node,
    to: NodeId,
    body: &mut BodyDataStream,
) -> Result<Value, TransferError> {
    let started = Instant::now();
    let path = node.connect(to).await?.path();
    let (mut send, _recv) = node.open_stream(to, PIPE_PROTOCOL).await?;
    let bytes = copy_upload(body, &mut send, None).await?;
    send.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "to": to.to_string(),
        "bytes": bytes,
        "secs": secs,
        "mib_s": bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9),
        "path": path.as_str(),
    }))
}

/// Copies an API request's body into the stream (hashing it on the way); returns its length.
/// An upload that fails midway resets the stream, so the peer never takes a cut file whole.
async fn copy_upload(
    data: &mut BodyDataStream,
    send: &mut SendStream,
    mut hasher: Option<&mut Hasher>,
) -> Result<u64, TransferError> {
    let mut total = 0u64;
    while let Some(chunk) = data.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                send.reset(1);
                return Err(TransferError::Upload(e.to_string()));
            }
        };
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&chunk);
        }
        send.write_all(&chunk).await?;
        total += chunk.len() as u64;
    }
    Ok(total)
}

/// Reads what is left of a refused upload (for at most 2 s), so the client's HTTP stack
/// gets to read the answer instead of failing on a body nobody reads.
pub(crate) async fn drain(body: &mut BodyDataStream) {
    let rest = async { while let Some(Ok(_)) = body.next().await {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rest).await;
}

/// Streams an inbound pipe out as an HTTP body. The send half lives as long as the body and
/// is finished at its clean end (a pipe is one-way; the opener sees an empty reply).
pub(crate) fn pipe_body(send: SendStream, recv: RecvStream) -> Body {
    let chunks = futures_util::stream::unfold(Some((send, recv)), |state| async move {
        let (mut send, mut recv) = state?;
        let mut buf = vec![0u8; 64 * 1024];
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)),
                    Some((send, recv)),
                ))
            }
            Ok(None) => {
                let _ = send.finish().await;
                None
            }
            // A cut pipe cuts the HTTP body too, so the client sees an error, not an end.
            Err(e) => Some((Err(std::io::Error::from(e)), None)),
        }
    });
    Body::from_stream(chunks)
}

/// Removes part files a stopped node left in `dir`.
pub(crate) fn remove_stale_parts(dir: &FsPath) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PART_PREFIX) && name.ends_with(".part") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Takes files into `dir` until the node shuts down (`run --accept-files`): at most
/// [`MAX_RECEIVING`] at once, each abandoned when its sender stalls for [`STALL`].
pub(crate) async fn accept_files(node: Node, dir: PathBuf, max_size: u64) {
    remove_stale_parts(&dir);
    let mut files = match node.accept_streams(FILE_PROTOCOL) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(event = "files_refused", error = %e, "cannot accept files");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_RECEIVING));
    while let Some((mut send, recv)) = files.accept().await {
        let dir = dir.clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let why = format!("busy: {MAX_RECEIVING} files are arriving already");
                let answer = [&[1u8][..], why.as_bytes()].concat();
                let _ = tokio::time::timeout(STALL, async {
                    send.write_all(&answer).await?;
                    send.finish().await
                })
                .await;
                drop(recv);
            });
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let from = recv.remote_id();
            let started = Instant::now();
            match receive_file(send, recv, &dir, max_size).await {
                Ok((path, size, hash)) => tracing::info!(
                    event = "file_received",
                    from = %from,
                    path = %path.display(),
                    bytes = size,
                    secs = started.elapsed().as_secs_f64(),
                    blake2b = %hex::encode(hash),
                    "file received and verified"
                ),
                Err(e) => tracing::warn!(
                    event = "file_failed",
                    from = %from,
                    error = %e,
                    "file not received"
                ),
            }
        });
    }
}

/// Why a file was not taken (the reason goes back to the sender).
#[derive(Debug, thiserror::Error)]
enum ReceiveError {
    #[error("stream: {0}")]
    Stream(#[from] nodenet::StreamError),
    #[error("{0}")]
    Refuse(String),
    #[error("disk: {0}")]
    Disk(#[from] std::io::Error),
}

/// One read that must make progress within [`STALL`].
async fn read_some(recv: &mut RecvStream, buf: &mut [u8]) -> Result<Option<usize>, ReceiveError> {
    tokio::time::timeout(STALL, recv.read(buf))
        .await
        .map_err(|_| ReceiveError::Refuse(format!("the sender stalled for {STALL:?}")))?
        .map_err(ReceiveError::Stream)
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), ReceiveError> {
    let mut at = 0;
    while at < buf.len() {
        match read_some(recv, &mut buf[at..]).await? {
            Some(n) => at += n,
            None => return Err(ReceiveError::Refuse("the stream ended early".into())),
        }
    }
    Ok(())
}

async fn receive_file(
    mut send: SendStream,
    mut recv: RecvStream,
    dir: &FsPath,
    max_size: u64,
) -> Result<(PathBuf, u64, [u8; 32]), ReceiveError> {
    let mut part: Option<PathBuf> = None;
    let result = receive_into(&mut recv, dir, max_size, &mut part).await;
    let answer = match &result {
        Ok((_, _, hash)) => [&[0u8][..], hash].concat(),
        Err(e) => {
            if let Some(p) = &part {
                let _ = tokio::fs::remove_file(p).await;
            }
            let mut why = e.to_string().into_bytes();
            why.truncate(MAX_ANSWER - 1);
            [&[1u8][..], &why].concat()
        }
    };
    // The sender may be gone already (a cut stream): the answer is best effort.
    let _ = tokio::time::timeout(STALL, async {
        send.write_all(&answer).await?;
        send.finish().await
    })
    .await;
    result
}

async fn receive_into(
    recv: &mut RecvStream,
    dir: &FsPath,
    max_size: u64,
    part: &mut Option<PathBuf>,
) -> Result<(PathBuf, u64, [u8; 32]), ReceiveError> {
    let mut len = [0u8; 2];
    read_exact(recv, &mut len).await?;
    let mut name = vec![0u8; usize::from(u16::from_be_bytes(len))];
    if name.len() > MAX_NAME {
        return Err(ReceiveError::Refuse(format!(
            "file name over {MAX_NAME} bytes"
        )));
    }
    read_exact(recv, &mut name).await?;
    let name = String::from_utf8(name)
        .map_err(|_| ReceiveError::Refuse("file name is not UTF-8".into()))?;
    check_name(&name).map_err(|e| ReceiveError::Refuse(e.to_string()))?;
    let mut size = [0u8; 8];
    read_exact(recv, &mut size).await?;
    let size = u64::from_be_bytes(size);
    if size > max_size {
        return Err(ReceiveError::Refuse(format!(
            "{size} bytes is over this node's limit of {max_size}"
        )));
    }
    let part_path = dir.join(format!("{PART_PREFIX}{:016x}.part", rand_suffix()));
    let mut file = tokio::fs::File::create(&part_path).await?;
    *part = Some(part_path.clone());
    let mut hasher = Hasher::new();
    let mut left = size;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let Some(n) = read_some(recv, &mut buf[..want]).await? else {
            return Err(ReceiveError::Refuse(format!(
                "the stream ended {left} bytes short"
            )));
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    let mut theirs = [0u8; 32];
    read_exact(recv, &mut theirs).await?;
    if read_some(recv, &mut [0u8; 1]).await?.is_some() {
        return Err(ReceiveError::Refuse("bytes after the hash".into()));
    }
    let ours: [u8; 32] = hasher.finalize().into();
    if ours != theirs {
        return Err(ReceiveError::Refuse(format!(
            "content hash {} is not the announced {}",
            hex::encode(ours),
            hex::encode(theirs)
        )));
    }
    file.sync_all().await?;
    drop(file);
    let target = place(&part_path, dir, &name).await?;
    let _ = tokio::fs::remove_file(&part_path).await;
    *part = None;
    Ok((target, size, ours))
}

/// Links the finished part in as `dir/name`, or `dir/name.N` for the first N not taken. A
/// link never replaces an existing file, so two files of one name cannot overwrite each
/// other (nor anything else in the directory).
async fn place(part: &FsPath, dir: &FsPath, name: &str) -> Result<PathBuf, ReceiveError> {
    for n in 0..1000 {
        let p = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{name}.{n}"))
        };
        match tokio::fs::hard_link(part, &p).await {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ReceiveError::Refuse(format!("no free name for {name:?}")))
}

fn rand_suffix() -> u64 {
    use rand_core::Rng as _;
    rand_core::UnwrapErr(getrandom::SysRng).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain_names() {
        let longest = "x".repeat(MAX_NAME);
        for ok in ["a.txt", "report 2026.pdf", ".hidden", "é", longest.as_str()] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(MAX_NAME + 1);
        let bad = [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a\\b",
            "a\0b",
            "a\nb",
            "\u{1b}[2J",
        ];
        for bad in bad.into_iter().chain([long.as_str()]) {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
