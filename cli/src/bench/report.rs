//! The figures of one `bench` run, printed as tables or as one JSON object.

use super::fanout::Fanout;
use super::flow::Flow;
use super::json::Json;
use super::latency::Latency;
use super::memory::Memory;
use super::pingpong::PingPong;
use super::probe::Machine;
use super::throughput::Throughput;
use super::{median, BenchArgs};
use crate::size::Human;

const MIB: f64 = (1u64 << 20) as f64;

/// Everything measured, for printing.
pub(super) struct Results<'a> {
    pub(super) machine: Machine,
    pub(super) args: &'a BenchArgs,
    pub(super) loopbacks: Vec<(u64, f64)>,
    pub(super) reference: f64,
    pub(super) replication: Vec<Throughput>,
    pub(super) latencies: Vec<Latency>,
    pub(super) ping_pongs: Vec<PingPong>,
    pub(super) fanouts: Vec<Fanout>,
    pub(super) memory: Vec<Memory>,
    pub(super) flows: Vec<Flow>,
}

impl Results<'_> {
    /// The headline CPU figures: the first row (first batch size, first transport).
    fn cpu(&self) -> (f64, f64) {
        self.replication
            .first()
            .map_or((f64::NAN, f64::NAN), |r| (r.cpu_master, r.cpu_slave))
    }

    /// The headline memory figures: the worst over the transports measured.
    fn worst_memory(&self) -> (f64, f64) {
        self.memory.iter().fold((0.0, 0.0), |(m, s), row| {
            (f64::max(m, row.master), f64::max(s, row.slave))
        })
    }

    fn first_byte_median(&self) -> f64 {
        let mut us: Vec<f64> = self
            .replication
            .iter()
            .map(|r| r.first_byte.as_secs_f64() * 1e6)
            .collect();
        median(&mut us)
    }

    pub(super) fn print(&self) {
        let m = &self.machine;
        let a = self.args;
        println!(
            "rocketmq-ha bench: {} per run, {} segments, median of {} run(s)",
            Human(a.bytes.0),
            Human(a.segment_size.0),
            a.runs.max(1)
        );
        println!(
            "machine: {} CPUs, {}, Linux {}; load average at start {}",
            m.cpus, m.model, m.kernel, m.load
        );
        println!();
        if let Some(&(reference_write, _)) = self.loopbacks.first() {
            self.print_throughput(reference_write);
        }
        self.print_rest();
    }

    fn print_throughput(&self, reference_write: u64) {
        println!("loopback reference (plain TCP, 127.0.0.1, 256 KiB reads)");
        println!("  {:<12} {:>9}", "write size", "MB/s");
        for &(write, mbps) in &self.loopbacks {
            println!("  {:<12} {mbps:>9.0}", Human(write).to_string());
        }
        println!();
        println!(
            "replication master -> slave (fresh FileLog slave store, bytes verified); ratio to \
             the {} loopback row",
            Human(reference_write)
        );
        println!(
            "  {:<9} {:>9} {:>8} {:>8} {:>12} {:>15} {:>14}",
            "transport",
            "batch",
            "MB/s",
            "ratio",
            "first byte",
            "CPU master s/GiB",
            "CPU slave s/GiB"
        );
        for r in &self.replication {
            println!(
                "  {:<9} {:>9} {:>8.0} {:>7.0}% {:>9.0} us {:>15.3} {:>14.3}",
                r.transport.name(),
                Human(r.batch).to_string(),
                r.mbps,
                100.0 * r.mbps / self.reference,
                r.first_byte.as_secs_f64() * 1e6,
                r.cpu_master,
                r.cpu_slave
            );
        }
        println!();
    }

    fn print_rest(&self) {
        if !self.latencies.is_empty() {
            self.print_latency();
        }
        if !self.fanouts.is_empty() {
            self.print_fanout();
        }
        if !self.memory.is_empty() {
            self.print_memory();
        }
        if !self.flows.is_empty() {
            println!();
            println!("flow control (per-connection limit, Config::rate_limit; one slave)");
            println!(
                "  {:<10} {:>12} {:>12} {:>8} {:>8}",
                "transport", "limit MiB/s", "held MiB/s", "of limit", "window"
            );
            for f in &self.flows {
                println!(
                    "  {:<10} {:>12.1} {:>12.1} {:>7.1}% {:>7.1}s",
                    f.transport.name(),
                    f.limit as f64 / MIB,
                    f.held / MIB,
                    100.0 * f.held / f.limit as f64,
                    f.window.as_secs_f64()
                );
            }
        }
        if !self.replication.is_empty() {
            println!();
            println!(
                "time from a slave's connect to its first stored byte (median over the \
                 replication rows): {:.0} us",
                self.first_byte_median()
            );
        }
    }

    /// The ping-pong reference for `size`: p50 and p99.
    fn reference_for(&self, size: u64) -> Option<(f64, f64)> {
        self.ping_pongs
            .iter()
            .find(|p| p.size == size)
            .map(|p| (p.percentiles[0], p.percentiles[2]))
    }

    fn print_latency(&self) {
        if !self.ping_pongs.is_empty() {
            println!(
                "request/response reference (plain TCP ping-pong to a child process answering 8 \
                 bytes; same layout as below)"
            );
            println!(
                "  {:<9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "", "message", "p50 us", "p90 us", "p99 us", "p99.9 us"
            );
            for p in &self.ping_pongs {
                let [p50, p90, p99, p999] = p.percentiles;
                println!(
                    "  {:<9} {:>9} {p50:>9.0} {p90:>9.0} {p99:>9.0} {p999:>9.0}",
                    "ping-pong",
                    Human(p.size).to_string()
                );
            }
            println!();
        }
        println!(
            "sync replication latency (append, then wait for the slave's ack; {} messages per \
             size); ratios to the ping-pong of the same size",
            self.args.messages.max(1)
        );
        println!(
            "  {:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
            "transport", "message", "p50 us", "p90 us", "p99 us", "p99.9 us", "p50 x", "p99 x"
        );
        for l in &self.latencies {
            let [p50, p90, p99, p999] = l.percentiles;
            let (r50, r99) = self
                .reference_for(l.size)
                .map_or((f64::NAN, f64::NAN), |(a, b)| (p50 / a, p99 / b));
            println!(
                "  {:<9} {:>9} {p50:>9.0} {p90:>9.0} {p99:>9.0} {p999:>9.0} {r50:>8.1} {r99:>8.1}",
                l.transport.name(),
                Human(l.size).to_string()
            );
        }
        println!();
    }

    fn print_fanout(&self) {
        let a = self.args;
        println!(
            "fan-out (one master; the slaves spread over one thread per CPU; {} per case divided \
             among the slaves; median of {} run(s))",
            Human(a.fanout_bytes.0.min(a.bytes.0)),
            a.runs.max(1)
        );
        println!(
            "  {:<9} {:>7} {:>15} {:>22} {:>17} {:>16}",
            "transport",
            "slaves",
            "aggregate MB/s",
            "per slave MB/s med/min",
            "CPU master s/GiB",
            "CPU slaves s/GiB"
        );
        for f in &self.fanouts {
            println!(
                "  {:<9} {:>7} {:>15.0} {:>14.0} / {:<6.0} {:>17.3} {:>16.3}",
                f.transport.name(),
                f.slaves,
                f.aggregate,
                f.per_slave_median,
                f.per_slave_min,
                f.cpu_master,
                f.cpu_slaves
            );
        }
        println!();
    }

    fn print_memory(&self) {
        let n = self.args.idle_connections.max(1);
        println!(
            "memory per idle connection (VmRSS growth from {n} to {} connections, / {n})",
            2 * n
        );
        println!("  {:<9} {:>12} {:>12}", "transport", "master", "slave");
        for m in &self.memory {
            println!(
                "  {:<9} {:>12} {:>12}",
                m.transport.name(),
                Human(m.master as u64).to_string(),
                Human(m.slave as u64).to_string()
            );
        }
    }

    pub(super) fn json(&self) -> Json {
        let (cpu_master, cpu_slave) = self.cpu();
        let (mem_master, mem_slave) = self.worst_memory();
        let m = &self.machine;
        Json::obj([
            ("loopback_mbps", self.reference.into()),
            (
                "loopback",
                Json::List(
                    self.loopbacks
                        .iter()
                        .map(|&(write, mbps)| {
                            Json::obj([("write_size", write.into()), ("mbps", mbps.into())])
                        })
                        .collect(),
                ),
            ),
            (
                "replication",
                Json::List(
                    self.replication
                        .iter()
                        .map(|r| {
                            Json::obj([
                                ("transport", r.transport.name().into()),
                                ("batch_size", r.batch.into()),
                                ("mbps", r.mbps.into()),
                                ("ratio_to_loopback", (r.mbps / self.reference).into()),
                                ("first_byte_us", (r.first_byte.as_secs_f64() * 1e6).into()),
                                (
                                    "start_to_first_byte_us",
                                    (r.start_to_first_byte.as_secs_f64() * 1e6).into(),
                                ),
                                ("cpu_master_s_per_gib", r.cpu_master.into()),
                                ("cpu_slave_s_per_gib", r.cpu_slave.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "sync_latency_us",
                Json::List(
                    self.latencies
                        .iter()
                        .map(|l| {
                            let [p50, p90, p99, p999] = l.percentiles;
                            let (r50, r99) = self
                                .reference_for(l.size)
                                .map_or((f64::NAN, f64::NAN), |(a, b)| (p50 / a, p99 / b));
                            Json::obj([
                                ("transport", l.transport.name().into()),
                                ("message_size", l.size.into()),
                                ("p50", p50.into()),
                                ("p90", p90.into()),
                                ("p99", p99.into()),
                                ("p999", p999.into()),
                                ("p50_to_ping_pong", r50.into()),
                                ("p99_to_ping_pong", r99.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "ping_pong_us",
                Json::List(
                    self.ping_pongs
                        .iter()
                        .map(|p| {
                            let [p50, p90, p99, p999] = p.percentiles;
                            Json::obj([
                                ("message_size", p.size.into()),
                                ("p50", p50.into()),
                                ("p90", p90.into()),
                                ("p99", p99.into()),
                                ("p999", p999.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "fanout",
                Json::List(
                    self.fanouts
                        .iter()
                        .map(|f| {
                            Json::obj([
                                ("transport", f.transport.name().into()),
                                ("slaves", f.slaves.into()),
                                ("aggregate_mbps", f.aggregate.into()),
                                ("per_slave_mbps_median", f.per_slave_median.into()),
                                ("per_slave_mbps_min", f.per_slave_min.into()),
                                ("cpu_master_s_per_gib", f.cpu_master.into()),
                                ("cpu_slaves_s_per_gib", f.cpu_slaves.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "memory_per_connection_bytes",
                Json::obj([
                    ("master", mem_master.into()),
                    ("slave", mem_slave.into()),
                    (
                        "by_transport",
                        Json::List(
                            self.memory
                                .iter()
                                .map(|m| {
                                    Json::obj([
                                        ("transport", m.transport.name().into()),
                                        ("master", m.master.into()),
                                        ("slave", m.slave.into()),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                ]),
            ),
            (
                "flow_control",
                Json::List(
                    self.flows
                        .iter()
                        .map(|f| {
                            Json::obj([
                                ("transport", f.transport.name().into()),
                                ("limit_bytes_per_s", f.limit.into()),
                                ("held_bytes_per_s", f.held.into()),
                                ("window_s", f.window.as_secs_f64().into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "cpu_seconds_per_gib",
                Json::obj([("master", cpu_master.into()), ("slave", cpu_slave.into())]),
            ),
            ("first_data_byte_us", self.first_byte_median().into()),
            (
                "machine",
                Json::obj([
                    ("cpus", m.cpus.into()),
                    ("cpu_model", m.model.as_str().into()),
                    ("kernel", m.kernel.as_str().into()),
                    ("load_average", m.load.as_str().into()),
                ]),
            ),
        ])
    }
}
