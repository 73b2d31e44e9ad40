//! Fan-out: one master, N slaves spread over one thread per CPU.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rocketmq_ha::{Config, LogSource};
use rocketmq_ha_transports::file_log::{compare_logs, FileLog, FileLogReader};
use rocketmq_ha_transports::{MasterHandle, SlaveHandle, Transport};

use super::probe::ThreadTimes;
use super::{host_slaves, loopback_addr, median, Prefix, GIB, PHASE_LIMIT};
use crate::size::mb_per_s;
use crate::{Context, Failure};

pub(super) struct Fanout {
    pub(super) transport: Transport,
    pub(super) slaves: usize,
    /// CPU seconds per GiB moved (all slaves' bytes) of the master's and the slaves' threads.
    pub(super) cpu_master: f64,
    pub(super) cpu_slaves: f64,
    pub(super) aggregate: f64,
    pub(super) per_slave_median: f64,
    pub(super) per_slave_min: f64,
}

pub(super) fn fanout(
    transport: Transport,
    config: Config,
    count: usize,
    source: &FileLogReader,
    total: u64,
    dir: &Path,
) -> Result<Fanout, Failure> {
    let what = format!("fan-out to {count} slaves over {transport}");
    let per_slave = (total / count as u64).max(1);
    let prefix = Prefix {
        log: source.clone(),
        end: source.min_offset() + per_slave,
    };
    let end = prefix.max_offset();
    let master = MasterHandle::new(prefix.clone(), config);
    let server = transport
        .spawn_master(loopback_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let mut slaves = Vec::with_capacity(count);
    for i in 0..count {
        let store = dir.join(format!("fanout-{transport}-{count}-{i}"));
        let log = FileLog::create(&store, source.segment_size())
            .context(format_args!("creating {}", store.display()))?;
        slaves.push(SlaveHandle::new(addr, log, config));
    }
    let cpu_before = ThreadTimes::now();
    let started = Instant::now();
    // The slaves are spread over one thread per CPU (round robin), standing in for slaves on
    // machines of their own: on one thread they, not the master, were the limit.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut groups: Vec<Vec<SlaveHandle<FileLog>>> = vec![Vec::new(); cpus.min(count)];
    let threads = groups.len();
    for (i, slave) in slaves.iter().enumerate() {
        groups[i % threads].push(slave.clone());
    }
    let hosts = groups
        .into_iter()
        .map(|group| host_slaves(transport, group))
        .collect::<Result<Vec<_>, _>>()?;
    let mut done: Vec<Option<f64>> = vec![None; count];
    let limit = started + PHASE_LIMIT;
    while done.iter().any(Option::is_none) {
        for (slave, at) in slaves.iter().zip(&mut done) {
            if at.is_none() && slave.log().max_offset() >= end {
                *at = Some(started.elapsed().as_secs_f64());
            }
        }
        if hosts.iter().any(|h| h.is_finished()) || server.is_finished() || Instant::now() > limit {
            return Err(Failure(format!("{what}: did not complete")));
        }
        thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = ThreadTimes::now().since(&cpu_before);
    for slave in &slaves {
        slave.shutdown();
    }
    for host in hosts {
        host.join()
            .map_err(|_| Failure("a slaves' thread panicked".into()))?;
    }
    server.shutdown().context("stopping the master")?;
    for slave in &slaves {
        let comparison =
            compare_logs(&prefix, &*slave.log().read()).context("comparing the stores")?;
        if !comparison.identical() {
            return Err(Failure(format!("{what}: a store differs: {comparison:?}")));
        }
    }
    drop(slaves);
    for i in 0..count {
        let _ = std::fs::remove_dir_all(dir.join(format!("fanout-{transport}-{count}-{i}")));
    }
    let mut per: Vec<f64> = done
        .iter()
        .map(|t| mb_per_s(per_slave, t.unwrap_or(elapsed)))
        .collect();
    let min = per.iter().copied().fold(f64::INFINITY, f64::min);
    let gib = (per_slave * count as u64) as f64 / GIB;
    Ok(Fanout {
        transport,
        slaves: count,
        cpu_master: cpu.master_ns as f64 / 1e9 / gib,
        cpu_slaves: cpu.slave_ns as f64 / 1e9 / gib,
        aggregate: mb_per_s(per_slave * count as u64, elapsed),
        per_slave_median: median(&mut per),
        per_slave_min: min,
    })
}
