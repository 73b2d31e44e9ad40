//! Replication throughput: a master serving the generated store, a slave replicating into a
//! fresh store, timed until the slave holds every byte; first-byte time and CPU per GiB.

use std::path::Path;
use std::time::{Duration, Instant};

use rocketmq_ha::autoswitch::{EpochEntry, EpochList};
use rocketmq_ha::{Config, LogSource};
use rocketmq_ha_transports::file_log::{compare_logs, FileLog, FileLogReader};
use rocketmq_ha_transports::{
    AutoSwitchMaster, AutoSwitchSlave, MasterHandle, SlaveHandle, Transport,
};

use super::probe::ThreadTimes;
use super::{loopback_addr, poll_until, Prefix, GIB, PHASE_LIMIT};
use crate::protocol::ProtocolArg;
use crate::size::mb_per_s;
use crate::{Context, Failure};

/// One replication row.
pub(super) struct Throughput {
    pub(super) transport: Transport,
    pub(super) batch: u64,
    pub(super) mbps: f64,
    /// From the slave's TCP connect returning to its first stored byte.
    pub(super) first_byte: Duration,
    /// From starting the slave's driver (thread, runtime, dial) to its first stored byte.
    pub(super) start_to_first_byte: Duration,
    pub(super) cpu_master: f64,
    pub(super) cpu_slave: f64,
}

/// The row of the run with the median throughput, its other figures kept with it.
pub(super) fn median_row(mut runs: Vec<Throughput>) -> Throughput {
    runs.sort_by(|a, b| a.mbps.total_cmp(&b.mbps));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

#[allow(clippy::too_many_arguments)] // each is one of the run's settings
pub(super) fn replicate(
    transport: Transport,
    config: Config,
    protocol: ProtocolArg,
    source: &FileLogReader,
    total: u64,
    dir: &Path,
    slot: usize,
    sendfile: bool,
) -> Result<Throughput, Failure> {
    let what = format!("replication over {transport}");
    let prefix = Prefix {
        log: source.clone(),
        end: source.min_offset() + total,
    };
    let master = match protocol {
        ProtocolArg::Classic => MasterHandle::new(prefix.clone(), config),
        ProtocolArg::Autoswitch => {
            // The generated log is all epoch 1's.
            let history = EpochList::from_entries([EpochEntry::new(1, source.min_offset())])
                .context("the benchmark's epoch history")?;
            let options = AutoSwitchMaster::new(1, 1).history(history);
            MasterHandle::autoswitch(prefix.clone(), config, options)
                .context("taking the master role")?
        }
    };
    master.set_send_from_files(sendfile);
    let server = transport
        .spawn_master(loopback_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let store = dir.join(format!("slave-{slot}"));
    let slave_log = FileLog::create(&store, source.segment_size())
        .context(format_args!("creating {}", store.display()))?;
    let slave = match protocol {
        ProtocolArg::Classic => SlaveHandle::new(addr, slave_log, config),
        ProtocolArg::Autoswitch => SlaveHandle::autoswitch(
            &addr.to_string(),
            slave_log,
            config,
            AutoSwitchSlave::new(2, 1),
        )
        .context("taking the slave role")?,
    };

    let cpu_before = ThreadTimes::now();
    let started = Instant::now();
    let client = transport
        .spawn_slave(slave.clone())
        .context("starting the slave")?;
    let end = prefix.max_offset();
    // The slave's driver stamps both instants itself: this thread may wake late while master
    // and slave keep both CPUs busy.
    slave.wait_until_blocking(started + PHASE_LIMIT, |s| {
        s.status().first_stored_at.is_some()
    });
    let status = slave.status();
    let stored_first = status.first_stored_at.unwrap_or_else(Instant::now);
    let start_to_first_byte = stored_first.saturating_duration_since(started);
    let first_byte = status.connected_at.map_or(start_to_first_byte, |at| {
        stored_first.saturating_duration_since(at)
    });
    poll_until(&what, &[&server, &client], || {
        slave.log().max_offset() >= end
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = ThreadTimes::now().since(&cpu_before);
    client.shutdown().context("stopping the slave")?;
    server.shutdown().context("stopping the master")?;

    let comparison = compare_logs(&prefix, &*slave.log().read()).context("comparing the stores")?;
    if !comparison.identical() {
        return Err(Failure(format!(
            "{what}: the slave's store differs from the master's: {comparison:?}"
        )));
    }
    drop(slave);
    let _ = std::fs::remove_dir_all(&store);
    let gib = total as f64 / GIB;
    Ok(Throughput {
        transport,
        batch: u64::from(config.transfer_batch_size()),
        mbps: mb_per_s(total, elapsed),
        first_byte,
        start_to_first_byte,
        cpu_master: cpu.master_ns as f64 / 1e9 / gib,
        cpu_slave: cpu.slave_ns as f64 / 1e9 / gib,
    })
}
