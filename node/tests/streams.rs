//! Streams between nodes: on the in-memory hub (paused clock) and over QUIC on loopback.
//! Bytes arrive exact and in order, a slow reader slows the writer without loss, every early
//! end is an error at both ends, and inbound streams pass their gates (handler, hook, caps).

use std::time::Duration;

use nodenet::testing::Cluster;
use nodenet::{
    ConnectError, ListenError, MAX_STREAMS_PER_PEER, Node, OpenStreamError, QuicConfig, RecvStream,
    Refusal, SendStream, StreamError,
};
use tokio::io::AsyncReadExt;

/// `len` bytes of a pattern that a shifted or dropped chunk cannot reproduce.
fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[0] ^ i.to_le_bytes()[2])
        .collect()
}

/// Echoes every stream of `listener` back to its opener.
fn echo(mut listener: nodenet::StreamListener) {
    tokio::spawn(async move {
        while let Some((mut send, mut recv)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(Some(n)) = recv.read(&mut buf).await {
                    if send.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                let _ = send.finish().await;
            });
        }
    });
}

/// Writes `body` and finishes, while reading the echo to the end.
async fn round_trip(mut send: SendStream, mut recv: RecvStream, body: &[u8]) -> Vec<u8> {
    let out = body.to_vec();
    let writer = tokio::spawn(async move {
        send.write_all(&out).await.unwrap();
        send.finish().await.unwrap();
    });
    let back = recv.read_to_end(body.len() + 1).await.unwrap();
    writer.await.unwrap();
    back
}

#[tokio::test(start_paused = true)]
async fn a_stream_echoes_four_mebibytes_exactly_on_the_hub() {
    let cluster = Cluster::builder(4).build();
    cluster.settled(Duration::from_secs(120)).await.unwrap();
    let (a, b) = (cluster.node(1).clone(), cluster.node(3).clone());
    echo(b.accept_streams("echo/1").unwrap());
    let (send, recv) = a.open_stream(b.id(), "echo/1").await.unwrap();
    assert_eq!((send.remote_id(), recv.remote_id()), (b.id(), b.id()));
    let body = data(4 << 20);
    assert!(round_trip(send, recv, &body).await == body);
    assert_eq!(a.stats().streams_opened, 1);
    assert_eq!(b.stats().streams_accepted, 1);
    // The echo task dropped its halves: the slot is back.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(b.inbound_streams(), 0);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn inbound_streams_pass_the_handler_the_hook_and_the_caps() {
    // Node 2 takes nothing from the peer named here (node 0, once it exists).
    let banned = std::sync::Arc::new(std::sync::Mutex::new(None));
    let ban = banned.clone();
    let mut cluster = Cluster::builder(3)
        .configure(move |i, b| {
            let ban = ban.clone();
            if i == 2 {
                b.stream_admission(move |peer, _| *ban.lock().unwrap() != Some(*peer))
            } else {
                b
            }
        })
        .build();
    *banned.lock().unwrap() = Some(cluster.id(0));
    cluster.settled(Duration::from_secs(120)).await.unwrap();
    let (zero, one, two) = (
        cluster.node(0).clone(),
        cluster.node(1).clone(),
        cluster.node(2).clone(),
    );
    let refused = |r: Result<(SendStream, RecvStream), OpenStreamError>| match r {
        Err(OpenStreamError::Stream {
            error: StreamError::Refused(why),
            ..
        }) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Nothing is accepted by default.
    assert_eq!(
        refused(one.open_stream(two.id(), "files/1").await),
        Refusal::NoHandler
    );
    assert_eq!(two.stats().dropped_stream_no_handler, 1);

    let mut files = two.accept_streams("files/1").unwrap();
    assert_eq!(
        two.accept_streams("files/1").unwrap_err(),
        ListenError::AlreadyListening("files/1".into())
    );
    assert!(matches!(
        two.accept_streams("two words"),
        Err(ListenError::BadProtocol(_))
    ));
    assert!(matches!(
        one.open_stream(two.id(), &"x".repeat(65)).await,
        Err(OpenStreamError::BadProtocol(_))
    ));
    assert!(matches!(
        one.open_stream(one.id(), "files/1").await,
        Err(OpenStreamError::Connect(ConnectError::SelfTarget))
    ));
    // The hook refuses node 0.
    assert_eq!(
        refused(zero.open_stream(two.id(), "files/1").await),
        Refusal::Refused
    );
    assert_eq!(two.stats().dropped_stream_refused, 1);

    // The per-peer cap: 16 live streams from node 1, the 17th is busy.
    let mut held = Vec::new();
    for _ in 0..MAX_STREAMS_PER_PEER {
        held.push(one.open_stream(two.id(), "files/1").await.unwrap());
        held.push(files.accept().await.unwrap());
    }
    assert_eq!(two.inbound_streams(), MAX_STREAMS_PER_PEER);
    assert_eq!(
        refused(one.open_stream(two.id(), "files/1").await),
        Refusal::Busy
    );
    assert_eq!(two.stats().dropped_stream_cap, 1);
    // Dropping them gives the slots back.
    drop(held);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(two.inbound_streams(), 0);
    let (_s, _r) = one.open_stream(two.id(), "files/1").await.unwrap();

    // A dropped listener unregisters the protocol.
    drop(files);
    assert_eq!(
        refused(one.open_stream(two.id(), "files/1").await),
        Refusal::NoHandler
    );
    // A node without the extension (the Go reference) is a typed error, not a hang.
    let three = cluster.join(nodenet::Identity::from_seed(&[9; 32]), |b| b);
    cluster.settled(Duration::from_secs(120)).await.unwrap();
    let three_id = cluster.id(three);
    cluster.hub().set_streams(three_id, false);
    assert!(matches!(
        one.open_stream(three_id, "files/1").await,
        Err(OpenStreamError::Stream {
            error: StreamError::Unsupported,
            ..
        })
    ));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_slows_the_writer_and_loses_nothing() {
    let cluster = Cluster::builder(3).build();
    cluster.settled(Duration::from_secs(120)).await.unwrap();
    let (a, b) = (cluster.node(1).clone(), cluster.node(2).clone());
    let mut listener = b.accept_streams("slow/1").unwrap();
    let (mut send, _recv) = a.open_stream(b.id(), "slow/1").await.unwrap();
    let (_back, mut recv) = listener.accept().await.unwrap();
    let body = data(8 << 20);
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = written.clone();
    let out = body.clone();
    let writer = tokio::spawn(async move {
        for chunk in out.chunks(16 * 1024) {
            send.write_all(chunk).await.unwrap();
            w.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
        }
        send.finish().await.unwrap();
    });
    // 4 KiB per simulated millisecond: 2,048 reads of 4 KiB, each 1 ms apart.
    let mut got = Vec::with_capacity(body.len());
    let mut buf = vec![0u8; 4096];
    let mut ahead_max = 0;
    loop {
        let n = recv.read(&mut buf).await.unwrap();
        let Some(n) = n else { break };
        got.extend_from_slice(&buf[..n]);
        // What the writer has handed over but the reader has not read: the window, at most
        // (plus the one chunk in the writer's hands).
        let ahead = written.load(std::sync::atomic::Ordering::SeqCst) - got.len().min(body.len());
        ahead_max = ahead_max.max(ahead);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    writer.await.unwrap();
    assert!(got == body, "bytes lost or reordered");
    assert!(
        ahead_max <= nodenet_transport::stream::MEM_WINDOW + 16 * 1024,
        "the writer ran {ahead_max} bytes ahead of the reader"
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reset_a_stop_and_a_dead_path_are_errors_at_both_ends() {
    let cluster = Cluster::builder(4).build();
    cluster.settled(Duration::from_secs(120)).await.unwrap();
    let (a, b) = (cluster.node(2).clone(), cluster.node(3).clone());
    let mut listener = b.accept_streams("x/1").unwrap();

    // A reset reaches the reader as a reset, not as an end.
    let (mut send, _r) = a.open_stream(b.id(), "x/1").await.unwrap();
    let (_s, mut recv) = listener.accept().await.unwrap();
    send.write_all(b"half a file").await.unwrap();
    send.reset(7);
    assert_eq!(recv.read_to_end(1 << 20).await, Err(StreamError::Reset(7)));

    // A writer dropped unfinished is a reset too; AsyncRead reports it as an io error.
    let (mut send, _r) = a.open_stream(b.id(), "x/1").await.unwrap();
    let (_s, mut recv) = listener.accept().await.unwrap();
    send.write_all(b"half").await.unwrap();
    drop(send);
    let mut sink = Vec::new();
    let e = AsyncReadExt::read_to_end(&mut recv, &mut sink)
        .await
        .unwrap_err();
    assert_eq!(StreamError::from_io(&e), Some(&StreamError::Reset(0)));

    // A reader that stops fails the writer.
    let (mut send, _r) = a.open_stream(b.id(), "x/1").await.unwrap();
    let (_s, mut recv) = listener.accept().await.unwrap();
    recv.stop(3);
    assert_eq!(send.write_all(b"more").await, Err(StreamError::Stopped(3)));

    // A partition that outlasts the idle timeout fails both ends, in the middle of a write.
    let (mut send, mut mine) = a.open_stream(b.id(), "x/1").await.unwrap();
    let (mut theirs, mut recv) = listener.accept().await.unwrap();
    cluster.partition(2, 3);
    let big = data(4 << 20);
    let (w, r) = tokio::join!(send.write_all(&big), async {
        let mut buf = vec![0u8; 1 << 16];
        // Read a little, then stall: the writer blocks on the window until the path dies.
        let _ = recv.read(&mut buf).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(_)) => {}
                other => break other,
            }
        }
    });
    assert_eq!(w, Err(StreamError::Lost));
    assert_eq!(r, Err(StreamError::Lost));
    assert_eq!(theirs.write_all(b"x").await, Err(StreamError::Lost));
    assert_eq!(mine.read(&mut [0u8; 8]).await, Err(StreamError::Lost));
    cluster.shutdown().await;
}

async fn quic_pair(b_config: QuicConfig) -> (Node, Node) {
    let a = Node::builder(nodenet::mint_identity(0).unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = Node::builder(nodenet::mint_identity(0).unwrap())
        .quic_config(b_config)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    a.dial(b.contact()).await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_streams_carry_sixteen_mebibytes_and_refuse_politely() {
    let (a, b) = quic_pair(QuicConfig::default()).await;
    echo(b.accept_streams("echo/1").unwrap());
    let (send, recv) = a.open_stream(b.id(), "echo/1").await.unwrap();
    let body = data(16 << 20);
    assert!(round_trip(send, recv, &body).await == body);

    // Refusal and reset cross QUIC as they cross the hub.
    assert!(matches!(
        a.open_stream(b.id(), "nobody/1").await,
        Err(OpenStreamError::Stream {
            error: StreamError::Refused(Refusal::NoHandler),
            ..
        })
    ));
    let mut listener = b.accept_streams("x/1").unwrap();
    let (mut send, _r) = a.open_stream(b.id(), "x/1").await.unwrap();
    let (_s, mut recv) = listener.accept().await.unwrap();
    send.write_all(b"partial").await.unwrap();
    drop(send);
    assert_eq!(recv.read_to_end(1 << 20).await, Err(StreamError::Reset(0)));
    let (mut send, _r) = a.open_stream(b.id(), "x/1").await.unwrap();
    let (_s, mut recv) = listener.accept().await.unwrap();
    recv.stop(5);
    let mut stopped = Ok(());
    for _ in 0..100 {
        stopped = send.write_all(&[0u8; 1024]).await;
        if stopped.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stopped, Err(StreamError::Stopped(5)));

    // A peer shutting down ends its streams at our end with an error, not an end.
    let (mut send, mut recv) = a.open_stream(b.id(), "x/1").await.unwrap();
    let held = listener.accept().await.unwrap();
    b.shutdown().await;
    drop(held);
    let r = tokio::time::timeout(Duration::from_secs(15), recv.read(&mut [0u8; 16]))
        .await
        .unwrap();
    assert!(r.is_err(), "a stream of a node that shut down read {r:?}");
    assert!(send.write_all(b"x").await.is_err());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_slow_reader_loses_nothing_and_a_peer_without_streams_is_unsupported() {
    let (a, b) = quic_pair(QuicConfig::default()).await;
    let mut listener = b.accept_streams("slow/1").unwrap();
    let (mut send, _r) = a.open_stream(b.id(), "slow/1").await.unwrap();
    let (_s, mut recv) = listener.accept().await.unwrap();
    let body = data(6 << 20);
    let out = body.clone();
    let writer = tokio::spawn(async move {
        send.write_all(&out).await.unwrap();
        send.finish().await.unwrap();
    });
    // About 20 MiB/s: 64 KiB every 3 ms.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(n) = recv.read(&mut buf).await.unwrap() {
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    writer.await.unwrap();
    assert!(got == body, "bytes lost or reordered");

    let (c, d) = quic_pair(QuicConfig::default().streams(false)).await;
    let r = tokio::time::timeout(Duration::from_secs(15), c.open_stream(d.id(), "x/1"))
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            Err(OpenStreamError::Stream {
                error: StreamError::Unsupported,
                ..
            })
        ),
        "{r:?}"
    );
    for n in [a, b, c, d] {
        n.shutdown().await;
    }
}
