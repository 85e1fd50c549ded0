//! The node's counters: every defensive drop has a name.

/// Counters of what the node did and refused. All are monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// A peer or originator below the proof-of-work difficulty.
    pub dropped_sub_pow: u64,
    /// A routed frame outside the freshness window.
    pub dropped_stale: u64,
    /// A routed frame whose signature failed where it was checked.
    pub dropped_bad_sig: u64,
    /// Shed by a rate limiter (per edge or per originator), or an unsolicited answer.
    pub dropped_rate_limited: u64,
    /// An inbound edge refused at the inbound edge cap.
    pub dropped_inbound_full: u64,
    /// An edge refused by the application's admission hook.
    pub dropped_edge_refused: u64,
    /// An unparseable frame.
    pub dropped_malformed: u64,
    /// A second connection to a peer that already has an edge.
    pub dropped_dup_inbound: u64,
    /// A delivery dropped because the application's queue was full.
    pub dropped_deliver_full: u64,
    /// A copy of a message already delivered (multi-path duplicates).
    pub dropped_duplicate: u64,
    /// A routed frame whose hops ran out.
    pub dropped_ttl: u64,
    /// A routed frame with no closer live edge to go to.
    pub dropped_local_optimum: u64,
    /// A frame of a type this node does not handle yet.
    pub dropped_unsupported: u64,
    /// Frames forwarded for others.
    pub forwarded: u64,
    /// Forwarding candidates that refused a frame (local repair moved on).
    pub forward_repairs: u64,
    /// Payloads handed to the application.
    pub delivered: u64,
    /// Messages this node originated.
    pub originated: u64,
    /// Edges that came up.
    pub edges_up: u64,
    /// Edges that went down.
    pub edges_down: u64,
    /// Lookups answered.
    pub lookups_answered: u64,
    /// Dials started by maintenance.
    pub dials: u64,
    /// Dials that failed.
    pub dials_failed: u64,
    /// Rendezvous requests (Hello) we sent.
    pub rendezvous_started: u64,
    /// Rendezvous requests we answered.
    pub rendezvous_answered: u64,
    /// Rendezvous answers that verified.
    pub rendezvous_completed: u64,
    /// A rendezvous answer that failed verification: its key is not the target's (an
    /// impostor), or its signature does not hold.
    pub dropped_forged_reply: u64,
    /// A rendezvous answer to no open request of ours (a replay, or a late answer).
    pub dropped_unsolicited_reply: u64,
    /// A frame not sent on an edge whose queue was full (a routed frame tried the next
    /// candidate; the edge stays up).
    pub dropped_queue_full: u64,
    /// Sealed boxes that did not open (forged, altered, stale, replayed, or not for us).
    pub dropped_bad_box: u64,
    /// Neighbours' reports of our address (Pong) taken into account.
    pub reflexive_reports: u64,
    /// A reported address that is no reachable literal address on an IP transport.
    pub dropped_bad_reflexive: u64,
    /// A report (Pong) over a relayed edge: the peer sees the relay's socket, not us.
    pub dropped_relayed_reflexive: u64,
    /// Hole-punches we started (Connect sent).
    pub punches_started: u64,
    /// Hole-punches we took part in at a peer's request (ConnectAck sent, punched back).
    pub punches_answered: u64,
    /// Hole-punches that gave us an edge.
    pub punches_succeeded: u64,
    /// Relay sessions we opened for others.
    pub relays_granted: u64,
    /// Relay requests refused: we do not volunteer, or hold no edge to the target.
    pub relay_requests_refused: u64,
    /// Relayed edges of ours replaced by a punched one.
    pub relay_upgrades: u64,
    /// Media sessions we opened.
    pub media_opened: u64,
    /// Inbound media sessions handed to the application.
    pub media_accepted: u64,
    /// Inbound media sessions from a peer below the proof-of-work difficulty.
    pub dropped_media_sub_pow: u64,
    /// Inbound media sessions the consent hook refused (or no hook: the default).
    pub dropped_media_consent: u64,
    /// Inbound media sessions over a cap (16 in all, 4 per peer), or not taken by the
    /// application in time (its queue of 8 was full).
    pub dropped_media_cap: u64,
    /// Streams we opened that the peer accepted.
    pub streams_opened: u64,
    /// Inbound streams handed to a listener.
    pub streams_accepted: u64,
    /// Inbound streams from a peer below the proof-of-work difficulty.
    pub dropped_stream_sub_pow: u64,
    /// Inbound streams of a protocol nobody listens for.
    pub dropped_stream_no_handler: u64,
    /// Inbound streams the admission hook refused.
    pub dropped_stream_refused: u64,
    /// Inbound streams over a cap (256 in all, 16 per peer), or whose listener's queue of 16
    /// was full.
    pub dropped_stream_cap: u64,
    /// Birthday punches agreed and played (either side).
    pub birthday_attempts: u64,
    /// Birthday punches that gave a direct edge.
    pub birthday_succeeded: u64,
    /// Birthday punches not tried: rate limits, or a plan that is not a birthday.
    pub birthday_refused: u64,
    /// Probes sent as the easy side, in attempts that ran to their cap.
    pub birthday_probes: u64,
    /// Birthday punches not tried because the relay carrying the pair did not attest the
    /// peer's host (a reference relay), or contradicted the peer's claim.
    pub birthday_unverified: u64,
    /// RelayBinds refused: the callee side they name is not on the host of the relay that sent
    /// them, or the bind limits (per relay, in all) were reached.
    pub relay_binds_refused: u64,
    /// RelayGrants dropped: not from the relay we asked under that nonce, a second time, or
    /// after the ask lapsed.
    pub dropped_unsolicited_grant: u64,
    /// Addresses or dials that maintenance left out: past the per-contact address cap or the dials allowed in flight.
    pub dials_cut: u64,
    /// Punch bursts not run: [`crate::punch::MAX_PUNCH_BURSTS`] were running already.
    pub punch_bursts_dropped: u64,
    /// Neighbourhood lookups sent (maintenance: a random id 1 to 4 bits out from the bucket
    /// of our 16th closest known node with an address, through edges farther out).
    pub neighbourhood_lookups: u64,
    /// Signatures of routed frames checked (the CPU cost of a frame): a request's at each
    /// hop (its breadcrumb needs it), any frame's where it ends or sets off a near-miss
    /// lookup, at most once per arrival.
    pub signatures_checked: u64,
    /// Near-miss lookups sent: a message for a NodeId we knew no address for found us its
    /// local optimum, and we looked that NodeId up (at most one per
    /// [`crate::core::NEAR_MISS_GAP`]).
    pub near_miss_lookups: u64,
    /// Inbound edges admitted past the inbound cap: peers whose rendezvous or punch request
    /// we had just answered (at most [`crate::core::INBOUND_HEADROOM`] past it).
    pub inbound_expected: u64,
}

/// How many counters [`Stats::counters`] lists.
pub const COUNTERS: usize = 62;

impl Stats {
    /// Every counter as `(name, help, value)`, in declaration order: what a metrics exporter
    /// needs without naming each field.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); COUNTERS] {
        [
            (
                "dropped_sub_pow",
                "A peer or originator below the proof-of-work difficulty.",
                self.dropped_sub_pow,
            ),
            (
                "dropped_stale",
                "A routed frame outside the freshness window.",
                self.dropped_stale,
            ),
            (
                "dropped_bad_sig",
                "A routed frame whose signature failed where it was checked.",
                self.dropped_bad_sig,
            ),
            (
                "dropped_rate_limited",
                "Shed by a rate limiter (per edge or per originator), or an unsolicited answer.",
                self.dropped_rate_limited,
            ),
            (
                "dropped_inbound_full",
                "An inbound edge refused at the inbound edge cap.",
                self.dropped_inbound_full,
            ),
            (
                "dropped_edge_refused",
                "An edge refused by the application's admission hook.",
                self.dropped_edge_refused,
            ),
            (
                "dropped_malformed",
                "An unparseable frame.",
                self.dropped_malformed,
            ),
            (
                "dropped_dup_inbound",
                "A second connection to a peer that already has an edge.",
                self.dropped_dup_inbound,
            ),
            (
                "dropped_deliver_full",
                "A delivery dropped because the application's queue was full.",
                self.dropped_deliver_full,
            ),
            (
                "dropped_duplicate",
                "A copy of a message already delivered (multi-path duplicates).",
                self.dropped_duplicate,
            ),
            (
                "dropped_ttl",
                "A routed frame whose hops ran out.",
                self.dropped_ttl,
            ),
            (
                "dropped_local_optimum",
                "A routed frame with no closer live edge to go to.",
                self.dropped_local_optimum,
            ),
            (
                "dropped_unsupported",
                "A frame of a type this node does not handle yet.",
                self.dropped_unsupported,
            ),
            ("forwarded", "Frames forwarded for others.", self.forwarded),
            (
                "forward_repairs",
                "Forwarding candidates that refused a frame (local repair moved on).",
                self.forward_repairs,
            ),
            (
                "delivered",
                "Payloads handed to the application.",
                self.delivered,
            ),
            (
                "originated",
                "Messages this node originated.",
                self.originated,
            ),
            ("edges_up", "Edges that came up.", self.edges_up),
            ("edges_down", "Edges that went down.", self.edges_down),
            (
                "lookups_answered",
                "Lookups answered.",
                self.lookups_answered,
            ),
            ("dials", "Dials started by maintenance.", self.dials),
            ("dials_failed", "Dials that failed.", self.dials_failed),
            (
                "rendezvous_started",
                "Rendezvous requests (Hello) we sent.",
                self.rendezvous_started,
            ),
            (
                "rendezvous_answered",
                "Rendezvous requests we answered.",
                self.rendezvous_answered,
            ),
            (
                "rendezvous_completed",
                "Rendezvous answers that verified.",
                self.rendezvous_completed,
            ),
            (
                "dropped_forged_reply",
                "A rendezvous answer that failed verification: its key is not the target's (an impostor), or its signature does not hold.",
                self.dropped_forged_reply,
            ),
            (
                "dropped_unsolicited_reply",
                "A rendezvous answer to no open request of ours (a replay, or a late answer).",
                self.dropped_unsolicited_reply,
            ),
            (
                "dropped_queue_full",
                "A frame not sent on an edge whose queue was full (a routed frame tried the next candidate; the edge stays up).",
                self.dropped_queue_full,
            ),
            (
                "dropped_bad_box",
                "Sealed boxes that did not open (forged, altered, stale, replayed, or not for us).",
                self.dropped_bad_box,
            ),
            (
                "reflexive_reports",
                "Neighbours' reports of our address (Pong) taken into account.",
                self.reflexive_reports,
            ),
            (
                "dropped_bad_reflexive",
                "A reported address that is no reachable literal address on an IP transport.",
                self.dropped_bad_reflexive,
            ),
            (
                "dropped_relayed_reflexive",
                "A report (Pong) over a relayed edge: the peer sees the relay's socket, not us.",
                self.dropped_relayed_reflexive,
            ),
            (
                "punches_started",
                "Hole-punches we started (Connect sent).",
                self.punches_started,
            ),
            (
                "punches_answered",
                "Hole-punches we took part in at a peer's request (ConnectAck sent, punched back).",
                self.punches_answered,
            ),
            (
                "punches_succeeded",
                "Hole-punches that gave us an edge.",
                self.punches_succeeded,
            ),
            (
                "relays_granted",
                "Relay sessions we opened for others.",
                self.relays_granted,
            ),
            (
                "relay_requests_refused",
                "Relay requests refused: we do not volunteer, or hold no edge to the target.",
                self.relay_requests_refused,
            ),
            (
                "relay_upgrades",
                "Relayed edges of ours replaced by a punched one.",
                self.relay_upgrades,
            ),
            (
                "media_opened",
                "Media sessions we opened.",
                self.media_opened,
            ),
            (
                "media_accepted",
                "Inbound media sessions handed to the application.",
                self.media_accepted,
            ),
            (
                "dropped_media_sub_pow",
                "Inbound media sessions from a peer below the proof-of-work difficulty.",
                self.dropped_media_sub_pow,
            ),
            (
                "dropped_media_consent",
                "Inbound media sessions the consent hook refused (or no hook: the default).",
                self.dropped_media_consent,
            ),
            (
                "dropped_media_cap",
                "Inbound media sessions over a cap, or not taken by the application in time.",
                self.dropped_media_cap,
            ),
            (
                "streams_opened",
                "Streams we opened that the peer accepted.",
                self.streams_opened,
            ),
            (
                "streams_accepted",
                "Inbound streams handed to a listener.",
                self.streams_accepted,
            ),
            (
                "dropped_stream_sub_pow",
                "Inbound streams from a peer below the proof-of-work difficulty.",
                self.dropped_stream_sub_pow,
            ),
            (
                "dropped_stream_no_handler",
                "Inbound streams of a protocol nobody listens for.",
                self.dropped_stream_no_handler,
            ),
            (
                "dropped_stream_refused",
                "Inbound streams the admission hook refused.",
                self.dropped_stream_refused,
            ),
            (
                "dropped_stream_cap",
                "Inbound streams over a cap, or whose listener's queue was full.",
                self.dropped_stream_cap,
            ),
            (
                "birthday_attempts",
                "Birthday punches agreed and played (either side).",
                self.birthday_attempts,
            ),
            (
                "birthday_succeeded",
                "Birthday punches that gave a direct edge.",
                self.birthday_succeeded,
            ),
            (
                "birthday_refused",
                "Birthday punches not tried: rate limits, or a plan that is not a birthday.",
                self.birthday_refused,
            ),
            (
                "birthday_probes",
                "Probes sent as the easy side, in attempts that ran to their cap.",
                self.birthday_probes,
            ),
            (
                "birthday_unverified",
                "Birthday punches not tried: no relay attested the peer's host, or it disagreed.",
                self.birthday_unverified,
            ),
            (
                "relay_binds_refused",
                "RelayBinds refused: the callee side they name is not on the host of the relay that sent them.",
                self.relay_binds_refused,
            ),
            (
                "dropped_unsolicited_grant",
                "RelayGrants dropped: not from the relay we asked under that nonce, a second time, or after the ask lapsed.",
                self.dropped_unsolicited_grant,
            ),
            (
                "dials_cut",
                "Addresses or dials that maintenance left out: past the per-contact address cap or the dials allowed in flight.",
                self.dials_cut,
            ),
            (
                "punch_bursts_dropped",
                "Punch bursts not run: as many as allowed were running already.",
                self.punch_bursts_dropped,
            ),
            (
                "neighbourhood_lookups",
                "Neighbourhood lookups sent: a random id 1 to 4 bits out from the bucket of our 16th closest known node with an address, through edges farther out.",
                self.neighbourhood_lookups,
            ),
            (
                "signatures_checked",
                "Signatures of routed frames checked: a request's at each hop, any frame's where it ends, at most once per arrival.",
                self.signatures_checked,
            ),
            (
                "near_miss_lookups",
                "Near-miss lookups sent: a message for a NodeId we knew no address for found us its local optimum, and we looked that NodeId up (at most one per 5 s).",
                self.near_miss_lookups,
            ),
            (
                "inbound_expected",
                "Inbound edges admitted past the inbound cap: peers whose rendezvous or punch request we had just answered (at most 32 past it).",
                self.inbound_expected,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_list_every_field_once() {
        let s = Stats {
            dropped_bad_box: 7,
            ..Stats::default()
        };
        let fields = format!("{s:?}").matches(": ").count();
        let listed = s.counters();
        assert_eq!(listed.len(), fields);
        let mut names: Vec<&str> = listed.iter().map(|c| c.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), fields);
        let bad_box = listed.iter().find(|c| c.0 == "dropped_bad_box").unwrap();
        assert_eq!(bad_box.2, 7);
    }
}
