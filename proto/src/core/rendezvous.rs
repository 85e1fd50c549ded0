//! Rendezvous: our Hello to a NodeId and its verified Reply, and answering theirs.

use super::*;

impl Core {
    /// A Hello addressed to us: verify it against its originator and our NodeId, bind the
    /// originator's keys and addresses, and answer with a signed Reply.
    pub(super) fn on_hello(&mut self, now: Now, m: &MsgRef<'_>) -> Handled {
        let originator = m.originator();
        if self.is_repeat(m) {
            return Handled::Done;
        }
        let Ok(hello) = Hello::decode(m.payload) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        if !self.limiter.allow(originator, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return Handled::Done;
        }
        if hello.verify(m.ed_pub, &self.id).is_err() {
            self.stats.dropped_bad_sig += 1;
            return Handled::Done;
        }
        let contact = Contact {
            id: originator,
            ed_pub: Some(*m.ed_pub),
            x_pub: Some(hello.x_pub),
            caps: Caps::default(),
            addrs: hello.addrs.iter().map(|a| a.to_owned_addr()).collect(),
        };
        self.observe(&contact, now);
        let Ok(reply) =
            nodenet_rendezvous::encode_reply(&self.identity, &self.coordinates(), &hello.nonce)
        else {
            return Handled::Done;
        };
        if self
            .originate_answer(now, FrameType::REPLY, originator, &reply, &hello.nonce)
            .is_ok()
        {
            self.stats.rendezvous_answered += 1;
            self.expect_dial(now, originator);
        }
        Handled::Done
    }

    /// A Reply addressed to us: it must answer a request of ours, come from the NodeId we
    /// asked (its key hashes to it), echo our nonce and carry the target's signature. A
    /// forger on the path fails one of those and is counted; the request stays open for the
    /// genuine answer.
    pub(super) fn on_reply(&mut self, now: Now, m: &MsgRef<'_>) -> Handled {
        let Ok(reply) = Reply::decode(m.payload) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        let Some(&(target, expires, done)) = self.rendezvous.get(&reply.nonce) else {
            self.stats.dropped_unsolicited_reply += 1;
            return Handled::Done;
        };
        if expires <= now.mono {
            self.rendezvous.remove(&reply.nonce);
            self.stats.dropped_unsolicited_reply += 1;
            return Handled::Done;
        }
        if done {
            // Another copy's answer (three paths, and retries) to a request already answered.
            self.stats.dropped_duplicate += 1;
            return Handled::Done;
        }
        let Ok(coordinates) = reply.verify(&target, &reply.nonce) else {
            self.stats.dropped_forged_reply += 1;
            return Handled::Done;
        };
        if let Some(r) = self.rendezvous.get_mut(&reply.nonce) {
            r.2 = true;
        }
        let contact = Contact {
            id: target,
            ed_pub: Some(coordinates.ed_pub),
            x_pub: Some(coordinates.x_pub),
            caps: Caps::default(),
            addrs: coordinates.addrs.clone(),
        };
        self.observe(&contact, now);
        self.stats.rendezvous_completed += 1;
        Handled::Rendezvous {
            nonce: reply.nonce,
            coordinates,
        }
    }

    /// Starts a rendezvous with `target`: a signed Hello with our keys and addresses, routed
    /// down up to three paths. The answer comes back as [`Handled::Rendezvous`] with the
    /// returned nonce, or not at all (the caller times out, then calls
    /// [`Core::cancel_rendezvous`]).
    pub fn start_rendezvous(
        &mut self,
        now: Now,
        target: NodeId,
    ) -> Result<[u8; RDV_NONCE_LEN], OriginateError> {
        let nonce: [u8; RDV_NONCE_LEN] = self.random();
        if self.rendezvous.len() >= PENDING_MAX {
            self.rendezvous.retain(|_, (_, exp, _)| *exp > now.mono);
        }
        if self.rendezvous.len() >= PENDING_MAX {
            return Err(OriginateError::Busy);
        }
        self.send_hello(now, target, &nonce)?;
        self.rendezvous
            .insert(nonce, (target, now.mono.after(RENDEZVOUS_TTL), false));
        self.stats.rendezvous_started += 1;
        Ok(nonce)
    }

    /// Sends the Hello of an open, unanswered request again (same nonce): a routed message
    /// is best effort, and one lost while the overlay converges must not fail a connect.
    pub fn resend_rendezvous(
        &mut self,
        now: Now,
        nonce: &[u8; RDV_NONCE_LEN],
    ) -> Result<(), OriginateError> {
        match self.rendezvous.get(nonce) {
            Some(&(target, exp, false)) if exp > now.mono => self.send_hello(now, target, nonce),
            _ => Ok(()),
        }
    }

    pub(super) fn send_hello(
        &mut self,
        now: Now,
        target: NodeId,
        nonce: &[u8; RDV_NONCE_LEN],
    ) -> Result<(), OriginateError> {
        let hello =
            nodenet_rendezvous::encode_hello(&self.identity, &target, &self.coordinates(), nonce)
                .map_err(|_| OriginateError::FrameTooLarge {
                len: usize::MAX,
                max: MAX_PACKET_LEN,
            })?;
        self.originate(now, FrameType::HELLO, target, &hello)
    }

    /// Closes a rendezvous request (its caller is done with it). It is remembered until it
    /// expires, so late copies of its answer count as duplicates, not as unsolicited.
    pub fn cancel_rendezvous(&mut self, nonce: &[u8; RDV_NONCE_LEN]) {
        if let Some(r) = self.rendezvous.get_mut(nonce) {
            r.2 = true;
        }
    }
}
