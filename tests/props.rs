//! Property tests (quickcheck) of the wire codec, of the machines' insensitivity to how the TCP
//! stream is chunked, of the sync waiters against a linear reference model, and of whole
//! simulated schedules (whose byte input quickcheck shrinks when one fails).
//!
//! `QUICKCHECK_TESTS` raises the number of cases (the defaults below keep the suite quick).

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use rocketmq_ha::wire::{
    decode_report, decode_transfer, encode_report, ReportDecoder, TransferHeader,
    TRANSFER_HEADER_LEN,
};
use rocketmq_ha::{
    ClientEvent, Config, ConnectionId, HaClient, LogSink, LogSource, MasterConnection, MasterEvent,
    MasterService, MemoryLog, SyncCompletion, SyncError, Ticket, WireError,
};

// The simulator, shared with the `sim` test target; only its entry point is used here.
#[allow(unused_imports)]
#[path = "sim/lib.rs"]
mod sim;

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
    let mut at = 0;
    let mut i = 0;
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

// ---------------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------------

/// §8 #1: a report encodes and decodes to itself, whole or through the stream decoder.
#[test]
fn report_round_trip() {
    fn prop(value: u64) -> bool {
        let value = value >> 1; // offsets fit an i64
        let bytes = encode_report(value);
        let mut decoder = ReportDecoder::new();
        decode_report(bytes) == Ok(value)
            && decoder.feed(&bytes) == Ok(Some(value))
            && decoder.pending_len() == 0
    }
    qc(1000).quickcheck(prop as fn(u64) -> bool);
}

/// §8 #1-3: a transfer header and frame encode and decode to themselves, leaving what follows
/// untouched; the size limit is exact.
#[test]
fn transfer_frame_round_trip() {
    fn prop(offset: u64, body: Vec<u8>, trailing: Vec<u8>, slack: u16) -> bool {
        let header = TransferHeader::new(offset >> 1, body.len() as u32);
        let limit = header.frame_len() as u32 + u32::from(slack);
        let encoded = header.encode();
        if header.end_offset() > i64::MAX as u64 {
            // A frame ending past the largest wire offset is refused (its end is unreportable).
            return TransferHeader::decode(encoded, limit)
                == Err(WireError::OffsetOverflow {
                    offset: header.offset,
                    body_len: header.body_len,
                });
        }
        if TransferHeader::decode(encoded, limit) != Ok(header) {
            return false;
        }
        // One byte under the frame's size is refused.
        let too_small = header.frame_len() as u32 - 1;
        if !matches!(
            TransferHeader::decode(encoded, too_small),
            Err(WireError::FrameTooLarge { .. })
        ) {
            return false;
        }
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encoded);
        buf.extend_from_slice(&body);
        buf.extend_from_slice(&trailing);
        match decode_transfer(&mut buf, limit) {
            Ok(Some(frame)) => {
                frame.header == header && frame.body[..] == body[..] && buf[..] == trailing[..]
            }
            _ => false,
        }
    }
    qc(500).quickcheck(prop as fn(u64, Vec<u8>, Vec<u8>, u16) -> bool);
}

/// §8 #2-4: decoding arbitrary bytes never panics; a decoded frame respects its limit and is
/// only split off when complete; the report decoder keeps at most 7 bytes and returns the last
/// complete value of each feed (vector V5), checked against a model of the whole stream.
#[test]
fn decoding_arbitrary_bytes_never_panics() {
    fn prop(data: Vec<u8>, cuts: Vec<u16>, max_frame: u32) -> bool {
        let max_frame = max_frame % (1 << 20);
        // Report stream against the model.
        let mut decoder = ReportDecoder::new();
        let mut consumed = 0usize;
        for piece in split(&data, &cuts, 20) {
            let before = consumed / 8;
            consumed += piece.len();
            let after = consumed / 8;
            let expected = (after > before).then(|| {
                let at = (after - 1) * 8;
                let mut value = [0u8; 8];
                value.copy_from_slice(&data[at..at + 8]);
                decode_report(value)
            });
            match (decoder.feed(piece), expected) {
                (Ok(None), None) => {}
                (Ok(Some(v)), Some(Ok(e))) if v == e => {}
                (Err(e), Some(Err(m))) if e == m => return true, // state unspecified after
                _ => return false,
            }
            if decoder.pending_len() != consumed % 8 {
                return false;
            }
        }
        // Transfer frames.
        if data.len() >= TRANSFER_HEADER_LEN {
            let mut head = [0u8; TRANSFER_HEADER_LEN];
            head.copy_from_slice(&data[..TRANSFER_HEADER_LEN]);
            let _ = TransferHeader::decode(head, max_frame);
        }
        let mut buf = BytesMut::new();
        for piece in split(&data, &cuts, 64) {
            buf.extend_from_slice(piece);
            loop {
                let before = buf.len();
                match decode_transfer(&mut buf, max_frame) {
                    Ok(Some(frame)) => {
                        let len = TRANSFER_HEADER_LEN + frame.body.len();
                        if frame.body.len() != frame.header.body_len as usize
                            || len as u64 > u64::from(max_frame)
                            || before - buf.len() != len
                        {
                            return false;
                        }
                    }
                    Ok(None) => {
                        if buf.len() != before {
                            return false;
                        }
                        break;
                    }
                    Err(_) => return true,
                }
            }
        }
        // The machines, fed the same bytes, fail with errors rather than panics.
        let t0 = Instant::now();
        let config = Config::default();
        let mut client = HaClient::new(config, 1, t0);
        client.poll_event();
        client.handle_connected(t0, 0);
        let mut buf = BytesMut::new();
        for piece in split(&data, &cuts, 64) {
            buf.extend_from_slice(piece);
            if client.handle_input(t0, &mut buf).is_err() {
                break;
            }
            while client.poll_event().is_some() {}
        }
        let mut log = MemoryLog::new(64);
        log.push(vec![7u8; 300]);
        let mut master = MasterConnection::new(config, t0);
        for piece in split(&data, &cuts, 20) {
            if master.handle_input(t0, piece, &log).is_err() {
                break;
            }
            while master.poll_event().is_some() {}
            if master.buffered_len() > 7 {
                return false;
            }
        }
        true
    }
    qc(1000).quickcheck(prop as fn(Vec<u8>, Vec<u16>, u32) -> bool);
}

// ---------------------------------------------------------------------------------------------
// Chunking invariance
// ---------------------------------------------------------------------------------------------

/// What a master connection did with a report stream.
#[derive(Debug, PartialEq, Eq)]
struct MasterRun {
    started: Option<(u64, u64)>,
    acks: Vec<u64>,
    frames: Vec<u8>,
    error: Option<String>,
}

fn master_run(log: &MemoryLog, config: Config, reads: &[&[u8]]) -> MasterRun {
    let t0 = Instant::now();
    let mut conn = MasterConnection::new(config, t0);
    let mut run = MasterRun {
        started: None,
        acks: Vec::new(),
        frames: Vec::new(),
        error: None,
    };
    for read in reads {
        if let Err(e) = conn.handle_input(t0, read, log) {
            run.error = Some(e.to_string());
            return run;
        }
        while let Some(event) = conn.poll_event() {
            match event {
                MasterEvent::Started { requested, start } => run.started = Some((requested, start)),
                MasterEvent::Acked { offset } => run.acks.push(offset),
                _ => {}
            }
        }
        loop {
            match conn.poll_transmit(t0, log) {
                Ok(Some(mut t)) => {
                    while t.has_remaining() {
                        let n = t.chunk().len();
                        run.frames.extend_from_slice(t.chunk());
                        t.advance(n);
                    }
                    conn.on_transmitted(t0).expect("frame was in flight");
                }
                Ok(None) => break,
                Err(e) => {
                    run.error = Some(e.to_string());
                    return run;
                }
            }
        }
    }
    run
}

/// §3.2 and vector V5: how the report stream is split into reads changes which intermediate
/// acks the master sees (it takes only the last complete report per read), but not the request
/// (when the first read holds exactly the first report), nor the final ack, nor the frames it
/// transmits; and acks always rise.
#[test]
fn master_is_insensitive_to_chunking() {
    fn prop(
        len: u16,
        segment: u8,
        batch: u8,
        request: u16,
        steps: Vec<u16>,
        first: u8,
        cuts: Vec<u16>,
    ) -> TestResult {
        let len = u64::from(len % 2000);
        let segment = 16 + u64::from(segment);
        let batch = 1 + u32::from(batch);
        let config = Config::builder()
            .transfer_batch_size(batch)
            .build()
            .unwrap();
        let mut log = MemoryLog::new(segment);
        log.push((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
        // A request inside the log, then rising acks up to its end.
        let mut reports = vec![u64::from(request) % (len + 1)];
        for step in steps {
            let next = (reports.last().unwrap() + u64::from(step % 300)).min(len);
            reports.push(next);
        }
        let stream: Vec<u8> = reports.iter().flat_map(|r| encode_report(*r)).collect();
        // Reference: the first report alone, then everything else in one read.
        let whole = master_run(&log, config, &[&stream[..8], &stream[8..]]);
        // Any split whose first read holds the first report and no second complete one.
        let head = (8 + usize::from(first) % 8).min(stream.len());
        let mut reads = vec![&stream[..head]];
        reads.extend(split(&stream[head..], &cuts, 24));
        let split_run = master_run(&log, config, &reads);
        if whole.error.is_some() || split_run.error.is_some() {
            return TestResult::error(format!("unexpected errors {whole:?} {split_run:?}"));
        }
        let rising = split_run.acks.windows(2).all(|w| w[0] < w[1]);
        TestResult::from_bool(
            whole.started == split_run.started
                && whole.acks.first() == split_run.acks.first()
                && whole.acks.last() == split_run.acks.last()
                && split_run.acks.last() == reports.iter().max()
                && rising
                && whole.frames == split_run.frames,
        )
    }
    qc(300).quickcheck(prop as fn(u16, u8, u8, u16, Vec<u16>, u8, Vec<u16>) -> TestResult);
}

/// What a client did with a frame stream.
#[derive(Debug, PartialEq, Eq)]
struct ClientRun {
    appends: Vec<(u64, Bytes)>,
    stored: u64,
    last_report: Option<u64>,
    left_over: usize,
    error: Option<String>,
}

fn client_run(stored: u64, reads: &[&[u8]]) -> (ClientRun, usize) {
    let t0 = Instant::now();
    let config = Config::builder()
        .max_frame_size(4096)
        .transfer_batch_size(1000)
        .build()
        .unwrap();
    let mut client = HaClient::new(config, 3, t0);
    assert_eq!(client.poll_event(), Some(ClientEvent::Connect));
    let mut log = MemoryLog::new(1 << 20);
    if stored > 0 {
        log.append(stored - 1, Bytes::from_static(b"x")).unwrap();
    }
    client.handle_connected(t0, log.max_offset());
    let mut reports = 0;
    let mut last_report = None;
    while let Some(report) = client.poll_transmit(t0) {
        client.handle_written(t0, report.len()).unwrap();
        last_report = Some(u64::from_be_bytes(report));
        reports += 1;
    }
    let mut run = ClientRun {
        appends: Vec::new(),
        stored: 0,
        last_report,
        left_over: 0,
        error: None,
    };
    let mut buf = BytesMut::new();
    for read in reads {
        buf.extend_from_slice(read);
        if let Err(e) = client.handle_input(t0, &mut buf) {
            run.error = Some(format!("{e:?}"));
        }
        while let Some(event) = client.poll_event() {
            if let ClientEvent::Append { offset, data } = event {
                let max = log
                    .append(offset, data.clone())
                    .expect("appends are contiguous");
                run.appends.push((offset, data));
                client.handle_appended(max);
            }
        }
        while let Some(report) = client.poll_transmit(t0) {
            client.handle_written(t0, report.len()).unwrap();
            let value = u64::from_be_bytes(report);
            assert!(value <= log.max_offset(), "reported more than stored");
            run.last_report = Some(value);
            reports += 1;
        }
        if run.error.is_some() {
            break;
        }
    }
    run.stored = client.stored_offset();
    run.left_over = buf.len();
    (run, reports)
}

/// §8 #1, #2, #14: however the master's byte stream is split, the client asks for the same
/// appends (offsets and bytes), ends with the same stored and reported offset, and fails at the
/// same frame with the same error; only how many reports it coalesces may differ (and, when
/// it fails, how much it reported before closing).
#[test]
fn client_is_insensitive_to_chunking() {
    fn prop(stored: u16, bodies: Vec<Vec<u8>>, bad_at: Option<u8>, cuts: Vec<u16>) -> TestResult {
        let stored = u64::from(stored);
        let mut stream = Vec::new();
        let mut at = stored;
        for (i, body) in bodies.iter().enumerate() {
            let body = &body[..body.len().min(1000)];
            // Optionally one frame at the wrong offset (for a non-empty slave: a mismatch).
            let offset = if bad_at.map(usize::from) == Some(i) {
                at + 1
            } else {
                at
            };
            let header = TransferHeader::new(offset, body.len() as u32);
            stream.extend_from_slice(&header.encode());
            stream.extend_from_slice(body);
            at = offset + body.len() as u64;
        }
        let (mut whole, _) = client_run(stored, &[&stream]);
        let (mut pieces, reports) = client_run(stored, &split(&stream, &cuts, 40));
        if whole.error.is_some() {
            // The connection closed at the bad frame: what got reported before depends on the
            // split (valid frames earlier in the failing read are stored but not reported), as
            // does how much of the rest had arrived.
            if pieces.last_report > Some(pieces.stored) || whole.last_report > Some(whole.stored) {
                return TestResult::error("reported beyond what is stored");
            }
            whole.last_report = None;
            pieces.last_report = None;
            // The buffer is dropped with the connection; how much of it had arrived varies.
            whole.left_over = 0;
            pieces.left_over = 0;
        }
        if whole != pieces {
            return TestResult::error(format!("one read {whole:?}\nsplit {pieces:?}"));
        }
        // An empty slave accepts any offset until its first data frame (§4.4).
        let mismatch_expected = bad_at.map(usize::from).is_some_and(|b| {
            b < bodies.len() && (stored > 0 || bodies[..b].iter().any(|body| !body.is_empty()))
        });
        if mismatch_expected
            != whole
                .error
                .as_deref()
                .is_some_and(|e| e.contains("OffsetMismatch"))
        {
            return TestResult::error(format!("mismatch expected {mismatch_expected}: {whole:?}"));
        }
        // Reports: at least the one on connect; never more than one per read plus that one.
        TestResult::from_bool(reports >= 1)
    }
    qc(300).quickcheck(prop as fn(u16, Vec<Vec<u8>>, Option<u8>, Vec<u16>) -> TestResult);
}

// ---------------------------------------------------------------------------------------------
// Sync waiters against a reference model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Register,
    Remove(u8),
    Ack(u8, u16),
    Wait {
        offset: u16,
        acks_needed: u8,
        within_ms: u16,
    },
    Advance(u16),
    Backwards(u16),
    Timeout,
    Shutdown,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        match u8::arbitrary(g) % 16 {
            0..=2 => Op::Register,
            3 => Op::Remove(u8::arbitrary(g)),
            4..=7 => Op::Ack(u8::arbitrary(g), u16::arbitrary(g) % 500),
            8..=10 => Op::Wait {
                offset: u16::arbitrary(g) % 2000,
                acks_needed: u8::arbitrary(g) % 5,
                within_ms: u16::arbitrary(g) % 300,
            },
            11 | 12 => Op::Advance(u16::arbitrary(g) % 200),
            13 => Op::Backwards(u16::arbitrary(g) % 200),
            14 => Op::Timeout,
            _ if u8::arbitrary(g) % 8 == 0 => Op::Shutdown,
            _ => Op::Timeout,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Op>> {
        match self.clone() {
            Op::Wait {
                offset,
                acks_needed,
                within_ms,
            } => Box::new((offset, acks_needed, within_ms).shrink().map(
                |(offset, acks_needed, within_ms)| Op::Wait {
                    offset,
                    acks_needed,
                    within_ms,
                },
            )),
            Op::Ack(i, d) => Box::new((i, d).shrink().map(|(i, d)| Op::Ack(i, d))),
            Op::Advance(ms) => Box::new(ms.shrink().map(Op::Advance)),
            _ => Box::new(std::iter::empty()),
        }
    }
}

/// The service as a few vectors scanned linearly: the same rules, none of the indexes.
#[derive(Debug, Default)]
struct WaiterModel {
    now_ms: u64,
    conns: Vec<(ConnectionId, Option<u64>)>,
    frontier: u64,
    pending: Vec<(Ticket, u64, usize, u64)>,
    shut_down: bool,
}

impl WaiterModel {
    fn acked(&self, offset: u64) -> usize {
        self.conns
            .iter()
            .filter(|(_, a)| a.is_some_and(|a| a >= offset))
            .count()
    }

    fn expire(&mut self, out: &mut Vec<(Ticket, Result<(), SyncError>)>) {
        let now = self.now_ms;
        self.pending.retain(|&(t, _, _, deadline)| {
            if deadline <= now {
                out.push((t, Err(SyncError::Timeout)));
                false
            } else {
                true
            }
        });
    }

    fn satisfy(&mut self, out: &mut Vec<(Ticket, Result<(), SyncError>)>) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if self.acked(p.1) >= p.2 {
                out.push((p.0, Ok(())));
            } else {
                self.pending.push(p);
            }
        }
    }
}

/// §3.5, §8 #18, #20: under any sequence of registrations, removals, acks, waits, time steps
/// (backwards too) and shutdowns, the service completes exactly the waits the linear model
/// completes, with the same results, and agrees on frontier, pending count, next deadline,
/// connection count, in-sync count and is-slave-OK.
#[test]
fn sync_waiters_match_a_linear_model() {
    fn prop(ops: Vec<Op>, gap: u16) -> TestResult {
        let gap = 1 + u64::from(gap);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let config = Config::builder().max_gap_not_in_sync(gap).build().unwrap();
        let mut service = MasterService::new(config, t0);
        let mut model = WaiterModel::default();
        let mut clock_ms = 0u64; // what the driver passes (may go backwards)
        for (step, op) in ops.iter().enumerate() {
            let mut expected = Vec::new();
            match *op {
                Op::Register => {
                    let id = service.register(at(clock_ms));
                    model.now_ms = model.now_ms.max(clock_ms);
                    model.conns.push((id, None));
                }
                Op::Remove(i) => {
                    if !model.conns.is_empty() {
                        let (id, _) = model.conns.remove(usize::from(i) % model.conns.len());
                        service.remove(id, at(clock_ms));
                        model.now_ms = model.now_ms.max(clock_ms);
                    }
                }
                Op::Ack(i, delta) => {
                    if !model.conns.is_empty() {
                        let idx = usize::from(i) % model.conns.len();
                        let id = model.conns[idx].0;
                        let offset = model.conns[idx].1.unwrap_or(0) + u64::from(delta);
                        service.handle_ack(id, at(clock_ms), offset);
                        model.now_ms = model.now_ms.max(clock_ms);
                        model.expire(&mut expected);
                        let slot = &mut model.conns[idx].1;
                        if slot.is_none_or(|a| a < offset) {
                            *slot = Some(offset);
                        }
                        model.frontier = model.frontier.max(offset);
                        model.satisfy(&mut expected);
                    }
                }
                Op::Wait {
                    offset,
                    acks_needed,
                    within_ms,
                } => {
                    let deadline = clock_ms + u64::from(within_ms);
                    let ticket = service.wait_for(
                        at(clock_ms),
                        u64::from(offset),
                        usize::from(acks_needed),
                        at(deadline),
                    );
                    model.now_ms = model.now_ms.max(clock_ms);
                    model.expire(&mut expected);
                    let needed = usize::from(acks_needed);
                    if model.shut_down {
                        expected.push((ticket, Err(SyncError::Shutdown)));
                    } else if needed == 0 || model.acked(u64::from(offset)) >= needed {
                        expected.push((ticket, Ok(())));
                    } else if deadline <= model.now_ms {
                        expected.push((ticket, Err(SyncError::Timeout)));
                    } else {
                        model
                            .pending
                            .push((ticket, u64::from(offset), needed, deadline));
                    }
                }
                Op::Advance(ms) => clock_ms += u64::from(ms),
                Op::Backwards(ms) => clock_ms = clock_ms.saturating_sub(u64::from(ms)),
                Op::Timeout => {
                    service.handle_timeout(at(clock_ms));
                    model.now_ms = model.now_ms.max(clock_ms);
                    model.expire(&mut expected);
                }
                Op::Shutdown => {
                    service.shutdown(at(clock_ms));
                    model.now_ms = model.now_ms.max(clock_ms);
                    for (t, ..) in model.pending.drain(..) {
                        expected.push((t, Err(SyncError::Shutdown)));
                    }
                    model.conns.clear();
                    model.shut_down = true;
                }
            }
            let mut got: Vec<(Ticket, Result<(), SyncError>)> =
                std::iter::from_fn(|| service.poll_completion())
                    .map(|c: SyncCompletion| (c.ticket, c.result))
                    .collect();
            got.sort_by_key(|c| c.0);
            expected.sort_by_key(|c| c.0);
            let probe = u64::from(step as u16 % 2000);
            let in_sync = model
                .conns
                .iter()
                .filter(|(_, a)| a.is_some_and(|a| probe.saturating_sub(a) < gap))
                .count();
            let slave_ok = !model.conns.is_empty() && probe.saturating_sub(model.frontier) < gap;
            let next_deadline = model.pending.iter().map(|p| at(p.3)).min();
            if got != expected
                || service.ack_frontier() != model.frontier
                || service.pending_waits() != model.pending.len()
                || service.poll_timeout() != next_deadline
                || service.connection_count() != model.conns.len()
                || service.in_sync_count(probe) != in_sync
                || service.is_slave_ok(probe) != slave_ok
            {
                return TestResult::error(format!(
                    "step {step} {op:?}: got {got:?}, model {expected:?}; frontier {} vs {}, \
                     pending {} vs {}, connections {} vs {}, in sync {} vs {in_sync}, \
                     slave ok {} vs {slave_ok}",
                    service.ack_frontier(),
                    model.frontier,
                    service.pending_waits(),
                    model.pending.len(),
                    service.connection_count(),
                    model.conns.len(),
                    service.in_sync_count(probe),
                    service.is_slave_ok(probe),
                ));
            }
        }
        TestResult::passed()
    }
    qc(500).quickcheck(prop as fn(Vec<Op>, u16) -> TestResult);
}

// ---------------------------------------------------------------------------------------------
// Whole simulated schedules
// ---------------------------------------------------------------------------------------------

/// A whole simulated run (see `tests/sim`) with every decision taken from quickcheck's bytes;
/// a failing schedule shrinks towards fewer, calmer choices (zero bytes mean "no fault").
#[test]
fn simulated_schedules_keep_every_invariant() {
    fn prop(choices: Vec<u8>) -> TestResult {
        match sim::run(sim::Entropy::from_bytes(&choices)) {
            Ok(_) => TestResult::passed(),
            Err(failure) => TestResult::error(failure.to_string()),
        }
    }
    qc(40)
        .rng(Gen::new(400))
        .quickcheck(prop as fn(Vec<u8>) -> TestResult);
}

/// The byte-driven simulator is deterministic too: the same choices give the same trace.
#[test]
fn simulated_schedule_from_bytes_is_deterministic() {
    fn prop(choices: Vec<u8>) -> bool {
        let a = sim::run(sim::Entropy::from_bytes(&choices));
        let b = sim::run(sim::Entropy::from_bytes(&choices));
        match (a, b) {
            (Ok(a), Ok(b)) => a.trace_hash == b.trace_hash && a.steps == b.steps,
            (Err(a), Err(b)) => a.trace_hash == b.trace_hash,
            _ => false,
        }
    }
    qc(8)
        .rng(Gen::new(200))
        .quickcheck(prop as fn(Vec<u8>) -> bool);
}

/// §3.9 flow control: whatever the rate, batch, log growth and write delays, a rate-limited
/// master sends at most `rate × window` plus one frame plus one heartbeat over **any** window
/// (checked against every earlier frame, independently of the machine's token bucket), never a
/// data frame without data, and keeps up with the limit while data is waiting.
#[test]
fn a_rate_limit_holds_over_every_window() {
    fn prop(rate: u32, batch: u16, growth: Vec<u16>, delays: Vec<u8>) -> TestResult {
        let rate = 1024 + u64::from(rate) % (8 << 20);
        let batch = 1 + u32::from(batch) % 16_384;
        let config = Config::builder()
            .transfer_batch_size(batch)
            .rate_limit(std::num::NonZeroU64::new(rate))
            .build()
            .expect("valid");
        let t0 = Instant::now();
        let mut log = MemoryLog::new(1 << 20);
        log.push(vec![3u8; 64]);
        let mut conn = MasterConnection::new(config, t0);
        conn.handle_input(t0, &encode_report(0), &log)
            .expect("request");
        let mut now = t0;
        let mut frames: Vec<(Duration, u64)> = Vec::new();
        for step in 0..120usize {
            if let Some(&g) = growth.get(step % growth.len().max(1)) {
                log.push(vec![5u8; usize::from(g) % 20_000]);
            }
            while let Some(t) = conn.poll_transmit(now, &log).expect("frame") {
                if !t.is_heartbeat() && t.body().is_empty() {
                    return TestResult::error("an empty data frame");
                }
                frames.push((now - t0, t.remaining() as u64));
                // The socket takes the frame after a delay (or at once).
                let delay = delays.get(step % delays.len().max(1)).copied().unwrap_or(0);
                now += Duration::from_micros(u64::from(delay) * 50);
                conn.on_transmitted(now).expect("written");
            }
            conn.handle_input(now, &encode_report(0), &log)
                .expect("ack");
            now = conn.poll_timeout().expect("deadline").max(now);
        }
        let burst = u64::from(batch) + 24;
        let mut least = i128::MAX;
        let mut sent = 0i128;
        for &(at, len) in &frames {
            let t = at.as_nanos() as i128;
            least = least.min(sent * 1_000_000_000 - i128::from(rate) * t);
            sent += i128::from(len);
            let excess = sent * 1_000_000_000 - i128::from(rate) * t - least;
            if excess > i128::from(burst) * 1_000_000_000 {
                return TestResult::error(format!(
                    "{} bytes over at {at:?} (rate {rate}, batch {batch})",
                    excess / 1_000_000_000 - i128::from(burst)
                ));
            }
        }
        TestResult::passed()
    }
    qc(150).quickcheck(prop as fn(u32, u16, Vec<u16>, Vec<u8>) -> TestResult);
}

// ---------------------------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------------------------

/// A block contains exactly the addresses whose first `prefix` bits are its own, compared bit
/// by bit; an IPv4 block contains the IPv4-mapped forms of its addresses; printing and parsing
/// give the block back.
#[test]
fn ip_blocks_contain_what_their_prefix_says() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use rocketmq_ha::IpNet;

    fn prop(net: u32, ip: u32, prefix: u8, v6: bool, flips: u8) -> bool {
        // Nearby addresses are the interesting ones: flip one low bit of the block's address.
        let ip = if flips.is_multiple_of(2) {
            ip
        } else {
            net ^ (1 << (flips % 32))
        };
        let (net_ip, peer, max) = if v6 {
            let wide = |x: u32| (u128::from(x) << 96) | u128::from(x);
            (
                IpAddr::V6(Ipv6Addr::from_bits(wide(net))),
                IpAddr::V6(Ipv6Addr::from_bits(wide(ip))),
                128,
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::from_bits(net)),
                IpAddr::V4(Ipv4Addr::from_bits(ip)),
                32,
            )
        };
        let prefix = prefix % (max + 1);
        let block = IpNet::new(net_ip, prefix).expect("a valid prefix");
        let bits = |a: IpAddr| -> Vec<bool> {
            let octets = match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            octets
                .iter()
                .flat_map(|o| (0..8).rev().map(move |i| o >> i & 1 == 1))
                .collect()
        };
        let expected = bits(net_ip)[..usize::from(prefix)] == bits(peer)[..usize::from(prefix)];
        let mapped_agrees = match peer {
            IpAddr::V4(v4) => block.contains(IpAddr::V6(v4.to_ipv6_mapped())) == expected,
            IpAddr::V6(_) => true,
        };
        block.contains(peer) == expected
            && mapped_agrees
            && block.to_string().parse::<IpNet>() == Ok(block)
            && block.contains(block.addr())
    }
    qc(2000).quickcheck(prop as fn(u32, u32, u8, bool, u8) -> bool);
}

/// An admission accepts exactly the peers that are allowed while fewer than the limit are
/// live, and counts every refusal.
#[test]
fn admission_accepts_allowed_peers_below_the_limit() {
    use std::net::{IpAddr, Ipv4Addr};

    use rocketmq_ha::{Admission, Decision, IpNet};

    fn prop(limit: Option<u8>, allowed_last_octets: Vec<u8>, arrivals: Vec<(u8, u8)>) -> bool {
        let limit = limit.map(usize::from);
        let nets: Vec<IpNet> = allowed_last_octets
            .iter()
            .map(|&o| IpNet::host(IpAddr::V4(Ipv4Addr::new(10, 0, 0, o))))
            .collect();
        let mut admission = Admission::new().max_connections(limit);
        let restrict = !allowed_last_octets.is_empty();
        if restrict {
            admission = admission.allow(nets);
        }
        let mut refusals = 0;
        for (octet, live) in arrivals {
            let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, octet));
            let allowed = !restrict || allowed_last_octets.contains(&octet);
            let room = limit.is_none_or(|l| usize::from(live) < l);
            let decision = admission.decide(peer, usize::from(live));
            if (decision == Decision::Accept) != (allowed && room) {
                return false;
            }
            refusals += u64::from(decision != Decision::Accept);
        }
        admission.refused() == refusals
    }
    qc(1000).quickcheck(prop as fn(Option<u8>, Vec<u8>, Vec<(u8, u8)>) -> bool);
}
