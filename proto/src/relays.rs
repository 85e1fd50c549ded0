//! Relays near a connect's target.
//!
//! A relay serves only a target it holds an edge to, and the nodes that hold edges to a
//! target are its siblings: the nodes closest to it by XOR distance. A caller's own edges
//! rarely include them, so before its relay step a connect looks the target up (the lookup's
//! target itself answers it, naming its own neighbours) and keeps the relay volunteers that
//! answer names here, closest to the target first. The relay step then asks those, dialing
//! one first when it is not yet an edge.
//!
//! Everything here came from a peer, so it is bounded and checked like the rest: only the
//! target's own answer to our own relay lookup counts (any node on the lookup's path saw its
//! nonce, but only the target signs as the target), a contact must carry the key its NodeId
//! is the hash of and meet our proof-of-work difficulty, at most [`PER_TARGET`] contacts are
//! kept per target, [`MAX_TARGETS`] targets at once, each for [`HINT_TTL`]. What the target
//! names is the target's word: it may name relays of its own or addresses of a bystander.
//! So a hint's addresses are capped and public ones only (`Core::relays_near`), dialed only
//! authenticated as its NodeId, [`crate::connect::RELAYS_TRIED`] relays per connect at most,
//! and a relay dialed for a connect is closed when the connect ends: it never becomes one of
//! the relays whose word a birthday punch trusts.

use std::collections::HashMap;
use std::time::Duration;

use nodenet_identity::derive_id;
use nodenet_kad::NodeId;
use nodenet_routing::Time;
use nodenet_routing::control::{Caps, Contact, ContactList, NONCE_LEN};

/// Relay contacts kept per target.
pub const PER_TARGET: usize = 8;
/// Targets whose relays are kept at once (and relay lookups open at once).
pub const MAX_TARGETS: usize = 64;
/// How long a relay lookup's answers are taken, and its relays kept.
pub const HINT_TTL: Duration = Duration::from_secs(30);

/// The open relay lookups and the relays they found.
#[derive(Debug, Default)]
pub(crate) struct RelayHints {
    /// Nonce → (target, expiry).
    lookups: HashMap<[u8; NONCE_LEN], (NodeId, Time)>,
    /// Target → (its relays, closest first; expiry).
    near: HashMap<NodeId, (Vec<Contact>, Time)>,
}

impl RelayHints {
    /// We sent a relay lookup of `target` with `nonce` at `now`. False (and nothing kept)
    /// when [`MAX_TARGETS`] lookups are open and none has expired.
    pub(crate) fn asked(&mut self, now: Time, nonce: [u8; NONCE_LEN], target: NodeId) -> bool {
        if !self.has_room(now) {
            return false;
        }
        self.lookups.insert(nonce, (target, now.after(HINT_TTL)));
        true
    }

    /// Whether another relay lookup may open now (expired ones make room).
    pub(crate) fn has_room(&mut self, now: Time) -> bool {
        if self.lookups.len() >= MAX_TARGETS {
            self.lookups.retain(|_, (_, exp)| *exp > now);
        }
        self.lookups.len() < MAX_TARGETS
    }

    /// A Neighbors answer with `nonce`, signed by `answerer`, came in: if it is the target's
    /// own answer to an open relay lookup, keep the relay volunteers it names (neither us nor
    /// the target; keyed and at `difficulty`).
    pub(crate) fn answered(
        &mut self,
        now: Time,
        nonce: &[u8; NONCE_LEN],
        answerer: &NodeId,
        list: &ContactList<'_>,
        own: &NodeId,
        difficulty: u32,
    ) {
        let Some(&(target, exp)) = self.lookups.get(nonce) else {
            return;
        };
        if exp <= now {
            self.lookups.remove(nonce);
            return;
        }
        if *answerer != target {
            return;
        }
        if !self.near.contains_key(&target) && self.near.len() >= MAX_TARGETS {
            self.near.retain(|_, (_, exp)| *exp > now);
            if self.near.len() >= MAX_TARGETS {
                return;
            }
        }
        let mut fresh: Vec<Contact> = Vec::new();
        for c in list.iter() {
            let contact = c.to_contact();
            let Some(key) = &contact.ed_pub else { continue };
            let usable = contact.caps.contains(Caps::CAN_RELAY)
                && contact.id != target
                && contact.id != *own
                && derive_id(key) == contact.id
                && nodenet_pow::verify(&contact.id, difficulty);
            if usable {
                fresh.push(contact);
            }
        }
        if fresh.is_empty() {
            return;
        }
        let (kept, kept_exp) = self.near.entry(target).or_default();
        *kept_exp = now.after(HINT_TTL);
        for c in fresh {
            if !kept.iter().any(|k| k.id == c.id) {
                kept.push(c);
            }
        }
        kept.sort_by_key(|c| c.id.distance(&target));
        kept.truncate(PER_TARGET);
    }

    /// The relays kept for `target`, closest to it first.
    pub(crate) fn near(&self, now: Time, target: &NodeId) -> &[Contact] {
        match self.near.get(target) {
            Some((kept, exp)) if *exp > now => kept,
            _ => &[],
        }
    }

    /// Drops what has expired.
    pub(crate) fn purge(&mut self, now: Time) {
        self.lookups.retain(|_, (_, exp)| *exp > now);
        self.near.retain(|_, (_, exp)| *exp > now);
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.lookups.len(), self.near.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodenet_identity::Identity;
    use nodenet_routing::control::encode_neighbors;
    use nodenet_wire::{Addr, Writer};

    fn contact(seed: u8, caps: Caps) -> Contact {
        let identity = Identity::from_seed(&[seed; 32]);
        Contact {
            id: identity.node_id(),
            ed_pub: Some(identity.ed_public()),
            x_pub: None,
            caps,
            addrs: vec![Addr::new("quic", format!("10.0.0.{seed}:4000"))],
        }
    }

    fn answer(contacts: &[Contact]) -> Vec<u8> {
        let mut buf = vec![0u8; nodenet_routing::control::contacts_len(contacts) + NONCE_LEN];
        let mut w = Writer::new(&mut buf);
        encode_neighbors(&mut w, &[0; NONCE_LEN], contacts).unwrap();
        let n = w.position();
        buf.truncate(n);
        buf
    }

    /// `contacts` arrive in an answer to `nonce` signed by `answerer`.
    fn keep_from(
        h: &mut RelayHints,
        now: Time,
        nonce: [u8; NONCE_LEN],
        answerer: &NodeId,
        contacts: &[Contact],
    ) {
        let bytes = answer(contacts);
        let (_, list) = nodenet_routing::control::parse_neighbors(&bytes).unwrap();
        h.answered(
            now,
            &nonce,
            answerer,
            &list,
            &NodeId::from_bytes([0xee; 32]),
            0,
        );
    }

    /// `contacts` arrive in the target's own answer to `nonce` (the target being
    /// `contact(1, ..)`, as in every test here).
    fn keep(h: &mut RelayHints, now: Time, nonce: [u8; NONCE_LEN], contacts: &[Contact]) {
        keep_from(h, now, nonce, &contact(1, Caps::CAN_RELAY).id, contacts);
    }

    const T0: Time = Time(1_000_000_000);

    #[test]
    fn only_relay_volunteers_answering_our_lookup_are_kept_closest_first() {
        let target = contact(1, Caps::CAN_RELAY);
        let relays: Vec<Contact> = (2..14).map(|s| contact(s, Caps::CAN_RELAY)).collect();
        let plain = contact(20, Caps::default());
        let mut h = RelayHints::default();
        // Unsolicited: ignored.
        keep(&mut h, T0, [1; NONCE_LEN], &relays);
        assert!(h.near(T0, &target.id).is_empty());

        assert!(h.asked(T0, [1; NONCE_LEN], target.id));
        let mut list = relays.clone();
        list.push(plain.clone());
        list.push(target.clone());
        keep(&mut h, T0, [1; NONCE_LEN], &list);
        let near = h.near(T0, &target.id);
        assert_eq!(near.len(), PER_TARGET);
        assert!(near.iter().all(|c| c.id != target.id && c.id != plain.id));
        let mut want: Vec<NodeId> = relays.iter().map(|c| c.id).collect();
        want.sort_by_key(|id| id.distance(&target.id));
        let got: Vec<NodeId> = near.iter().map(|c| c.id).collect();
        assert_eq!(got, want[..PER_TARGET]);

        // Another node on the lookup's path saw the nonce, but only the target's word counts.
        let other = contact(30, Caps::CAN_RELAY);
        keep_from(
            &mut h,
            T0,
            [1; NONCE_LEN],
            &other.id,
            &[contact(31, Caps::CAN_RELAY)],
        );
        assert!(
            h.near(T0, &target.id)
                .iter()
                .all(|c| c.id != contact(31, Caps::CAN_RELAY).id)
        );
        // A second answer to the same lookup merges without duplicates.
        keep(&mut h, T0, [1; NONCE_LEN], &relays[..3]);
        assert_eq!(h.near(T0, &target.id).len(), PER_TARGET);

        // Expired: gone.
        let late = T0.after(HINT_TTL);
        assert!(h.near(late, &target.id).is_empty());
        h.purge(late);
        assert_eq!(h.len(), (0, 0));
    }

    #[test]
    fn a_contact_whose_key_is_not_its_id_is_not_kept() {
        let target = contact(1, Caps::CAN_RELAY);
        let mut forged = contact(2, Caps::CAN_RELAY);
        forged.ed_pub = contact(3, Caps::CAN_RELAY).ed_pub;
        let mut keyless = contact(4, Caps::CAN_RELAY);
        keyless.ed_pub = None;
        let mut h = RelayHints::default();
        assert!(h.asked(T0, [2; NONCE_LEN], target.id));
        keep(&mut h, T0, [2; NONCE_LEN], &[forged, keyless]);
        assert!(h.near(T0, &target.id).is_empty());
    }

    #[test]
    fn open_lookups_and_targets_are_bounded() {
        let mut h = RelayHints::default();
        for i in 0..MAX_TARGETS {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut t = [0u8; 32];
            t[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let target = NodeId::from_bytes(t);
            assert!(h.asked(T0, nonce, target));
            keep_from(&mut h, T0, nonce, &target, &[contact(5, Caps::CAN_RELAY)]);
        }
        assert!(!h.asked(T0, [0xff; NONCE_LEN], NodeId::from_bytes([0xff; 32])));
        assert_eq!(h.len(), (MAX_TARGETS, MAX_TARGETS));
        // Once they expire, room again.
        let late = T0.after(HINT_TTL);
        assert!(h.asked(late, [0xff; NONCE_LEN], NodeId::from_bytes([0xff; 32])));
    }
}
