//! Relay frames (request, grant, bind) and the choice of relays for a connect.

use super::nat;
use super::*;

impl Core {
    /// RelayRequest, RelayGrant and RelayBind: per-edge frames under the control budget.
    pub(super) fn on_relay_frame(
        &mut self,
        now: Now,
        from: NodeId,
        from_addr: &Addr,
        ty: FrameType,
        payload: &[u8],
    ) -> Handled {
        if !self.edges.allow_control(&from, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return Handled::Done;
        }
        match ty {
            FrameType::RELAY_REQUEST => {
                let Ok(req) = nodenet_nat::RelayRequest::decode(payload) else {
                    self.stats.dropped_malformed += 1;
                    return Handled::Done;
                };
                if !self.config.relay || req.target == from || !self.edges.contains(&req.target) {
                    self.stats.relay_requests_refused += 1;
                    return Handled::Done;
                }
                Handled::RelayRequested {
                    from,
                    nonce: req.nonce,
                    target: req.target,
                }
            }
            FrameType::RELAY_GRANT => match nodenet_nat::RelayGrant::decode(payload) {
                // A grant names where our next dial goes: only the relay we asked, once,
                // while the ask lives (another edge could aim that dial at a bystander, or
                // at itself as a relay we never chose).
                Ok(g) if !self.relay_asks.answered(&g.nonce, &from, now.mono) => {
                    self.stats.dropped_unsolicited_grant += 1;
                    Handled::Done
                }
                Ok(g) => Handled::RelayGranted {
                    from,
                    nonce: g.nonce,
                    addr: g.addr.to_owned_addr(),
                    attest: g.attest.map(Attested::from),
                },
                Err(_) => {
                    self.stats.dropped_malformed += 1;
                    Handled::Done
                }
            },
            _ => match nodenet_nat::RelayBind::decode(payload) {
                // We did not ask for this bind: any edge peer can send one. Its callee side
                // is a socket of the relay's own, so it must be on the host our edge to the
                // relay comes from; anything else would aim our punch at a bystander. The
                // relay's attestation of the caller is not taken either: this relay was
                // chosen by the caller, and a caller with a relay of its own choosing could
                // vouch for any host (a birthday punch asks a relay of ours instead).
                Ok(b) if b.addr.net != from_addr.net || !on_host_of(b.addr.endpoint, from_addr) => {
                    self.stats.relay_binds_refused += 1;
                    Handled::Done
                }
                // The caller will come in from this address: that edge runs through the
                // relay, though we did not ask for it. We punch toward it so its packets get
                // through our NAT.
                Ok(b) => match self.punch_candidates([b.addr]).pop() {
                    Some(addr) => {
                        if !self.links.bind(now.mono, addr.clone(), from) {
                            self.stats.relay_binds_refused += 1;
                        }
                        self.punch_burst(now, None, vec![addr]);
                        Handled::Done
                    }
                    None => {
                        self.stats.dropped_bad_reflexive += 1;
                        Handled::Done
                    }
                },
                Err(_) => {
                    self.stats.dropped_malformed += 1;
                    Handled::Done
                }
            },
        }
    }

    /// Asks `relay`, one of our edges, for a relay session to `target`: a RelayRequest under
    /// a fresh nonce, queued as an [`Action::Send`]. Its grant comes back as
    /// [`Handled::RelayGranted`] only if `relay` sends it, once, within
    /// [`crate::connect::RELAY_GRANT_TIMEOUT`] (any other is dropped and counted as
    /// `dropped_unsolicited_grant`). The nonce, or `None` if `relay` is not an edge.
    pub fn ask_relay(
        &mut self,
        now: Now,
        relay: NodeId,
        target: NodeId,
    ) -> Option<[u8; nodenet_nat::NONCE_LEN]> {
        if !self.edges.contains(&relay) {
            return None;
        }
        let nonce = self.random();
        let req = nodenet_nat::RelayRequest { nonce, target }.encode();
        let until = now.mono.after(crate::connect::RELAY_GRANT_TIMEOUT);
        self.relay_asks.open(nonce, relay, now.mono, until);
        self.actions.push_back(Action::Send {
            to: relay,
            frame: small_frame(FrameType::RELAY_REQUEST, &req),
        });
        Some(nonce)
    }

    /// Withdraws our relay request under `nonce` (its asker gave up): a grant for it is
    /// dropped from now on.
    pub fn cancel_relay_ask(&mut self, nonce: &[u8; nodenet_nat::NONCE_LEN]) {
        self.relay_asks.cancel(nonce);
    }

    /// Answers a relay request we serve, once the transport opened the session
    /// ([`RelayOpened`]): the caller's side goes to the caller in a RelayGrant, the callee's
    /// side to the target in a RelayBind (it punches toward it), each vouching for the other
    /// peer's host where our own direct edge sees it. A side bound on a wildcard IP is named
    /// at the IP peers reach us at. Queued as [`Action::Send`]s; nothing is sent if either
    /// frame does not encode.
    pub fn relay_opened(&mut self, o: RelayOpened) {
        let caller_side = self.dialable(o.caller_side);
        let callee_side = self.dialable(o.callee_side);
        // A host as an address with port 0.
        let host = |seen: Option<Addr>| {
            seen.and_then(|a| {
                nodenet_nat::birthday::host_of(&a.endpoint)
                    .map(|h| Addr::new(a.net.clone(), format!("{h}:0")))
            })
        };
        let (target_host, caller_host) = (host(o.target_seen), host(o.caller_seen));
        let grant = nodenet_nat::RelayGrant {
            nonce: o.nonce,
            addr: caller_side.as_ref(),
            attest: target_host.as_ref().map(|h| nodenet_nat::Attestation {
                peer: o.target,
                host: h.as_ref(),
            }),
        }
        .encode();
        let bind = nodenet_nat::RelayBind {
            addr: callee_side.as_ref(),
            attest: caller_host.as_ref().map(|h| nodenet_nat::Attestation {
                peer: o.caller,
                host: h.as_ref(),
            }),
        }
        .encode();
        let (Ok(grant), Ok(bind)) = (grant, bind) else {
            return;
        };
        self.actions.push_back(Action::Send {
            to: o.target,
            frame: small_frame(FrameType::RELAY_BIND, &bind),
        });
        self.actions.push_back(Action::Send {
            to: o.caller,
            frame: small_frame(FrameType::RELAY_GRANT, &grant),
        });
        self.stats.relays_granted += 1;
    }

    /// A session side bound on a wildcard IP, at the IP peers reach us at instead (our
    /// coordinates, else our reflexive address); any other address as it is.
    fn dialable(&self, addr: Addr) -> Addr {
        let Ok(sa) = addr.endpoint.parse::<std::net::SocketAddr>() else {
            return addr;
        };
        if !sa.ip().is_unspecified() {
            return addr;
        }
        let ip = self
            .coordinates()
            .iter()
            .chain(self.reflexive())
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

    /// Edges that volunteer as relays (by the capabilities they advertise), `target`
    /// excluded, at most `n`.
    pub fn relay_candidates(&self, target: &NodeId, n: usize) -> Vec<NodeId> {
        self.edges
            .iter()
            .map(|e| e.id)
            .filter(|id| id != target)
            .filter(|id| {
                self.knowledge
                    .get(id)
                    .is_some_and(|c| c.caps.contains(Caps::CAN_RELAY))
            })
            .take(n)
            .collect()
    }

    /// Up to `n` relays for a connect to `target`, closest to it first: the volunteers a
    /// relay lookup found near it ([`Core::lookup_relays`]: the target's own answer) and our
    /// edges that volunteer, each with the addresses to dial it at should it not be an edge when
    /// its turn comes: filtered like punch candidates, on IP public ones only, at most
    /// [`MAX_DIAL_ADDRS`] (a hint is the target's word). One that is no edge and has no such
    /// address is left out.
    pub fn relays_near(&self, now: Now, target: &NodeId, n: usize) -> Vec<RelayCandidate> {
        // Besides the target's own word, only relays that are our edges already: a contact
        // any peer gossiped is no better a relay than the target's word, and ranked by its
        // distance to the target, made-up ones would win.
        let known = self
            .edges
            .iter()
            .filter_map(|e| self.knowledge.get(&e.id))
            .filter(|c| c.caps.contains(Caps::CAN_RELAY) && c.id != *target);
        let mut all: Vec<&Contact> = self.relay_hints.near(now.mono, target).iter().collect();
        for c in known {
            if !all.iter().any(|a| a.id == c.id) {
                all.push(c);
            }
        }
        all.sort_by_key(|c| c.id.distance(target));
        all.into_iter()
            .map(|c| {
                let mut addrs = self.punch_candidates(c.addrs.iter().map(Addr::as_ref));
                if self.config.ip {
                    addrs.retain(|a| !nat::is_private(a));
                }
                addrs.truncate(MAX_DIAL_ADDRS);
                RelayCandidate { relay: c.id, addrs }
            })
            .filter(|r| !r.addrs.is_empty() || self.edges.contains(&r.relay))
            .take(n)
            .collect()
    }
}
