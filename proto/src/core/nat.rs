//! Our address and NAT type from neighbours' reports, and the hole-punch and birthday
//! exchanges (Connect / ConnectAck).

use super::*;

impl Core {
    /// Our address as our neighbours see it, once corroborated (see [`nodenet_nat::reflexive`]).
    pub fn reflexive(&self) -> Option<&Addr> {
        self.confirmed.as_ref().map(|(a, _)| a)
    }

    /// What the neighbours' reports say about the NAT in front of us.
    pub fn nat_type(&self) -> NatType {
        // Read from the verdict `refresh_reflexive` keeps (asked for by every answer we
        // send, it must not tally the reports each time).
        match &self.confirmed {
            Some((_, true)) => NatType::Public,
            Some(_) => NatType::Cone,
            None if self.symmetric => NatType::Symmetric,
            None => NatType::Unknown,
        }
    }

    /// Re-reads the confirmed reflexive address after the reports changed, and decides once
    /// whether it is our own. Whether an IP is the host's is a question for the host, not the
    /// core: when only that is left to decide, the core asks with [`Action::CheckOwnIp`].
    pub(super) fn refresh_reflexive(&mut self) {
        let (now, symmetric) = self.reflexive.verdict();
        let now = now.cloned();
        self.symmetric = symmetric;
        if now.as_ref() != self.confirmed.as_ref().map(|(a, _)| a) {
            self.confirmed = now.map(|a| {
                let own = match self.reflexive_could_be_own(&a) {
                    Some(own) => own,
                    None => {
                        self.actions
                            .push_back(Action::CheckOwnIp { addr: a.clone() });
                        false
                    }
                };
                (a, own)
            });
        }
    }

    /// The host's answer to [`Action::CheckOwnIp`]: whether `addr`'s IP is one of its own.
    /// An answer about an address no longer confirmed is ignored.
    pub fn on_own_ip(&mut self, addr: &Addr, own: bool) {
        if let Some((confirmed, is_own)) = &mut self.confirmed {
            if confirmed == addr {
                *is_own = own;
            }
        }
    }

    /// Says whether our edge to `peer` now runs through a relay (the host knows: it dialed
    /// the relay's socket, or a relay bound the connection to us). Over a relayed edge the
    /// peer sees the relay, not us: its reports of our address are dropped, and one it made
    /// before is withdrawn. Forgotten when the edge goes down.
    pub fn set_edge_relayed(&mut self, peer: &NodeId, relayed: bool) {
        if !self.edges.contains(peer) {
            return;
        }
        if relayed {
            if self.relayed_edges.insert(*peer) {
                self.forget_reporter(peer);
            }
            // Reached through a relay, not at its own address: the mark goes (for an
            // inbound relayed edge too, which may drop one an earlier direct dial set: the
            // rule only keeps fewer contacts for it).
            self.knowledge.unmark_reached(peer);
        } else {
            self.relayed_edges.remove(peer);
        }
    }

    /// A new connection replaced our edge to `peer` (the winner of a crossed dial, or a
    /// punched one upgrading a relayed one): `relayed` says whether it runs through a relay.
    /// A punch burst for `peer` has done its work and stops.
    pub fn on_edge_replaced(&mut self, peer: &NodeId, relayed: bool) {
        self.bursts.on_new_edge(peer);
        self.set_edge_relayed(peer, relayed);
    }

    /// Withdraws `peer`'s report of our address.
    pub(super) fn forget_reporter(&mut self, peer: &NodeId) {
        self.reflexive.remove(peer);
        self.refresh_reflexive();
    }

    /// The addresses a peer may dial us at directly (our self-contact and Reply): what we
    /// advertise, and our confirmed reflexive address when it is our own (public, e.g. bound
    /// to a wildcard address). Behind NAT the reflexive address filters whoever we have not
    /// sent to, so it is offered only for a punch ([`Core::punch_coordinates`]).
    pub fn coordinates(&self) -> Vec<Addr> {
        let mut out = self.config.advertise.clone();
        if let Some((r, true)) = &self.confirmed {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }

    /// The addresses we give a peer that punches toward us (Connect, ConnectAck): what we
    /// advertise, then our confirmed reflexive address.
    pub fn punch_coordinates(&self) -> Vec<Addr> {
        let mut out = self.config.advertise.clone();
        if let Some((r, _)) = &self.confirmed {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out.truncate(nodenet_nat::MAX_CONNECT_ADDRS);
        out
    }

    /// Whether a confirmed reflexive address is this node's own, as far as the core can
    /// tell: off IP, when we advertise it; on IP, not unless it is on the port we advertise (or
    /// any port when we advertise nothing), and then only the host knows (`None`) whether
    /// the IP is one of its own.
    pub(super) fn reflexive_could_be_own(&self, r: &Addr) -> Option<bool> {
        if !self.config.ip {
            return Some(self.config.advertise.contains(r));
        }
        let Ok(seen) = r.endpoint.parse::<std::net::SocketAddr>() else {
            return Some(false);
        };
        let port_ok = self.config.advertise.is_empty()
            || self.config.advertise.iter().any(|a| {
                a.endpoint
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.port() == seen.port())
            });
        if port_ok { None } else { Some(false) }
    }

    /// A Connect addressed to us: a peer wants to punch through to us. Answer with our
    /// coordinates and punch toward its addresses: at once, as the reference does, or, if it
    /// asks for a timed punch, when its Sync arrives (a Sync is itself a Connect, not
    /// answered). The datagrams are queued as [`Action::Punch`] ([`crate::punch`]).
    pub(super) fn on_connect(&mut self, now: Now, m: &MsgRef<'_>) -> Handled {
        let originator = m.originator();
        if self.is_repeat(m) {
            return Handled::Done;
        }
        let Ok(c) = nodenet_nat::Coordination::decode(m.payload) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        if !self.limiter.allow(originator, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return Handled::Done;
        }
        if c.flags & nodenet_nat::FLAG_SYNC != 0 {
            self.bursts.sync(now.mono, originator, c.nonce);
            self.queue_punches();
            return Handled::Done;
        }
        if c.flags & nodenet_nat::FLAG_BIRTHDAY != 0 {
            self.learn(now, originator, *m.ed_pub);
            return Handled::BirthdayRequested {
                peer: originator,
                nonce: c.nonce,
                addrs: self.punch_candidates(c.addrs.iter()),
                public: c.public.map(|p| p.to_owned_addr()),
            };
        }
        self.learn(now, originator, *m.ed_pub);
        let addrs = self.punch_candidates(c.addrs.iter());
        let coords = self.punch_coordinates();
        let timed = self.config.timed_punch && c.flags & nodenet_nat::FLAG_TIMED != 0;
        let flags = if timed { nodenet_nat::FLAG_TIMED } else { 0 };
        let Ok(ack) = nodenet_nat::encode_coordination(&c.nonce, &coords, flags) else {
            return Handled::Done;
        };
        if self
            .originate_answer(now, FrameType::CONNECT_ACK, originator, &ack, &c.nonce)
            .is_err()
        {
            return Handled::Done;
        }
        self.stats.punches_answered += 1;
        self.expect_dial(now, originator);
        if timed {
            self.bursts.hold(now.mono, originator, c.nonce, addrs);
        } else {
            self.bursts.burst(now.mono, Some(originator), addrs);
        }
        self.queue_punches();
        Handled::Done
    }

    /// A punch burst toward `addrs` (a connect's punch step, for `target`): its first
    /// volley is queued at once as [`Action::Punch`], the rest follow on the core's timer.
    pub fn punch_burst(&mut self, now: Now, target: Option<NodeId>, addrs: Vec<Addr>) {
        self.bursts.burst(now.mono, target, addrs);
        self.queue_punches();
    }

    /// Moves the punch datagrams due into the action queue.
    pub(super) fn queue_punches(&mut self) {
        while let Some(addr) = self.bursts.poll_datagram() {
            self.actions.push_back(Action::Punch { addr });
        }
        self.stats.punch_bursts_dropped = self.bursts.dropped();
    }

    /// A ConnectAck addressed to us: it must answer an open Connect of ours, from the peer
    /// we sent it to (the envelope's signature proves the originator).
    pub(super) fn on_connect_ack(&mut self, now: Now, m: &MsgRef<'_>) -> Handled {
        if self.is_repeat(m) {
            return Handled::Done;
        }
        let Ok(c) = nodenet_nat::Coordination::decode(m.payload) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        match self.punches.get(&c.nonce) {
            Some(&(peer, expires)) if peer == m.originator() && expires > now.mono => {}
            _ => {
                self.stats.dropped_unsolicited_reply += 1;
                return Handled::Done;
            }
        }
        self.punches.remove(&c.nonce);
        Handled::PunchAck {
            nonce: c.nonce,
            addrs: self.punch_candidates(c.addrs.iter()),
            flags: c.flags,
            public: c.public.map(|p| p.to_owned_addr()),
        }
    }

    /// The addresses worth punching toward or dialing, from a peer's list: on an IP transport
    /// only reachable literal ones; deduplicated, at most [`MAX_PUNCH_CANDIDATES`].
    pub fn punch_candidates<'a>(
        &self,
        addrs: impl IntoIterator<Item = nodenet_wire::AddrRef<'a>>,
    ) -> Vec<Addr> {
        let mut out: Vec<Addr> = Vec::new();
        for a in addrs {
            if self.config.ip && nodenet_nat::reachable(a).is_none() {
                continue;
            }
            let a = a.to_owned_addr();
            if !out.contains(&a) {
                out.push(a);
            }
            if out.len() >= MAX_PUNCH_CANDIDATES {
                break;
            }
        }
        out
    }

    /// A fresh nonce for a Connect of ours, if the table of open ones has room.
    pub(super) fn punch_nonce(
        &mut self,
        now: Now,
    ) -> Result<[u8; nodenet_nat::NONCE_LEN], OriginateError> {
        if self.punches.len() >= PENDING_MAX {
            self.punches.retain(|_, (_, exp)| *exp > now.mono);
        }
        if self.punches.len() >= PENDING_MAX {
            return Err(OriginateError::Busy);
        }
        Ok(self.random())
    }

    /// Starts a hole-punch toward `peer`: a signed Connect with our coordinates, routed to it
    /// down up to three paths. Its ConnectAck comes back as [`Handled::PunchAck`] with the
    /// returned nonce (or not at all: the caller times out).
    pub fn start_punch(
        &mut self,
        now: Now,
        peer: NodeId,
    ) -> Result<[u8; nodenet_nat::NONCE_LEN], OriginateError> {
        let nonce = self.punch_nonce(now)?;
        let coords = self.punch_coordinates();
        let flags = if self.config.timed_punch {
            nodenet_nat::FLAG_TIMED
        } else {
            0
        };
        let payload = nodenet_nat::encode_coordination(&nonce, &coords, flags).map_err(|_| {
            OriginateError::FrameTooLarge {
                len: usize::MAX,
                max: MAX_PACKET_LEN,
            }
        })?;
        self.originate(now, FrameType::CONNECT, peer, &payload)?;
        self.punches
            .insert(nonce, (peer, now.mono.after(RENDEZVOUS_TTL)));
        self.stats.punches_started += 1;
        Ok(nonce)
    }

    /// Where a hard side is: the host on which our neighbours' reports agree, as an address
    /// with port 0 (behind a symmetric NAT each of them sees another port).
    pub fn public_host(&self) -> Option<Addr> {
        let net = self.reflexive.reported().next()?.net.clone();
        let host = nodenet_nat::birthday::agreed_host(
            self.reflexive.reported().map(|a| a.endpoint.as_str()),
            nodenet_nat::QUORUM,
        )?;
        Some(Addr::new(net, format!("{host}:0")))
    }

    /// Our part of a birthday exchange's payload: an easy side names its confirmed mapping,
    /// a hard side its public host.
    pub(super) fn birthday_payload(
        &self,
        nonce: &[u8; nodenet_nat::NONCE_LEN],
        hard: bool,
        agree: bool,
    ) -> Result<Vec<u8>, OriginateError> {
        let too_large = |_| OriginateError::FrameTooLarge {
            len: usize::MAX,
            max: MAX_PACKET_LEN,
        };
        let flags = if agree { nodenet_nat::FLAG_BIRTHDAY } else { 0 };
        if !agree {
            return nodenet_nat::encode_coordination(nonce, &[], 0).map_err(too_large);
        }
        if hard {
            let public = self.public_host().ok_or(OriginateError::Unroutable)?;
            nodenet_nat::encode_coordination_with(nonce, &[], flags, Some(public.as_ref()))
                .map_err(too_large)
        } else {
            let mapped: Vec<Addr> = self.reflexive().cloned().into_iter().collect();
            if mapped.is_empty() {
                return Err(OriginateError::Unroutable);
            }
            nodenet_nat::encode_coordination(nonce, &mapped, flags).map_err(too_large)
        }
    }

    /// Asks `peer` for a birthday punch, in which we are the hard side or the easy one; its
    /// ConnectAck comes back as [`Handled::PunchAck`] under the returned nonce.
    pub fn start_birthday(
        &mut self,
        now: Now,
        peer: NodeId,
        hard: bool,
    ) -> Result<[u8; nodenet_nat::NONCE_LEN], OriginateError> {
        let nonce = self.punch_nonce(now)?;
        let payload = self.birthday_payload(&nonce, hard, true)?;
        self.originate(now, FrameType::CONNECT, peer, &payload)?;
        self.punches
            .insert(nonce, (peer, now.mono.after(RENDEZVOUS_TTL)));
        Ok(nonce)
    }

    /// Answers a peer's birthday request: agreed (we play the hard side if `hard`), or not.
    pub fn answer_birthday(
        &mut self,
        now: Now,
        peer: NodeId,
        nonce: &[u8; nodenet_nat::NONCE_LEN],
        hard: bool,
        agree: bool,
    ) -> Result<(), OriginateError> {
        let payload = self.birthday_payload(nonce, hard, agree)?;
        self.originate_answer(now, FrameType::CONNECT_ACK, peer, &payload, nonce)
    }

    /// Sends the Sync of a timed hole-punch: `peer` acked our Connect `nonce` and holds its
    /// punch until this arrives.
    pub fn punch_sync(
        &mut self,
        now: Now,
        peer: NodeId,
        nonce: &[u8; nodenet_nat::NONCE_LEN],
    ) -> Result<(), OriginateError> {
        let payload = nodenet_nat::encode_coordination(nonce, &[], nodenet_nat::FLAG_SYNC)
            .map_err(|_| OriginateError::FrameTooLarge {
                len: usize::MAX,
                max: MAX_PACKET_LEN,
            })?;
        self.originate(now, FrameType::CONNECT, peer, &payload)
    }

    /// Counts a hole-punch that gave us an edge.
    pub fn count_punch_success(&mut self) {
        self.stats.punches_succeeded += 1;
    }

    /// Forgets an open punch request (its caller gave up).
    pub fn cancel_punch(&mut self, nonce: &[u8; nodenet_nat::NONCE_LEN]) {
        self.punches.remove(nonce);
    }
}

/// Whether `addr` is a private IP endpoint: RFC 1918 or carrier-grade NAT space (IPv4, also
/// written IPv4-mapped), unique local (IPv6).
pub(super) fn is_private(addr: &Addr) -> bool {
    match addr
        .endpoint
        .parse::<std::net::SocketAddr>()
        .map(|s| s.ip().to_canonical())
    {
        Ok(std::net::IpAddr::V4(ip)) => {
            let [a, b, ..] = ip.octets();
            ip.is_private() || (a == 100 && (64..128).contains(&b))
        }
        Ok(std::net::IpAddr::V6(ip)) => (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => false,
    }
}
