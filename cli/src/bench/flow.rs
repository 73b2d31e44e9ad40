//! Flow control: how closely a rate-limited master holds its limit. A master with
//! `Config::rate_limit` serves an in-memory log far larger than the limit allows in the
//! measuring window; a slave replicates into memory; the bytes the slave stored between one
//! second after its first byte and the end of the window, divided by the window, is the rate
//! held (the first second skips the one frame the budget starts with).

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_ha::{Config, LogSource, MemoryLog, StartPosition};
use rocketmq_ha_transports::{MasterHandle, SlaveHandle, Transport};

use super::{loopback_addr, PHASE_LIMIT};
use crate::{Context, Failure};

/// One flow-control row.
pub(super) struct Flow {
    pub(super) transport: Transport,
    /// The limit, bytes a second.
    pub(super) limit: u64,
    /// What the slave received over the window, bytes a second.
    pub(super) held: f64,
    pub(super) window: Duration,
}

pub(super) fn flow(
    transport: Transport,
    config: Config,
    limit: u64,
    window: Duration,
) -> Result<Flow, Failure> {
    let rate = NonZeroU64::new(limit).ok_or_else(|| Failure("--flow-rate must be > 0".into()))?;
    // The whole log is fetched from its start (not RocketMQ's last-segment rule, which would
    // leave only the last segment to send).
    let config = Config::builder()
        .transfer_batch_size(config.transfer_batch_size())
        .first_batch_size(config.first_batch_size())
        .start_position(StartPosition::OldestRetained)
        .rate_limit(Some(rate))
        .build()
        .map_err(|e| Failure(format!("flow-control configuration: {e}")))?;
    // Twice what the window can carry, shared chunks of one buffer: no memory for the master.
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    let wanted = limit.saturating_mul(window.as_secs() + 2) * 2;
    let mut log = MemoryLog::new(1 << 30);
    while log.max_offset() < wanted {
        log.push(chunk.clone());
    }
    let master = MasterHandle::new(log, config);
    let server = transport
        .spawn_master(loopback_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let slave = SlaveHandle::new(addr, MemoryLog::new(1 << 30), config);
    let client = transport
        .spawn_slave(slave.clone())
        .context("starting the slave")?;
    let started = Instant::now();
    if !slave.wait_until_blocking(started + PHASE_LIMIT, |s| s.log().max_offset() > 0) {
        return Err(Failure(format!(
            "flow control over {transport}: no byte arrived"
        )));
    }
    // Past the first second, the budget's initial frame is spent.
    std::thread::sleep(Duration::from_secs(1));
    let (t0, b0) = (Instant::now(), slave.log().max_offset());
    std::thread::sleep(window);
    let (t1, b1) = (Instant::now(), slave.log().max_offset());
    client.shutdown().context("stopping the slave")?;
    server.shutdown().context("stopping the master")?;
    Ok(Flow {
        transport,
        limit,
        held: (b1 - b0) as f64 / (t1 - t0).as_secs_f64(),
        window: t1 - t0,
    })
}
