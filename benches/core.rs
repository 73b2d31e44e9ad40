//! Microbenchmarks of the sans-IO core: nanoseconds per frame through `MasterConnection` and
//! `HaClient`, and per ack through the sync waiters with 10 000 pending.
//!
//! Run with `cargo bench --bench core`. A small self-contained harness (no criterion: it would
//! triple the dependency tree for three loops): each case is warmed up, then timed over several
//! samples, and the median and best sample are printed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rocketmq_ha::wire::{encode_report, TransferHeader};
use rocketmq_ha::{ClientEvent, Config, HaClient, MasterConnection, MasterService, MemoryLog};

const SAMPLES: usize = 7;

/// Times `op` (which performs `per_call` operations) and prints ns per operation.
fn bench(name: &str, per_call: u64, mut op: impl FnMut()) {
    // Warm up and size a sample to roughly 100 ms.
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_millis(100) {
        op();
        calls += 1;
    }
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                op();
            }
            t.elapsed().as_nanos() as f64 / (calls * per_call) as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    println!(
        "{name:<52} {:>10.1} ns/op (best {:.1}, {} ops/sample)",
        samples[SAMPLES / 2],
        samples[0],
        calls * per_call
    );
}

fn master_frames(batch: u32) {
    let segment = 1u64 << 30;
    let total = 64 << 20;
    let mut log = MemoryLog::new(segment);
    // One contiguous chunk, as a memory-mapped segment would be: reads are zero-copy slices.
    log.push(vec![7u8; total]);
    let config = Config::builder()
        .transfer_batch_size(batch)
        .build()
        .expect("valid");
    let frames_per_pass = total as u64 / u64::from(batch);
    let now = Instant::now();
    bench(
        &format!("MasterConnection: frame of {batch} B (poll+write+ack)"),
        frames_per_pass,
        || {
            let mut conn = MasterConnection::new(config, now);
            conn.handle_input(now, &encode_report(1), &log)
                .expect("request");
            let mut sent = 0u64;
            while let Some(mut t) = conn.poll_transmit(now, &log).expect("read") {
                sent += t.remaining() as u64;
                let n = t.remaining();
                t.advance(n);
                conn.on_transmitted(now).expect("in flight");
                if sent > 1 << 20 {
                    // Acks arrive roughly every megabyte, as with coalesced reports.
                    let acked = conn.next_offset().expect("started");
                    conn.handle_input(now, &encode_report(acked), &log)
                        .expect("ack");
                    while conn.poll_event().is_some() {}
                    sent = 0;
                }
            }
            black_box(conn.next_offset());
        },
    );
}

fn client_frames(body: usize, read_size: usize) {
    let frames = (8 << 20) / body;
    let mut stream = Vec::with_capacity(frames * (body + 12));
    for i in 0..frames {
        let header = TransferHeader::new((i * body) as u64, body as u32);
        stream.extend_from_slice(&header.encode());
        stream.extend(std::iter::repeat_n(3u8, body));
    }
    let now = Instant::now();
    bench(
        &format!("HaClient: frame of {body} B, reads of {read_size} B"),
        frames as u64,
        || {
            let mut client = HaClient::new(Config::default(), 1, now);
            client.poll_event();
            client.handle_connected(now, 0);
            if let Some(report) = client.poll_transmit(now) {
                client.handle_written(now, report.len()).expect("in flight");
            }
            let mut buf = BytesMut::with_capacity(read_size * 2);
            let mut stored = 0u64;
            for chunk in stream.chunks(read_size) {
                buf.extend_from_slice(chunk);
                client.handle_input(now, &mut buf).expect("valid stream");
                while let Some(event) = client.poll_event() {
                    if let ClientEvent::Append { offset, data } = event {
                        debug_assert_eq!(offset, stored);
                        stored += data.len() as u64;
                    }
                }
                client.handle_appended(stored);
                if let Some(report) = black_box(client.poll_transmit(now)) {
                    client.handle_written(now, report.len()).expect("in flight");
                }
            }
        },
    );
}

fn waiter_acks(pending: usize) {
    let now = Instant::now();
    let deadline = now + Duration::from_secs(3600);
    let mut service = MasterService::new(Config::default(), now);
    let slave = service.register(now);
    for i in 0..pending {
        service.wait_for(now, (i as u64 + 1) * 100, 1, deadline);
    }
    let mut acked = 0u64;
    let mut next_offset = (pending as u64 + 1) * 100;
    bench(
        &format!("MasterService: ack completing 1 of {pending} waiters"),
        1,
        || {
            acked += 100;
            service.handle_ack(slave, now, acked);
            let done = service.poll_completion();
            debug_assert!(done.is_some());
            black_box(done);
            // Keep the pending count constant.
            service.wait_for(now, next_offset, 1, deadline);
            next_offset += 100;
        },
    );
    assert_eq!(service.pending_waits(), pending);
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; keep that cheap.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    println!("rocketmq-ha core microbenchmarks (median of {SAMPLES} samples)");
    master_frames(32 * 1024);
    master_frames(1024);
    client_frames(32 * 1024, 64 * 1024);
    client_frames(1024, 64 * 1024);
    client_frames(128, 64 * 1024);
    waiter_acks(10_000);
}
