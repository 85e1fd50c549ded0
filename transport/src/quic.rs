//! The QUIC transport: quinn and rustls over one UDP socket, wire-compatible with the
//! reference implementation.
//!
//! - **Identity.** Mutual TLS 1.3 with ALPN `nodenet/1`. Each side presents a throwaway
//!   certificate whose extension proves its NodeId (see [`verify_peer_cert`]); a dial succeeds
//!   only if the peer proves the NodeId dialed ([`DialError::IdentityMismatch`] otherwise).
//! - **Framing.** An edge is one QUIC connection with one long-lived bidirectional stream,
//!   opened by the dialer. Each packet travels as `uvarint(len) | packet`, `len ≤ 65,536`; a
//!   longer prefix closes the connection. So a frame on the stream carries two length
//!   prefixes: the stream's and the frame's own.
//! - **One socket.** Dialing, accepting and (later) hole-punching share one UDP socket, so a
//!   NAT mapping opened by one serves the others. [`QuicTransport::punch_to`] sends the
//!   4-byte punch datagram from it.
//! - **Inbound caps count proven addresses only.** A UDP source address is trivially forged,
//!   so the global and per-IP caps count only connections whose source address is validated:
//!   by a QUIC Retry round trip, or by completing the handshake. A new attempt from an unproven
//!   address may take one of a small budget of unvalidated handshakes; when that budget is
//!   spent, or its IP (or the node) is at a cap, it is first sent a Retry, which costs us no
//!   state. Only a validated attempt over a cap is refused: one with a Retry token before quinn
//!   allocates anything for it, one proven by its handshake right after (closed as "busy"). So spoofed Initials can neither fill the caps nor lock a chosen IP out; at worst they
//!   cost honest dialers one extra round trip.
//! - **Timers.** Handshake 10 s; an inbound edge must deliver its first frame within 30 s; a
//!   frame not written within 5 s tears its edge down; idle connections die after 5 min (the
//!   overlay's own pings keep live edges busy; QUIC keep-alive is off).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::mpsc;

use crate::{
    Addr, Birthday, BoxFuture, CloseReason, Conn, ConnSet, Counters, DialError, Direction, Event,
    Events, MAX_PACKET_LEN, Media, Packet, Punch, PunchError, RecvStream, Relay, RelayError,
    SendStream, SizeClass, StreamError, Streams, Transport, TransportStats,
};

mod accept;
mod birthday;
mod config;
mod dial;
mod edge;
mod framing;
mod media;
mod relay;
mod stream;
pub use relay::RelayLimits;

use accept::*;
use config::*;
pub use config::{BindError, QuicConfig, danger_configs};
use dial::*;
use edge::*;
use framing::*;
pub use framing::{PrefixDecoder, PrefixTooLarge};

mod tls;

pub use tls::{
    EXTENSION_LEN, EXTENSION_OID, EXTENSION_OID_STR, PeerCertError, extension_value,
    verify_extension, verify_peer_cert,
};

/// The network name of QUIC addresses.
pub const NET: &str = "quic";
/// ALPN of overlay edges.
pub const ALPN: &[u8] = b"nodenet/1";
/// ALPN of media sessions.
pub const ALPN_MEDIA: &[u8] = b"nodenet-media/1";
/// ALPN of stream connections (a Rust-to-Rust extension; see [`crate::stream`]).
pub const ALPN_STREAM: &[u8] = b"nodenet-stream/1";
/// The hole-punch datagram. Its first byte has the top two bits clear, so QUIC stacks treat it
/// as a non-QUIC packet and drop it.
pub const PUNCH_DATAGRAM: [u8; 4] = [0x00, b'n', b'p', 0x01];
/// The server name every dial uses (the verifiers ignore names: identity is the NodeId).
const SERVER_NAME: &str = "nodenet";

/// A QUIC transport bound to one UDP socket.
#[derive(Clone, Debug)]
pub struct QuicTransport(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    id: NodeId,
    local: SocketAddr,
    endpoint: quinn::Endpoint,
    /// The listener's config (a birthday punch's endpoint serves it too).
    server: quinn::ServerConfig,
    /// Endpoints on birthday-punch sockets, by the peer they reach: a media session to that
    /// peer must leave from the same socket (its NAT mapping is the only way through).
    side_endpoints: Mutex<HashMap<NodeId, quinn::Endpoint>>,
    client: quinn::ClientConfig,
    /// The client config of media dials (`None` with media off).
    media_client: Option<quinn::ClientConfig>,
    /// The client config of stream dials (`None` with streams off).
    stream_client: Option<quinn::ClientConfig>,
    raw: UdpSocket,
    config: QuicConfig,
    events: Events,
    counters: Arc<Counters>,
    conns: ConnSet,
    inbound: Mutex<InboundSlots>,
    relays: Arc<relay::Relays>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl QuicTransport {
    /// Binds a UDP socket at `addr` and serves edges for `identity` on it. Must be called
    /// within a tokio runtime ([`BindError::NoRuntime`] otherwise).
    pub fn bind(
        identity: &Identity,
        addr: SocketAddr,
        config: QuicConfig,
    ) -> Result<Self, BindError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BindError::NoRuntime);
        }
        let socket = UdpSocket::bind(addr)?;
        let raw = socket.try_clone()?;
        let local = socket.local_addr()?;
        let Configs {
            server,
            client,
            media_client,
            stream_client,
        } = crypto_configs(identity, &config)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let relays = Arc::new(relay::Relays::new(config.relay));
        let shared = Arc::new(Shared {
            id: identity.node_id(),
            local,
            endpoint,
            server,
            side_endpoints: Mutex::new(HashMap::new()),
            client,
            media_client,
            stream_client,
            raw,
            events: Events::new(config.event_queue),
            config,
            counters: Arc::default(),
            conns: ConnSet::default(),
            inbound: Mutex::default(),
            relays,
        });
        tokio::spawn(accept_loop(shared.clone()));
        Ok(Self(shared))
    }

    /// The bound socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.0.local
    }

    /// Sends the 4-byte punch datagram to `target` from the transport's own socket, opening
    /// this side's NAT mapping toward it. Only routable unicast targets are accepted (and
    /// loopback ones by a transport bound to loopback).
    pub fn punch_to(&self, target: SocketAddr) -> Result<(), PunchError> {
        self.punch_policy(target)?;
        self.send_raw(&PUNCH_DATAGRAM, target)
            .map_err(|e| PunchError::Io(e.to_string()))?;
        Ok(())
    }

    /// Whether raw datagrams (punches, probes) may go to `target`.
    fn punch_policy(&self, target: SocketAddr) -> Result<(), PunchError> {
        let ip = target.ip();
        // A transport bound to loopback has only loopback peers: for it, loopback is where
        // peers are (a local cluster, a test, a benchmark).
        let refused = (ip.is_loopback() && !self.0.local.ip().is_loopback())
            || ip.is_multicast()
            || ip.is_unspecified()
            || match ip {
                IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            };
        if refused {
            return Err(PunchError::BadAddr {
                addr: Addr::new(NET, target.to_string()),
                why: "not a routable unicast address",
            });
        }
        Ok(())
    }

    /// Sends raw bytes from the shared socket (no address policy: crate-internal and tests).
    pub(crate) fn send_raw(&self, bytes: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.0.raw.send_to(bytes, target)
    }
}

impl Transport for QuicTransport {
    fn local_id(&self) -> NodeId {
        self.0.id
    }

    fn local_addr(&self) -> Addr {
        Addr::new(NET, self.0.local.to_string())
    }

    fn dial(&self, remote: NodeId, addr: &Addr) -> BoxFuture<'static, Result<Conn, DialError>> {
        let shared = self.0.clone();
        let addr = addr.clone();
        Box::pin(async move {
            let result = dial(&shared, remote, &addr).await;
            let c = &shared.counters;
            match &result {
                Ok(_) => Counters::inc(&c.dials_ok),
                Err(e) => {
                    Counters::inc(&c.dials_failed);
                    match e {
                        DialError::IdentityMismatch { .. } => {
                            Counters::inc(&c.dials_identity_mismatch);
                        }
                        DialError::Handshake(_) => Counters::inc(&c.handshake_failed),
                        _ => {}
                    }
                }
            }
            result
        })
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.events.poll(cx)
    }

    fn close(&self) {
        self.0.events.close();
        self.0.conns.close_all();
        self.0.endpoint.close(0u32.into(), b"");
    }

    fn stats(&self) -> TransportStats {
        self.0.counters.snapshot()
    }

    fn is_ip(&self) -> bool {
        true
    }

    fn as_punch(&self) -> Option<&dyn Punch> {
        Some(self)
    }

    fn as_relay(&self) -> Option<&dyn Relay> {
        Some(self)
    }

    fn as_birthday(&self) -> Option<&dyn Birthday> {
        Some(self)
    }

    fn as_media(&self) -> Option<&dyn Media> {
        Some(self)
    }

    fn as_streams(&self) -> Option<&dyn Streams> {
        Some(self)
    }
}

impl Punch for QuicTransport {
    fn punch(&self, addr: &Addr) -> Result<(), PunchError> {
        // A literal ip:port only: resolving a name a peer handed us would let it aim us.
        let target = (addr.net == NET)
            .then(|| addr.endpoint.parse::<SocketAddr>().ok())
            .flatten()
            .ok_or_else(|| PunchError::BadAddr {
                addr: addr.clone(),
                why: "not a literal quic ip:port",
            })?;
        self.punch_to(target)
    }
}

impl Relay for QuicTransport {
    fn relay(&self) -> Result<(Addr, Addr), RelayError> {
        let (caller, callee) = relay::open(self.0.local.ip(), &self.0.relays, &self.0.counters)?;
        Ok((
            Addr::new(NET, caller.to_string()),
            Addr::new(NET, callee.to_string()),
        ))
    }
}

impl Birthday for QuicTransport {
    fn birthday_hard(
        &self,
        remote: NodeId,
        easy: &Addr,
        probe: &[u8],
        params: crate::BirthdayParams,
    ) -> BoxFuture<'static, Result<Conn, crate::BirthdayError>> {
        Box::pin(birthday::hard(
            self.0.clone(),
            remote,
            easy.clone(),
            probe.to_vec(),
            params,
        ))
    }

    fn birthday_easy(
        &self,
        host: &str,
        probe: &[u8],
        params: crate::BirthdayParams,
    ) -> BoxFuture<'static, Result<u32, crate::BirthdayError>> {
        Box::pin(birthday::easy(
            self.clone(),
            host.to_owned(),
            probe.to_vec(),
            params,
        ))
    }
}

impl Media for QuicTransport {
    fn open_media(
        &self,
        remote: NodeId,
        addr: &Addr,
    ) -> BoxFuture<'static, Result<crate::MediaSession, crate::MediaError>> {
        Box::pin(media::open(self.0.clone(), remote, addr.clone()))
    }
}

impl Streams for QuicTransport {
    fn open_stream(
        &self,
        remote: NodeId,
        addr: &Addr,
        protocol: &str,
    ) -> BoxFuture<'static, Result<(SendStream, RecvStream), StreamError>> {
        Box::pin(stream::open(
            self.0.clone(),
            remote,
            addr.clone(),
            protocol.to_owned(),
        ))
    }
}

#[doc(hidden)]
/// Fuzz-target logic, shared by `fuzz/` and the corpus-replay test. Not a stable API.
pub mod fuzzing {
    #![allow(
        clippy::panic,
        clippy::expect_used,
        reason = "fuzz targets report by panicking"
    )]
    use std::sync::OnceLock;

    use nodenet_identity::{Identity, derive_id, verify};
    use nodenet_kad::NodeId;
    pub use nodenet_wire::fuzzing::Reached;
    use nodenet_wire::{Reader, WireError};

    use super::tls::verify_peer_cert_key;
    use super::{
        EXTENSION_LEN, EXTENSION_OID_STR, MAX_PACKET_LEN, PeerCertError, PrefixDecoder,
        extension_value, verify_extension, verify_peer_cert,
    };

    /// The checks of [`peer_cert`], in [`Reached`] bit order.
    pub const PEER_CERT_CHECKS: &[&str] = &[
        "accepted certificate: its key hashes to the NodeId and signs its SPKI",
        "genuine binding spliced in: accepted as the signer's NodeId",
        "genuine binding, SPKI bit flipped: refused",
        "genuine binding, extension key bit flipped: refused",
        "extension | SPKI pair: a genuine one verifies as its signer, flipped ones do not",
        "as received (nothing spliced): an accepted certificate or pair proves its key's NodeId",
    ];

    /// Where, in a DER certificate, the first nodenet identity extension's value and the
    /// SubjectPublicKeyInfo are: `(value offset, value length, SPKI offset, SPKI length)`.
    /// The parser borrows both from the input, so they are found by address.
    fn binding_offsets(der: &[u8]) -> Option<(usize, usize, usize, usize)> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == EXTENSION_OID_STR)?;
        let spki = cert.tbs_certificate.subject_pki.raw;
        let at = |s: &[u8]| {
            let off = (s.as_ptr() as usize).wrapping_sub(der.as_ptr() as usize);
            assert!(
                der.get(off..off + s.len()) == Some(s),
                "not borrowed from the input"
            );
            off
        };
        Some((at(ext.value), ext.value.len(), at(spki), spki.len()))
    }

    /// The NodeId `der` proves, if the verifier accepts it, after checking the binding: the
    /// NodeId is the hash of the extension's key, and that key signs the certificate's SPKI.
    fn accepted(der: &[u8]) -> Option<NodeId> {
        let (id, key) = verify_peer_cert_key(der).ok()?;
        assert_eq!(derive_id(&key), id, "the NodeId is the hash of the key");
        let (ext_at, ext_len, spki_at, spki_len) =
            binding_offsets(der).expect("an accepted certificate parses and has the extension");
        assert_eq!(ext_len, EXTENSION_LEN);
        let ext = &der[ext_at..ext_at + EXTENSION_LEN];
        assert_eq!(ext[..32], key, "the key is the extension's");
        let sig = ext[32..].try_into().expect("64 bytes");
        assert_eq!(verify(&key, &der[spki_at..spki_at + spki_len], sig), Ok(()));
        assert_eq!(verify_peer_cert(der), Ok(id));
        Some(id)
    }

    /// `b` with bit `bit` (wrapping over the whole buffer) flipped.
    fn flipped(b: &[u8], bit: usize) -> Vec<u8> {
        let bit = bit % (8 * b.len());
        let mut out = b.to_vec();
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    /// The identity-certificate verifier, which decides which NodeId a TLS peer is.
    ///
    /// An accepted certificate's NodeId is the hash of the Ed25519 key in its extension, and
    /// that key signs the certificate's SPKI. Structure-aware: whatever certificate parses and
    /// carries the extension gets a genuine binding by a fixed identity spliced into it (the
    /// rest of the certificate as fuzzed), and must be accepted as exactly that identity; one
    /// bit flipped in its SPKI or in the extension's key (positions taken from the replaced
    /// extension bytes) must be refused. Likewise the input split as an `extension | SPKI`
    /// pair: the fixed identity's extension over those SPKI bytes verifies as it, and with a
    /// bit of the SPKI or of the key flipped it does not.
    pub fn peer_cert(data: &[u8]) -> Reached {
        const ACCEPTED: usize = 0;
        const SPLICED: usize = 1;
        const SPKI_FLIP: usize = 2;
        const KEY_FLIP: usize = 3;
        const PAIR: usize = 4;
        const AS_RECEIVED: usize = 5;
        static SIGNER: OnceLock<Identity> = OnceLock::new();
        let me = SIGNER.get_or_init(|| Identity::from_seed(&[5; 32]));
        let mut reached = Reached::default();
        if accepted(data).is_some() {
            reached.hit(ACCEPTED);
            reached.hit(AS_RECEIVED);
        }
        if let Some((ext_at, EXTENSION_LEN, spki_at, spki_len)) = binding_offsets(data) {
            let entropy = [data[ext_at], data[ext_at + 1], data[ext_at + 2]];
            let mut cert = data.to_vec();
            let value = extension_value(me, &data[spki_at..spki_at + spki_len]);
            cert[ext_at..ext_at + EXTENSION_LEN].copy_from_slice(&value);
            assert_eq!(
                accepted(&cert),
                Some(me.node_id()),
                "a genuine binding is accepted, whatever else the certificate holds"
            );
            reached.hit(ACCEPTED);
            reached.hit(SPLICED);

            let bit = usize::from(u16::from_be_bytes([entropy[0], entropy[1]])) % (8 * spki_len);
            let mut changed = cert.clone();
            changed[spki_at + bit / 8] ^= 1 << (bit % 8);
            let got = verify_peer_cert(&changed);
            assert!(
                got.is_err(),
                "a changed certificate key kept its binding: {got:?}"
            );
            reached.hit(SPKI_FLIP);

            let bit = usize::from(entropy[2]);
            cert[ext_at + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(verify_peer_cert(&cert), Err(PeerCertError::BadSignature));
            reached.hit(KEY_FLIP);
        }
        if data.len() >= EXTENSION_LEN {
            let (ext, spki) = data.split_at(EXTENSION_LEN);
            if let Ok(id) = verify_extension(ext, spki) {
                assert_eq!(derive_id(ext[..32].try_into().expect("32 bytes")), id);
                reached.hit(AS_RECEIVED);
            }
            let value = extension_value(me, spki);
            assert_eq!(verify_extension(&value, spki), Ok(me.node_id()));
            let bad = Err(PeerCertError::BadSignature);
            if !spki.is_empty() {
                let bit = usize::from(u16::from_be_bytes([ext[0], ext[1]]));
                assert_eq!(verify_extension(&value, &flipped(spki, bit)), bad);
            }
            let key_bit = usize::from(ext[2]);
            assert_eq!(verify_extension(&flipped(&value, key_bit), spki), bad);
            reached.hit(PAIR);
        }
        reached
    }

    /// The checks of [`stream_prefix`], in [`Reached`] bit order.
    pub const STREAM_PREFIX_CHECKS: &[&str] = &[
        "complete: the length the wire reader reads, within a packet",
        "refused: exactly when the prefix can no longer fit a packet",
        "refused mid-prefix (at a continuation byte)",
        "input ends mid-prefix: incomplete, and the wire reader says truncated",
        "incomplete byte: a continuation, and the prefix could still fit",
    ];

    /// The stream prefix decoder, byte by byte, against a model of the prefix so far: after
    /// each byte it must say "complete" exactly when the byte ends the uvarint (with the value
    /// the wire reader reads from the whole input), "refused" exactly when no continuation
    /// could bring the value back within a packet (it only grows; a tenth byte may not
    /// continue), and "more" otherwise. An input that ends mid-prefix leaves it incomplete.
    pub fn stream_prefix(data: &[u8]) -> Reached {
        const COMPLETE: usize = 0;
        const REFUSED: usize = 1;
        const MID_PREFIX: usize = 2;
        const TRUNCATED: usize = 3;
        const MORE: usize = 4;
        let mut reached = Reached::default();
        let max = MAX_PACKET_LEN as u128;
        let mut d = PrefixDecoder::default();
        let mut value: u128 = 0;
        for (i, &b) in data.iter().enumerate() {
            // A correct decoder has answered by the tenth byte; past it, anything is hopeless.
            if i < 10 {
                value |= u128::from(b & 0x7f) << (7 * i);
            }
            let continues = b & 0x80 != 0;
            let hopeless = i >= 10 || value > max || (i == 9 && continues);
            match d.push(b) {
                Ok(None) => {
                    assert!(continues, "byte {i} ({b:#04x}) ends the prefix");
                    assert!(!hopeless, "{:02x?} can no longer fit", &data[..=i]);
                    reached.hit(MORE);
                }
                Ok(Some(len)) => {
                    assert!(!continues && !hopeless, "{:02x?} accepted", &data[..=i]);
                    assert_eq!(len as u128, value);
                    let mut r = Reader::new(data);
                    assert_eq!(r.uvarint(), Ok(len as u64));
                    assert_eq!(r.position(), i + 1);
                    reached.hit(COMPLETE);
                    return reached;
                }
                Err(_) => {
                    assert!(hopeless, "{:02x?} refused, yet could fit", &data[..=i]);
                    // Read over the whole input, the prefix is over a packet, or no uvarint.
                    let v = Reader::new(data).uvarint();
                    assert!(!matches!(v, Ok(n) if n <= MAX_PACKET_LEN as u64), "{v:?}");
                    reached.hit(REFUSED);
                    if continues {
                        reached.hit(MID_PREFIX);
                    }
                    return reached;
                }
            }
        }
        if !data.is_empty() {
            assert_eq!(Reader::new(data).uvarint(), Err(WireError::Truncated));
            reached.hit(TRUNCATED);
        }
        reached
    }
}

#[cfg(test)]
mod tests;
