//! Asking relays: a relay request and its grant, and a round of attestation (where relays
//! of our choosing see a peer).

use super::*;

impl Node {
    /// Asks `relay` (one of our edges) for a relay session to `target`: its grant, the
    /// caller-side address and where it sees the target, or why not. The core sends the
    /// request and lets through only the asked relay's grant, once, in time.
    pub(super) async fn ask_relay(
        &self,
        relay: NodeId,
        target: NodeId,
    ) -> Result<(Addr, Option<crate::core::Attested>), StepError> {
        // A relay whose connection is gone cannot be asked: on to the next at once.
        if self.conn_to(&relay).is_none() {
            return Err(StepError::NoRelay);
        }
        let (tx, rx) = oneshot::channel();
        let nonce = {
            let now = self.now();
            let mut core = lock(&self.0.core);
            let nonce = core
                .ask_relay(now, relay, target)
                .ok_or(StepError::NoRelay)?;
            // Registered before the core lock is released: the grant is handled under it.
            lock(&self.0.relay_waiters).insert(nonce, tx);
            self.drain(&mut core, now);
            nonce
        };
        let _guard = OnDrop(|| {
            lock(&self.0.relay_waiters).remove(&nonce);
            lock(&self.0.core).cancel_relay_ask(&nonce);
        });
        match tokio::time::timeout(RELAY_GRANT_TIMEOUT, rx).await {
            Ok(Ok(grant)) => Ok(grant),
            _ => Err(StepError::Timeout(RELAY_GRANT_TIMEOUT)),
        }
    }

    /// Where relays of *our* choosing agree they see `peer`: the host a birthday punch may
    /// aim at, or `None`. One round of [`nodenet_proto::vote::Vote`], which decides whose
    /// word counts (see there); this carries it out: it seats each relay (a direct edge of
    /// ours and, on IP, its subnet, fixed when asked), asks the relays the round names at
    /// once, and feeds it their answers and its deadline. Only for a relayed edge to `peer`;
    /// an agreement is kept while the edge lives.
    pub(crate) async fn trusted_host(&self, peer: NodeId) -> Option<Addr> {
        use nodenet_proto::vote::{Seat, Vote};
        use nodenet_routing::SubnetKey;
        let conn = self.conn_to(&peer)?;
        // The carrier and its word read from the one link, in one look.
        let (carrier, carrier_word) = {
            let core = lock(&self.0.core);
            let links = core.links();
            // Asked once per edge: an agreement is kept while the edge lives.
            if let Some(host) = links.trusted(link(&conn)) {
                return Some(host.clone());
            }
            (
                links.carrier(link(&conn))?,
                links.attested(link(&conn)).cloned(),
            )
        };
        let ip = self.0.transport.is_ip();
        // Only a direct edge of ours (a relayed one shows its relay's address, not its own)
        // and, on IP, one with a subnet.
        let seat = |relay: &NodeId| -> Option<Seat> {
            let c = self.conn_to(relay)?;
            if self.is_relayed(&c) {
                return None;
            }
            let net = SubnetKey::of_addr(c.remote_addr().as_ref());
            (!ip || net.is_some()).then_some(net)
        };
        let carrier_word = carrier_word.and_then(|host| seat(&carrier).map(|net| (host, net)));
        // Collected first: `seat` takes the core's lock.
        let candidates = lock(&self.0.core).relay_candidates(&peer, RELAYS_TRIED + 4);
        let seated: Vec<(NodeId, Option<Seat>)> =
            candidates.into_iter().map(|r| (r, seat(&r))).collect();
        let mut vote = Vote::new(self.now().mono, peer, carrier, carrier_word, seated);
        let mut asks = tokio::task::JoinSet::new();
        for relay in vote.to_ask() {
            let node = self.clone();
            asks.spawn(async move { (relay, node.ask_relay(relay, peer).await) });
        }
        while vote.verdict().is_none() {
            let Some(deadline) = vote.poll_timeout() else {
                break;
            };
            // Biased: an answer already in counts before a deadline that came with it.
            tokio::select! {
                biased;
                joined = asks.join_next() => match joined {
                    Some(Ok((relay, answer))) => {
                        let word = answer.ok().and_then(|(_, word)| word);
                        // A relay that left since it answered no longer speaks.
                        let still_edge = self.conn_to(&relay).is_some();
                        vote.handle_answer(relay, word, still_edge);
                    }
                    Some(Err(_)) => {}
                    None => vote.abandon(),
                },
                () = tokio::time::sleep_until(self.instant_at(deadline)) => {
                    vote.handle_timeout(self.now().mono);
                }
            }
        }
        let verdict = vote.verdict().flatten();
        // Only an agreement is kept: a vote that fell short (a relay not yet holding an edge
        // to the peer, an answer lost) may succeed on the next attempt, which the birthday
        // limits space out.
        if let Some(host) = &verdict {
            // Kept only for a link still relayed and open (on_closed may have run already).
            let mut core = lock(&self.0.core);
            if !conn.is_closed() {
                core.links_mut().trust(link(&conn), host.clone());
            }
        }
        verdict
    }
}
