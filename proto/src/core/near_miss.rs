//! Near-miss lookups: a message that found us its local optimum, for a NodeId we know no
//! address for, makes us look that NodeId up, within bounds one peer cannot keep.

use super::maintenance::has_addr;
use super::*;

impl Core {
    /// A message `m` of type `ty` from the edge `from` found us its local optimum (none of
    /// our edges is closer to its target, and `from` is not either: a detour's next hop is
    /// not where the table is thin) and is not a Lookup or an answer retracing its request.
    /// If we know no address for its target either, our table is thin around it: behind
    /// NAT, neighbours that cannot dial each other often never hear of each other, and
    /// every message for one dies at the other (at 10,000 simulated nodes, 13 of 14 failed
    /// rendezvous never reached a target that 100 to 500 nodes knew, stopping at such a
    /// node). Looking the target up teaches us who is around it; the closer-node dials take
    /// it from there, and a message sent again may pass. Bounds, whoever sends what: at most
    /// one per [`NEAR_MISS_GAP`] in all; the node that signed a message that set one off
    /// sets off no other for [`NEAR_MISS_QUIET`], whichever edge it comes through (not the
    /// edge: many honest senders' messages come through one, and a Hello sent again comes
    /// the same way); only for a message whose signature holds (checked here, last, unless
    /// `checked` says it was already; a failure is counted as a drop); the Lookup is not
    /// sent first to `from`. Returns what the signature check made here found (`None`: none
    /// was made here).
    pub(super) fn near_miss(
        &mut self,
        now: Now,
        from: NodeId,
        ty: FrameType,
        m: &MsgRef<'_>,
        checked: bool,
    ) -> Option<bool> {
        let target = m.target;
        let originator = m.originator();
        if now.mono < self.next_near_miss
            || from.distance(&target) <= self.id.distance(&target)
            || self.near_miss_quiet.contains(&originator, now.mono)
            || self.knowledge.get(&target).is_some_and(has_addr)
        {
            return None;
        }
        let mut hops = [NodeId::ZERO; 3];
        let n = self
            .edges
            .closest_into(&target, &mut hops, |id| *id != from);
        if n == 0 {
            return None;
        }
        let verdict = (!checked).then(|| self.signature_holds(ty, m));
        if verdict == Some(false) {
            return verdict;
        }
        if self.lookup_via(now, target, &hops[..n]).is_some() {
            self.next_near_miss = now.mono.after(NEAR_MISS_GAP);
            self.near_miss_quiet
                .mark(originator, now.mono, now.mono.after(NEAR_MISS_QUIET));
            self.stats.near_miss_lookups += 1;
        }
        verdict
    }
}
