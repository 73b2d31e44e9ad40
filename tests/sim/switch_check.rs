//! The confirm-offset checkers of the switch runs, after every step (§5.7).
//!
//! The reference is the **confirmed prefix**: the bytes below the highest confirm offset any
//! node has held since the last unclean event, taken from the first node that held them.
//! * `confirmed_bytes_agree`: below its confirm offset, every live node's log holds exactly
//!   the confirmed prefix; with the next checker, every live log agrees with the current
//!   master's below its confirm offset.
//! * `no_confirmed_byte_lost`: the controller's master holds the whole confirmed prefix, so no
//!   sequence of clean switches loses a confirmed byte.
//! * `confirm_offset_never_goes_back`: a node's confirm offset never decreases within one role,
//!   except to a cut of its log (a slave's is capped by what it holds); and the current
//!   master's is never below the confirmed prefix, so it does not go back across clean
//!   switches either.
//!
//! An unclean event (an election outside the sync-state set, or a machine crash that lost
//! confirmed bytes) starts a new reference; roles given before it are not checked again, since
//! their confirm offsets may describe bytes that are gone.
//!
//! The comparison is incremental: per node, the offset up to which its log is known to agree
//! with the reference, pulled back by every cut.

use rocketmq_ha::{LogSource, MemoryLog};

use super::check::{fail, Check};

/// What one node's checks remember.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// Its log agrees with the reference below this.
    agreed: u64,
    /// The role (generation) and confirm offset last seen.
    last: Option<(u64, u64)>,
}

/// The confirmed prefix and what each node was last seen with.
#[derive(Debug, Default)]
pub struct Confirmed {
    bytes: Vec<u8>,
    seen: Vec<Seen>,
    /// Roles with a generation at or below this predate the last unclean event.
    pub unclean_mark: u64,
    /// Unclean events so far.
    pub unclean_events: u64,
}

/// A node as the checkers see it.
pub struct View<'a> {
    pub index: usize,
    pub log: &'a MemoryLog,
    pub role_gen: u64,
    pub confirm: Option<u64>,
    /// The lowest cut since the last look (taken by the caller).
    pub cut_to: Option<u64>,
}

impl Confirmed {
    /// References for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Confirmed {
            seen: vec![Seen::default(); nodes],
            ..Confirmed::default()
        }
    }

    /// How many bytes are confirmed.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Confirmed bytes may be gone: a new reference starts, and roles up to `gen` are no
    /// longer checked.
    pub fn unclean(&mut self, gen: u64) {
        self.bytes.clear();
        self.unclean_mark = gen;
        self.unclean_events += 1;
        for s in &mut self.seen {
            *s = Seen::default();
        }
    }

    /// A node's log lost bytes from `at` on.
    pub fn note_cut(&mut self, index: usize, at: u64) {
        let s = &mut self.seen[index];
        s.agreed = s.agreed.min(at);
    }

    /// Brings node `index`'s agreement up to `upto` (extending the reference from its log if it
    /// is the first to get there).
    fn agree(&mut self, index: usize, log: &MemoryLog, upto: u64, checker: &'static str) -> Check {
        let from = self.seen[index].agreed;
        if upto <= from {
            return Ok(());
        }
        if log.max_offset() < upto {
            return Err(fail(
                checker,
                format!(
                    "node {index} should hold {upto} confirmed bytes but its log ends at {}",
                    log.max_offset()
                ),
            ));
        }
        let known = self.len();
        if from < known {
            let end = upto.min(known);
            let ours = log.copy_range(from, end).unwrap_or_default();
            if let Some(i) = ours
                .iter()
                .zip(&self.bytes[from as usize..end as usize])
                .position(|(a, b)| a != b)
            {
                return Err(fail(
                    checker,
                    format!(
                        "node {index} differs from the confirmed bytes at {} (checking [{from}, {upto}), {known} confirmed)",
                        from + i as u64
                    ),
                ));
            }
        }
        if upto > known {
            let more = log.copy_range(known, upto).unwrap_or_default();
            self.bytes.extend_from_slice(&more);
        }
        self.seen[index].agreed = upto;
        Ok(())
    }

    /// Checks one live node after a step; `current_master` if the controller names it master.
    pub fn check(&mut self, v: View<'_>, current_master: bool) -> Check {
        if let Some(at) = v.cut_to {
            self.note_cut(v.index, at);
        }
        if v.role_gen <= self.unclean_mark {
            return Ok(());
        }
        if current_master {
            // The master holds every confirmed byte, whatever its own confirm offset says.
            self.agree(v.index, v.log, self.len(), "no_confirmed_byte_lost")?;
            if let Some(c) = v.confirm {
                if c < self.len() {
                    return Err(fail(
                        "confirm_offset_never_goes_back",
                        format!(
                            "master node {} confirms {c}, below the {} bytes confirmed before",
                            v.index,
                            self.len()
                        ),
                    ));
                }
            }
        }
        let Some(c) = v.confirm else {
            return Ok(());
        };
        if let Some((gen, last)) = self.seen[v.index].last {
            if gen == v.role_gen && c < last && v.cut_to.is_none_or(|at| c > at) {
                return Err(fail(
                    "confirm_offset_never_goes_back",
                    format!(
                        "node {} confirm offset went back {last} -> {c} (cut since: {:?})",
                        v.index, v.cut_to
                    ),
                ));
            }
        }
        self.seen[v.index].last = Some((v.role_gen, c));
        self.agree(v.index, v.log, c, "confirmed_bytes_agree")
    }
}
