//! What the core hands the driver: actions, events, deliveries, and why things fail.

use super::*;

/// Something the driver must do. Deliberately exhaustive (not `#[non_exhaustive]`): a driver
/// must handle every action, so a new one is a compile error in each driver rather than
/// silently ignored. The price is that adding a variant is a breaking change of this crate,
/// which is why the core is `#[doc(hidden)]` and versioned with the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `frame` on the edge to `to`.
    Send {
        /// The peer.
        to: NodeId,
        /// A whole frame.
        frame: Vec<u8>,
    },
    /// Send `frame` on the first edge in `to` that accepts it.
    SendAny {
        /// Candidate edges, best first.
        to: Vec<NodeId>,
        /// A whole frame.
        frame: Vec<u8>,
    },
    /// Open an edge to this contact: its addresses one after the other, `timeout` each
    /// (at most [`MAX_DIAL_ADDRS`] addresses).
    Dial {
        /// Whom to dial, and where.
        contact: Contact,
        /// The time each address gets.
        timeout: Duration,
    },
    /// Send one punch datagram toward `addr` from the socket peers see us at (best effort;
    /// the transport refuses an address no peer can be at). Timed by [`crate::punch`].
    Punch {
        /// Where it goes.
        addr: Addr,
    },
    /// Close the edge to this peer.
    Close(NodeId),
    /// Tell the application (nothing to do on the network).
    Notify(NodeEvent),
    /// Our neighbours agree we are seen at `addr` (an IP `host:port`): ask the host whether
    /// that IP is one of its own (a public node, not one behind NAT), and answer with
    /// [`Core::on_own_ip`]. Until then the core treats the address as not its own.
    CheckOwnIp {
        /// The corroborated reflexive address.
        addr: Addr,
    },
}

/// A change in the node's state an application may want to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// An edge came up and was admitted.
    EdgeUp {
        /// The authenticated peer.
        peer: NodeId,
        /// We dialed it.
        outbound: bool,
    },
    /// An edge went down (closed, dead, or left).
    EdgeDown {
        /// The peer.
        peer: NodeId,
    },
}

/// How a payload reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Routed over the overlay (`send`).
    Routed,
    /// Over a direct edge (an App frame).
    Direct,
}

/// A payload for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Who sent it: for routed messages the signature-verified originator, for direct ones the
    /// authenticated peer.
    pub originator: NodeId,
    /// The payload.
    pub payload: Vec<u8>,
    /// How it came.
    pub via: Via,
    /// Overlay hops a routed message took (1: the originator held an edge to us); 0 for a
    /// direct frame or a message to ourselves.
    pub hops: u8,
}

/// What [`Core::on_frame`] decided for a frame.
#[derive(Debug)]
pub enum Handled {
    /// Send the frame (its TTL already patched in place) to the first of these edges that
    /// accepts it; tell [`Core::on_send_failed`] about each that does not.
    Forward(Candidates),
    /// Hand this to the application, then report the outcome with [`Core::count_delivery`].
    Deliver(Delivery),
    /// A verified rendezvous answer to the request with this nonce.
    Rendezvous {
        /// The request's nonce.
        nonce: [u8; RDV_NONCE_LEN],
        /// What the target told us, verified against its NodeId.
        coordinates: Coordinates,
    },
    /// The answer to our Connect with this nonce: where the peer may be dialed.
    PunchAck {
        /// Our Connect's nonce.
        nonce: [u8; nodenet_nat::NONCE_LEN],
        /// The peer's candidate addresses (unsigned hints, bound to it by the envelope).
        addrs: Vec<Addr>,
        /// The ack's flags ([`nodenet_nat::FLAG_TIMED`]: the peer holds its punch until our
        /// Sync; [`nodenet_nat::FLAG_BIRTHDAY`]: it agrees to a birthday punch).
        flags: u8,
        /// With [`nodenet_nat::FLAG_HARD`]: the peer's public host (port 0).
        public: Option<Addr>,
    },
    /// A peer asks for a birthday punch (a verified Connect with
    /// [`nodenet_nat::FLAG_BIRTHDAY`]); not answered yet: the driver decides.
    BirthdayRequested {
        /// The peer.
        peer: NodeId,
        /// Its Connect's nonce (the attempt's token).
        nonce: [u8; nodenet_nat::NONCE_LEN],
        /// Where an easy peer is reached (its confirmed mapping), filtered.
        addrs: Vec<Addr>,
        /// A hard peer's public host (port 0).
        public: Option<Addr>,
    },
    /// A peer asks us, a volunteer relay, to carry a connection to `target` (which we hold an
    /// edge to): open a session, grant the caller its side and bind the target to the other.
    RelayRequested {
        /// The caller.
        from: NodeId,
        /// Its request's nonce.
        nonce: [u8; nodenet_nat::NONCE_LEN],
        /// The peer it wants to reach.
        target: NodeId,
    },
    /// A relay granted our request: dial the target at `addr`.
    RelayGranted {
        /// The relay that answered.
        from: NodeId,
        /// Our request's nonce.
        nonce: [u8; nodenet_nat::NONCE_LEN],
        /// The relay's caller-side address.
        addr: Addr,
        /// The relay's word on where it sees a peer (the target, if it is honest).
        attest: Option<Attested>,
    },
    /// Nothing more to do (answered through actions, absorbed, or dropped and counted).
    Done,
}

/// Addresses punched toward or dialed at most for one hole-punch.
pub const MAX_PUNCH_CANDIDATES: usize = 8;

/// A relay's attestation, owned: the peer it names and where the relay sees it (port 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The peer the relay vouches for.
    pub peer: NodeId,
    /// Its host, as an address with port 0.
    pub host: Addr,
}

impl From<nodenet_nat::Attestation<'_>> for Attested {
    fn from(a: nodenet_nat::Attestation<'_>) -> Self {
        Self {
            peer: a.peer,
            host: a.host.to_owned_addr(),
        }
    }
}

/// Why an edge was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeRefusal {
    /// The peer's NodeId does not meet the difficulty.
    #[error("peer does not meet the proof-of-work difficulty")]
    PowUnmet,
    /// The application's admission hook said no.
    #[error("refused by the edge admission policy")]
    Refused,
    /// Too many inbound edges.
    #[error("inbound edge cap reached")]
    InboundFull,
    /// An edge to this peer is already up.
    #[error("an edge to this peer is already up")]
    Duplicate,
    /// The connection closed before it could be admitted (a late frame of an edge already
    /// gone, or a dial that finished as its connection died).
    #[error("the connection is already closed")]
    Closed,
}

/// Why a message could not be originated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginateError {
    /// No live edge to launch from.
    #[error("no live edge to launch from")]
    Unroutable,
    /// Too many requests of this kind are outstanding.
    #[error("too many requests outstanding")]
    Busy,
    /// The message does not fit one frame.
    #[error("a frame of {len} bytes exceeds the {max}-byte packet")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The packet limit.
        max: usize,
    },
}

/// A relay session the transport opened for a request we are serving (after
/// [`Handled::RelayRequested`]), handed to [`Core::relay_opened`](super::Core::relay_opened).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayOpened {
    /// Who asked for the session.
    pub caller: NodeId,
    /// The request's nonce, echoed in the grant.
    pub nonce: [u8; nodenet_nat::NONCE_LEN],
    /// Whom the caller wants to reach (an edge of ours).
    pub target: NodeId,
    /// The session's side the caller dials (named in the grant).
    pub caller_side: Addr,
    /// The session's side the target punches toward (named in the bind).
    pub callee_side: Addr,
    /// Where our own direct edge to the caller comes from, to vouch for its host to the
    /// target; `None` to vouch for nothing (no direct edge, or attestation off).
    pub caller_seen: Option<Addr>,
    /// Where our own direct edge to the target comes from, to vouch for its host to the
    /// caller; `None` as above.
    pub target_seen: Option<Addr>,
}
