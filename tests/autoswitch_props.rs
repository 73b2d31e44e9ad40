//! Property tests (quickcheck) of AutoSwitch: codec round trips, insensitivity of the slave to
//! how the stream is chunked, the truncation rule over generated cluster histories, and the
//! confirm offset over generated ack sequences.
//!
//! `QUICKCHECK_TESTS` raises the number of cases.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use rocketmq_ha::autoswitch::wire::{
    decode_master_frame, encode_report, MasterFrame, MasterHandshake, SlaveFrame,
    SlaveFrameDecoder, SlaveHandshake, TransferHeader,
};
use rocketmq_ha::autoswitch::{
    consistent_point, Client, ClientEvent, EpochEntry, EpochList, SlaveIdentity, SyncStateSet,
};
use rocketmq_ha::Config;

fn qc(tests: u64) -> QuickCheck {
    let tests = std::env::var("QUICKCHECK_TESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tests);
    QuickCheck::new().tests(tests).max_tests(tests * 10)
}

/// Splits `data` into consecutive pieces whose sizes come from `cuts` (cycled), each 1..=`max`.
fn split<'a>(data: &'a [u8], cuts: &[u16], max: usize) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let size = match cuts.get(i % cuts.len().max(1)) {
            Some(&c) => 1 + usize::from(c) % max,
            None => data.len(),
        };
        let end = (at + size).min(data.len());
        pieces.push(&data[at..end]);
        at = end;
        i += 1;
    }
    pieces
}

/// An ascending epoch list from arbitrary increments.
fn epochs_from(steps: &[(u8, u16)]) -> EpochList {
    let (mut epoch, mut start) = (0i32, 0u64);
    EpochList::from_entries(steps.iter().enumerate().map(|(i, &(de, ds))| {
        epoch += 1 + i32::from(de % 4);
        if i > 0 {
            start += 1 + u64::from(ds);
        }
        EpochEntry::new(epoch, start)
    }))
    .expect("ascending by construction")
}

// ---------------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------------

/// Slave frames encode and decode to themselves through the stream decoder, in any split.
#[test]
fn slave_frames_round_trip_in_any_split() {
    fn prop(frames: Vec<(bool, bool, bool, i64, u64)>, cuts: Vec<u16>) -> bool {
        let frames: Vec<SlaveFrame> = frames
            .into_iter()
            .map(|(hs, last, learner, id, offset)| {
                if hs {
                    SlaveFrame::Handshake(SlaveHandshake {
                        sync_from_last_file: last,
                        async_learner: learner,
                        broker_id: id,
                    })
                } else {
                    SlaveFrame::Report(offset >> 1)
                }
            })
            .collect();
        let mut wire = Vec::new();
        for f in &frames {
            match f {
                SlaveFrame::Handshake(h) => wire.extend_from_slice(&h.encode()),
                SlaveFrame::Report(o) => wire.extend_from_slice(&encode_report(*o)),
            }
        }
        let mut decoder = SlaveFrameDecoder::new();
        let mut got = Vec::new();
        for piece in split(&wire, &cuts, 40) {
            let mut input = piece;
            while let Some(f) = decoder.next_frame(&mut input).unwrap() {
                got.push(f);
            }
        }
        got == frames && decoder.pending_len() == 0
    }
    qc(500).quickcheck(prop as fn(Vec<(bool, bool, bool, i64, u64)>, Vec<u16>) -> bool);
}

/// Master frames encode and decode to themselves; an incomplete frame is left untouched.
#[test]
fn master_frames_round_trip() {
    fn prop(
        steps: Vec<(u8, u16)>,
        max: u32,
        header: (u32, u64, i32, u32, Option<u32>),
        body: Vec<u8>,
    ) -> bool {
        let hs = MasterHandshake {
            max_offset: u64::from(max),
            epochs: epochs_from(&steps),
        };
        let (_, offset, epoch, start, confirm) = header;
        let th = TransferHeader {
            body_len: body.len() as u32,
            offset: Some(offset >> 2),
            epoch,
            epoch_start: u64::from(start),
            confirm_offset: confirm.map(u64::from),
        };
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&hs.encode());
        wire.extend_from_slice(&th.encode());
        wire.extend_from_slice(&body);
        let total = wire.len();
        for cut in [0, 1, total / 2, total - 1] {
            let mut part = BytesMut::from(&wire[..cut]);
            let before = part.clone();
            let first = decode_master_frame(&mut part, u32::MAX).unwrap();
            if first.is_none() && part != before {
                return false;
            }
        }
        let a = decode_master_frame(&mut wire, u32::MAX).unwrap();
        let b = decode_master_frame(&mut wire, u32::MAX).unwrap();
        a == Some(MasterFrame::Handshake(hs))
            && matches!(b, Some(MasterFrame::Transfer { header, body: got })
                if header == th && got[..] == body[..])
            && wire.is_empty()
    }
    qc(300).quickcheck(
        prop as fn(Vec<(u8, u16)>, u32, (u32, u64, i32, u32, Option<u32>), Vec<u8>) -> bool,
    );
}

// ---------------------------------------------------------------------------------------------
// Chunking
// ---------------------------------------------------------------------------------------------

/// The slave's events are the same however the master's stream is split into reads.
#[test]
fn slave_events_do_not_depend_on_read_splits() {
    fn run(wire: &[u8], cuts: &[u16]) -> (Vec<ClientEvent>, EpochList, Option<u64>) {
        let t0 = Instant::now();
        let me = SlaveIdentity {
            broker_id: 2,
            sync_from_last_file: false,
            async_learner: false,
        };
        let mut c = Client::new(Config::default(), me, EpochList::new(), 1, t0);
        c.poll_event();
        c.handle_connected(t0, 0);
        let hs = c.poll_transmit(t0).unwrap();
        c.handle_written(t0, hs.as_bytes().len()).unwrap();
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for piece in split(wire, cuts, 64) {
            buf.extend_from_slice(piece);
            c.handle_input(t0, &mut buf).unwrap();
            while let Some(e) = c.poll_event() {
                if let ClientEvent::Append { offset, data } = &e {
                    c.handle_appended(offset + data.len() as u64);
                }
                events.push(e);
            }
        }
        (events, c.epochs().clone(), c.confirm_offset())
    }
    fn prop(steps: Vec<(u8, u16)>, bodies: Vec<Vec<u8>>, cuts: Vec<u16>) -> TestResult {
        let master = epochs_from(&steps);
        let Some(last) = master.last() else {
            return TestResult::discard();
        };
        // The master's answer, then frames from its last epoch's start.
        let mut wire = Vec::new();
        wire.extend_from_slice(
            &MasterHandshake {
                max_offset: last.start,
                epochs: master.clone(),
            }
            .encode(),
        );
        let mut at = last.start;
        for body in &bodies {
            let h = TransferHeader {
                body_len: body.len() as u32,
                offset: Some(at),
                epoch: last.epoch,
                epoch_start: last.start,
                confirm_offset: Some(at),
            };
            wire.extend_from_slice(&h.encode());
            wire.extend_from_slice(body);
            at += body.len() as u64;
        }
        TestResult::from_bool(run(&wire, &[]) == run(&wire, &cuts))
    }
    qc(200).quickcheck(prop as fn(Vec<(u8, u16)>, Vec<Vec<u8>>, Vec<u16>) -> TestResult);
}

// ---------------------------------------------------------------------------------------------
// Truncation over cluster histories
// ---------------------------------------------------------------------------------------------

/// One step of a cluster's history.
#[derive(Debug, Clone)]
enum Step {
    /// Replica `r` becomes master of the next epoch (perhaps an unclean choice).
    Elect(u8),
    /// The master appends `n` bytes.
    Write(u8),
    /// Replica `r` replicates from the master, receiving at most `n` bytes after the handshake.
    Replicate(u8, u8),
}

impl Arbitrary for Step {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 3 {
            0 => Step::Elect(u8::arbitrary(g)),
            1 => Step::Write(u8::arbitrary(g)),
            _ => Step::Replicate(u8::arbitrary(g), u8::arbitrary(g)),
        }
    }
}

/// A replica's log as the epoch that wrote each byte (the content a byte has is determined by
/// the master that wrote it: one master per epoch), and its epoch list.
#[derive(Debug, Clone, Default)]
struct Replica {
    log: Vec<i32>,
    epochs: EpochList,
}

/// §5.6 over generated histories of three replicas with elections (clean or not), writes and
/// partial replication: every truncation keeps exactly the longest prefix the two logs share
/// (nothing diverged survives, nothing shared is cut), and afterwards the slave's log is a
/// prefix of the master's and its epoch list describes it.
#[test]
fn truncation_keeps_exactly_the_shared_prefix() {
    fn prop(steps: Vec<Step>) -> bool {
        let mut replicas = vec![Replica::default(); 3];
        let mut master: Option<usize> = None;
        let mut epoch = 0;
        for step in steps {
            match step {
                Step::Elect(r) => {
                    let r = usize::from(r) % 3;
                    epoch += 1;
                    let end = replicas[r].log.len() as u64;
                    replicas[r].epochs.begin(epoch, end).unwrap();
                    master = Some(r);
                }
                Step::Write(n) => {
                    if let Some(m) = master {
                        replicas[m]
                            .log
                            .extend(std::iter::repeat_n(epoch, usize::from(n)));
                    }
                }
                Step::Replicate(r, n) => {
                    let r = usize::from(r) % 3;
                    let Some(m) = master.filter(|&m| m != r) else {
                        continue;
                    };
                    let (ms, ss) = (replicas[m].clone(), &mut replicas[r]);
                    if !ss.epochs.is_empty() {
                        let Some(p) = consistent_point(
                            &ss.epochs,
                            ss.log.len() as u64,
                            &ms.epochs,
                            ms.log.len() as u64,
                        ) else {
                            // Refused: the real slave reports an error and keeps its log.
                            continue;
                        };
                        let shared = ss
                            .log
                            .iter()
                            .zip(&ms.log)
                            .take_while(|(a, b)| a == b)
                            .count() as u64;
                        // Exactly the shared prefix (capped by the slave's own log).
                        if p.min(ss.log.len() as u64) != shared {
                            return false;
                        }
                        ss.log.truncate(shared as usize);
                        ss.epochs.truncate_suffix_by_offset(p);
                    } else if !ss.log.is_empty() {
                        return false;
                    }
                    // Frames from the master, one epoch at a time, the label before the bytes.
                    let stop = (ss.log.len() + usize::from(n)).min(ms.log.len());
                    while ss.log.len() < stop {
                        let at = ss.log.len() as u64;
                        let (entry, end) = ms.epochs.find_by_offset(at).expect("covered");
                        let end = end.map_or(stop, |e| (e as usize).min(stop));
                        ss.epochs.observe(entry, at);
                        ss.log.extend_from_slice(&ms.log[at as usize..end]);
                    }
                    if ss.log[..] != ms.log[..ss.log.len()] {
                        return false;
                    }
                }
            }
        }
        // Every replica's epoch list describes its own log: each byte lies in the epoch that
        // wrote it.
        replicas.iter().all(|r| {
            r.log.iter().enumerate().all(|(i, &e)| {
                r.epochs
                    .find_by_offset(i as u64)
                    .is_some_and(|(entry, _)| entry.epoch == e)
            })
        })
    }
    qc(1000).quickcheck(prop as fn(Vec<Step>) -> bool);
}

// ---------------------------------------------------------------------------------------------
// Confirm offset
// ---------------------------------------------------------------------------------------------

/// The master's confirm offset never goes backwards and never passes its own max, whatever
/// acks, connections, proposals and applications arrive (§5.7).
#[test]
fn confirm_offset_is_monotonic_and_bounded() {
    fn prop(ops: Vec<(u8, u8, u16)>) -> bool {
        let t0 = Instant::now();
        let mut set = SyncStateSet::new(1, [1, 2, 3], true);
        let mut max = 0u64;
        let mut last: Option<u64> = None;
        for (i, (op, id, x)) in ops.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64 * 100);
            let id = 2 + i64::from(id % 3);
            match op % 6 {
                0 => max += u64::from(x),
                1 => set.handle_connected(id),
                2 => set.handle_ack(now, id, u64::from(x).min(max), false, None, max, 0),
                3 => set.handle_disconnected(id),
                4 => {
                    if let Some(p) = set.poll_proposal() {
                        set.apply(p, max);
                    }
                }
                _ => {
                    let members: BTreeSet<i64> = [1, id]
                        .into_iter()
                        .chain((x % 2 == 0).then_some(3))
                        .collect();
                    set.apply(members, max);
                }
            }
            if let Some(c) = set.confirm_offset(max) {
                if c > max || last.is_some_and(|l| c < l) {
                    return false;
                }
                last = Some(c);
            }
        }
        true
    }
    qc(500).quickcheck(prop as fn(Vec<(u8, u8, u16)>) -> bool);
}
