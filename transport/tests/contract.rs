//! Both bundled transports pass the shared contract suite.

use std::sync::Arc;
use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_transport::contract::{Harness, run_all};
use nodenet_transport::mem::Hub;
use nodenet_transport::quic::{QuicConfig, QuicTransport};
use nodenet_transport::{Addr, Transport};

struct MemHarness {
    hub: Hub,
    n: usize,
}

impl Harness for MemHarness {
    fn transport(&mut self, identity: &Identity) -> Arc<dyn Transport> {
        self.n += 1;
        Arc::new(
            self.hub
                .transport(identity.node_id(), &format!("node-{}", self.n))
                .unwrap(),
        )
    }

    fn unreachable_addr(&mut self) -> Addr {
        Addr::new("mem", "nobody-home")
    }
}

#[tokio::test(start_paused = true)]
async fn mem_passes_the_contract() {
    run_all(&mut MemHarness {
        hub: Hub::new(),
        n: 0,
    })
    .await;
}

struct QuicHarness;

impl Harness for QuicHarness {
    fn transport(&mut self, identity: &Identity) -> Arc<dyn Transport> {
        let config = QuicConfig::default().handshake_timeout(Duration::from_secs(2));
        Arc::new(QuicTransport::bind(identity, "127.0.0.1:0".parse().unwrap(), config).unwrap())
    }

    fn unreachable_addr(&mut self) -> Addr {
        // A port that was just free: nothing answers there.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        drop(s);
        Addr::new("quic", addr.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_passes_the_contract() {
    run_all(&mut QuicHarness).await;
}

/// What a transport hands out through its `as_*` methods, as five flags.
fn capabilities(t: &dyn Transport) -> [bool; 5] {
    [
        t.as_punch().is_some(),
        t.as_relay().is_some(),
        t.as_birthday().is_some(),
        t.as_media().is_some(),
        t.as_streams().is_some(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_bundled_transports_have_every_capability() {
    let id = Identity::from_seed(&[7; 32]);
    let mem = MemHarness {
        hub: Hub::new(),
        n: 0,
    }
    .transport(&id);
    let quic = QuicHarness.transport(&id);
    assert_eq!(capabilities(mem.as_ref()), [true; 5]);
    assert_eq!(capabilities(quic.as_ref()), [true; 5]);
    // Through the trait object the capability is the transport's own: a punch toward a
    // hostname is refused by the transport, not by a default.
    let punch = quic.as_punch().unwrap();
    assert!(
        punch
            .punch(&Addr::new("quic", "example.invalid:1"))
            .is_err()
    );
}
