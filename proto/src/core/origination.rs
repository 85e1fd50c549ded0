//! Originating routed messages (multi-path), and end-to-end sealing.

use super::*;

impl Core {
    /// Seals `plaintext` from us to the X25519 key `x`.
    pub fn seal<R: rand_core::CryptoRng + ?Sized>(
        &self,
        x: &[u8; 32],
        plaintext: &[u8],
        now_ns: i64,
        rng: &mut R,
    ) -> Result<Vec<u8>, nodenet_rendezvous::SealError> {
        nodenet_rendezvous::seal(&self.identity, x, plaintext, &[], now_ns, rng)
    }

    /// Opens a box sealed to us: it must be fresh and never opened before (the core keeps
    /// the replay cache).
    pub fn open(
        &mut self,
        data: &[u8],
        now_ns: i64,
    ) -> Result<nodenet_rendezvous::Opened, nodenet_rendezvous::OpenError> {
        nodenet_rendezvous::open(&self.identity, data, &[], now_ns, &mut self.boxes)
    }

    /// The addresses our knowledge table holds for `id`.
    pub fn known_addrs(&self, id: &NodeId) -> Vec<Addr> {
        self.knowledge
            .get(id)
            .map(|c| c.addrs.clone())
            .unwrap_or_default()
    }

    /// The static X25519 key we know for `id` (from a verified Hello or Reply).
    pub fn x_key_of(&self, id: &NodeId) -> Option<[u8; 32]> {
        self.knowledge.get(id).and_then(|c| c.x_pub)
    }

    /// Originates a message of `ty` to `target`: up to three copies down distinct first hops,
    /// each avoiding the others' first hops, signed once. Queues the sends as actions.
    pub fn originate(
        &mut self,
        now: Now,
        ty: FrameType,
        target: NodeId,
        payload: &[u8],
    ) -> Result<(), OriginateError> {
        self.originate_via(now, ty, target, payload, None)
    }

    /// Originates an answer (Reply, ConnectAck) to `target`: as [`Core::originate`], with the
    /// edge its request came in on, if we still hold it, among the first hops (see
    /// [`crumb_of`]).
    pub(super) fn originate_answer(
        &mut self,
        now: Now,
        ty: FrameType,
        target: NodeId,
        payload: &[u8],
        nonce: &[u8],
    ) -> Result<(), OriginateError> {
        let back = nonce
            .get(..NONCE_LEN)
            .and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok())
            .and_then(|n| self.crumbs.get(&(target, n), now.mono))
            .filter(|c| self.edges.contains(c));
        self.originate_via(now, ty, target, payload, back)
    }

    pub(super) fn originate_via(
        &mut self,
        now: Now,
        ty: FrameType,
        target: NodeId,
        payload: &[u8],
        back: Option<NodeId>,
    ) -> Result<(), OriginateError> {
        let ed = self.identity.ed_public();
        let sig = msg::sign(&self.identity, ty, &target, now.unix_ns, payload);
        let probe = MsgFields {
            target,
            ttl: MAX_HOPS,
            ed_pub: &ed,
            sent: now.unix_ns,
            avoid: &[NodeId::ZERO; 2],
            payload,
            sig: &sig,
        };
        let len = nodenet_wire::header_len(probe.encoded_len()) + probe.encoded_len();
        if len > MAX_PACKET_LEN {
            return Err(OriginateError::FrameTooLarge {
                len,
                max: MAX_PACKET_LEN,
            });
        }
        let mut hops = first_hops(&self.edges, &target);
        match back {
            Some(back) => hops.include(back),
            // Behind NAT our closest edges toward a target are often other NAT'd nodes with
            // few edges of their own: local optima where every copy could die. One copy goes
            // through a public anchor instead, which holds edges to most of the overlay.
            None => {
                if let Some(anchor) = self.anchor_toward(&target) {
                    hops.include(anchor);
                }
            }
        }
        if hops.hops().is_empty() {
            return Err(OriginateError::Unroutable);
        }
        for (i, hop) in hops.hops().iter().enumerate() {
            let (avoid, n) = hops.avoid_for(i);
            let fields = MsgFields {
                avoid: &avoid[..n],
                ..probe
            };
            let mut frame = vec![0u8; len];
            if let Ok(written) = fields.encode_frame(ty, &mut frame) {
                frame.truncate(written);
                self.actions.push_back(Action::Send { to: *hop, frame });
            }
        }
        self.stats.originated += 1;
        Ok(())
    }

    /// Our capability hints: a volunteer relay, and a public anchor once our neighbours see
    /// us at an address of our own.
    pub(super) fn own_caps(&self) -> Caps {
        let mut caps = Caps::default();
        if self.config.relay {
            caps = caps.with(Caps::CAN_RELAY);
        }
        if self.nat_type() == NatType::Public {
            caps = caps.with(Caps::PUBLIC_ANCHOR);
        }
        caps
    }

    /// When we sit behind a NAT: our edge closest to `target` among those that advertise
    /// being publicly reachable (a public anchor or a relay volunteer).
    pub(super) fn anchor_toward(&self, target: &NodeId) -> Option<NodeId> {
        if !matches!(self.nat_type(), NatType::Cone | NatType::Symmetric) {
            return None;
        }
        let public = Caps::PUBLIC_ANCHOR;
        self.edges
            .iter()
            .filter(|e| {
                self.knowledge
                    .get(&e.id)
                    .is_some_and(|c| c.caps.contains(public) || c.caps.contains(Caps::CAN_RELAY))
            })
            .map(|e| e.id)
            .min_by(|a, b| target.distance(a).cmp(&target.distance(b)))
    }
}
