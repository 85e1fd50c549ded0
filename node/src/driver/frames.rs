//! Frames from edges: into the core, and what its answers set off (relay sessions,
//! birthday plays, waiters' answers).

use super::*;

impl Node {
    pub(crate) fn on_frame(&self, conn: &Conn, mut packet: Packet) {
        let now = self.now();
        let peer = conn.remote_id();
        let mut core = lock(&self.0.core);
        if !self.is_registered(conn) && !self.is_draining(&core, conn) {
            match self.admit(&mut core, now, conn) {
                Ok(()) => {}
                // The loser of a crossed dial (now draining): its frames are the authenticated
                // peer's and are handled.
                Err(EdgeRefusal::Duplicate) => {}
                Err(_) => return,
            }
        }
        match conn.with_remote_addr(|from| core.on_frame(now, peer, from, &mut packet)) {
            Handled::Forward(candidates) => {
                // Local repair: the packet the frame arrived in (its TTL patched in place) is
                // offered to each candidate in turn and handed back on refusal, so it is never
                // copied. A busy edge is only skipped; a closed one is dead.
                for next in candidates.as_slice() {
                    let Some(edge) = lock(&self.0.conns).get(next).cloned() else {
                        core.on_send_failed(now, next);
                        continue;
                    };
                    match edge.send_packet(packet) {
                        Ok(()) => break,
                        Err(unsent) => {
                            if unsent.error == ConnSendError::QueueFull {
                                core.count_queue_full();
                            } else {
                                core.on_send_failed(now, next);
                            }
                            packet = unsent.packet;
                        }
                    }
                }
            }
            Handled::Deliver(d) => {
                core.count_delivery(self.0.deliveries_tx.try_send(d).is_ok());
            }
            Handled::Rendezvous { nonce, coordinates } => {
                if let Some(waiter) = lock(&self.0.waiters).remove(&nonce) {
                    let _ = waiter.send(coordinates);
                }
            }
            Handled::RelayRequested {
                from,
                nonce,
                target,
            } => self.open_relay(&mut core, from, nonce, target),
            // The core let it through: from the relay asked under that nonce, in time.
            Handled::RelayGranted {
                nonce,
                addr,
                attest,
                ..
            } => {
                if let Some(waiter) = lock(&self.0.relay_waiters).remove(&nonce) {
                    let _ = waiter.send((addr, attest));
                }
            }
            Handled::PunchAck {
                nonce,
                addrs,
                flags,
                public,
            } => {
                if let Some(waiter) = lock(&self.0.punch_waiters).remove(&nonce) {
                    let _ = waiter.send(PunchAnswer {
                        addrs,
                        flags,
                        public,
                    });
                }
            }
            Handled::BirthdayRequested {
                peer,
                nonce,
                addrs,
                public,
            } => self.on_birthday_request(&mut core, now, peer, nonce, addrs, public),
            Handled::Done => {}
        }
        self.drain(&mut core, now);
    }

    /// Opens a relay session for `from` toward `target` through the transport's relay
    /// capability; the core answers both sides ([`Core::relay_opened`]).
    pub(super) fn open_relay(
        &self,
        core: &mut Core,
        from: NodeId,
        nonce: [u8; nodenet_nat::NONCE_LEN],
        target: NodeId,
    ) {
        let Some(Ok((caller_side, callee_side))) = self.0.transport.as_relay().map(|r| r.relay())
        else {
            return;
        };
        let (caller_seen, target_seen) = if self.0.attest {
            (self.seen_at(core, &from), self.seen_at(core, &target))
        } else {
            (None, None)
        };
        core.relay_opened(RelayOpened {
            caller: from,
            nonce,
            target,
            caller_side,
            callee_side,
            caller_seen,
            target_seen,
        });
    }

    /// Where our edge to `peer` comes from, unless that edge runs through a relay itself
    /// (we would vouch for the relay's host).
    fn seen_at(&self, core: &Core, peer: &NodeId) -> Option<Addr> {
        let conn = self
            .conn_to(peer)
            .filter(|c| !core.links().is_relayed(link(c)))?;
        conn.with_remote_addr(|a| Some(a.clone()))
    }
}
