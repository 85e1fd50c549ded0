//! Frames in: the per-edge ones, and routed envelopes forwarded or ended here.

use super::*;

impl Core {
    /// Handles one frame that arrived on the edge from `from` (seen at `from_addr`). `frame`
    /// is the packet's buffer: a forwarded frame leaves in it, with only its TTL rewritten.
    pub fn on_frame(
        &mut self,
        now: Now,
        from: NodeId,
        from_addr: &Addr,
        frame: &mut [u8],
    ) -> Handled {
        let Ok((ty, range)) = Frame::parse_range(frame) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        self.edges.touch(&from, now.mono);
        if ty.is_routed() {
            return self.on_routed(now, from, ty, frame, range);
        }
        let payload = &frame[range];
        match ty {
            FrameType::PING => {
                let mut buf = [0u8; 512];
                let mut w = Writer::new(&mut buf);
                if from_addr.as_ref().encode(&mut w).is_ok() {
                    let frame = small_frame(FrameType::PONG, w.written());
                    self.actions.push_back(Action::Send { to: from, frame });
                }
            }
            FrameType::PONG if self.relayed_edges.contains(&from) => {
                self.stats.dropped_relayed_reflexive += 1;
            }
            FrameType::PONG => match control::parse_pong(payload) {
                Ok(seen) if !self.config.ip || nodenet_nat::reachable(seen).is_some() => {
                    let subnet = self
                        .config
                        .subnets
                        .then(|| SubnetKey::of_addr(from_addr.as_ref()))
                        .flatten();
                    self.reflexive
                        .report(from, seen.to_owned_addr(), subnet.map(|s| s.0));
                    self.refresh_reflexive();
                    self.stats.reflexive_reports += 1;
                }
                Ok(_) => self.stats.dropped_bad_reflexive += 1,
                Err(_) => self.stats.dropped_malformed += 1,
            },
            FrameType::SIBLINGS => {
                if !self.edges.allow_control(&from, now.mono) {
                    self.stats.dropped_rate_limited += 1;
                    return Handled::Done;
                }
                match control::parse_nonce(payload) {
                    Ok(nonce) => self.answer_neighbors(now, from, &from, nonce, 1, true),
                    Err(_) => self.stats.dropped_malformed += 1,
                }
            }
            FrameType::LEAVE => {
                // The peer is going: drop the edge now (not after a timeout), replace it, and
                // do not redial the departed peer before its backoff.
                if self.edges.contains(&from) {
                    self.actions.push_back(Action::Close(from));
                    self.on_edge_down(now, &from);
                }
            }
            FrameType::RELAY_REQUEST | FrameType::RELAY_GRANT | FrameType::RELAY_BIND => {
                return self.on_relay_frame(now, from, from_addr, ty, payload);
            }
            FrameType::APP => {
                // Tier 3 policy: an App frame does not pay the forward bucket (the reference
                // charges it). The bucket guards what we relay for others; an App frame is
                // never relayed, it ends here on an edge we accepted, its rate is bounded by
                // the connection's flow control and its memory by the deliveries queue. Charged,
                // it capped a bulk transfer at the bucket's rate (512 frames/s) and dropped
                // the rest: data lost on a link with room to spare.
                return Handled::Deliver(Delivery {
                    originator: from,
                    payload: payload.to_vec(),
                    via: Via::Direct,
                    hops: 0,
                });
            }
            _ => self.stats.dropped_unsupported += 1,
        }
        Handled::Done
    }

    /// A routed frame; `payload` is its payload's range in `frame` (from the one parse in
    /// [`Core::on_frame`]).
    pub(super) fn on_routed(
        &mut self,
        now: Now,
        from: NodeId,
        ty: FrameType,
        frame: &mut [u8],
        payload: std::ops::Range<usize>,
    ) -> Handled {
        if !self.edges.allow_forward(&from, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return Handled::Done;
        }
        let ttl_at = payload.start + msg::TTL_OFFSET;
        // Whether the signature was checked here already (a request's breadcrumb needs it):
        // the terminal step then does not check it again.
        let (decision, candidates, answer_too, checked) = {
            let Ok(m) = MsgRef::parse(&frame[payload]) else {
                self.stats.dropped_malformed += 1;
                return Handled::Done;
            };
            // Tier 2 at every hop: the originator's work, then freshness.
            if self.config.difficulty > 0
                && !nodenet_pow::verify(&m.originator(), self.config.difficulty)
            {
                self.stats.dropped_sub_pow += 1;
                return Handled::Done;
            }
            if !m.is_fresh(now.unix_ns) {
                self.stats.dropped_stale += 1;
                return Handled::Done;
            }
            let mut candidates = Candidates::new();
            let mut answer_too = false;
            let mut decision = decide(
                &self.id,
                &self.edges,
                &m.target,
                m.ttl,
                |id| *id == from || m.avoids(id),
                &mut candidates,
            );
            // The avoid-set steers a message's copies apart in the middle of the path; near the
            // target it can leave a copy nowhere to go but another copy's first hop. Rather than
            // drop it there, let it reconverge (tier 3 policy: the reference drops it). This
            // holds for every message bound for a NodeId (Route, Hello, Reply, Neighbors).
            // Lookups keep the strict rule: their avoid-set is the originator, and their local
            // optimum is where they are answered.
            if ty != FrameType::LOOKUP
                && decision == Decision::Drop(DropReason::LocalOptimum)
                && m.avoid().len() > 0
            {
                decision = decide(
                    &self.id,
                    &self.edges,
                    &m.target,
                    m.ttl,
                    |id| *id == from,
                    &mut candidates,
                );
            }
            // Answers retrace their request's path (tier 3 policy; the reference routes them
            // greedily). Greedy routing back to the asker fails exactly where answers matter
            // most: a neighbourhood that formed in two halves, each unaware of the other,
            // swallows every lookup answer that must cross from one half to the other and
            // stays split; and behind NAT, where a node holds edges to few others, the
            // answerer or a hop after it is often a local optimum toward the asker, which
            // loses rendezvous Replies and ConnectAcks. The edge a request (Lookup, Hello,
            // Connect) came in on is remembered for a while under its originator and nonce;
            // its answer (Neighbors, Reply, ConnectAck) goes back that way first, and greedy
            // routing is the fallback.
            //
            // A breadcrumb draws answers to the edge it names, so only a request whose
            // originator really signed it plants one: otherwise any edge peer could forge a
            // request in a victim's name and catch the victim's answers first. A forged
            // request would be dropped where it ends anyway; it is dropped here, at the
            // first honest hop.
            let ttl = m.ttl.min(MAX_HOPS);
            // A local optimum that is not the target detours the message to its closest
            // other edge (never back to the sender or to the originator) while the TTL lasts
            // (tier 3 policy: the reference drops it). Behind NAT a node holds edges only to
            // the public nodes it dialed, so a NAT'd node near a target is often closer to it
            // than all of its edges while a public neighbour one hop away holds the edge to
            // the target: in a simulated 1,000-node network with the default NAT mix, 1 to 3%
            // of messages died at such nodes. A detoured message keeps at most
            // [`DETOUR_TTL`] hops, so it cannot circle for long, and a message for a NodeId
            // nobody holds costs at most that many frames more per copy (and at each node
            // where a greedy path ends, at most one near-miss lookup per `NEAR_MISS_GAP`).
            //
            // Lookups are answered at their local optimum, except by a node behind NAT: its
            // view of its own neighbourhood is the thinnest in the network, and its answers
            // kept its neighbours from learning of each other (3,000 simulated nodes, default
            // NAT mix: delivery 94.1% with NAT'd nodes answering, 99.5% passing lookups on).
            // A node's lookup of itself is the exception: a NAT'd local optimum answers it
            // and passes it on. The asker is its neighbour, and the public nodes the NAT'd
            // one dialed are often the very ones the asker has not met; passed on, the
            // lookup still reaches whoever answers it now. At 10,000 simulated nodes joining
            // at once (seed 11), this and asking each dialer where it listens (`admit_edge`)
            // left no public node of 3,970 without an edge to its closest public node after
            // 300 s instead of 104, and every connect and routed message got through.
            // A public local optimum that knows a lookup's target as a node (not just a point
            // in the keyspace) answers the lookup and also passes it on (tier 3 policy: the
            // reference only answers), unless the target is looking itself up: whoever asks
            // may want that node's own answer (a relay lookup counts only the target's word),
            // and ours alone would end it one hop short. In a simulated 2,000-node network
            // with the default NAT mix, all 5 connects that failed had their relay lookup
            // answered by such a node; passing these on left 2. The asker still gets our
            // answer, as from any local optimum. The cost is bounded: each node answers and
            // passes on one Lookup message once (its copies share a signature), the copy
            // passed on keeps at most [`DETOUR_TTL`] hops, so each copy of a Lookup draws at
            // most 1 + `DETOUR_TTL` answers this way, all to its signed originator, and both the
            // answer and the pass are shed by the per-originator limit. On its last hop a
            // lookup is answered wherever it is.
            // Whether greedy routing ends here (before a detour or a breadcrumb changes it).
            let local_optimum = decision == Decision::Drop(DropReason::LocalOptimum);
            if local_optimum && ttl > 1 && m.target != self.id {
                let behind_nat = matches!(self.confirmed, Some((_, false)));
                let known =
                    || m.target != m.originator() && self.knowledge.get(&m.target).is_some();
                if ty != FrameType::LOOKUP || behind_nat || known() {
                    let originator = m.originator();
                    let mut next = [NodeId::ZERO; 1];
                    let n = self
                        .edges
                        .closest_into(&m.target, &mut next, |id| *id != from && *id != originator);
                    if n > 0 {
                        candidates.prefer(next[0]);
                        decision = Decision::Forward {
                            ttl: (ttl - 1).min(DETOUR_TTL),
                        };
                        answer_too =
                            ty == FrameType::LOOKUP && (!behind_nat || m.target == m.originator());
                    }
                }
            }
            let mut checked = false;
            let mut crumb_routed = false;
            match crumb_of(ty, m.payload) {
                Some((true, nonce)) => {
                    if !self.signature_holds(ty, &m) {
                        return Handled::Done;
                    }
                    checked = true;
                    let edges = &self.edges;
                    self.crumbs
                        .insert((m.originator(), nonce), from, now.mono, |id| {
                            edges.contains(id)
                        });
                }
                Some((false, nonce)) if decision != Decision::Deliver && ttl > 1 => {
                    let back = self
                        .crumbs
                        .get(&(m.target, nonce), now.mono)
                        .filter(|c| *c != from && self.edges.contains(c));
                    if let Some(c) = back {
                        crumb_routed = true;
                        if !matches!(decision, Decision::Forward { .. }) {
                            candidates.clear();
                            // The clamped TTL, as `decide` uses: never the raw wire byte.
                            decision = Decision::Forward { ttl: ttl - 1 };
                        }
                        candidates.prefer(c);
                    }
                }
                _ => {}
            }
            // A message (not a Lookup, not an answer retracing its request's path) that
            // found us its local optimum: our table may be thin around its target.
            if local_optimum && ty != FrameType::LOOKUP && !crumb_routed {
                match self.near_miss(now, from, ty, &m, checked) {
                    Some(true) => checked = true,
                    // Found forged on the way (counted): it goes no further.
                    Some(false) => return Handled::Done,
                    None => {}
                }
            }
            (decision, candidates, answer_too, checked)
        };
        match decision {
            Decision::Forward { ttl } => {
                // A lookup answered here and passed on: not passed on unless answered (its
                // originator under the limit).
                if answer_too {
                    // Checked before anything is recorded; then a copy (the three share a
                    // signature) or a copy come back around is neither answered nor passed on
                    // again.
                    let Some(m) = self.verified(ty, frame, checked) else {
                        return Handled::Done;
                    };
                    if self.is_repeat(&m) || !self.answer_lookup(now, &m) {
                        return Handled::Done;
                    }
                }
                // The envelope parsed, so its TTL byte is inside the frame.
                let Some(byte) = frame.get_mut(ttl_at) else {
                    return Handled::Done;
                };
                *byte = ttl;
                self.stats.forwarded += 1;
                Handled::Forward(candidates)
            }
            Decision::Deliver => self.terminal(now, ty, frame, true, checked),
            Decision::Drop(DropReason::LocalOptimum) if ty == FrameType::LOOKUP => {
                // The closest reachable node answers a lookup.
                self.terminal(now, ty, frame, false, checked)
            }
            Decision::Drop(DropReason::LocalOptimum) => {
                self.stats.dropped_local_optimum += 1;
                Handled::Done
            }
            Decision::Drop(DropReason::TtlExpired) => {
                self.stats.dropped_ttl += 1;
                Handled::Done
            }
        }
    }

    /// Answers a verified Lookup with our closest contacts to its target, under the
    /// per-originator limit; false if it was not answered (malformed or over the limit).
    fn answer_lookup(&mut self, now: Now, m: &MsgRef<'_>) -> bool {
        let Ok(nonce) = control::parse_nonce(m.payload) else {
            self.stats.dropped_malformed += 1;
            return false;
        };
        let originator = m.originator();
        if !self.limiter.allow(originator, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return false;
        }
        self.learn(now, originator, *m.ed_pub);
        self.stats.lookups_answered += 1;
        self.answer_neighbors(now, originator, &m.target, nonce, MAX_HOPS, false);
        true
    }

    /// The envelope of a routed `frame` of type `ty`, if it parses and its signature holds
    /// (a bad one is counted). `checked`: this very frame's signature was verified already,
    /// in this call of [`Core::on_frame`] (only the TTL byte changed since, which the
    /// signature does not cover).
    fn verified<'f>(
        &mut self,
        ty: FrameType,
        frame: &'f [u8],
        checked: bool,
    ) -> Option<MsgRef<'f>> {
        let (f, _) = Frame::parse(frame).ok()?;
        let m = MsgRef::parse(f.payload()).ok()?;
        (checked || self.signature_holds(ty, &m)).then_some(m)
    }

    /// Checks `m`'s signature for a frame of type `ty`, counting the check and, if it fails,
    /// the drop: the one place a routed frame's signature is verified.
    pub(super) fn signature_holds(&mut self, ty: FrameType, m: &MsgRef<'_>) -> bool {
        self.stats.signatures_checked += 1;
        let holds = m.verify(ty).is_ok();
        if !holds {
            self.stats.dropped_bad_sig += 1;
        }
        holds
    }

    /// A routed frame that ends here: verify, then act by type.
    pub(super) fn terminal(
        &mut self,
        now: Now,
        ty: FrameType,
        frame: &[u8],
        for_us: bool,
        checked: bool,
    ) -> Handled {
        let Some(m) = self.verified(ty, frame, checked) else {
            return Handled::Done;
        };
        let originator = m.originator();
        match ty {
            FrameType::ROUTE if for_us => {
                if self.is_repeat(&m) {
                    return Handled::Done;
                }
                self.learn(now, originator, *m.ed_pub);
                Handled::Deliver(Delivery {
                    originator,
                    payload: m.payload.to_vec(),
                    via: Via::Routed,
                    hops: MAX_HOPS.saturating_sub(m.ttl).saturating_add(1),
                })
            }
            FrameType::LOOKUP => {
                self.answer_lookup(now, &m);
                Handled::Done
            }
            FrameType::NEIGHBORS if for_us => {
                let Ok((nonce, list)) = control::parse_neighbors(m.payload) else {
                    self.stats.dropped_malformed += 1;
                    return Handled::Done;
                };
                // Our lookups' nonces, or the one we asked this very peer under when it
                // dialed us (that one counts once).
                let solicited = self.pending.get(&nonce).is_some_and(|exp| *exp > now.mono)
                    || self.asks.spend(&originator, Some(nonce), None, now.mono);
                if !solicited || !self.limiter.allow(originator, now.mono) {
                    self.stats.dropped_rate_limited += 1;
                    return Handled::Done;
                }
                self.relay_hints.answered(
                    now.mono,
                    &nonce,
                    &originator,
                    &list,
                    &self.id,
                    self.config.difficulty,
                );
                let me = self.id;
                // Our closest node with an address: made-up address-less ids next to ours,
                // never evicted, must not make every answer look like no progress.
                let closest = |k: &Knowledge| {
                    let c = k.closest_where(&me, 1, maintenance::has_addr);
                    c.first().map(|c| c.id.distance(&me))
                };
                let before = closest(&self.knowledge);
                let report =
                    handlers::fold_neighbors(&mut self.knowledge, &list, &originator, now.mono);
                if self.neighbourhood.0 == Some(nonce) {
                    self.neighbourhood_progress(report.inserted_with_addrs);
                }
                for probe in report.probes {
                    self.probe(now, probe);
                }
                if self.self_lookup == Some(nonce) {
                    self.self_lookup_progress(now, before, closest(&self.knowledge));
                }
                Handled::Done
            }
            FrameType::HELLO if for_us => self.on_hello(now, &m),
            FrameType::REPLY if for_us => self.on_reply(now, &m),
            FrameType::CONNECT if for_us => self.on_connect(now, &m),
            FrameType::CONNECT_ACK if for_us => self.on_connect_ack(now, &m),
            _ => {
                self.stats.dropped_unsupported += 1;
                Handled::Done
            }
        }
    }

    /// True (and counted) when another copy of this message arrived before: the copies of
    /// a multi-path message share its signature, whose first 16 bytes key the seen set.
    pub(super) fn is_repeat(&mut self, m: &MsgRef<'_>) -> bool {
        let mut key = [0u8; 16];
        key.copy_from_slice(&m.sig[..16]);
        let repeat = !self.seen.insert(key);
        if repeat {
            self.stats.dropped_duplicate += 1;
        }
        repeat
    }
}
