//! The master's sync-state set and confirm offset (§5.7, Java's `AutoSwitchHAService`).
//!
//! The sync-state set is the broker ids in sync with the master, the master included. The
//! controller owns it: the master only **proposes** changes (a slave caught up, a slave fell
//! behind or left) and applies the set the controller answers with. While a proposal is
//! pending, members are the union of the applied and the proposed set, so a proposal never
//! weakens the guarantees in force. The **confirm offset** is what every member has: the
//! master sends it in each transfer header and slaves expose nothing beyond it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::master::MasterEvent;

/// How long a member may go without catching up before [`SyncStateSet::shrink`] proposes
/// removing it: RocketMQ's default `haMaxTimeSlaveNotCatchup`, 15 s.
pub const MAX_TIME_NOT_CAUGHT_UP: Duration = Duration::from_secs(15);

/// How often a master runs [`SyncStateSet::shrink`].
pub const SHRINK_PERIOD: Duration = Duration::from_secs(5);

/// A controller-assigned broker id, as the slave's handshake carries it.
pub type BrokerId = i64;

/// What a live connection last told the set.
#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    /// The slave's last report; `None` before the first.
    ack: Option<u64>,
}

/// The master's sync-state set, caught-up times and confirm offset.
///
/// Inputs: [`apply`](Self::apply) (the controller's set), [`handle_connected`](Self::handle_connected),
/// [`handle_ack`](Self::handle_ack), [`handle_caught_up`](Self::handle_caught_up),
/// [`handle_disconnected`](Self::handle_disconnected), and [`shrink`](Self::shrink) every
/// `checkSyncStateSetPeriod` (5 s in Java). Output: [`poll_proposal`](Self::poll_proposal), the
/// set to send to the controller (`alterSyncStateSet`).
#[derive(Debug, Clone)]
pub struct SyncStateSet {
    local: BrokerId,
    all_ack_in_sync_state_set: bool,
    /// The set the controller applied (Java's `syncStateSet`).
    applied: BTreeSet<BrokerId>,
    /// The set proposed and not yet applied (Java's `remoteSyncStateSet` while
    /// `isSynchronizingSyncStateSet`).
    proposed: Option<BTreeSet<BrokerId>>,
    /// A proposal not yet taken by [`poll_proposal`](Self::poll_proposal).
    outgoing: Option<BTreeSet<BrokerId>>,
    /// `connectionCaughtUpTimeTable`: when each slave was last known to be caught up.
    caught_up: BTreeMap<BrokerId, Instant>,
    /// Live connections by broker id (a second connection of the same id replaces the first).
    peers: BTreeMap<BrokerId, Peer>,
    /// The stored confirm offset; `None` is Java's −1, not computed yet.
    confirm: Option<u64>,
}

impl SyncStateSet {
    /// The set of a master `local` that the controller started with `members` (the local broker
    /// is always a member). `all_ack_in_sync_state_set` is RocketMQ's `allAckInSyncStateSet`:
    /// when false the confirm offset is simply the master's max offset.
    pub fn new(
        local: BrokerId,
        members: impl IntoIterator<Item = BrokerId>,
        all_ack_in_sync_state_set: bool,
    ) -> Self {
        let mut applied: BTreeSet<_> = members.into_iter().collect();
        applied.insert(local);
        SyncStateSet {
            local,
            all_ack_in_sync_state_set,
            applied,
            proposed: None,
            outgoing: None,
            caught_up: BTreeMap::new(),
            peers: BTreeMap::new(),
            confirm: None,
        }
    }

    // --- getters ---

    /// The local broker's id.
    pub fn local(&self) -> BrokerId {
        self.local
    }

    /// The members in force: the applied set, united with the proposed one while a proposal is
    /// pending (Java's `getSyncStateSet`).
    pub fn members(&self) -> BTreeSet<BrokerId> {
        let mut all = self.applied.clone();
        if let Some(proposed) = &self.proposed {
            all.extend(proposed.iter().copied());
        }
        all
    }

    /// The set the controller last applied (Java's `getLocalSyncStateSet`).
    pub fn applied(&self) -> &BTreeSet<BrokerId> {
        &self.applied
    }

    /// Whether a proposal is waiting for the controller.
    pub fn is_synchronizing(&self) -> bool {
        self.proposed.is_some()
    }

    /// Number of in-sync replicas, the master included, for write acks (Java's
    /// `inSyncReplicasNums`: the larger of the applied and proposed sets while synchronizing).
    pub fn in_sync_count(&self) -> usize {
        self.applied
            .len()
            .max(self.proposed.as_ref().map_or(0, BTreeSet::len))
    }

    /// The last report of connected slave `id`.
    pub fn ack_of(&self, id: BrokerId) -> Option<u64> {
        self.peers.get(&id).and_then(|p| p.ack)
    }

    /// The confirm offset a master with log end `master_max` sends (§5.7,
    /// `CommitLog.getConfirmOffset`): its max offset when it is alone in the set or does not
    /// require every member's ack; otherwise the stored value, computed on first use. `None`
    /// (Java's −1) while it cannot be computed. Unlike Java's, it never goes backwards: a master
    /// alone in its set confirms its max, and a member added afterwards (by the controller,
    /// which may add a slave that is behind) does not take that back.
    ///
    /// "Alone" counts a member being proposed: once the master proposes a slave, the confirm
    /// offset waits for that slave's acks. Java tests the applied set only, so until the
    /// controller answers it confirms bytes the joining slave lacks; the controller may accept
    /// the slave and then elect it, and those confirmed bytes are lost (found by the switch
    /// simulation).
    pub fn confirm_offset(&mut self, master_max: u64) -> Option<u64> {
        if self.members().len() == 1 || !self.all_ack_in_sync_state_set {
            // Remembered, so that a member added later cannot make it go backwards.
            self.confirm = Some(self.confirm.map_or(master_max, |c| c.max(master_max)));
            return self.confirm;
        }
        if self.confirm.is_none() {
            self.recompute(master_max);
        }
        self.confirm
    }

    // --- inputs ---

    /// The controller applied `members` (Java's `setSyncStateSet`): the pending proposal is
    /// done and the confirm offset is recomputed.
    pub fn apply(&mut self, members: impl IntoIterator<Item = BrokerId>, master_max: u64) {
        self.applied = members.into_iter().collect();
        self.applied.insert(self.local);
        self.proposed = None;
        self.recompute(master_max);
    }

    /// One connection's [`MasterEvent`], routed to [`handle_connected`](Self::handle_connected),
    /// [`handle_ack`](Self::handle_ack) or [`handle_caught_up`](Self::handle_caught_up);
    /// `master_max` is the master's log end and `epoch_start` where its current epoch starts.
    pub fn handle_event(
        &mut self,
        now: Instant,
        event: &MasterEvent,
        master_max: u64,
        epoch_start: u64,
    ) {
        match *event {
            MasterEvent::Handshake(hs) => self.handle_connected(hs.broker_id),
            MasterEvent::Acked {
                broker_id,
                offset,
                learner,
                last_transfer,
            } => self.handle_ack(
                now,
                broker_id,
                offset,
                learner,
                last_transfer,
                master_max,
                epoch_start,
            ),
            MasterEvent::CaughtUp { broker_id } => self.handle_caught_up(broker_id, now),
        }
    }

    /// Slave `id` completed its handshake.
    pub fn handle_connected(&mut self, id: BrokerId) {
        self.peers.insert(id, Peer::default());
    }

    /// Slave `id` reported `ack` (§5.5 "on each slave ack", §5.7 expand).
    ///
    /// `last_transfer` is the connection's `(master max, time)` when it last sent data, `None`
    /// before any; `epoch_start` is where the master's current epoch starts.
    #[allow(clippy::too_many_arguments)] // each is one of Java's inputs to the expand rule
    pub fn handle_ack(
        &mut self,
        now: Instant,
        id: BrokerId,
        ack: u64,
        learner: bool,
        last_transfer: Option<(u64, Instant)>,
        master_max: u64,
        epoch_start: u64,
    ) {
        self.peers.entry(id).or_default().ack = Some(ack);
        // A learner replicates but never joins (§5.7); a slave joins only once it has what the
        // master had when it last sent (for an empty master: at its first report).
        let caught_up_with_last_send = last_transfer.is_none_or(|(max, _)| ack >= max);
        if !learner && caught_up_with_last_send {
            let at = if ack == master_max {
                Some(now)
            } else {
                last_transfer.map(|(_, t)| t)
            };
            if let Some(at) = at {
                self.note_caught_up(id, at);
            }
            self.maybe_expand(id, ack, master_max, epoch_start);
        }
        if self.members().contains(&id) {
            self.recompute(master_max);
        }
    }

    /// The master found nothing more to send slave `id` (Java's `size == 0` branch).
    pub fn handle_caught_up(&mut self, id: BrokerId, now: Instant) {
        self.note_caught_up(id, now);
    }

    /// Slave `id`'s connection closed: propose the set without it (Java's `removeConnection`).
    /// It stays a member, and in the confirm offset's way, until the controller applies that.
    pub fn handle_disconnected(&mut self, id: BrokerId) {
        self.peers.remove(&id);
        if self.applied.contains(&id) && id != self.local {
            let mut without = self.base();
            without.remove(&id);
            self.propose(without);
        }
    }

    /// The periodic check (§5.7 shrink): propose removing members not caught up within
    /// `max_not_caught_up` (`haMaxTimeSlaveNotCatchup`, 15 s) and members never seen.
    pub fn shrink(&mut self, now: Instant, max_not_caught_up: Duration) {
        let base = self.base();
        let mut kept = base.clone();
        kept.retain(|id| {
            *id == self.local
                || !self.applied.contains(id)
                || self
                    .caught_up
                    .get(id)
                    .is_some_and(|&at| now.saturating_duration_since(at) <= max_not_caught_up)
        });
        if kept != base {
            self.propose(kept);
        }
    }

    // --- output ---

    /// The set to propose to the controller, once per change.
    pub fn poll_proposal(&mut self) -> Option<BTreeSet<BrokerId>> {
        self.outgoing.take()
    }

    // --- rules ---

    fn note_caught_up(&mut self, id: BrokerId, at: Instant) {
        let entry = self.caught_up.entry(id).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// Java's `maybeExpandInSyncStateSet`: a slave joins when it has at least the confirm offset
    /// and a byte of the current epoch's range.
    fn maybe_expand(&mut self, id: BrokerId, ack: u64, master_max: u64, epoch_start: u64) {
        if self.applied.contains(&id) {
            return;
        }
        if self.proposed.as_ref().is_some_and(|p| p.contains(&id)) {
            // Java proposes again on every ack until the controller answers; once is enough.
            return;
        }
        let confirm = self.confirm_offset(master_max);
        if confirm.is_none_or(|c| ack >= c) && ack >= epoch_start {
            let mut with = self.base();
            with.insert(id);
            self.propose(with);
        }
    }

    /// What a new proposal starts from: the pending one if any, so that it keeps what that
    /// one added. The controller may already have accepted the pending proposal; one built
    /// from the applied set would drop its newcomer from the members while the controller
    /// counts it as in sync, and may elect it, though the confirm offset no longer waited for
    /// it (found by the switch simulation). Removals (disconnects, shrink) concern applied
    /// members only, for the same reason.
    fn base(&self) -> BTreeSet<BrokerId> {
        self.proposed
            .clone()
            .unwrap_or_else(|| self.applied.clone())
    }

    fn propose(&mut self, set: BTreeSet<BrokerId>) {
        self.proposed = Some(set.clone());
        self.outgoing = Some(set);
    }

    /// Java's `computeConfirmOffset`: the least ack of the members, capped by the master's max;
    /// unchanged while a member other than the master has not reported on a live connection.
    /// Never lowered: a confirm offset is a promise already made to consumers on the slaves.
    ///
    /// Java skips members whose ack is not above 0, meaning "no report yet" (−1); but that also
    /// skips a member that reported 0 (an empty slave that joined an empty master), and a
    /// member that reconnected and has not reported. Either way the confirm offset could pass
    /// a member's log, and electing that member would lose confirmed bytes. Here such a member
    /// holds the value where it is, as a disconnected one does.
    fn recompute(&mut self, master_max: u64) {
        let mut least = master_max;
        for id in self.members() {
            if id == self.local {
                continue;
            }
            match self.peers.get(&id).and_then(|p| p.ack) {
                Some(ack) => least = least.min(ack),
                None => return,
            }
        }
        self.confirm = Some(self.confirm.map_or(least, |old| old.max(least)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[BrokerId]) -> BTreeSet<BrokerId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_slave_joins_once_it_reaches_the_masters_max_at_the_last_send() {
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1], true);
        s.handle_connected(2);
        // Behind what the master had when it last sent: no proposal.
        s.handle_ack(t0, 2, 50, false, Some((100, t0)), 100, 0);
        assert_eq!(s.poll_proposal(), None);
        s.handle_ack(t0, 2, 100, false, Some((100, t0)), 100, 0);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 2])));
        assert!(s.is_synchronizing());
        assert_eq!(s.members(), set(&[1, 2]));
        assert_eq!(s.applied(), &set(&[1]));
        // No second proposal for the same slave while the first is pending.
        s.handle_ack(t0, 2, 100, false, Some((100, t0)), 100, 0);
        assert_eq!(s.poll_proposal(), None);
        s.apply([1, 2], 100);
        assert!(!s.is_synchronizing());
        assert_eq!(s.in_sync_count(), 2);
    }

    #[test]
    fn an_empty_masters_slave_joins_at_its_first_report() {
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1], true);
        s.handle_connected(2);
        s.handle_ack(t0, 2, 0, false, None, 0, 0);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 2])));
    }

    #[test]
    fn learners_never_join() {
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1], true);
        s.handle_connected(3);
        s.handle_ack(t0, 3, 100, true, Some((100, t0)), 100, 0);
        assert_eq!(s.poll_proposal(), None);
        assert_eq!(s.members(), set(&[1]));
    }

    #[test]
    fn a_slave_without_a_byte_of_the_current_epoch_does_not_join() {
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1], true);
        s.handle_connected(2);
        // The master's epoch started at 200 and holds nothing yet; the slave is at 150.
        s.handle_ack(t0, 2, 150, false, Some((150, t0)), 200, 200);
        assert_eq!(s.poll_proposal(), None);
        s.handle_ack(t0, 2, 200, false, Some((200, t0)), 200, 200);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 2])));
    }

    #[test]
    fn confirm_offset_is_the_least_member_ack_and_never_goes_back() {
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1, 2, 3], true);
        // A member without a connection: not computable yet (Java's −1).
        assert_eq!(s.confirm_offset(500), None);
        s.handle_connected(2);
        s.handle_connected(3);
        s.handle_ack(t0, 2, 300, false, Some((500, t0)), 500, 0);
        s.handle_ack(t0, 3, 400, false, Some((500, t0)), 500, 0);
        assert_eq!(s.confirm_offset(500), Some(300));
        s.handle_ack(t0, 2, 450, false, Some((500, t0)), 500, 0);
        assert_eq!(s.confirm_offset(500), Some(400));
        // A member's connection drops: the value is kept, not recomputed.
        s.handle_disconnected(3);
        s.handle_ack(t0, 2, 500, false, Some((500, t0)), 500, 0);
        assert_eq!(s.confirm_offset(500), Some(400));
        // The controller removes it: only slave 2 counts now.
        s.apply([1, 2], 500);
        assert_eq!(s.confirm_offset(500), Some(500));
        // A lower ack (a reconnected member) never lowers the confirm offset.
        s.handle_connected(2);
        s.handle_ack(t0, 2, 100, false, Some((500, t0)), 500, 0);
        assert_eq!(s.confirm_offset(500), Some(500));
    }

    #[test]
    fn confirm_offset_is_the_masters_max_alone_or_without_all_acks() {
        let mut alone = SyncStateSet::new(1, [1], true);
        assert_eq!(alone.confirm_offset(77), Some(77));
        let mut relaxed = SyncStateSet::new(1, [1, 2], false);
        assert_eq!(relaxed.confirm_offset(77), Some(77));
    }

    #[test]
    fn a_member_added_after_the_master_was_alone_keeps_the_confirm_offset() {
        // Found by the `confirm_offset_is_monotonic_and_bounded` property.
        let mut s = SyncStateSet::new(1, [1], true);
        assert_eq!(s.confirm_offset(100), Some(100));
        s.apply([1, 2], 100);
        // Java would now serve its stale stored value (−1 or older).
        assert_eq!(s.confirm_offset(100), Some(100));
    }

    #[test]
    fn a_proposed_member_holds_the_confirm_offset_before_the_controller_answers() {
        // Found by the switch simulation: the controller accepted slave 2, then elected it,
        // and the bytes the master had confirmed alone meanwhile were lost.
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1], true);
        s.handle_connected(2);
        s.handle_ack(t0, 2, 100, false, Some((100, t0)), 100, 0);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 2])));
        // The master writes on; slave 2 has not got it yet.
        assert_eq!(s.confirm_offset(160), Some(100));
        s.handle_ack(t0, 2, 130, false, Some((160, t0)), 160, 0);
        assert_eq!(s.confirm_offset(160), Some(130));
        s.apply([1, 2], 160);
        assert_eq!(s.confirm_offset(160), Some(130));
    }

    #[test]
    fn a_new_proposal_keeps_what_the_pending_one_added() {
        // Found by the switch simulation: {1, 2, 3} was pending (and accepted), then {1, 2, 4}
        // replaced it and slave 3 stopped holding the confirm offset.
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1, 2], true);
        for id in [2, 3, 4] {
            s.handle_connected(id);
        }
        s.handle_ack(t0, 2, 100, false, Some((100, t0)), 100, 0);
        s.handle_ack(t0, 3, 100, false, Some((100, t0)), 100, 0);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 2, 3])));
        s.handle_ack(t0, 4, 100, false, Some((100, t0)), 100, 0);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 2, 3, 4])));
        // An applied member leaves: the pending newcomers stay in the proposal.
        s.handle_disconnected(2);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 3, 4])));
        // A pending newcomer that leaves stays proposed (the controller may have accepted it).
        s.handle_disconnected(4);
        assert_eq!(s.poll_proposal(), None);
        assert_eq!(s.members(), set(&[1, 2, 3, 4]));
        // The shrink check removes only applied members.
        s.shrink(t0 + Duration::from_secs(100), Duration::from_secs(15));
        assert_eq!(s.poll_proposal(), None);
    }

    #[test]
    fn a_member_that_reported_nothing_or_zero_holds_the_confirm_offset() {
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1], true);
        s.handle_connected(2);
        // An empty slave joins an empty master.
        s.handle_ack(t0, 2, 0, false, None, 0, 0);
        let proposal = s.poll_proposal().unwrap();
        s.apply(proposal, 0);
        assert_eq!(s.confirm_offset(0), Some(0));
        // The master writes 100 bytes; the member still has none: nothing more is confirmed
        // (Java skips acks of 0 and would confirm 100).
        s.handle_ack(t0, 2, 0, false, Some((100, t0)), 100, 0);
        assert_eq!(s.confirm_offset(100), Some(0));
        s.handle_ack(t0, 2, 60, false, Some((100, t0)), 100, 0);
        assert_eq!(s.confirm_offset(100), Some(60));
        // It reconnects and has not reported yet: the value holds.
        s.handle_disconnected(2);
        s.apply([1, 2], 100);
        s.handle_connected(2);
        assert_eq!(s.confirm_offset(100), Some(60));
    }

    #[test]
    fn a_member_must_not_join_below_the_confirm_offset() {
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1, 2], true);
        s.handle_connected(2);
        s.handle_ack(t0, 2, 300, false, Some((300, t0)), 300, 0);
        assert_eq!(s.confirm_offset(300), Some(300));
        s.handle_connected(3);
        // Slave 3 reached what the master had at its last send (250) but not the confirm offset.
        s.handle_ack(t0, 3, 250, false, Some((250, t0)), 300, 0);
        assert_eq!(s.poll_proposal(), None);
    }

    #[test]
    fn disconnects_and_stale_members_are_proposed_away() {
        let t0 = Instant::now();
        let mut s = SyncStateSet::new(1, [1, 2, 3, 4], true);
        s.handle_connected(2);
        s.handle_connected(3);
        s.handle_ack(t0, 2, 10, false, Some((10, t0)), 10, 0);
        s.handle_caught_up(3, t0);
        let limit = Duration::from_secs(15);
        // 4 has never connected: out at once.
        s.shrink(t0 + Duration::from_secs(1), limit);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 2, 3])));
        s.apply([1, 2, 3], 10);
        s.handle_caught_up(3, t0 + Duration::from_secs(10));
        s.shrink(t0 + Duration::from_secs(16), limit);
        assert_eq!(s.poll_proposal(), Some(set(&[1, 3])));
        s.apply([1, 3], 10);
        s.handle_disconnected(3);
        assert_eq!(s.poll_proposal(), Some(set(&[1])));
        // Still a member until the controller applies the proposal.
        assert_eq!(s.members(), set(&[1, 3]));
        // The master itself is never proposed away.
        s.apply([1], 10);
        s.shrink(t0 + Duration::from_secs(1000), limit);
        assert_eq!(s.poll_proposal(), None);
    }
}
