//! The error of a routed send, shared by the node's driver and the simulator.

use crate::core::OriginateError;

/// Frame header and envelope around a routed payload of 16 KiB or more.
pub const ROUTED_OVERHEAD: usize = 210;
/// The largest payload a routed send carries: one 64 KiB frame less the frame header
/// (5 bytes) and the signed envelope (205 bytes: target, TTL, key, time, two avoid slots,
/// length, signature).
pub const MAX_ROUTED_PAYLOAD: usize = nodenet_wire::MAX_PACKET_LEN - ROUTED_OVERHEAD;

/// Why a routed send (`nodenet::Node::send` in the driver, [`crate::sim::Sim::send`] here)
/// refused a message. Nothing was queued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The payload is over [`MAX_ROUTED_PAYLOAD`](crate::MAX_ROUTED_PAYLOAD).
    #[error("payload of {len} bytes is over the {max}-byte maximum of a routed message")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The maximum, [`MAX_ROUTED_PAYLOAD`](crate::MAX_ROUTED_PAYLOAD).
        max: usize,
    },
    /// The node holds no live edge to launch the message from: it has not joined yet (with
    /// the `nodenet` driver, await `Node::joined` first) or it lost every edge.
    #[error("no live edge to launch from: has the node joined?")]
    Unroutable,
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
}

impl From<OriginateError> for SendError {
    fn from(e: OriginateError) -> Self {
        match e {
            OriginateError::Unroutable | OriginateError::Busy => Self::Unroutable,
            // The envelope and frame header add ROUTED_OVERHEAD bytes to the payload.
            OriginateError::FrameTooLarge { len, .. } => Self::TooLarge {
                len: len.saturating_sub(ROUTED_OVERHEAD),
                max: MAX_ROUTED_PAYLOAD,
            },
        }
    }
}
