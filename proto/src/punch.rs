//! Hole-punch timing: when punch datagrams leave, and when they stop.
//!
//! A punch datagram from the socket peers see us at opens our NAT's mapping (and filter)
//! toward one address, so the peer's handshake can come in. One datagram can be lost, so a
//! punch is a *burst*: [`PUNCH_VOLLEYS`] volleys [`PUNCH_INTERVAL`] apart, each one
//! datagram to every address. A burst ends early when a new edge to its peer comes up (an
//! edge that existed when it began, such as a relayed one being upgraded, does not end it).
//!
//! A *timed* punch (the peer's Connect asked for one) is held until the peer's Sync for
//! that Connect arrives, so both sides punch at the same moment, or until [`SYNC_WAIT`]
//! passes without one; then it bursts. A Sync releases only the punch its own peer asked
//! for.
//!
//! Any node that can route a Connect to us can ask us to punch, so the work is bounded: at
//! most [`MAX_PUNCH_BURSTS`] bursts run and at most as many punches are held; a burst past
//! the bound is dropped (and counted), a held punch past it bursts at once, a punch with no
//! address is neither held nor run, a held punch is known by its peer and nonce together (a
//! node that saw a Connect go by cannot take its slot with the same nonce), and a burst aims
//! at most
//! [`MAX_PUNCH_CANDIDATES`](crate::MAX_PUNCH_CANDIDATES) addresses (the core's candidates
//! are capped so).
//!
//! [`Bursts`] decides; the core owns one and queues each datagram as
//! [`Action::Punch`](crate::Action::Punch).

use std::collections::VecDeque;
use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_routing::Time;
use nodenet_wire::Addr;

pub use crate::connect::PUNCH_INTERVAL;

/// Volleys in a punch burst.
pub const PUNCH_VOLLEYS: u8 = 5;

/// Bursts that run at once, and punches held at once.
pub const MAX_PUNCH_BURSTS: usize = 32;

/// A held (timed) punch bursts without its Sync after this long.
pub const SYNC_WAIT: Duration = Duration::from_secs(2);

type Nonce = [u8; nodenet_nat::NONCE_LEN];

/// One running burst.
#[derive(Clone, Debug)]
struct Burst {
    /// The peer it punches for, if one (a relay bind's punch has none).
    peer: Option<NodeId>,
    addrs: Vec<Addr>,
    /// Volleys still to send.
    left: u8,
    /// When the next volley leaves.
    next: Time,
}

/// One held (timed) punch.
#[derive(Clone, Debug)]
struct Held {
    nonce: Nonce,
    peer: NodeId,
    addrs: Vec<Addr>,
    /// When it bursts without its Sync.
    until: Time,
}

/// The punch bursts and held punches of one node. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Bursts {
    running: Vec<Burst>,
    held: Vec<Held>,
    /// Datagrams due now: where each goes.
    out: VecDeque<Addr>,
    /// Bursts dropped at the bound.
    dropped: u64,
}

impl Bursts {
    /// No bursts, nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a burst toward `addrs` for `peer` (if one): its first volley is due at once
    /// (drain it with [`Bursts::poll_datagram`]). Dropped, and `false`, past
    /// [`MAX_PUNCH_BURSTS`] running; nothing to do for no address.
    pub fn burst(&mut self, now: Time, peer: Option<NodeId>, addrs: Vec<Addr>) -> bool {
        if addrs.is_empty() {
            return true;
        }
        if self.running.len() >= MAX_PUNCH_BURSTS {
            self.dropped += 1;
            return false;
        }
        self.out.extend(addrs.iter().cloned());
        if PUNCH_VOLLEYS > 1 {
            self.running.push(Burst {
                peer,
                addrs,
                left: PUNCH_VOLLEYS - 1,
                next: now.after(PUNCH_INTERVAL),
            });
        }
        true
    }

    /// Holds a timed punch toward `addrs` until `peer`'s Sync for `nonce`
    /// ([`Bursts::sync`]) or [`SYNC_WAIT`]. Past [`MAX_PUNCH_BURSTS`] held, or for a
    /// (peer, nonce) already held, it bursts at once; with no address, nothing is held.
    pub fn hold(&mut self, now: Time, peer: NodeId, nonce: Nonce, addrs: Vec<Addr>) {
        if addrs.is_empty() {
            return;
        }
        let again = self.held.iter().any(|h| h.nonce == nonce && h.peer == peer);
        if self.held.len() >= MAX_PUNCH_BURSTS || again {
            self.burst(now, Some(peer), addrs);
            return;
        }
        self.held.push(Held {
            nonce,
            peer,
            addrs,
            until: now.after(SYNC_WAIT),
        });
    }

    /// `peer`'s Sync for `nonce`: the punch it holds bursts now. A Sync from anyone else,
    /// or for nothing held, does nothing.
    pub fn sync(&mut self, now: Time, peer: NodeId, nonce: Nonce) {
        if let Some(i) = self
            .held
            .iter()
            .position(|h| h.nonce == nonce && h.peer == peer)
        {
            let h = self.held.swap_remove(i);
            self.burst(now, Some(h.peer), h.addrs);
        }
    }

    /// A new edge to `peer` came up: its bursts have done their work and stop.
    pub fn on_new_edge(&mut self, peer: &NodeId) {
        self.running.retain(|b| b.peer.as_ref() != Some(peer));
    }

    /// When [`Bursts::handle_timeout`] is due next, if anything waits on time.
    pub fn poll_timeout(&self) -> Option<Time> {
        let volleys = self.running.iter().map(|b| b.next);
        volleys.chain(self.held.iter().map(|h| h.until)).min()
    }

    /// Time passed: volleys due leave, held punches past their wait burst.
    pub fn handle_timeout(&mut self, now: Time) {
        let mut expired = Vec::new();
        self.held.retain(|h| {
            let keep = h.until > now;
            if !keep {
                expired.push((h.peer, h.addrs.clone()));
            }
            keep
        });
        for b in &mut self.running {
            if b.next <= now {
                self.out.extend(b.addrs.iter().cloned());
                b.left -= 1;
                b.next = now.after(PUNCH_INTERVAL);
            }
        }
        self.running.retain(|b| b.left > 0);
        for (peer, addrs) in expired {
            self.burst(now, Some(peer), addrs);
        }
    }

    /// The next punch datagram due: where it goes.
    pub fn poll_datagram(&mut self) -> Option<Addr> {
        self.out.pop_front()
    }

    /// Bursts running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Punches held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Bursts dropped at [`MAX_PUNCH_BURSTS`] so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Time(n * 1_000_000)
    }

    fn addr(n: u16) -> Addr {
        Addr::new("quic", format!("192.0.2.1:{n}"))
    }

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn drain(b: &mut Bursts) -> Vec<Addr> {
        std::iter::from_fn(|| b.poll_datagram()).collect()
    }

    /// Runs `b`'s timer to `end`, returning the datagrams sent at each deadline.
    fn run_until(b: &mut Bursts, end: Time) -> Vec<(Time, Vec<Addr>)> {
        let mut sent = Vec::new();
        while let Some(t) = b.poll_timeout().filter(|t| *t <= end) {
            b.handle_timeout(t);
            let d = drain(b);
            if !d.is_empty() {
                sent.push((t, d));
            }
        }
        sent
    }

    #[test]
    fn a_burst_is_five_volleys_fifty_ms_apart_to_every_address() {
        let mut b = Bursts::new();
        assert!(b.burst(ms(100), Some(id(1)), vec![addr(1), addr(2)]));
        assert_eq!(
            drain(&mut b),
            [addr(1), addr(2)],
            "the first volley at once"
        );
        let sent = run_until(&mut b, ms(10_000));
        let times: Vec<Time> = sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [ms(150), ms(200), ms(250), ms(300)]);
        assert!(sent.iter().all(|(_, d)| *d == [addr(1), addr(2)]));
        assert_eq!((b.running(), b.poll_timeout()), (0, None));
    }

    #[test]
    fn a_new_edge_to_the_peer_ends_its_burst_and_no_other() {
        let mut b = Bursts::new();
        b.burst(ms(0), Some(id(1)), vec![addr(1)]);
        b.burst(ms(0), None, vec![addr(2)]);
        drain(&mut b);
        b.handle_timeout(ms(50));
        assert_eq!(drain(&mut b), [addr(1), addr(2)]);
        b.on_new_edge(&id(1));
        let sent = run_until(&mut b, ms(10_000));
        assert_eq!(sent.len(), 3, "the bind's burst runs on");
        assert!(sent.iter().all(|(_, d)| *d == [addr(2)]));
    }

    #[test]
    fn a_held_punch_bursts_on_its_peers_sync_and_not_on_anyone_elses() {
        let mut b = Bursts::new();
        let nonce = [7u8; nodenet_nat::NONCE_LEN];
        b.hold(ms(0), id(1), nonce, vec![addr(1)]);
        assert!(drain(&mut b).is_empty(), "held, not sent");
        b.sync(ms(300), id(2), nonce);
        b.sync(ms(300), id(1), [8u8; nodenet_nat::NONCE_LEN]);
        assert!(
            drain(&mut b).is_empty(),
            "a stranger's Sync releases nothing"
        );
        b.sync(ms(400), id(1), nonce);
        assert_eq!(drain(&mut b), [addr(1)]);
        assert_eq!((b.held(), b.running()), (0, 1));
        assert_eq!(b.poll_timeout(), Some(ms(450)));
    }

    #[test]
    fn a_held_punch_goes_without_its_sync_after_the_wait() {
        let mut b = Bursts::new();
        b.hold(ms(0), id(1), [7u8; nodenet_nat::NONCE_LEN], vec![addr(1)]);
        assert_eq!(b.poll_timeout(), Some(ms(2000)));
        b.handle_timeout(ms(1999));
        assert!(drain(&mut b).is_empty());
        let sent = run_until(&mut b, ms(10_000));
        let times: Vec<Time> = sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [ms(2000), ms(2050), ms(2100), ms(2150), ms(2200)]);
    }

    #[test]
    fn a_punch_without_addresses_takes_no_slot_and_a_seen_nonce_takes_no_ones_place() {
        let mut b = Bursts::new();
        let nonce = [7u8; nodenet_nat::NONCE_LEN];
        b.hold(ms(0), id(9), nonce, Vec::new());
        assert_eq!(
            (b.held(), b.poll_timeout()),
            (0, None),
            "nothing to punch, nothing held"
        );
        // An onlooker that saw the peer's Connect holds the same nonce first: the peer's
        // own punch is still held for the peer's Sync.
        b.hold(ms(0), id(9), nonce, vec![addr(9)]);
        b.hold(ms(10), id(1), nonce, vec![addr(1)]);
        assert_eq!(b.held(), 2);
        assert!(drain(&mut b).is_empty());
        b.sync(ms(20), id(1), nonce);
        assert_eq!(drain(&mut b), [addr(1)]);
        assert_eq!(b.held(), 1, "the onlooker's stays held, and lapses");
    }

    #[test]
    fn bursts_and_held_punches_are_bounded() {
        let mut b = Bursts::new();
        for n in 0..MAX_PUNCH_BURSTS {
            assert!(b.burst(ms(0), None, vec![addr(u16::try_from(n).unwrap())]));
        }
        assert!(!b.burst(ms(0), None, vec![addr(999)]), "past the bound");
        assert_eq!((b.running(), b.dropped()), (MAX_PUNCH_BURSTS, 1));
        assert!(!drain(&mut b).contains(&addr(999)));

        let mut b = Bursts::new();
        for n in 0..MAX_PUNCH_BURSTS {
            let mut nonce = [0u8; nodenet_nat::NONCE_LEN];
            nonce[0] = u8::try_from(n).unwrap();
            b.hold(ms(0), id(1), nonce, vec![addr(1)]);
        }
        assert_eq!(b.held(), MAX_PUNCH_BURSTS);
        b.hold(ms(0), id(1), [0xff; nodenet_nat::NONCE_LEN], vec![addr(2)]);
        assert_eq!(b.held(), MAX_PUNCH_BURSTS, "not held past the bound");
        assert_eq!(drain(&mut b), [addr(2)], "it bursts at once instead");
    }
}
