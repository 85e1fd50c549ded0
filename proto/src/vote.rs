//! One round of asking relays where they see a peer, before a birthday punch aims at it.
//!
//! A birthday punch sends many probes at the peer's public host, so that host must not be
//! the peer's word alone (it could name a bystander) nor one relay's (any edge can claim to
//! relay). A [`Vote`] gathers the word of relays *we* chose, each a direct edge of ours whose
//! subnet is fixed when it is asked (its *seat*), and ends in a verdict:
//! [`crate::links::agreed`] over the voices, so at least
//! [`ATTESTATIONS_NEEDED`](crate::links::ATTESTATIONS_NEEDED) distinct relays on distinct
//! subnets must name one host and none may name another.
//!
//! The relay that carries our edge to the peer gave its word in its grant; it is a voice
//! only if we dialed through it of our choosing and it is seated. It is never asked again:
//! if the peer chose it, it could vouch for any host. Up to [`RELAYS_TRIED`] other relays
//! are asked at once; each answer counts only if it names this peer and its relay is still
//! our edge when it arrives. The round ends when every relay asked has answered or
//! [`RELAY_GRANT_TIMEOUT`] has passed.
//!
//! The driver owns the sockets: it sends the requests [`Vote::to_ask`] names, feeds the
//! answers ([`Vote::handle_answer`]) and the deadline ([`Vote::handle_timeout`]), and reads
//! [`Vote::verdict`].

use nodenet_kad::NodeId;
use nodenet_routing::{SubnetKey, Time};
use nodenet_wire::Addr;

use crate::connect::{RELAY_GRANT_TIMEOUT, RELAYS_TRIED};
use crate::core::Attested;
use crate::links::{Voice, agreed};

/// Where a relay sits as we see it: the subnet of our direct edge to it (`None` off IP).
pub type Seat = Option<SubnetKey>;

/// One round of relays' word on a peer's host. See the module docs.
#[derive(Clone, Debug)]
pub struct Vote {
    peer: NodeId,
    voices: Vec<Voice>,
    /// The relays asked, with their seats, and whether each has answered.
    asked: Vec<(NodeId, Seat, bool)>,
    deadline: Time,
    over: bool,
}

impl Vote {
    /// A round for `peer`, whose relayed edge `carrier` carries. `carrier_word` is the host
    /// the carrier's grant named for the peer and the carrier's seat, when we dialed through
    /// it of our choosing and it is seated. `candidates` are relays near the peer, best
    /// first, each with its seat or `None` when it cannot be seated (not a direct edge of
    /// ours, or on IP an edge with no subnet): the first [`RELAYS_TRIED`] seated ones other
    /// than the carrier are asked.
    pub fn new(
        now: Time,
        peer: NodeId,
        carrier: NodeId,
        carrier_word: Option<(Addr, Seat)>,
        candidates: impl IntoIterator<Item = (NodeId, Option<Seat>)>,
    ) -> Self {
        let voices = carrier_word
            .into_iter()
            .map(|(host, net)| Voice {
                relay: carrier,
                net,
                host,
            })
            .collect();
        let mut asked: Vec<(NodeId, Seat, bool)> = Vec::new();
        for (relay, seat) in candidates {
            if asked.len() >= RELAYS_TRIED {
                break;
            }
            let Some(seat) = seat else { continue };
            if relay == carrier || relay == peer || asked.iter().any(|(r, _, _)| *r == relay) {
                continue;
            }
            asked.push((relay, seat, false));
        }
        let over = asked.is_empty();
        Self {
            peer,
            voices,
            asked,
            deadline: now.after(RELAY_GRANT_TIMEOUT),
            over,
        }
    }

    /// The relays to ask now (each once).
    pub fn to_ask(&self) -> Vec<NodeId> {
        self.asked.iter().map(|(r, _, _)| *r).collect()
    }

    /// `relay` answered with its word on a host, or `None` (it refused, gave no word, or its
    /// request failed). `still_edge`: the relay is still a direct edge of ours. Only the
    /// first answer of a relay we asked counts, and only a word on this round's peer.
    pub fn handle_answer(&mut self, relay: NodeId, word: Option<Attested>, still_edge: bool) {
        if self.over {
            return;
        }
        let Some(entry) = self
            .asked
            .iter_mut()
            .find(|(r, _, done)| *r == relay && !done)
        else {
            return;
        };
        entry.2 = true;
        let net = entry.1;
        if let Some(a) = word.filter(|a| a.peer == self.peer && still_edge) {
            self.voices.push(Voice {
                relay,
                net,
                host: a.host,
            });
        }
        if self.asked.iter().all(|(_, _, done)| *done) {
            self.over = true;
        }
    }

    /// When the round ends without its missing answers, if it still waits.
    pub fn poll_timeout(&self) -> Option<Time> {
        (!self.over).then_some(self.deadline)
    }

    /// No more answers can come (every request ended): the round ends with what it has.
    pub fn abandon(&mut self) {
        self.over = true;
    }

    /// Time passed: past the deadline, the round ends with the answers it has.
    pub fn handle_timeout(&mut self, now: Time) {
        if now >= self.deadline {
            self.over = true;
        }
    }

    /// The verdict once the round is over: the host the relays agree on, or `None`.
    /// `None` (the outer one) while it still waits.
    pub fn verdict(&self) -> Option<Option<Addr>> {
        self.over.then(|| agreed(&self.voices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn host(h: &str) -> Addr {
        Addr::new("quic", format!("{h}:0"))
    }

    fn seat(n: u8) -> Option<Seat> {
        let at = Addr::new("quic", format!("10.{n}.0.1:1"));
        let key = SubnetKey::of_addr(at.as_ref());
        assert!(key.is_some());
        Some(key)
    }

    fn word(peer: NodeId, h: &str) -> Option<Attested> {
        Some(Attested {
            peer,
            host: host(h),
        })
    }

    const T0: Time = Time(1_000_000_000);
    const PEER: u8 = 99;
    const CARRIER: u8 = 50;

    #[test]
    fn the_carrier_is_never_asked_and_unseated_relays_are_passed_over() {
        let candidates = [
            (id(CARRIER), seat(1)),
            (id(1), None),
            (id(2), seat(2)),
            (id(PEER), seat(9)),
            (id(3), seat(3)),
            (id(4), seat(4)),
            (id(5), seat(5)),
        ];
        let v = Vote::new(T0, id(PEER), id(CARRIER), None, candidates);
        assert_eq!(
            v.to_ask(),
            [id(2), id(3), id(4)],
            "at most RELAYS_TRIED, seated, not the carrier or the peer"
        );
        assert_eq!(v.poll_timeout(), Some(T0.after(RELAY_GRANT_TIMEOUT)));
    }

    #[test]
    fn two_relays_on_two_subnets_agree_and_the_round_ends_when_all_answered() {
        let mut v = Vote::new(
            T0,
            id(PEER),
            id(CARRIER),
            None,
            [(id(1), seat(1)), (id(2), seat(2))],
        );
        v.handle_answer(id(1), word(id(PEER), "203.0.113.7"), true);
        assert_eq!(v.verdict(), None, "still waiting for relay 2");
        v.handle_answer(id(2), word(id(PEER), "203.0.113.7"), true);
        assert_eq!(v.verdict(), Some(Some(host("203.0.113.7"))));
        assert_eq!(v.poll_timeout(), None);
    }

    #[test]
    fn the_carriers_word_counts_once_and_one_other_relay_completes_it() {
        let word_of_carrier = Some((host("203.0.113.7"), seat(1).flatten()));
        let mut v = Vote::new(
            T0,
            id(PEER),
            id(CARRIER),
            word_of_carrier,
            [(id(CARRIER), seat(1)), (id(2), seat(2))],
        );
        assert_eq!(v.to_ask(), [id(2)]);
        // The carrier answering anyway is not a second voice.
        v.handle_answer(id(CARRIER), word(id(PEER), "203.0.113.7"), true);
        assert_eq!(v.verdict(), None);
        v.handle_answer(id(2), word(id(PEER), "203.0.113.7"), true);
        assert_eq!(v.verdict(), Some(Some(host("203.0.113.7"))));
    }

    #[test]
    fn one_dissent_vetoes_and_words_on_others_or_from_departed_relays_do_not_count() {
        let three = [(id(1), seat(1)), (id(2), seat(2)), (id(3), seat(3))];
        let mut v = Vote::new(T0, id(PEER), id(CARRIER), None, three);
        v.handle_answer(id(1), word(id(PEER), "203.0.113.7"), true);
        v.handle_answer(id(2), word(id(PEER), "198.51.100.1"), true);
        v.handle_answer(id(3), word(id(PEER), "203.0.113.7"), true);
        assert_eq!(v.verdict(), Some(None), "one honest relay vetoes a lie");

        let mut v = Vote::new(T0, id(PEER), id(CARRIER), None, three);
        v.handle_answer(id(1), word(id(PEER), "203.0.113.7"), true);
        v.handle_answer(id(2), word(id(7), "203.0.113.7"), true);
        v.handle_answer(id(3), word(id(PEER), "203.0.113.7"), false);
        assert_eq!(v.verdict(), Some(None), "one voice left: not enough");
    }

    #[test]
    fn relays_on_one_subnet_are_one_voice() {
        let mut v = Vote::new(
            T0,
            id(PEER),
            id(CARRIER),
            None,
            [(id(1), seat(1)), (id(2), seat(1))],
        );
        v.handle_answer(id(1), word(id(PEER), "203.0.113.7"), true);
        v.handle_answer(id(2), word(id(PEER), "203.0.113.7"), true);
        assert_eq!(v.verdict(), Some(None));
    }

    #[test]
    fn the_deadline_ends_the_round_with_the_answers_it_has() {
        let three = [(id(1), seat(1)), (id(2), seat(2)), (id(3), seat(3))];
        let mut v = Vote::new(T0, id(PEER), id(CARRIER), None, three);
        v.handle_answer(id(1), word(id(PEER), "203.0.113.7"), true);
        v.handle_answer(id(2), word(id(PEER), "203.0.113.7"), true);
        v.handle_timeout(T0.after(RELAY_GRANT_TIMEOUT / 2));
        assert_eq!(
            v.verdict(),
            None,
            "before the deadline, relay 3 may still dissent"
        );
        v.handle_timeout(T0.after(RELAY_GRANT_TIMEOUT));
        assert_eq!(v.verdict(), Some(Some(host("203.0.113.7"))));
        // Late answers change nothing.
        v.handle_answer(id(3), word(id(PEER), "198.51.100.1"), true);
        assert_eq!(v.verdict(), Some(Some(host("203.0.113.7"))));
    }

    #[test]
    fn nobody_to_ask_ends_at_once_on_the_carriers_word_alone() {
        let word_of_carrier = Some((host("203.0.113.7"), seat(1).flatten()));
        let v = Vote::new(T0, id(PEER), id(CARRIER), word_of_carrier, []);
        assert_eq!(v.verdict(), Some(None), "one relay cannot vouch alone");
        assert_eq!(v.poll_timeout(), None);
    }
}
