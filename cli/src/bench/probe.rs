//! What the benchmark reads about its own process from `/proc` (Linux): resident memory, and CPU
//! time per thread so that master and slave threads running in one process can be told apart.
//!
//! Drivers name their threads: `Transport::spawn_master` runs the master on a thread named
//! `ha-master`, the blocking driver's per-connection threads are `ha-master-<peer>` (and the
//! scoped writer thread inherits that name, as Linux copies a thread's name to threads it
//! creates), and `Transport::spawn_slave` names its thread `ha-slave`. The name prefix says which
//! side a thread works for.

use std::collections::HashMap;
use std::fs;

/// Which side of the replication a thread works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Master,
    Slave,
    Other,
}

fn side_of(name: &str) -> Side {
    if name.starts_with("ha-master") {
        Side::Master
    } else if name.starts_with("ha-slave") {
        Side::Slave
    } else {
        Side::Other
    }
}

/// CPU time consumed so far by each live thread of this process, by thread id.
pub struct ThreadTimes(HashMap<u64, (Side, u64)>);

/// Nanoseconds of CPU (user + system) per side between two snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub master_ns: u64,
    pub slave_ns: u64,
}

impl ThreadTimes {
    /// Reads every thread's CPU time. `/proc/self/task/<tid>/schedstat` gives nanoseconds on CPU
    /// (user and system together, the scheduler's own accounting); where it is missing, the
    /// `utime + stime` clock ticks of `stat` are used (10 ms resolution).
    pub fn now() -> ThreadTimes {
        let mut threads = HashMap::new();
        let Ok(tasks) = fs::read_dir("/proc/self/task") else {
            return ThreadTimes(threads);
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let dir = task.path();
            let name = fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let ns = fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .or_else(|| {
                    let stat = fs::read_to_string(dir.join("stat")).ok()?;
                    // The name (field 2) may hold spaces and parentheses: fields are counted
                    // after its closing parenthesis. utime and stime are fields 14 and 15.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    let mut fields = rest.split_whitespace().skip(11);
                    let utime: u64 = fields.next()?.parse().ok()?;
                    let stime: u64 = fields.next()?.parse().ok()?;
                    // USER_HZ is 100 on every Linux ABI that exposes /proc.
                    Some((utime + stime) * 10_000_000)
                })
                .unwrap_or(0);
            threads.insert(tid, (side_of(name.trim_end()), ns));
        }
        ThreadTimes(threads)
    }

    /// CPU used per side since `earlier`, by threads alive now (threads born since count from
    /// zero). Take this snapshot before the drivers stop, as exited threads are gone from /proc.
    pub fn since(&self, earlier: &ThreadTimes) -> CpuSplit {
        let mut split = CpuSplit::default();
        for (tid, &(side, ns)) in &self.0 {
            let before = earlier.0.get(tid).map_or(0, |&(_, ns)| ns);
            let used = ns.saturating_sub(before);
            match side {
                Side::Master => split.master_ns += used,
                Side::Slave => split.slave_ns += used,
                Side::Other => {}
            }
        }
        split
    }
}

/// This process's resident set size in bytes (`VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The machine, for the report: CPU count, CPU model, kernel release, load average.
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
    pub load: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpus,
            model,
            kernel,
            load: load_average(),
        }
    }
}

/// The 1-, 5- and 15-minute load averages, as `uptime` shows them.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
