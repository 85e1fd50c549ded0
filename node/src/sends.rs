//! Direct sends over an edge (connecting first when needed) and sealed boxes over the
//! overlay.

use nodenet_kad::NodeId;
use nodenet_rendezvous::{OpenError, Opened};
use nodenet_wire::{Frame, FrameType};

use crate::driver::lock;
use crate::{ConnectError, Delivery, DirectSendError, Node, SealError};

impl Node {
    /// Sends `payload` to `target` over our edge to it, connecting first if needed
    /// ([`Node::connect`]): the bytes are never readable by another node (a relay, if the edge
    /// runs through one, carries ciphertext). Ordered on the edge; `Ok` means queued on it
    /// (this waits for room); the receiver's deliveries queue may still drop it when full.
    ///
    /// # Errors
    /// [`DirectSendError::TooLarge`] over [`MAX_DIRECT_PAYLOAD`](crate::MAX_DIRECT_PAYLOAD);
    /// [`DirectSendError::Connect`] when there was no edge and [`Node::connect`] failed;
    /// [`DirectSendError::EdgeClosed`] when the edge closed before the payload was queued.
    pub async fn send_direct(&self, target: NodeId, payload: &[u8]) -> Result<(), DirectSendError> {
        check_app_len(payload.len())?;
        if target == self.id() {
            return Err(ConnectError::SelfTarget.into());
        }
        if self.conn_to(&target).is_none() {
            if let Err(e) = self.connect(target).await {
                // A crossed simultaneous dial may have brought the edge up anyway.
                if self.conn_to(&target).is_none() {
                    return Err(e.into());
                }
            }
        }
        self.send_on_edge(target, payload).await
    }

    /// Seals `plaintext` to `target` (learning its X25519 key by rendezvous when we do not
    /// know it yet) and sends the box over the overlay: forwarders see only ciphertext. The
    /// recipient opens the delivery with [`Node::open_sealed`]. Best effort, like
    /// [`Node::send`].
    ///
    /// # Errors
    /// [`SealError::TooLarge`] over [`MAX_SEALED_PLAINTEXT`](crate::MAX_SEALED_PLAINTEXT);
    /// [`SealError::Rendezvous`] when the target's key could not be learned;
    /// [`SealError::BadKey`] for a key nothing can be sealed to; [`SealError::Send`] when the
    /// box could not be routed.
    pub async fn send_sealed(&self, target: NodeId, plaintext: &[u8]) -> Result<(), SealError> {
        if plaintext.len() > crate::MAX_SEALED_PLAINTEXT {
            return Err(SealError::TooLarge {
                len: plaintext.len(),
                max: crate::MAX_SEALED_PLAINTEXT,
            });
        }
        let known = lock(&self.0.core).x_key_of(&target);
        let x = match known {
            Some(x) => x,
            None => {
                self.rendezvous(target)
                    .await
                    .map_err(SealError::Rendezvous)?
                    .x_pub
            }
        };
        let now = self.now();
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        let sealed = {
            let core = lock(&self.0.core);
            core.seal(&x, plaintext, now.unix_ns, &mut rng)
        }
        .map_err(|_| SealError::BadKey)?;
        Ok(self.send(target, &sealed)?)
    }

    /// Opens a sealed box that arrived as `delivery`: the box must be sealed to us, fresh,
    /// never opened before, and signed by the delivery's originator.
    ///
    /// # Errors
    /// The [`OpenError`] saying which check failed (a delivery that is not a sealed box
    /// fails too); each failure counts in
    /// [`Stats::dropped_bad_box`](crate::Stats::dropped_bad_box).
    pub fn open_sealed(&self, delivery: &Delivery) -> Result<Opened, OpenError> {
        let now = self.now();
        let result = {
            let mut core = lock(&self.0.core);
            core.open(&delivery.payload, now.unix_ns)
        };
        match result {
            Ok(o) if o.sender == delivery.originator => Ok(o),
            Ok(_) => {
                lock(&self.0.core).count_bad_box();
                Err(OpenError::BadSignature)
            }
            Err(e) => {
                lock(&self.0.core).count_bad_box();
                Err(e)
            }
        }
    }

    pub(crate) async fn send_on_edge(
        &self,
        peer: NodeId,
        payload: &[u8],
    ) -> Result<(), DirectSendError> {
        check_app_len(payload.len())?;
        let mut frame = vec![0u8; nodenet_wire::header_len(payload.len()) + payload.len()];
        let n = Frame::new(FrameType::APP, payload)
            .encode(&mut frame)
            .map_err(|_| DirectSendError::TooLarge {
                len: payload.len(),
                max: crate::MAX_DIRECT_PAYLOAD,
            })?;
        let conn = self
            .conn_to(&peer)
            .ok_or(DirectSendError::EdgeClosed(peer))?;
        conn.send_bulk(&frame[..n])
            .await
            .map_err(|_| DirectSendError::EdgeClosed(peer))
    }
}

fn check_app_len(len: usize) -> Result<(), DirectSendError> {
    if len > crate::MAX_DIRECT_PAYLOAD {
        return Err(DirectSendError::TooLarge {
            len,
            max: crate::MAX_DIRECT_PAYLOAD,
        });
    }
    Ok(())
}
