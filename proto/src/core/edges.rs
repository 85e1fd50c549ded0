//! Edges coming and going: bootstrap, admission of a new edge, dial results, losses.

use super::*;

impl Core {
    /// Forgets what our edge to `peer` told us (it went down, or was reaped as dead): its
    /// report of our address, and whether it ran through a relay.
    pub(super) fn forget_edge(&mut self, peer: &NodeId) {
        self.relayed_edges.remove(peer);
        self.forget_reporter(peer);
    }

    /// Keeps `contact`, one the application dialed and reached, as a bootstrap contact (one
    /// entry per NodeId, its latest addresses; at most [`MAX_BOOTSTRAP`]; its capabilities
    /// are not taken on trust).
    pub fn remember_bootstrap(&mut self, contact: &Contact) {
        if contact.id == self.id {
            return;
        }
        let mut contact = contact.clone();
        contact.caps = Caps::default();
        if let Some(held) = self.bootstrap.iter_mut().find(|b| b.id == contact.id) {
            *held = contact;
        } else if self.bootstrap.len() < MAX_BOOTSTRAP {
            self.bootstrap.push(contact);
        }
    }

    /// Entry points into the overlay, known by NodeId and address only: their keys are learned
    /// from the authenticated handshake when the edge comes up, so bootstrapping works at any
    /// difficulty. Dials them at once.
    pub fn bootstrap(&mut self, contacts: Vec<Contact>) {
        self.bootstrap
            .extend(contacts.iter().filter(|c| c.id != self.id).cloned());
        for c in contacts {
            self.dial(c, DialKind::Bootstrap);
        }
    }

    /// An edge came up (dialed by us when `outbound`). Applies admission: PoW on the
    /// authenticated NodeId, the application's hook, the inbound cap, one edge per peer.
    /// A peer we dialed and then refused is backed off as a failed dial is (without being
    /// forgotten for it), so maintenance does not dial it again every tick.
    pub fn on_edge_up(
        &mut self,
        now: Now,
        peer: NodeId,
        key: Option<[u8; 32]>,
        outbound: bool,
        addr: &Addr,
    ) -> Result<(), EdgeRefusal> {
        let result = self.admit_edge(now, peer, key, outbound, addr);
        if result.is_ok() {
            self.bursts.on_new_edge(&peer);
        }
        if outbound && matches!(result, Err(e) if e != EdgeRefusal::Duplicate) {
            self.back_off(now, &peer);
        }
        result
    }

    /// `peer`, whose signed rendezvous or punch request we just answered, is about to dial
    /// us: expected for [`EXPECTED_FOR`], so that our inbound cap does not refuse it
    /// ([`INBOUND_HEADROOM`]). At most [`EXPECTED_MAX`] remembered, the oldest forgotten
    /// first.
    pub(super) fn expect_dial(&mut self, now: Now, peer: NodeId) {
        self.expected
            .mark(peer, now.mono, now.mono.after(EXPECTED_FOR));
    }

    fn admit_edge(
        &mut self,
        now: Now,
        peer: NodeId,
        key: Option<[u8; 32]>,
        outbound: bool,
        addr: &Addr,
    ) -> Result<(), EdgeRefusal> {
        self.dialing.remove(&peer);
        if self.config.difficulty > 0 && !nodenet_pow::verify(&peer, self.config.difficulty) {
            self.stats.dropped_sub_pow += 1;
            return Err(EdgeRefusal::PowUnmet);
        }
        if self.admission.as_ref().is_some_and(|allow| !allow(&peer)) {
            self.stats.dropped_edge_refused += 1;
            return Err(EdgeRefusal::Refused);
        }
        if self.edges.contains(&peer) {
            self.stats.dropped_dup_inbound += 1;
            return Err(EdgeRefusal::Duplicate);
        }
        let inbound = self.edges.len() - self.edges.outbound();
        if !outbound && inbound >= self.config.max_inbound_edges {
            // Past the cap, only a peer we expect, within the headroom.
            if !self.expected.contains(&peer, now.mono)
                || inbound >= self.config.max_inbound_edges + INBOUND_HEADROOM
            {
                self.stats.dropped_inbound_full += 1;
                return Err(EdgeRefusal::InboundFull);
            }
            self.stats.inbound_expected += 1;
        }
        // An expectation is spent by the first edge up with its peer, under the cap or past
        // it, inbound or outbound.
        self.expected.remove(&peer);
        let subnet = self
            .config
            .subnets
            .then(|| SubnetKey::of_addr(addr.as_ref()))
            .flatten();
        self.edges.add(peer, outbound, subnet, now.mono);
        // A backoff outlives the edge that follows it (the tick forgets it one delay after
        // it ends): an edge that comes up and goes down at once doubles it, as a failed
        // dial does. Its count of failed dials in a row ends here.
        if let Some(b) = self.backoff.get_mut(&peer) {
            b.failures = 0;
        }
        self.stats.edges_up += 1;
        self.actions
            .push_back(Action::Notify(NodeEvent::EdgeUp { peer, outbound }));
        // The key comes from the handshake, so a bootstrap contact (NodeId and address only)
        // is bound here, and passes knowledge admission at any difficulty.
        let caps = self.bootstrap_caps(&peer);
        let contact = Contact {
            id: peer,
            ed_pub: key.filter(|k| derive_id(k) == peer),
            x_pub: None,
            caps,
            // A dialed peer is where we dialed it. An inbound peer's address is authenticated
            // by the transport, and on the in-memory transport it is where the peer listens:
            // keeping it spreads dialable contacts faster than the peer's own advertisement
            // (tier 3 policy). On IP it is kept only for dialed peers, as in the reference:
            // for a peer behind NAT it is a mapping that filters everyone the peer has not
            // sent to, and spread as a contact address it draws dials that fail, or, crossing
            // the peer's own, open its NAT by accident.
            addrs: if outbound || !self.config.ip {
                vec![addr.clone()]
            } else {
                Vec::new()
            },
        };
        self.observe(&contact, now);
        if outbound {
            // Reached at the address we dialed (an inbound peer's is not ours to vouch for).
            self.knowledge.mark_reached(&peer);
        }
        if outbound {
            // Our first frame lets the acceptor see the edge (there is no accept call).
            let frame = small_frame(FrameType::PING, &[]);
            self.actions.push_back(Action::Send { to: peer, frame });
        }
        // On IP, a peer that dialed us is known without an address (above), and only its
        // own word lets us name it to others: until then its neighbours learn of it only by
        // answers it gives them. Asked at once, its answer names where it listens (tier 3
        // policy). At 10,000 simulated nodes joining at once, 104 public nodes had not met
        // their closest public node after 300 s without this (and a NAT'd node's answer to
        // a self-lookup, `routed.rs`), none with both. Asked too when we know it only at an
        // address we never reached (someone else's word, which may be false). Bounds, for
        // a peer that reconnects again and again: one ask per peer per [`NONCE_TTL`], in a
        // table of its own (a place per inbound place, oldest out), never the lookups'
        // `pending` table; its answer counts once, and only signed by that peer.
        if !outbound
            && self.config.ip
            && !self.knowledge.was_reached(&peer)
            && !self.asks.contains(&peer, now.mono)
        {
            let nonce: [u8; NONCE_LEN] = self.random();
            self.asks
                .mark_with(peer, Some(nonce), now.mono, now.mono.after(NONCE_TTL));
            let frame = small_frame(FrameType::SIBLINGS, &nonce);
            self.actions.push_back(Action::Send { to: peer, frame });
        }
        if self.edges.len() == 1 {
            // First contact with the overlay: find our neighbourhood and the far keyspace now.
            self.next_self_lookup = now.mono;
            self.next_refresh = now.mono;
        }
        Ok(())
    }

    pub(super) fn bootstrap_caps(&self, peer: &NodeId) -> Caps {
        self.bootstrap
            .iter()
            .find(|c| c.id == *peer)
            .map_or_else(Caps::default, |c| c.caps)
    }

    /// A dial to `peer` finished, either way: it may be dialed again later.
    pub fn on_dial_finished(&mut self, peer: &NodeId) {
        self.dialing.remove(peer);
    }

    /// An edge went down. A lost edge is replaced at once when the floor needs it, by another
    /// contact: the lost peer itself waits out a backoff, the base one after a long-lived
    /// edge and a doubled one after an edge that went down soon after its last backoff
    /// ended, so a peer that keeps accepting and closing on us cannot spin us in a redial
    /// loop.
    pub fn on_edge_down(&mut self, now: Now, peer: &NodeId) {
        if self.edges.remove(peer).is_some() {
            self.stats.edges_down += 1;
            self.forget_edge(peer);
            self.actions
                .push_back(Action::Notify(NodeEvent::EdgeDown { peer: *peer }));
            self.back_off_known(now, peer);
            if self.edges.phase() < Phase::Normal {
                self.fill(now, 1);
            }
        }
    }

    /// A send to `peer` failed: the edge is dead (the driver closes it).
    pub fn on_send_failed(&mut self, now: Now, peer: &NodeId) {
        self.stats.forward_repairs += 1;
        self.actions.push_back(Action::Close(*peer));
        self.on_edge_down(now, peer);
    }

    /// A dial failed: back off from that contact and evict it from its bucket (a stashed
    /// newcomer takes its place; its backoff stays, so a contact named again does not start
    /// over), unless it is the last contact of its bucket we reached (`kept_through_failures`).
    pub fn on_dial_failed(&mut self, now: Now, peer: &NodeId) {
        self.dialing.remove(peer);
        self.stats.dials_failed += 1;
        let at_ceiling = self
            .backoff
            .get(peer)
            .is_some_and(|b| b.delay >= BACKOFF_MAX);
        let b = self.back_off(now, peer);
        b.failures += 1;
        let failures = b.failures;
        if kept_through_failures(&self.knowledge, peer, failures) {
            return;
        }
        if at_ceiling && failures >= 3 {
            // Out of the replacement cache too.
            self.knowledge.remove(peer);
        }
        self.knowledge.confirm(peer, false, now.mono);
    }

    /// [`Core::back_off`] for a peer we know an address of (one maintenance could dial): a
    /// peer that only ever dialed us leaves no entry behind.
    pub(super) fn back_off_known(&mut self, now: Now, peer: &NodeId) {
        if self
            .knowledge
            .get(peer)
            .is_some_and(|c| !c.addrs.is_empty())
        {
            self.back_off(now, peer);
        }
    }

    /// Starts or doubles `peer`'s backoff: [`BACKOFF_BASE`] if none is remembered, else
    /// twice the last delay, up to [`BACKOFF_MAX`].
    fn back_off(&mut self, now: Now, peer: &NodeId) -> &mut Backoff {
        let b = self.backoff.entry(*peer).or_insert(Backoff {
            until: now.mono,
            delay: BACKOFF_BASE / 2,
            failures: 0,
        });
        b.delay = (b.delay * 2).min(BACKOFF_MAX);
        b.until = now.mono.after(b.delay);
        b
    }
}

/// Whether `peer`, whose dials have failed `failures` times in a row, stays in its bucket:
/// we once dialed it successfully at the address we hold ([`Knowledge::was_reached`]),
/// nothing could take its place ([`Knowledge::has_alternative`]: no other reached contact
/// with an address, no newcomer waiting in a full bucket's cache), and it has failed fewer
/// than [`KEEP_FAILURES`] times in a row (an edge coming up ends the run). Its backoff is
/// kept as long (not forgotten after a while), so it is redialed once per [`BACKOFF_MAX`]
/// once the delay has doubled up to it.
///
/// A cut that takes a whole part of the keyspace away fails every dial there; evicting each
/// would leave nothing that leads back across once it heals
/// (`cluster::a_partition_along_the_keyspace_heals`). Kademlia keeps a bucket's unresponsive
/// contacts while it has no replacement, for this reason. Only a contact we once reached
/// qualifies: a made-up one named in an answer is evicted by its first failed dial, as any
/// other.
pub(super) fn kept_through_failures(knowledge: &Knowledge, peer: &NodeId, failures: u32) -> bool {
    failures < KEEP_FAILURES && knowledge.was_reached(peer) && !knowledge.has_alternative(peer)
}
