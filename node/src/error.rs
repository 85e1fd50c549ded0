//! One error type per operation, each naming what was wrong with the numbers that matter,
//! and [`Error`], which any of them converts into for code that bubbles everything up.

use nodenet_kad::NodeId;
use nodenet_rendezvous::OpenError;
use nodenet_transport::stream::BadProtocol;
use nodenet_transport::{DialError, MediaError, StreamError};

use crate::connect::{Step, StepError};
use crate::core::EdgeRefusal;
pub use nodenet_proto::SendError;

/// Why [`Node::connect`](crate::Node::connect) (or
/// [`Node::rendezvous`](crate::Node::rendezvous), its first step) found no path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The target is this node.
    #[error("the target is this node itself")]
    SelfTarget,
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
    /// Every step was tried; `step` is the last one and `error` why it failed.
    #[error("connect to {target}: {step} failed: {error}")]
    Failed {
        /// The NodeId we tried to reach.
        target: NodeId,
        /// The step that failed (the last one tried).
        step: Step,
        /// Why.
        error: StepError,
    },
}

/// Why [`Node::send_direct`](crate::Node::send_direct) or
/// [`Connection::send`](crate::Connection::send) did not queue a payload on the edge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectSendError {
    /// The payload is over [`MAX_DIRECT_PAYLOAD`](crate::MAX_DIRECT_PAYLOAD).
    #[error("payload of {len} bytes is over the {max}-byte maximum of a direct message")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The maximum, [`MAX_DIRECT_PAYLOAD`](crate::MAX_DIRECT_PAYLOAD).
        max: usize,
    },
    /// No edge to the peer and connecting failed ([`Node::send_direct`](crate::Node::send_direct)
    /// only).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The edge to this peer closed (or the node shut down) before the payload was queued.
    #[error("the edge to {0} is closed")]
    EdgeClosed(NodeId),
}

/// Why [`Node::send_sealed`](crate::Node::send_sealed) sent nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The plaintext is over [`MAX_SEALED_PLAINTEXT`](crate::MAX_SEALED_PLAINTEXT).
    #[error("plaintext of {len} bytes is over the {max}-byte maximum of a sealed message")]
    TooLarge {
        /// The plaintext's length.
        len: usize,
        /// The maximum, [`MAX_SEALED_PLAINTEXT`](crate::MAX_SEALED_PLAINTEXT).
        max: usize,
    },
    /// Learning the target's key by rendezvous failed.
    #[error("learning the target's key: {0}")]
    Rendezvous(ConnectError),
    /// The target's X25519 key is one nothing can be sealed to (a low-order point).
    #[error("the target's X25519 key is unusable")]
    BadKey,
    /// The sealed box could not be routed.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Why [`Node::open_media`](crate::Node::open_media) opened no session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenMediaError {
    /// No edge to the peer and connecting failed (or the target is us, or we shut down).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The edge came up but closed before the session could open over its path.
    #[error("the edge to {0} closed")]
    EdgeClosed(NodeId),
    /// The session itself failed.
    #[error("media session to {target}: {error}")]
    Session {
        /// The peer.
        target: NodeId,
        /// Why.
        error: MediaError,
    },
}

/// Why [`Node::open_stream`](crate::Node::open_stream) opened no stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// The protocol name cannot be sent (checked before anything goes out).
    #[error(transparent)]
    BadProtocol(#[from] BadProtocol),
    /// No edge to the peer and connecting failed (or the target is us, or we shut down).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The edge came up but closed before the stream could open over its path.
    #[error("the edge to {0} closed")]
    EdgeClosed(NodeId),
    /// The stream itself failed: the peer refused it ([`StreamError::Refused`]), does not
    /// speak streams ([`StreamError::Unsupported`]), or its address did not answer.
    #[error("stream to {target}: {error}")]
    Stream {
        /// The peer.
        target: NodeId,
        /// Why.
        error: StreamError,
    },
}

/// Why [`Node::accept_streams`](crate::Node::accept_streams) registered no listener.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The protocol name is not one a peer could send.
    #[error(transparent)]
    BadProtocol(#[from] BadProtocol),
    /// A listener for this protocol is live already (drop it first).
    #[error("streams of protocol {0:?} are already being accepted")]
    AlreadyListening(String),
}

/// Why [`Node::joined`](crate::Node::joined) gave up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// No edge came up within the time it waited.
    #[error(
        "no edge came up within {waited:?}: are the bootstrap contacts reachable, and do they meet our difficulty?"
    )]
    Timeout {
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
}

/// Why [`Node::dial`](crate::Node::dial) brought no edge up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialNodeError {
    /// The contact is this node.
    #[error("the contact is this node itself")]
    SelfTarget,
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
    /// The contact carries no address.
    #[error("dial {target}: the contact has no address")]
    NoAddresses {
        /// The NodeId dialed.
        target: NodeId,
    },
    /// None of the contact's addresses answered as its NodeId; `error` is the last failure.
    #[error("dial {target}: {error}")]
    Unreachable {
        /// The NodeId dialed.
        target: NodeId,
        /// The last address's failure.
        error: DialError,
    },
    /// The peer answered, but our own admission refused the edge (its proof of work, the
    /// [`Builder::edge_admission`](crate::Builder::edge_admission) hook, the inbound cap), or
    /// the connection died as it came up.
    #[error("dial {target}: edge refused: {reason}")]
    Refused {
        /// The NodeId dialed.
        target: NodeId,
        /// Why.
        reason: EdgeRefusal,
    },
}

/// A receiver with one consumer ([`Node::deliveries`](crate::Node::deliveries),
/// [`Node::inbound_media`](crate::Node::inbound_media)) was asked for a second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} was already taken: it has one consumer")]
pub struct AlreadyTaken(pub &'static str);

/// Any of this crate's errors, for code that passes them all up with `?`. Each variant holds
/// the error of one operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From [`Builder::bind`](crate::Builder::bind) or [`Builder::build`](crate::Builder::build).
    #[error(transparent)]
    Build(#[from] crate::BuildError),
    /// From [`Node::send`](crate::Node::send).
    #[error(transparent)]
    Send(#[from] SendError),
    /// From [`Node::connect`](crate::Node::connect) or [`Node::rendezvous`](crate::Node::rendezvous).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// From [`Node::send_direct`](crate::Node::send_direct) or
    /// [`Connection::send`](crate::Connection::send).
    #[error(transparent)]
    DirectSend(#[from] DirectSendError),
    /// From [`Node::send_sealed`](crate::Node::send_sealed).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// From [`Node::open_sealed`](crate::Node::open_sealed).
    #[error("sealed box: {0}")]
    Open(#[from] OpenError),
    /// From [`Node::open_media`](crate::Node::open_media).
    #[error(transparent)]
    Media(#[from] OpenMediaError),
    /// From [`Node::open_stream`](crate::Node::open_stream).
    #[error(transparent)]
    Stream(#[from] OpenStreamError),
    /// From [`Node::accept_streams`](crate::Node::accept_streams).
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// From [`Node::joined`](crate::Node::joined).
    #[error(transparent)]
    Join(#[from] JoinError),
    /// From [`Node::dial`](crate::Node::dial).
    #[error(transparent)]
    Dial(#[from] DialNodeError),
    /// From [`Node::deliveries`](crate::Node::deliveries) or
    /// [`Node::inbound_media`](crate::Node::inbound_media).
    #[error(transparent)]
    Taken(#[from] AlreadyTaken),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_error_passes_up_into_error_and_keeps_its_words() {
        let id = NodeId::from([7; 32]);
        let cases: Vec<(Error, &str)> = vec![
            (
                SendError::TooLarge {
                    len: 70_000,
                    max: 65_326,
                }
                .into(),
                "payload of 70000 bytes is over the 65326-byte maximum of a routed message",
            ),
            (
                DirectSendError::from(ConnectError::SelfTarget).into(),
                "the target is this node itself",
            ),
            (
                SealError::Rendezvous(ConnectError::Closed).into(),
                "learning the target's key: the node has shut down",
            ),
            (OpenMediaError::EdgeClosed(id).into(), "the edge to 0707"),
            (JoinError::Closed.into(), "the node has shut down"),
            (
                DialNodeError::NoAddresses { target: id }.into(),
                "the contact has no address",
            ),
            (
                AlreadyTaken("deliveries").into(),
                "deliveries was already taken",
            ),
            (OpenError::Replay.into(), "sealed box: "),
        ];
        for (e, words) in cases {
            assert!(e.to_string().contains(words), "{e} lacks {words:?}");
        }
    }

    #[test]
    fn a_routed_frame_too_large_reports_the_payload_not_the_frame() {
        let frame_len = crate::MAX_ROUTED_PAYLOAD + 1 + nodenet_proto::ROUTED_OVERHEAD;
        assert_eq!(
            SendError::from(crate::OriginateError::FrameTooLarge {
                len: frame_len,
                max: nodenet_transport::MAX_PACKET_LEN
            }),
            SendError::TooLarge {
                len: crate::MAX_ROUTED_PAYLOAD + 1,
                max: crate::MAX_ROUTED_PAYLOAD
            }
        );
    }
}
