//! Maintenance: the tick (reaping, keepalives, fill), lookups and their answers,
//! knowledge upkeep and maintenance dials.

use super::*;

impl Core {
    /// When the core wants [`Core::handle_timeout`] next: the next maintenance tick (at
    /// once for a new core, then [`Maintenance::tick`] after the last), a self-lookup due
    /// before it (a quick follow-up, or the first one once an edge is up), or a punch
    /// volley or held punch due before either ([`crate::punch`]).
    /// Read it again after every input: an input can bring it closer.
    pub fn poll_timeout(&self) -> Time {
        let due = if self.edges.is_empty() {
            self.next_tick
        } else {
            self.next_tick.min(self.next_self_lookup)
        };
        self.bursts.poll_timeout().map_or(due, |p| due.min(p))
    }

    /// The time [`Core::poll_timeout`] named came (or passed): queues the punch volleys due,
    /// then runs maintenance if it is due ([`Core::on_tick`]), else a self-lookup if that is
    /// due; early calls do nothing.
    pub fn handle_timeout(&mut self, now: Now) {
        self.bursts.handle_timeout(now.mono);
        self.queue_punches();
        if now.mono >= self.next_tick {
            self.on_tick(now);
        } else {
            self.self_lookup_if_due(now);
        }
    }

    /// Runs maintenance now, whenever it was due: reaps dead edges, pings idle ones, fills
    /// the floor, looks up our neighbourhood, exchanges siblings and refreshes stale
    /// buckets. The next one is due [`Maintenance::tick`] later.
    pub fn on_tick(&mut self, now: Now) {
        let m = self.config.maintenance.clone();
        self.next_tick = now.mono.after(m.tick);
        let mut dead: Vec<NodeId> = self.edges.idle(now.mono, m.dead_sibling, true).collect();
        dead.extend(self.edges.idle(now.mono, m.dead_finger, false));
        for id in dead {
            self.actions.push_back(Action::Close(id));
            if self.edges.remove(&id).is_some() {
                self.stats.edges_down += 1;
                self.forget_edge(&id);
                self.back_off_known(now, &id);
                self.actions
                    .push_back(Action::Notify(NodeEvent::EdgeDown { peer: id }));
            }
        }
        let mut idle: Vec<NodeId> = self
            .edges
            .idle(now.mono, m.keepalive_sibling, true)
            .collect();
        idle.extend(self.edges.idle(now.mono, m.keepalive_finger, false));
        for id in idle {
            self.actions.push_back(Action::Send {
                to: id,
                frame: small_frame(FrameType::PING, &[]),
            });
        }
        // A backoff is remembered for a while after it ends (one more delay, at least
        // BACKOFF_MEMORY, longer than a tick), so a peer that fails (or drops us) again
        // meanwhile doubles it rather than starting over.
        // A contact kept through its failures keeps its backoff too: forgotten, its delay
        // would start over at a second.
        let (knowledge, edges) = (&self.knowledge, &self.edges);
        self.backoff.retain(|id, b| {
            b.until.after(b.delay.max(BACKOFF_MEMORY)) > now.mono
                || (b.failures > 0
                    && !edges.contains(id)
                    && edges::kept_through_failures(knowledge, id, b.failures))
        });
        self.pending.retain(|_, exp| *exp > now.mono);
        self.relay_hints.purge(now.mono);
        // A node closer to us than our closest edges comes first, in one of the tick's
        // fill dials (or one of its own past the floor, where fill dials nothing). Added
        // on top, its dials made a partitioned node fail more dials and forget the far
        // side (a failed dial evicts the contact), so the cut did not heal. The hole dial
        // below is one a tick and only in a tick without this one; a cut random in the
        // keyspace leaves few holes (`cluster::a_long_partition_heals`).
        let upkept = usize::from(self.sibling_upkeep(now));
        let want = self.edges.phase().fill_per_tick();
        self.fill(now, want.saturating_sub(upkept));
        if upkept == 0 {
            self.fill_hole(now);
        }
        if self.edges.is_empty() {
            for c in self.bootstrap.clone() {
                self.dial(c, DialKind::Bootstrap);
            }
        }
        self.self_lookup_if_due(now);
        if now.mono >= self.next_sibling_exchange && !self.edges.is_empty() {
            self.next_sibling_exchange = now.mono.after(m.sibling_exchange);
            let siblings: Vec<NodeId> = self
                .edges
                .iter()
                .filter(|e| e.sibling)
                .map(|e| e.id)
                .collect();
            for s in siblings {
                let nonce = self.nonce(now);
                self.actions.push_back(Action::Send {
                    to: s,
                    frame: small_frame(FrameType::SIBLINGS, &nonce),
                });
            }
        }
        if now.mono >= self.next_refresh && !self.edges.is_empty() {
            self.next_refresh = now.mono.after(m.refresh_check);
            let random = self.random32();
            let stale = self
                .knowledge
                .refresh_target(now.mono, m.bucket_stale, random);
            if let Some(target) = stale {
                self.lookup(now, target);
            }
            self.coverage_lookups(now);
            if self.neighbourhood.2 > 0 {
                self.neighbourhood.2 -= 1;
            } else if let Some(nonce) = self.neighbourhood_lookup(now) {
                // Until an answer adds somebody new with an address, the next one waits
                // twice as long.
                let gap = self.neighbourhood.1;
                self.neighbourhood = (
                    Some(nonce),
                    gap.saturating_mul(2).min(NEIGHBOURHOOD_GAP_MAX),
                    gap - 1,
                );
            }
        }
    }

    /// Looks up a random id 1 to 4 bits out from the bucket of our 16th closest known node
    /// with an address (fewer bits when that bucket is shallower), through up to two of our
    /// edges picked at random among those sharing fewer leading bits with us than the
    /// target does (tier 3 policy). A neighbourhood that formed as
    /// a small clique plus the rest stays split otherwise: our self-lookups end at the
    /// nodes closest to us, which are the clique, and the coverage lookups skip every
    /// bucket where the clique gives us an edge. A random id there is not closer to the
    /// clique than to the rest, so the lookup ends at whichever nodes the region's
    /// majority knows, and its answer names them. Once every refresh check while answers
    /// give us new contacts with an address, else twice as seldom each time, down to one
    /// per [`NEIGHBOURHOOD_GAP_MAX`] checks (`neighbourhood_progress`). Its nonce, if sent.
    pub(super) fn neighbourhood_lookup(&mut self, now: Now) -> Option<[u8; NONCE_LEN]> {
        let me = self.id;
        // The bucket of our 16th closest known node with an address (the farthest such, with
        // fewer). A contact named without an address is never dialed, so never evicted: a
        // few made-up ids close to us must not pull our aim in onto ourselves.
        let far = self
            .knowledge
            .closest_where(&me, SIBLINGS, has_addr)
            .last()?
            .id;
        let d = me.bucket_index(&far)?;
        let span = d.min(usize::from(NEIGHBOURHOOD_SPAN));
        if span == 0 {
            return None;
        }
        let r = self.random32();
        let b = d - 1 - usize::from(r[0]) % span;
        let target = id_in_bucket(&me, b, self.random32());
        let mut outside: Vec<NodeId> = self
            .edges
            .iter()
            .map(|e| e.id)
            .filter(|e| me.bucket_index(e).is_some_and(|eb| eb < b))
            .collect();
        let mut hops = Vec::with_capacity(2);
        for i in 0..2 {
            if outside.is_empty() {
                break;
            }
            let j = usize::from(u16::from_le_bytes([r[1 + 2 * i], r[2 + 2 * i]])) % outside.len();
            hops.push(outside.swap_remove(j));
        }
        if hops.is_empty() {
            return None;
        }
        let nonce = self.lookup_via(now, target, &hops)?;
        self.stats.neighbourhood_lookups += 1;
        Some(nonce)
    }

    /// An answer to our neighbourhood lookup came in and put `dialable` new contacts with an
    /// address into our buckets: if any, the next lookup goes at the next refresh check.
    /// The nonce stays: the lookup's other answers (it goes out in two copies) still count.
    pub(super) fn neighbourhood_progress(&mut self, dialable: usize) {
        if dialable > 0 {
            (self.neighbourhood.1, self.neighbourhood.2) = (1, 0);
        }
    }

    /// Looks ourselves up if that is due (periodically, or as a quick follow-up).
    fn self_lookup_if_due(&mut self, now: Now) {
        if now.mono < self.next_self_lookup || self.edges.is_empty() {
            return;
        }
        self.next_self_lookup = now.mono.after(self.config.maintenance.self_lookup);
        // A follow-up keeps its streak; a periodic lookup starts a new one.
        let (streak, follow_up) = self.self_lookup_streak;
        self.self_lookup_streak = (if follow_up { streak } else { 0 }, false);
        // Through our closest edges, and through a few more of our edges beyond them,
        // picked at random: a neighbourhood that formed in two halves
        // stays split when every lookup for it starts inside one half (the coverage
        // lookups' reason, for our own region).
        let mut hops: Vec<NodeId> = first_hops(&self.edges, &self.id).hops().to_vec();
        let mut others: Vec<NodeId> = self
            .edges
            .iter()
            .map(|e| e.id)
            .filter(|e| !hops.contains(e))
            .collect();
        for _ in 0..SELF_LOOKUP_OUTSIDERS {
            if others.is_empty() {
                break;
            }
            let r = self.random32();
            let i = usize::from(u16::from_le_bytes([r[0], r[1]])) % others.len();
            hops.push(others.swap_remove(i));
        }
        let target = self.id;
        self.self_lookup = self.lookup_via(now, target, &hops);
    }

    /// Looks up a random id in each of the (up to [`COVERAGE_LOOKUPS`]) farthest buckets that
    /// have no live edge, so the table learns the far parts of the keyspace and maintenance can
    /// dial a finger there: greedy routing needs one in every populated direction. The
    /// reference refreshes only populated stale buckets, which leaves a joining node blind to
    /// the far keyspace for a whole staleness period (tier 3 policy).
    pub(super) fn coverage_lookups(&mut self, now: Now) {
        let mut covered = [false; 256];
        for e in self.edges.iter() {
            if let Some(b) = self.id.bucket_index(&e.id) {
                covered[b] = true;
            }
        }
        let targets: Vec<usize> = (0..COVERAGE_DEPTH)
            .filter(|&b| !covered[b])
            .take(COVERAGE_LOOKUPS)
            .collect();
        for b in targets {
            let random = self.random32();
            let target = id_in_bucket(&self.id, b, random);
            // Launched through edges outside the region, not the closest ones: our edges that
            // share b or more bits with us are nearer any target there than we are, yet they
            // are the nodes least likely to know it (a neighbourhood that formed in two halves
            // stays split when every lookup for the other half starts inside ours). A finger
            // from a shallower bucket enters the region from outside.
            let mut hops = [NodeId::ZERO; KMIN];
            let me = self.id;
            let n = self.edges.closest_into(&target, &mut hops, |e| {
                me.bucket_index(e).is_some_and(|eb| eb < b)
            });
            if n == 0 {
                self.lookup(now, target);
            } else {
                self.lookup_via(now, target, &hops[..n]);
            }
        }
    }

    /// An answer to our self-lookup came in. If it named a node closer to us than any we
    /// knew, our neighbourhood is not found yet: dial the closest one we may, and look
    /// ourselves up again soon through it, rather than a whole period later (tier 3 policy;
    /// Kademlia's iterative lookup, done by routed hops). Bounded to
    /// [`SELF_LOOKUP_FOLLOW_UPS`] follow-ups per period.
    pub(super) fn self_lookup_progress(
        &mut self,
        now: Now,
        before: Option<nodenet_kad::Distance>,
        after: Option<nodenet_kad::Distance>,
    ) {
        let closer = match (before, after) {
            (Some(b), Some(a)) => a < b,
            (None, Some(_)) => true,
            _ => false,
        };
        let (streak, _) = self.self_lookup_streak;
        if !closer || streak >= SELF_LOOKUP_FOLLOW_UPS {
            return;
        }
        // One follow-up per lookup, however many of its copies are answered.
        self.self_lookup = None;
        self.self_lookup_streak = (streak + 1, true);
        self.next_self_lookup = now.mono.after(SELF_LOOKUP_FOLLOW_UP);
        let me = self.id;
        let pick = self
            .knowledge
            .closest_where(&me, KMIN, has_addr)
            .into_iter()
            .find(|c| self.may_dial(c, now))
            .cloned();
        if let Some(c) = pick {
            self.dial(c, DialKind::Fill);
        }
    }

    /// Keeps our closest edges our closest nodes: when a node we know is closer to us than
    /// our [`SIBLINGS`]-th closest edge, dial it, one per tick, whatever the floor phase
    /// (tier 3 policy); true if it did. The floor counts edges, not where they are: a node past it dials
    /// nothing, so the neighbours it finds later stay unconnected, and messages for its
    /// neighbourhood end at nodes that hold no edge to their target (10,000 simulated nodes
    /// behind the default NAT mix).
    pub(super) fn sibling_upkeep(&mut self, now: Now) -> bool {
        let me = self.id;
        let mut closest = [NodeId::ZERO; SIBLINGS];
        let n = self.edges.closest_into(&me, &mut closest, |_| true);
        let bound = (n == SIBLINGS).then(|| closest[n - 1].distance(&me));
        // Only nodes with an address: one named without is never dialed, so never evicted,
        // and a few made-up ones next to ours would otherwise hide every real node.
        let pick = self
            .knowledge
            .closest_where(&me, SIBLINGS, has_addr)
            .into_iter()
            .filter(|c| bound.is_none_or(|b| c.id.distance(&me) < b))
            .find(|c| self.may_dial(c, now))
            .cloned();
        let Some(c) = pick else { return false };
        self.dial(c, DialKind::Fill)
    }

    /// Whether maintenance may dial `c` now: it has an address, is not an edge or being
    /// dialed, and is not backed off.
    fn may_dial(&self, c: &Contact, now: Now) -> bool {
        !c.addrs.is_empty()
            && !self.edges.contains(&c.id)
            && !self.dialing.contains(&c.id)
            && self.backoff.get(&c.id).is_none_or(|b| b.until <= now.mono)
    }

    /// Starts a lookup of `target`: one signed Lookup, fanned out to the three closest edges.
    pub fn lookup(&mut self, now: Now, target: NodeId) {
        let hops = first_hops(&self.edges, &target);
        self.lookup_via(now, target, hops.hops());
    }

    /// Looks `target` up to learn the relay volunteers near it, for a connect's relay step
    /// ([`Core::relays_near`] names them once the answers are in).
    pub fn lookup_relays(&mut self, now: Now, target: NodeId) {
        if !self.relay_hints.has_room(now.mono) {
            return;
        }
        let hops = first_hops(&self.edges, &target);
        if let Some(nonce) = self.lookup_via(now, target, hops.hops()) {
            self.relay_hints.asked(now.mono, nonce, target);
        }
    }

    /// Sends one signed Lookup of `target` to each of `hops`; its nonce, if sent.
    pub(super) fn lookup_via(
        &mut self,
        now: Now,
        target: NodeId,
        hops: &[NodeId],
    ) -> Option<[u8; NONCE_LEN]> {
        if hops.is_empty() {
            return None;
        }
        let nonce = self.nonce(now);
        let ed = self.identity.ed_public();
        let sig = msg::sign(
            &self.identity,
            FrameType::LOOKUP,
            &target,
            now.unix_ns,
            &nonce,
        );
        let avoid = [self.id];
        let fields = MsgFields {
            target,
            ttl: MAX_HOPS,
            ed_pub: &ed,
            sent: now.unix_ns,
            avoid: &avoid,
            payload: &nonce,
            sig: &sig,
        };
        let mut frame = vec![0u8; 256];
        let Ok(n) = fields.encode_frame(FrameType::LOOKUP, &mut frame) else {
            return None;
        };
        frame.truncate(n);
        for hop in hops {
            self.actions.push_back(Action::Send {
                to: *hop,
                frame: frame.clone(),
            });
        }
        Some(nonce)
    }

    /// A fresh nonce, remembered as solicited for the answer it invites.
    pub(super) fn nonce(&mut self, now: Now) -> [u8; NONCE_LEN] {
        let nonce: [u8; NONCE_LEN] = self.random();
        if self.pending.len() >= PENDING_MAX {
            self.pending.retain(|_, exp| *exp > now.mono);
        }
        if self.pending.len() < PENDING_MAX {
            self.pending.insert(nonce, now.mono.after(NONCE_TTL));
        }
        nonce
    }

    pub(super) fn answer_neighbors(
        &mut self,
        now: Now,
        to: NodeId,
        about: &NodeId,
        nonce: [u8; NONCE_LEN],
        ttl: u8,
        direct: bool,
    ) {
        let me = Contact {
            id: self.id,
            ed_pub: Some(self.identity.ed_public()),
            x_pub: None,
            caps: self.own_caps(),
            addrs: self.coordinates(),
        };
        let contacts = handlers::neighbors_answer(&self.knowledge, about, &me);
        let mut payload = vec![0u8; NONCE_LEN + control::contacts_len(&contacts)];
        if control::encode_neighbors(&mut Writer::new(&mut payload), &nonce, &contacts).is_err() {
            return;
        }
        let ed = self.identity.ed_public();
        let sig = msg::sign(
            &self.identity,
            FrameType::NEIGHBORS,
            &to,
            now.unix_ns,
            &payload,
        );
        let fields = MsgFields {
            target: to,
            ttl,
            ed_pub: &ed,
            sent: now.unix_ns,
            avoid: &[],
            payload: &payload,
            sig: &sig,
        };
        let mut frame = vec![0u8; fields.encoded_len() + 8];
        let Ok(n) = fields.encode_frame(FrameType::NEIGHBORS, &mut frame) else {
            return;
        };
        frame.truncate(n);
        if direct {
            self.actions.push_back(Action::Send { to, frame });
        } else {
            // Not multi-path: back the way the lookup came, else the first closest edge that
            // takes it.
            let mut c = Candidates::new();
            let mut hops: Vec<NodeId> =
                match decide(&self.id, &self.edges, &to, MAX_HOPS, |_| false, &mut c) {
                    Decision::Forward { .. } => c.as_slice().to_vec(),
                    _ => first_hops(&self.edges, &to).hops().to_vec(),
                };
            if let Some(back) = self
                .crumbs
                .get(&(to, nonce), now.mono)
                .filter(|c| self.edges.contains(c))
            {
                hops.retain(|h| *h != back);
                hops.insert(0, back);
            }
            if !hops.is_empty() {
                self.actions.push_back(Action::SendAny { to: hops, frame });
            }
        }
    }

    pub(super) fn learn(&mut self, now: Now, id: NodeId, ed_pub: [u8; 32]) {
        let contact = Contact {
            id,
            ed_pub: Some(ed_pub),
            x_pub: None,
            caps: Caps::default(),
            addrs: Vec::new(),
        };
        self.observe(&contact, now);
    }

    pub(super) fn observe(&mut self, contact: &Contact, now: Now) {
        if let Observed::Stashed { probe } = self.knowledge.observe(contact, now.mono) {
            self.probe(now, probe);
        }
    }

    /// Checks an incumbent whose bucket is full: a live edge is proof enough; otherwise dial.
    pub(super) fn probe(&mut self, now: Now, id: NodeId) {
        if self.edges.contains(&id) {
            self.knowledge.confirm(&id, true, now.mono);
        } else if self.backoff.get(&id).is_some_and(|b| b.until > now.mono) {
            // Backed off: not probed before its time (a newcomer each stashed in its bucket
            // would otherwise redial it at once, past its backoff); the newcomer waits.
        } else if let Some(c) = self.knowledge.get(&id).cloned() {
            self.dial(c, DialKind::Probe);
        }
    }

    pub(super) fn fill(&mut self, now: Now, want: usize) {
        if want == 0 {
            return;
        }
        let want = want.min(MAX_DIALS_IN_FLIGHT.saturating_sub(self.dialing.len()));
        if want == 0 {
            return;
        }
        // A candidate being dialed or backed off keeps its slot (letting the next of its
        // bucket stand in lost delivery: see ARCHITECTURE's departures).
        let picks: Vec<Contact> = self
            .edges
            .replacement_candidates(&self.knowledge, want + self.dialing.len())
            .into_iter()
            .filter(|c| self.may_dial(c, now))
            .take(want)
            .cloned()
            .collect();
        for c in picks {
            self.dial(c, DialKind::Fill);
        }
    }

    /// A hole: a bucket we know contacts in but hold no edge into, where greedy routing
    /// toward that part of the keyspace ends at us. Fill's picks can miss it (it takes a
    /// bucket's first contact, dialable now or not, and past the floor it dials nothing),
    /// so a tick without a closest-node dial gives one dial to the first contact of a hole
    /// that may be dialed now (not in flight, not backed off; a failed dial evicts its
    /// contact, so the next of its bucket gets the next try).
    fn fill_hole(&mut self, now: Now) {
        if self.dialing.len() >= MAX_DIALS_IN_FLIGHT {
            return;
        }
        let pick = self
            .edges
            .hole_candidate(&self.knowledge, |c| self.may_dial(c, now))
            .cloned();
        if let Some(c) = pick {
            self.dial(c, DialKind::Fill);
        }
    }

    /// Dials `contact`, within the bounds a peer's answer cannot push us past: at most
    /// [`MAX_DIALS_IN_FLIGHT`] dials at once (bootstrap contacts excepted) and
    /// [`MAX_DIAL_ADDRS`] addresses each (the rest are cut and counted), and the full dial
    /// timeout only for bootstrap contacts and probes of our own table's incumbents; anyone
    /// else gets [`NON_ANCHOR_DIAL_TIMEOUT`], as in the reference.
    /// True if a dial started; maintenance dials (fill, upkeep, follow-ups) count in
    /// `dials` only then.
    pub(super) fn dial(&mut self, mut contact: Contact, kind: DialKind) -> bool {
        if contact.id == self.id
            || contact.addrs.is_empty()
            || self.edges.contains(&contact.id)
            || self.dialing.contains(&contact.id)
        {
            return false;
        }
        // Bootstrap contacts are the operator's: never cut. Everything else came from peers.
        if kind != DialKind::Bootstrap && self.dialing.len() >= MAX_DIALS_IN_FLIGHT {
            self.stats.dials_cut += 1;
            return false;
        }
        if kind == DialKind::Fill {
            self.stats.dials += 1;
        }
        if contact.addrs.len() > MAX_DIAL_ADDRS {
            self.stats.dials_cut += (contact.addrs.len() - MAX_DIAL_ADDRS) as u64;
            contact.addrs.truncate(MAX_DIAL_ADDRS);
        }
        // The long timeout only for contacts we have reason to wait for: the operator's
        // bootstrap list, and an incumbent of our table being probed (failing it evicts an
        // entry that may well be honest and far away). A contact a peer told us of (even one
        // it says is a public anchor: that claim is unverified) gets the short one.
        let patient = kind == DialKind::Probe || self.bootstrap.iter().any(|b| b.id == contact.id);
        let timeout = if patient {
            self.config.maintenance.dial_timeout
        } else {
            NON_ANCHOR_DIAL_TIMEOUT
        };
        self.dialing.insert(contact.id);
        self.actions.push_back(Action::Dial { contact, timeout });
        true
    }
}

/// Whether we could dial `c`: the question our closest-node reckonings ask, since a contact
/// named without an address is never dialed and so never evicted.
pub(super) fn has_addr(c: &Contact) -> bool {
    !c.addrs.is_empty()
}
