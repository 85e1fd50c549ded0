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
            Handled::RelayGranted {
                from,
                nonce,
                addr,
                attest,
            } => {
                let mut waiters = lock(&self.0.relay_waiters);
                if waiters.get(&nonce).is_some_and(|(relay, _)| *relay == from) {
                    if let Some((_, waiter)) = waiters.remove(&nonce) {
                        let _ = waiter.send((addr, attest));
                    }
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

    /// Opens a relay session for `from` toward `target`: the caller's side goes to `from` in a
    /// RelayGrant, the callee's side to `target` in a RelayBind (it punches toward it).
    pub(super) fn open_relay(
        &self,
        core: &mut Core,
        from: NodeId,
        nonce: [u8; nodenet_nat::NONCE_LEN],
        target: NodeId,
    ) {
        let Some(Ok((caller, callee))) = self.0.transport.as_relay().map(|r| r.relay()) else {
            return;
        };
        let (caller, callee) = (self.dialable(caller, core), self.dialable(callee, core));
        // Where our own edges see each side: each learns the other's host from us.
        let (seen_target, seen_from) = if self.0.attest {
            (self.seen_host(core, &target), self.seen_host(core, &from))
        } else {
            (None, None)
        };
        let grant = nodenet_nat::RelayGrant {
            nonce,
            addr: caller.as_ref(),
            attest: seen_target.as_ref().map(|h| nodenet_nat::Attestation {
                peer: target,
                host: h.as_ref(),
            }),
        }
        .encode();
        let bind = nodenet_nat::RelayBind {
            addr: callee.as_ref(),
            attest: seen_from.as_ref().map(|h| nodenet_nat::Attestation {
                peer: from,
                host: h.as_ref(),
            }),
        }
        .encode();
        let (Ok(grant), Ok(bind)) = (grant, bind) else {
            return;
        };
        let _ = self.send_to(&target, &small_frame(FrameType::RELAY_BIND, &bind));
        let _ = self.send_to(&from, &small_frame(FrameType::RELAY_GRANT, &grant));
        core.count_relay_granted();
    }

    /// The host (as an address with port 0) our edge to `peer` comes from, unless that edge
    /// runs through a relay itself (we would vouch for the relay's host).
    pub(super) fn seen_host(&self, core: &Core, peer: &NodeId) -> Option<Addr> {
        let conn = self
            .conn_to(peer)
            .filter(|c| !core.links().is_relayed(link(c)))?;
        conn.with_remote_addr(|a| {
            nodenet_nat::birthday::host_of(&a.endpoint)
                .map(|host| Addr::new(a.net.clone(), format!("{host}:0")))
        })
    }

    /// A relay endpoint bound on a wildcard IP, given the IP peers reach us at instead.
    pub(super) fn dialable(&self, addr: Addr, core: &Core) -> Addr {
        let Ok(sa) = addr.endpoint.parse::<std::net::SocketAddr>() else {
            return addr;
        };
        if !sa.ip().is_unspecified() {
            return addr;
        }
        let ip = core
            .coordinates()
            .iter()
            .chain(core.reflexive())
            .find_map(|a| a.endpoint.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        match ip {
            Some(ip) => Addr::new(
                addr.net,
                std::net::SocketAddr::new(ip, sa.port()).to_string(),
            ),
            None => addr,
        }
    }
}
