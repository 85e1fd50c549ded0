//! The connect cascade as a state machine: one [`Cascade`] per connect attempt, with every
//! decision of the attempt in it (what to try next, how long each step may take, when a
//! rendezvous is sent again, when to punch, when a punch dial is retried, which relay is
//! asked next) and none of its I/O.
//!
//! The driver owns the I/O. It drains [`Cascade::poll_command`] and carries each command out
//! (a dial, a rendezvous, a punch request, a relay request); at most one command that waits for
//! an answer is in flight at a time, and its answer comes back as the matching `handle_*`
//! call. [`Cascade::poll_timeout`] is the one deadline the driver waits for beside that answer,
//! [`Cascade::handle_timeout`] is called when it passes, and [`Cascade::outcome`] is the result
//! once there is one. A command superseded by a timeout (a rendezvous that never came back,
//! say) is simply dropped by the driver: answers to it are no longer asked for.
//!
//! The order, cheapest first, each step tried only when the ones before it failed:
//!
//! 1. a direct dial of addresses already known for the target (no step of its own: a failure
//!    goes on quietly);
//! 2. rendezvous, sent again after [`RENDEZVOUS_RETRY`], twice that, and so on, until the
//!    configured timeout;
//! 3. [`Strategy::Direct`]: a dial of every address the rendezvous returned, at once;
//! 4. [`Strategy::Punch`] (unless our NAT is symmetric): a Connect routed to the target; its
//!    answer names the candidates; a timed punch waits half the request's round trip after
//!    our Sync so both sides punch together; the dial is retried every punch interval until
//!    [`PUNCH_TIMEOUT`];
//! 5. [`Strategy::Relay`]: up to [`RELAYS_TRIED`] relays asked one after the other, the
//!    ones closest to the target first (a relay serves only a target it holds an edge to,
//!    and those are the target's siblings: a lookup of the target, sent when the direct step
//!    fails, names them, and the relays are chosen no earlier than [`RELAY_LOOKUP_WAIT`]
//!    after it). A relay that is not yet an edge is dialed first, within
//!    [`RELAY_LINK_TIMEOUT`]; each is given [`RELAY_GRANT_TIMEOUT`] to grant and
//!    [`RELAY_DIAL_TIMEOUT`] for the dial through it.
//!
//! After each failed strategy, an edge the target opened to us meanwhile (both sides dialed at
//! once) ends the cascade as connected.

use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_routing::Time;
use nodenet_wire::Addr;

/// How long each direct dial of a rendezvous address may take by default (an address that
/// does not answer this fast is behind NAT, and punching is the next step).
pub const DIRECT_DIAL_TIMEOUT: Duration = Duration::from_millis(500);
/// A rendezvous unanswered this long is sent again (then after twice as long, and so on).
pub const RENDEZVOUS_RETRY: Duration = Duration::from_millis(500);
/// How long a hole-punch may take, from the Connect to an authenticated edge.
pub const PUNCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The spacing of punch volleys, and of punch dials retried after a quick refusal.
pub const PUNCH_INTERVAL: Duration = Duration::from_millis(50);
/// Relays asked at most, one after the other.
pub const RELAYS_TRIED: usize = 3;
/// How long a relay has to grant a request.
pub const RELAY_GRANT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the dial through a granted relay may take.
pub const RELAY_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the dial of a relay that is not yet an edge may take.
pub const RELAY_LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after the relay lookup (sent when the direct step fails) the relays are chosen
/// at the earliest, so its answers are in.
pub const RELAY_LOOKUP_WAIT: Duration = Duration::from_millis(500);

/// A way to reach a peer, in the order a connect tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// A direct dial of the addresses the target gave in its rendezvous answer.
    Direct,
    /// A hole-punch coordinated over the overlay: both sides send punch datagrams toward
    /// each other's addresses at once, then we dial. Skipped when our own NAT is symmetric.
    Punch,
    /// Through a volunteer relay near the target (dialed first if it is not an edge): it splices datagrams it cannot read, and
    /// the handshake stays end to end with the target.
    Relay,
}

impl Strategy {
    /// The cascade, cheapest first.
    pub const CASCADE: &'static [Self] = &[Self::Direct, Self::Punch, Self::Relay];
}

/// How a connection reached its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// A direct edge: an existing one, or dialed now.
    Direct,
    /// An edge through both NATs, opened by a coordinated hole-punch.
    Punched,
    /// An end-to-end edge carried by a volunteer relay.
    Relayed,
}

impl Path {
    /// The path's name as the control API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Punched => "punched",
            Self::Relayed => "relayed",
        }
    }
}

/// The step of a connect that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Learning the target's keys and addresses over the overlay.
    Rendezvous,
    /// A strategy of the cascade.
    Strategy(Strategy),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rendezvous => f.write_str("rendezvous"),
            Self::Strategy(Strategy::Direct) => f.write_str("direct dial"),
            Self::Strategy(Strategy::Punch) => f.write_str("hole-punch"),
            Self::Strategy(Strategy::Relay) => f.write_str("relay"),
        }
    }
}

/// Why a step failed. `D` is the driver's own error of a dial (it knows what a dial is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure<D> {
    /// No answer in time.
    Timeout(Duration),
    /// No edge to launch the request from.
    Unroutable,
    /// Too many requests outstanding.
    Busy,
    /// Nothing to dial.
    NoAddresses,
    /// Our own NAT maps every destination to a fresh port: a punch cannot work.
    SymmetricNat,
    /// No relay volunteer known.
    NoRelay,
    /// A failure the driver reported (a dial's, a relay request's).
    Driver(D),
}

/// The timing of the cascade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CascadeConfig {
    /// Each direct dial (known and rendezvous addresses).
    pub direct_dial_timeout: Duration,
    /// The whole rendezvous.
    pub rendezvous_timeout: Duration,
}

/// What kind of edge to the target the driver holds now (it knows; the cascade asks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeNow {
    /// None.
    None,
    /// One over a direct or punched path.
    Direct,
    /// One through a relay.
    Relayed,
}

/// How the cascade ended, for the driver to carry out and report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<D> {
    /// An edge to the target is up.
    Connected {
        /// How it reached the target.
        path: Path,
        /// How it came about.
        how: How,
    },
    /// Every step that was tried failed; this one last.
    Failed {
        /// The step.
        step: Step,
        /// Its failure.
        error: Failure<D>,
    },
}

/// How a connect came about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// Our own dial won.
    Dialed,
    /// The target's dial to us brought the edge up while ours failed.
    Crossed,
    /// Our dial through this relay, to this address of its, won.
    Relay {
        /// The relay.
        relay: NodeId,
        /// The caller-side address it granted.
        addr: Addr,
    },
}

/// A relay the driver names for [`Command::FindRelays`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayCandidate {
    /// The relay.
    pub relay: NodeId,
    /// Where to dial it if it is not an edge (empty if it is one).
    pub addrs: Vec<Addr>,
}

/// What the cascade needs done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Dial every address at once, each within `timeout`; the first to authenticate as the
    /// target becomes the edge. Answer: [`Cascade::handle_dialed`].
    Dial {
        /// The addresses.
        addrs: Vec<Addr>,
        /// Each dial's limit.
        timeout: Duration,
        /// The relay these dials run through (a relay's granted address), so the driver
        /// records the carrier before the edge is admitted: the crossed-dial tie-break reads
        /// it, and the callee already counts the connection relayed.
        via: Option<NodeId>,
    },
    /// Start a rendezvous and wait for its answer. Answers: [`Cascade::handle_rendezvous`],
    /// or [`Cascade::handle_rendezvous_refused`] if it could not start.
    StartRendezvous,
    /// Send the open rendezvous request again (same nonce); no answer.
    ResendRendezvous,
    /// Send a Connect and wait for the ConnectAck. Answers:
    /// [`Cascade::handle_punch_answer`], or [`Cascade::handle_punch_refused`].
    StartPunch,
    /// Send the Sync of a timed punch; no answer.
    PunchSync,
    /// Punch toward these addresses (volleys); no answer.
    PunchBurst {
        /// The candidates.
        addrs: Vec<Addr>,
    },
    /// Look the target up, to learn the relays near it; no answer (the driver's core keeps
    /// what comes back, and names it at [`Command::FindRelays`]).
    LookupRelays,
    /// Name up to `n` relays, closest to the target first. Answer: [`Cascade::handle_relays`].
    FindRelays {
        /// How many at most.
        n: usize,
    },
    /// Make sure `relay` is an edge: nothing to do if it is one, else dial `addrs` within
    /// `timeout`. Answer: [`Cascade::handle_relay_linked`].
    LinkRelay {
        /// The relay.
        relay: NodeId,
        /// Where to dial it (empty when it is an edge already).
        addrs: Vec<Addr>,
        /// The dial's limit.
        timeout: Duration,
    },
    /// Ask `relay` (an edge now) for a session to the target. Answer:
    /// [`Cascade::handle_relay_answer`].
    AskRelay {
        /// The relay.
        relay: NodeId,
    },
}

mod cascade;
mod clock;
#[cfg(test)]
mod tests;

pub use cascade::Cascade;
pub use clock::{RendezvousClock, RendezvousTick};
