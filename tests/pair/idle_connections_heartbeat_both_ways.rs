use std::time::Duration;

use rocketmq_ha::Config;

use crate::harness::{frames, reports, Pair};

#[test]
fn an_idle_pair_exchanges_heartbeats_every_5s_and_stays_up() {
    let mut pair = Pair::caught_up_on(Config::default(), 1000);
    let (frames_before, reports_before) = (
        frames(&pair.master_wire).len(),
        reports(&pair.slave_wire).len(),
    );

    pair.advance(Duration::from_secs(60));

    let new_frames = &frames(&pair.master_wire)[frames_before..];
    let new_reports = &reports(&pair.slave_wire)[reports_before..];
    // One heartbeat per 5 s each way (the first may come sooner: the clock ran from the last
    // write).
    assert!(
        (11..=13).contains(&new_frames.len()),
        "{} heartbeats",
        new_frames.len()
    );
    assert!(
        (11..=13).contains(&new_reports.len()),
        "{} reports",
        new_reports.len()
    );
    assert!(new_frames
        .iter()
        .all(|h| h.body_len == 0 && h.offset == 1000));
    assert!(new_reports.iter().all(|&r| r == 1000));
    assert!(pair.master_errors.is_empty() && pair.client_errors.is_empty());
    assert_eq!(pair.connects, 1);
}
