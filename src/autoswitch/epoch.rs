//! Epoch entries and the rules that compare two replicas' histories (§5.6, Java's
//! `EpochFileCache`).
//!
//! An epoch is a term of one master, numbered by the controller. Each replica keeps the list of
//! `(epoch, startOffset)` pairs it has seen; an entry ends where the next one starts, and the
//! last one ends at the log's end. Two replicas agree on every byte below the **consistent
//! point**: the end of the newest epoch they both started at the same offset.

use super::error::{EpochError, RoleError};

/// One epoch: its number and the commit log offset of its first byte (§5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpochEntry {
    /// The epoch number (≥ 0; the controller starts at 1).
    pub epoch: i32,
    /// The commit log offset at which the epoch's master started writing.
    pub start: u64,
}

impl EpochEntry {
    /// The entry `(epoch, start)`.
    pub fn new(epoch: i32, start: u64) -> Self {
        EpochEntry { epoch, start }
    }
}

/// A replica's epoch history, strictly ascending in both epoch and start offset (Java's
/// `EpochFileCache` without the file; the file lives with the drivers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochList {
    entries: Vec<EpochEntry>,
}

impl EpochList {
    /// An empty history: a replica that has never been part of an epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A history from entries in file or wire order; refused unless strictly ascending in both
    /// epoch and start offset, as every list Java writes is.
    pub fn from_entries(entries: impl IntoIterator<Item = EpochEntry>) -> Result<Self, EpochError> {
        let mut list = EpochList::new();
        for entry in entries {
            list.append(entry)?;
        }
        Ok(list)
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty (a new replica, §5.4 step 3).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest entry.
    pub fn first(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    /// The newest entry.
    pub fn last(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch, or −1 for an empty list, as the handshake answer carries it (§5.2).
    pub fn last_epoch(&self) -> i32 {
        self.last().map_or(-1, |e| e.epoch)
    }

    /// The entry of `epoch`, if this replica saw it.
    pub fn get(&self, epoch: i32) -> Option<EpochEntry> {
        self.position(epoch).map(|i| self.entries[i])
    }

    fn position(&self, epoch: i32) -> Option<usize> {
        self.entries.binary_search_by_key(&epoch, |e| e.epoch).ok()
    }

    /// Where `epoch` ends: the next entry's start, or for the newest entry `log_end` — but only
    /// if the entry starts at or before it (Java's `setLastEpochEntryEndOffset`); an epoch
    /// recorded beyond the log's end stays unbounded (`u64::MAX`).
    pub fn end_of(&self, epoch: i32, log_end: u64) -> Option<u64> {
        let i = self.position(epoch)?;
        Some(self.end_at(i, log_end))
    }

    fn end_at(&self, i: usize, log_end: u64) -> u64 {
        match self.entries.get(i + 1) {
            Some(next) => next.start,
            None if self.entries[i].start <= log_end => log_end,
            None => u64::MAX,
        }
    }

    /// The entry holding `offset` on a master, with its end (`None` for the newest epoch, which
    /// is still growing): the entry with `start ≤ offset < end` (`findEpochEntryByOffset`).
    pub fn find_by_offset(&self, offset: u64) -> Option<(EpochEntry, Option<u64>)> {
        let i = self
            .entries
            .partition_point(|e| e.start <= offset)
            .checked_sub(1)?;
        Some((self.entries[i], self.entries.get(i + 1).map(|n| n.start)))
    }

    /// Appends `entry` if it is strictly after the last one in both epoch and start offset;
    /// Java's `appendEntry`, which refuses anything else.
    pub fn append(&mut self, entry: EpochEntry) -> Result<(), EpochError> {
        if entry.epoch < 0 {
            return Err(EpochError::NegativeEpoch(entry.epoch));
        }
        if let Some(last) = self.last() {
            if last.epoch >= entry.epoch || last.start >= entry.start {
                return Err(EpochError::NotAfterLast {
                    epoch: entry.epoch,
                    start: entry.start,
                    last_epoch: last.epoch,
                    last_start: last.start,
                });
            }
        }
        self.entries.push(entry);
        Ok(())
    }

    /// A slave records the epoch of a frame from its master (§5.4 step 5b). Returns whether the
    /// list changed.
    ///
    /// As in Java, an entry that is not after the last one is ignored (heartbeats repeat the
    /// current epoch). One case differs: a newer epoch starting exactly where the last one
    /// starts, while the log ends there too, replaces it. The last epoch then holds no byte,
    /// and the master dropped it the same way when it began its own epoch
    /// ([`begin`](Self::begin)); Java refuses the entry and files the new epoch's bytes
    /// under the old number.
    pub fn observe(&mut self, entry: EpochEntry, log_end: u64) -> bool {
        match self.last() {
            Some(last)
                if entry.epoch > last.epoch
                    && entry.start == last.start
                    && log_end == last.start =>
            {
                self.entries.pop();
                self.entries.push(entry);
                true
            }
            _ => self.append(entry).is_ok(),
        }
    }

    /// A replica becomes master of `epoch` with its log ending at `log_end` (§5.6
    /// `changeToMaster`). Returns whether the list changed.
    ///
    /// An epoch below the last known one is stale and refused. The same epoch again is a no-op
    /// (Java would move its start to `log_end`, re-filing that epoch's bytes under the previous
    /// one). Otherwise entries that hold no byte of the log (starting at or after `log_end`)
    /// are dropped and `(epoch, log_end)` is appended, so the new epoch is always recorded;
    /// Java silently fails to record it when the previous epoch is empty (#9942).
    pub fn begin(&mut self, epoch: i32, log_end: u64) -> Result<bool, RoleError> {
        if epoch < 0 {
            return Err(EpochError::NegativeEpoch(epoch).into());
        }
        let last = self.last_epoch();
        if epoch < last {
            return Err(RoleError::StaleEpoch { epoch, last });
        }
        if epoch == last {
            return Ok(false);
        }
        self.truncate_suffix_by_offset(log_end);
        self.append(EpochEntry::new(epoch, log_end))?;
        Ok(true)
    }

    /// Drops entries starting at or after `offset` (`truncateSuffixByOffset`), after the log was
    /// truncated there. Returns whether anything was dropped.
    pub fn truncate_suffix_by_offset(&mut self, offset: u64) -> bool {
        let keep = self.entries.partition_point(|e| e.start < offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Drops entries of `epoch` and later (`truncateSuffixByEpoch`). Returns whether anything
    /// was dropped.
    pub fn truncate_suffix_by_epoch(&mut self, epoch: i32) -> bool {
        let keep = self.entries.partition_point(|e| e.epoch < epoch);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Drops entries that end at or before `offset` (`truncatePrefixByOffset`), after old
    /// segments were deleted. The newest entry is never dropped: it is still open.
    pub fn truncate_prefix_by_offset(&mut self, offset: u64) -> bool {
        let n = self.entries.len();
        let drop = (0..n.saturating_sub(1))
            .take_while(|&i| self.entries[i + 1].start <= offset)
            .count();
        self.entries.drain(..drop);
        drop > 0
    }
}

/// The offset below which the local log agrees with the master's, or `None` if it cannot be
/// known (§5.6 `findConsistentPoint`; Java's −1).
///
/// Walking the local epochs from the newest, the first one the master also has **with the same
/// start offset** is the newest shared epoch; both logs agree up to where the first of the two
/// copies of it ends. Each list's newest entry ends at that replica's log end.
///
/// One case differs from Java: when no epoch is shared but both histories start at offset 0,
/// every byte of both logs belongs to a listed epoch, and a byte written by the same epoch
/// would make that epoch shared; so no byte is shared and the point is 0. Java returns −1
/// there and the slave retries forever; it happens when a member with an empty log is elected
/// while another replica holds bytes of the previous epoch that were never confirmed.
pub fn consistent_point(
    local: &EpochList,
    local_end: u64,
    master: &EpochList,
    master_end: u64,
) -> Option<u64> {
    let shared = local
        .entries
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, entry)| {
            let theirs = master.position(entry.epoch)?;
            (master.entries[theirs].start == entry.start).then(|| {
                local
                    .end_at(i, local_end)
                    .min(master.end_at(theirs, master_end))
            })
        });
    let both_start_at_zero =
        local.first().is_some_and(|e| e.start == 0) && master.first().is_some_and(|e| e.start == 0);
    shared.or(both_start_at_zero.then_some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(i32, u64)]) -> EpochList {
        EpochList::from_entries(entries.iter().map(|&(e, s)| EpochEntry::new(e, s))).unwrap()
    }

    // EpochFileCacheTest's four cases (§5.6 table). A list whose newest entry has an explicit
    // end in the Java test is given that end as its log end here.
    #[test]
    fn consistent_point_epoch_three_starts_differ() {
        let local = list(&[(1, 100), (2, 300), (3, 500)]);
        let master = list(&[(1, 100), (2, 300), (3, 450)]);
        assert_eq!(consistent_point(&local, 700, &master, 700), Some(450));
    }

    #[test]
    fn consistent_point_same_last_epoch_takes_shorter_end() {
        let local = list(&[(1, 100), (2, 300), (3, 500)]);
        let master = list(&[(1, 100), (2, 300), (3, 500)]);
        assert_eq!(consistent_point(&local, 700, &master, 600), Some(600));
    }

    #[test]
    fn consistent_point_none_when_no_epoch_starts_alike() {
        let local = list(&[(1, 100), (2, 300), (3, 500)]);
        let master = list(&[(1, 200), (2, 500)]);
        assert_eq!(consistent_point(&local, 700, &master, 900), None);
    }

    #[test]
    fn consistent_point_local_has_an_epoch_the_master_lacks() {
        let local = list(&[(1, 100), (2, 300), (3, 500), (4, 800)]);
        let master = list(&[(1, 100), (2, 300), (3, 500)]);
        assert_eq!(consistent_point(&local, 900, &master, 700), Some(700));
    }

    #[test]
    fn consistent_point_of_the_wire_capture() {
        // Captured from Java 5.3.3: slave 1-0, 2-100000 with 105000 bytes; master 1-0, 3-100000 with 130000 bytes.
        let local = list(&[(1, 0), (2, 100_000)]);
        let master = list(&[(1, 0), (3, 100_000)]);
        assert_eq!(
            consistent_point(&local, 105_000, &master, 130_000),
            Some(100_000)
        );
    }

    #[test]
    fn histories_from_zero_without_a_shared_epoch_share_nothing() {
        // Found by the switch simulation (then `tests/autoswitch_switches.rs`): epoch 1's
        // master wrote 210 bytes only it got; a member with an empty log became master of
        // epoch 2 at offset 0.
        let local = list(&[(1, 0)]);
        let master = list(&[(2, 0), (3, 1601)]);
        assert_eq!(consistent_point(&local, 210, &master, 2424), Some(0));
        // A history that does not start at 0 leaves bytes of unknown epochs: no answer.
        let master = list(&[(2, 100), (3, 1601)]);
        assert_eq!(consistent_point(&local, 210, &master, 2424), None);
    }

    #[test]
    fn an_epoch_recorded_beyond_the_log_end_is_unbounded() {
        let local = list(&[(1, 0), (2, 1000)]);
        assert_eq!(local.end_of(2, 900), Some(u64::MAX));
        assert_eq!(local.end_of(2, 1000), Some(1000));
        assert_eq!(local.end_of(1, 900), Some(1000));
        let master = list(&[(1, 0), (2, 1000)]);
        assert_eq!(consistent_point(&local, 900, &master, 2000), Some(2000));
    }

    #[test]
    fn append_requires_strictly_greater_epoch_and_start() {
        let mut l = list(&[(1, 100)]);
        assert!(matches!(
            l.append(EpochEntry::new(1, 200)),
            Err(EpochError::NotAfterLast { .. })
        ));
        assert!(matches!(
            l.append(EpochEntry::new(2, 100)),
            Err(EpochError::NotAfterLast { .. })
        ));
        assert!(matches!(
            l.append(EpochEntry::new(0, 200)),
            Err(EpochError::NotAfterLast { .. })
        ));
        assert_eq!(
            l.append(EpochEntry::new(-3, 200)),
            Err(EpochError::NegativeEpoch(-3))
        );
        l.append(EpochEntry::new(2, 200)).unwrap();
        assert_eq!(
            l.entries(),
            &[EpochEntry::new(1, 100), EpochEntry::new(2, 200)]
        );
        assert!(EpochList::from_entries([EpochEntry::new(2, 0), EpochEntry::new(1, 5)]).is_err());
    }

    #[test]
    fn find_by_offset_uses_half_open_ranges() {
        let l = list(&[(1, 100), (2, 300), (5, 500)]);
        assert_eq!(l.find_by_offset(99), None);
        assert_eq!(
            l.find_by_offset(100),
            Some((EpochEntry::new(1, 100), Some(300)))
        );
        assert_eq!(
            l.find_by_offset(299),
            Some((EpochEntry::new(1, 100), Some(300)))
        );
        assert_eq!(
            l.find_by_offset(300),
            Some((EpochEntry::new(2, 300), Some(500)))
        );
        assert_eq!(
            l.find_by_offset(1 << 40),
            Some((EpochEntry::new(5, 500), None))
        );
    }

    #[test]
    fn truncations_drop_the_right_entries() {
        let mut l = list(&[(1, 100), (2, 300), (3, 500)]);
        assert!(l.truncate_suffix_by_offset(300));
        assert_eq!(l, list(&[(1, 100)]));
        assert!(!l.truncate_suffix_by_offset(101));

        let mut l = list(&[(1, 100), (2, 300), (3, 500)]);
        assert!(l.truncate_suffix_by_epoch(2));
        assert_eq!(l, list(&[(1, 100)]));

        let mut l = list(&[(1, 100), (2, 300), (3, 500)]);
        assert!(!l.truncate_prefix_by_offset(299));
        assert!(l.truncate_prefix_by_offset(300));
        assert_eq!(l, list(&[(2, 300), (3, 500)]));
        // The open epoch survives whatever the offset.
        assert!(l.truncate_prefix_by_offset(u64::MAX));
        assert_eq!(l, list(&[(3, 500)]));
    }

    #[test]
    fn begin_refuses_stale_epochs_and_records_the_new_one() {
        let mut l = list(&[(1, 0), (2, 1000)]);
        assert_eq!(
            l.begin(1, 2000),
            Err(RoleError::StaleEpoch { epoch: 1, last: 2 })
        );
        assert_eq!(l.begin(2, 2000), Ok(false));
        assert_eq!(l.begin(3, 2000), Ok(true));
        assert_eq!(l, list(&[(1, 0), (2, 1000), (3, 2000)]));
    }

    #[test]
    fn begin_replaces_an_epoch_that_holds_no_byte() {
        // Java's appendEntry(4, 1000) fails here and the new epoch goes unrecorded (#9942).
        let mut l = list(&[(1, 0), (2, 1000)]);
        assert_eq!(l.begin(4, 1000), Ok(true));
        assert_eq!(l, list(&[(1, 0), (4, 1000)]));
        // Entries beyond a log that lost its tail describe no byte either.
        let mut l = list(&[(1, 0), (2, 1000)]);
        assert_eq!(l.begin(3, 900), Ok(true));
        assert_eq!(l, list(&[(1, 0), (3, 900)]));
    }

    #[test]
    fn observe_ignores_repeats_and_replaces_only_an_empty_last_epoch() {
        let mut l = list(&[(1, 0), (2, 1000)]);
        assert!(!l.observe(EpochEntry::new(2, 1000), 1500));
        assert!(!l.observe(EpochEntry::new(3, 1000), 1500));
        assert_eq!(l, list(&[(1, 0), (2, 1000)]));
        assert!(l.observe(EpochEntry::new(3, 1000), 1000));
        assert_eq!(l, list(&[(1, 0), (3, 1000)]));
        assert!(l.observe(EpochEntry::new(4, 1200), 1200));
        assert_eq!(l, list(&[(1, 0), (3, 1000), (4, 1200)]));
    }
}
