//! Pure handlers of the control protocol: what a received answer does to the tables, and what
//! a node answers. The node's driver calls them after its envelope checks (signature,
//! solicitation, per-originator limits); they do no I/O.

use nodenet_kad::NodeId;

use crate::control::{ContactList, MAX_NEIGHBOR_ADDRS, MAX_NEIGHBORS};
use crate::knowledge::{Knowledge, Observed};
use crate::{Contact, Edges, Time};

/// What folding a Neighbors answer into the knowledge table did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// Newcomers inserted.
    pub inserted: usize,
    /// Of those, the ones that came with an address (and the key that lets us keep it).
    pub inserted_with_addrs: usize,
    /// Known contacts refreshed.
    pub refreshed: usize,
    /// Contacts refused by the admission rules.
    pub rejected: usize,
    /// Incumbents to probe, because a newcomer waits for their slot.
    pub probes: Vec<NodeId>,
}

/// Folds the contacts of a (solicited, verified) Neighbors answer from `answerer` into
/// `knowledge`.
///
/// A contact without a key has its addresses stripped first (tier 2): nothing binds them to
/// the id, so an unauthenticated list must not be able to redirect a known peer or plant a
/// dialable address for an id it does not own. And gossip cannot rewrite what we know (tier
/// 3): a contact we already hold keeps its capabilities (else anyone could strip honest
/// relays of theirs) and, if it has addresses, its addresses (else anyone could move it
/// somewhere unreachable to get it evicted); it may only learn addresses it lacks. A new
/// contact is taken as listed: its caps are a hint, and a claimed relay must still be an
/// edge of ours, and be seconded, before its word counts.
pub fn fold_neighbors(
    knowledge: &mut Knowledge,
    list: &ContactList<'_>,
    answerer: &NodeId,
    now: Time,
) -> FoldReport {
    let mut report = FoldReport::default();
    for c in list.iter() {
        let mut contact = c.to_contact();
        if contact.ed_pub.is_none() {
            contact.addrs.clear();
        }
        if contact.id != *answerer {
            // A known entry may learn addresses it lacks (a peer that dialed us is known by
            // NodeId only, and gossip is how we learn where to reach it), never lose or swap
            // the ones it has.
            match knowledge.get(&contact.id) {
                Some(held) if !held.addrs.is_empty() => {
                    report.refreshed += 1;
                    continue;
                }
                // Known: its capabilities are its own word, not a third party's.
                Some(_) => contact.caps = crate::control::Caps::default(),
                // New: the gossiped caps are a hint (a relay must still be an edge of ours
                // to be asked, and its word needs a second relay's).
                None => {}
            }
        }
        match knowledge.observe(&contact, now) {
            Observed::Inserted => {
                report.inserted += 1;
                report.inserted_with_addrs += usize::from(!contact.addrs.is_empty());
            }
            Observed::Refreshed => report.refreshed += 1,
            Observed::Stashed { probe } => report.probes.push(probe),
            Observed::Rejected(_) => report.rejected += 1,
            Observed::Ignored => {}
        }
    }
    report
}

/// The contacts a Lookup or Siblings request for `target` is answered with: the known
/// contacts closest to `target` (up to 16) and ourselves, within the list's caps of 17
/// contacts and 256 addresses (contacts that would overflow the address budget are left out).
///
/// Only contacts whose key we hold are named (tier 3 policy). An id named to us without a
/// key is bound to nobody (anyone can make one up next to any target, and the receiver
/// strips its addresses), so passing it on would let a few planted ids take the places of
/// real nodes in every answer about their region, and spread from table to table.
pub fn neighbors_answer(knowledge: &Knowledge, target: &NodeId, me: &Contact) -> Vec<Contact> {
    let mut out = Vec::with_capacity(MAX_NEIGHBORS);
    let mut addrs = me.addrs.len().min(MAX_NEIGHBOR_ADDRS);
    let mut me = me.clone();
    me.addrs.truncate(addrs);
    for c in knowledge.closest_where(target, MAX_NEIGHBORS - 1, |c| c.ed_pub.is_some()) {
        if addrs + c.addrs.len() > MAX_NEIGHBOR_ADDRS {
            continue;
        }
        addrs += c.addrs.len();
        let mut c = c.clone();
        // X25519 keys are handed out only by their owners, through rendezvous.
        c.x_pub = None;
        out.push(c);
    }
    out.push(me);
    out
}

/// A peer said goodbye: its edge goes now, not after a timeout. True if it was live.
pub fn on_leave(edges: &mut Edges, peer: &NodeId) -> bool {
    edges.remove(peer).is_some()
}
