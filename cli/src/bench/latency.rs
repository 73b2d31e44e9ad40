//! Sync-replication latency: `SYNC_MASTER` puts, one at a time, against a slave in a child
//! process.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_ha::Config;
use rocketmq_ha_transports::file_log::{compare_logs, FileLog};
use rocketmq_ha_transports::{AutoSwitchMaster, MasterHandle, Transport};

use super::{poll_until, Peers};
use crate::protocol::ProtocolArg;
use crate::size::Size;
use crate::{Context, Failure, Generator};

pub(super) struct Latency {
    pub(super) transport: Transport,
    pub(super) size: u64,
    /// p50, p90, p99, p99.9 in microseconds.
    pub(super) percentiles: [f64; 4],
}

#[allow(clippy::too_many_arguments)] // each is one of the run's settings
pub(super) fn sync_latency(
    transport: Transport,
    config: Config,
    protocol: ProtocolArg,
    sizes: &[Size],
    messages: usize,
    segment: u64,
    dir: &Path,
    peers: &Peers,
) -> Result<Vec<Latency>, Failure> {
    let stores = (
        dir.join(format!("sync-master-{transport}")),
        dir.join(format!("sync-slave-{transport}")),
    );
    let log = FileLog::create(&stores.0, segment).context("creating the sync master store")?;
    let master = match protocol {
        ProtocolArg::Classic => MasterHandle::new(log, config),
        ProtocolArg::Autoswitch => {
            MasterHandle::autoswitch(log, config, AutoSwitchMaster::new(1, 1))
                .context("taking the master role")?
        }
    };
    let server = transport
        .spawn_master(peers.bind_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    // The slave is another process, as in a deployment: the two sides share no allocator, no
    // locks and no async reactor (async-io's is per process), and the slave's thread competes
    // with the master's only for the CPU.
    let mut child = Child(
        peers
            .command()?
            .args(["slave", "--master", &addr.to_string(), "--transport"])
            .arg(transport.name())
            .arg("--store")
            .arg(&stores.1)
            .args(["--segment-size", &segment.to_string()])
            .args(match protocol {
                ProtocolArg::Classic => &[][..],
                ProtocolArg::Autoswitch => &[
                    "--protocol",
                    "autoswitch",
                    "--broker-id",
                    "2",
                    "--epoch",
                    "1",
                ][..],
            })
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the slave process")?,
    );
    let timeout = Duration::from_secs(10);
    let what = format!("sync latency over {transport}");
    poll_until(&what, &[&server], || {
        master.slaves().iter().any(|s| s.acked.is_some()) || child.exited()
    })?;
    if child.exited() {
        return Err(Failure(format!("{what}: the slave process exited")));
    }

    let mut generator = Generator::new(0x5_1A7E);
    let put = |message: &Bytes| -> Result<Duration, Failure> {
        let started = Instant::now();
        master
            .append_replicated_blocking(message.clone(), 1, timeout)
            .context(format_args!("{what}: a sync put"))?;
        Ok(started.elapsed())
    };
    // Warm up the connection, the page cache and the branch predictors.
    let warm = generator.bytes(1024);
    for _ in 0..messages.clamp(10, 500) {
        put(&warm)?;
    }
    let mut rows = Vec::new();
    for size in sizes {
        let message = generator.bytes(size.0.max(1));
        let mut micros: Vec<f64> = (0..messages)
            .map(|_| put(&message).map(|d| d.as_secs_f64() * 1e6))
            .collect::<Result<_, _>>()?;
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
        rows.push(Latency {
            transport,
            size: size.0.max(1),
            percentiles: [at(0.50), at(0.90), at(0.99), at(0.999)],
        });
    }
    drop(child);
    server.shutdown().context("stopping the master")?;
    // The killed slave's bytes are in its files (the page cache survives the process).
    let slave_log = FileLog::open(&stores.1, segment).context("opening the slave's store")?;
    let comparison = compare_logs(&slave_log, &*master.log().read()).context("comparing")?;
    if !comparison.identical() {
        return Err(Failure(format!("{what}: stores differ: {comparison:?}")));
    }
    drop((master, slave_log));
    let _ = std::fs::remove_dir_all(&stores.0);
    let _ = std::fs::remove_dir_all(&stores.1);
    Ok(rows)
}

/// A child process, killed (and reaped) when dropped.
pub(super) struct Child(pub(super) std::process::Child);

impl Child {
    pub(super) fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
