//! The raw-quinn baseline the transport's throughput is compared against.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use nodenet_identity::Identity;
use nodenet_transport::quic::{QuicConfig, danger_configs};

/// MiB/s of `total` bytes through raw quinn with the transport's exact settings (its
/// listener's and dialer's quinn configs): one bidirectional stream, `chunk`-byte writes,
/// the receiver reading into a `chunk`-byte buffer, from the dial to the last byte read.
///
/// # Panics
/// If loopback sockets or the handshake fail, or bytes go missing: a benchmark has no
/// figure to report then.
pub async fn raw_quinn_mib_s(total: u64, chunk: usize) -> f64 {
    let cfg = QuicConfig::default();
    let ident = |n: u8| Identity::from_seed(&[n; 32]);
    let (server_cfg, _) = danger_configs(&ident(3), &cfg).expect("configs");
    let (_, client_cfg) = danger_configs(&ident(4), &cfg).expect("configs");
    let server = endpoint(Some(server_cfg));
    let client = endpoint(None);
    let server_addr = server.local_addr().expect("addr");
    let receiver = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        let (_send, mut recv) = conn.accept_bi().await.expect("stream");
        let mut buf = vec![0u8; chunk];
        let mut got = 0u64;
        while got < total {
            match recv.read(&mut buf).await.expect("read") {
                Some(n) => got += n as u64,
                None => break,
            }
        }
        assert_eq!(got, total, "raw quinn lost bytes");
        let done = Instant::now();
        conn.close(0u32.into(), b"");
        done
    });
    let start = Instant::now();
    let conn = client
        .connect_with(client_cfg, server_addr, "nodenet")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    let data = vec![0x5au8; chunk];
    let mut sent = 0u64;
    while sent < total {
        send.write_all(&data).await.expect("write");
        sent += chunk as u64;
    }
    let done = receiver.await.expect("receiver");
    client.close(0u32.into(), b"");
    total as f64 / (1024.0 * 1024.0) / done.duration_since(start).as_secs_f64()
}

fn endpoint(server: Option<quinn::ServerConfig>) -> quinn::Endpoint {
    let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("socket");
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .expect("endpoint")
}
