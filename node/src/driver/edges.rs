//! The node's edges: admission, registration, closing, dial results, and carrying out the
//! core's actions.

use super::*;

impl Node {
    pub(super) fn is_draining(&self, core: &Core, conn: &Conn) -> bool {
        core.links().is_draining(link(conn))
    }

    /// The loser of a crossed dial: its dialer switches to the winner and closes it, and what
    /// it queued on it before that must still arrive, so it stays readable; it is closed after
    /// a grace period in case its dialer never does.
    pub(super) fn drain_duplicate(&self, core: &mut Core, conn: &Conn) {
        if !core.links_mut().drain(link(conn)) {
            conn.close();
            return;
        }
        let node = self.clone();
        let conn = conn.clone();
        self.spawn_owned(async move {
            let _ = tokio::time::timeout(DUPLICATE_GRACE, conn.closed()).await;
            conn.close();
            lock(&node.0.core).links_mut().drained(link(&conn));
        });
    }

    /// The registered, open connection to `peer`.
    pub(crate) fn conn_to(&self, peer: &NodeId) -> Option<Conn> {
        lock(&self.0.conns)
            .get(peer)
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// Closes our edge to `peer`, if we hold one (the peer sees it close). The overlay may
    /// link the two again later, as it would any pair.
    pub fn disconnect(&self, peer: &NodeId) -> bool {
        let held = lock(&self.0.conns).contains_key(peer);
        self.close_edge(peer);
        held
    }

    /// Closes the edge to `peer`, if any.
    pub(crate) fn close_edge(&self, peer: &NodeId) {
        let conn = lock(&self.0.conns).remove(peer);
        if let Some(c) = conn {
            c.close();
            let now = self.now();
            let mut core = lock(&self.0.core);
            core.on_edge_down(now, peer);
            self.drain(&mut core, now);
        }
    }

    /// True once [`Node::shutdown`] ran.
    pub(crate) fn is_closed(&self) -> bool {
        *self.0.shutdown.borrow()
    }

    pub(super) fn is_registered(&self, conn: &Conn) -> bool {
        lock(&self.0.conns)
            .get(&conn.remote_id())
            .is_some_and(|c| c == conn)
    }

    /// Admits a new edge (or refuses and closes it). With two connections to one peer (both
    /// sides dialed at once), both sides keep the one dialed by the smaller NodeId; a
    /// connection that is already closed, or one the same side dialed before, is simply
    /// replaced by the new one.
    pub(crate) fn admit(&self, core: &mut Core, now: Now, conn: &Conn) -> Result<(), EdgeRefusal> {
        // A frame queued before its edge closed, or a dial that completed as its connection
        // died: nothing may bring a dead connection back (its Closed event may already have
        // been handled, and nothing would ever take it down again).
        if conn.is_closed() {
            return Err(EdgeRefusal::Closed);
        }
        let peer = conn.remote_id();
        if conn.direction() == nodenet_transport::Direction::Inbound {
            core.links_mut()
                .inbound(now.mono, link(conn), &peer, &conn.remote_addr());
        }
        let existing = lock(&self.0.conns).get(&peer).cloned();
        if let Some(old) = existing {
            let me = core.id();
            let seen = |c: &Conn| Crossed {
                dialer: match c.direction() {
                    nodenet_transport::Direction::Outbound => me,
                    _ => c.remote_id(),
                },
                relayed: core.links().is_relayed(link(c)),
            };
            let (new, prior) = (seen(conn), seen(&old));
            if old.is_closed() || keep_new(new, prior) {
                lock(&self.0.conns).insert(peer, conn.clone());
                core.on_edge_replaced(&peer, new.relayed);
                if !old.is_closed() {
                    self.drain_duplicate(core, &old);
                }
                return Ok(());
            }
            self.drain_duplicate(core, conn);
            return Err(EdgeRefusal::Duplicate);
        }
        match core.on_edge_up(
            now,
            peer,
            conn.remote_key(),
            conn.direction() == nodenet_transport::Direction::Outbound,
            &conn.remote_addr(),
        ) {
            Ok(()) => {
                lock(&self.0.conns).insert(peer, conn.clone());
                let relayed = core.links().is_relayed(link(conn));
                core.set_edge_relayed(&peer, relayed);
                Ok(())
            }
            Err(e) => {
                conn.close();
                Err(e)
            }
        }
    }

    /// The host the relay carrying our edge to `peer` attested, if that edge is relayed and
    /// the relay did. (For tests: the driver reads it with the carrier, in one look.)
    #[cfg(test)]
    pub(crate) fn attested_host(&self, peer: &NodeId) -> Option<Addr> {
        let conn = self.conn_to(peer)?;
        lock(&self.0.core).links().attested(link(&conn)).cloned()
    }

    /// How our connection `conn` was opened.
    pub(crate) fn path_of(&self, conn: &Conn) -> LinkPath {
        lock(&self.0.core).links().path(link(conn))
    }

    /// True for a connection of ours that runs through a relay.
    pub(crate) fn is_relayed(&self, conn: &Conn) -> bool {
        lock(&self.0.core).links().is_relayed(link(conn))
    }

    pub(super) fn on_closed(&self, conn: &Conn) {
        lock(&self.0.core).links_mut().closed(link(conn));
        let peer = conn.remote_id();
        let mut conns = lock(&self.0.conns);
        if conns.get(&peer).is_some_and(|c| c == conn) {
            conns.remove(&peer);
            drop(conns);
            let now = self.now();
            let mut core = lock(&self.0.core);
            core.on_edge_down(now, &peer);
            self.drain(&mut core, now);
        }
    }

    pub(super) fn on_dialed(&self, contact: Contact, result: Result<Conn, ()>) {
        let now = self.now();
        let mut core = lock(&self.0.core);
        core.on_dial_finished(&contact.id);
        match result {
            Ok(conn) => {
                let _ = self.admit(&mut core, now, &conn);
            }
            Err(()) => core.on_dial_failed(now, &contact.id),
        }
        self.drain(&mut core, now);
    }

    pub(crate) fn send_to(&self, peer: &NodeId, frame: &[u8]) -> Result<(), ConnSendError> {
        lock(&self.0.conns)
            .get(peer)
            .ok_or(ConnSendError::ConnClosed)?
            .send(frame)
    }

    /// Carries out the core's queued actions.
    pub(crate) fn drain(&self, core: &mut Core, now: Now) {
        // An input handled outside the event loop (a dial of the application's, a
        // connect's edge) may have brought the core's deadline closer than the loop's timer.
        if core.poll_timeout().0 < self.0.deadline.load(Ordering::Acquire) {
            self.0.wake.notify_one();
        }
        while let Some(action) = core.poll_action() {
            match action {
                Action::Send { to, frame } => match self.send_to(&to, &frame) {
                    Ok(()) => {}
                    Err(ConnSendError::QueueFull) => core.count_queue_full(),
                    Err(_) if core.edges().contains(&to) => core.on_send_failed(now, &to),
                    Err(_) => {}
                },
                Action::SendAny { to, frame } => {
                    for peer in to {
                        if self.send_to(&peer, &frame).is_ok() {
                            break;
                        }
                    }
                }
                Action::Dial { contact, timeout } => self.dial_in_background(contact, timeout),
                Action::Notify(event) => {
                    // No watcher is fine.
                    let _ = self.0.events.send(event);
                }
                Action::Punch { addr } => {
                    // Best effort: a refused address is simply not punched, and a transport
                    // without punching sends nothing (its cascade falls through to a relay).
                    if let Some(punch) = self.0.transport.as_punch() {
                        let _ = punch.punch(&addr);
                    }
                }
                Action::Close(peer) => {
                    if let Some(c) = lock(&self.0.conns).remove(&peer) {
                        c.close();
                    }
                }
                Action::CheckOwnIp { addr } => {
                    // An IP is the host's own exactly when a socket can bind to it.
                    let own = addr
                        .endpoint
                        .parse::<std::net::SocketAddr>()
                        .is_ok_and(|a| std::net::UdpSocket::bind((a.ip(), 0)).is_ok());
                    core.on_own_ip(&addr, own);
                }
            }
        }
    }

    pub(super) fn dial_in_background(&self, contact: Contact, timeout: Duration) {
        let transport = self.0.transport.clone();
        let tx = self.0.dials_tx.clone();
        self.spawn_owned(async move {
            let mut result = Err(());
            for addr in &contact.addrs {
                if let Ok(Ok(conn)) =
                    tokio::time::timeout(timeout, transport.dial(contact.id, addr)).await
                {
                    result = Ok(conn);
                    break;
                }
            }
            let _ = tx.send((contact, result)).await;
        });
    }
}
