//! `--metrics ADDR`: Prometheus metrics over HTTP (`GET /metrics`), served by one small thread
//! with std sockets (a scrape every few seconds needs no HTTP framework).
//!
//! Figures are read from the master's or slave's handle at each scrape, so they are as fresh
//! as the scrape; counts the handles do not keep (synchronous appends and their latency) are
//! recorded by the program as they happen. Every name starts with `rocketmq_ha_`; the list
//! and what each means is in `docs/operations.md`.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rocketmq_ha::{LogSource, SyncError, Traffic};
use rocketmq_ha_transports::{CloseReason, MasterHandle, SlaveHandle};

/// A label set: `(name, value)` pairs.
type Labels = Vec<(&'static str, String)>;

fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

/// Raises `counter` to `value`, a total kept elsewhere (a handle's count): counters only go up.
fn raise(counter: &Counter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Bytes and frames each way, as counters labelled `direction="sent"|"received"` (plus any
/// labels of the family, e.g. the slave).
struct TrafficMetrics {
    bytes: Family<Labels, Counter>,
    frames: Family<Labels, Counter>,
}

impl TrafficMetrics {
    fn register(registry: &mut Registry, prefix: &str, whose: &str) -> Self {
        let metrics = TrafficMetrics {
            bytes: Family::default(),
            frames: Family::default(),
        };
        registry.register(
            format!("{prefix}bytes"),
            format!("Bytes {whose}, by direction (sent, received)"),
            metrics.bytes.clone(),
        );
        registry.register(
            format!("{prefix}frames"),
            format!(
                "Whole frames {whose}, by direction: transfer frames (heartbeats included) and \
                 8-byte offset reports"
            ),
            metrics.frames.clone(),
        );
        metrics
    }

    fn set(&self, mut labels: Labels, t: Traffic) {
        labels.push(("direction", String::new()));
        let last = labels.len() - 1;
        for (direction, bytes, frames) in [
            ("sent", t.bytes_out, t.frames_out),
            ("received", t.bytes_in, t.frames_in),
        ] {
            labels[last].1 = direction.to_owned();
            raise(&self.bytes.get_or_create(&labels), bytes);
            raise(&self.frames.get_or_create(&labels), frames);
        }
    }

    fn remove(&self, mut labels: Labels) {
        labels.push(("direction", String::new()));
        let last = labels.len() - 1;
        for direction in ["sent", "received"] {
            labels[last].1 = direction.to_owned();
            self.bytes.remove(&labels);
            self.frames.remove(&labels);
        }
    }
}

/// The `result` labels of `rocketmq_ha_sync_waits_total`.
const SYNC_OUTCOMES: [&str; 5] = [
    "ok",
    "timeout",
    "shutdown",
    "slave_not_available",
    "not_enough_in_sync",
];

/// AutoSwitch figures: the epoch and the confirm offset. Registered always (one list of names
/// for the docs), with no series for the classic protocol.
struct AutoSwitchMetrics {
    epoch: Family<Labels, Gauge>,
    confirm: Family<Labels, Gauge>,
}

impl AutoSwitchMetrics {
    fn register(registry: &mut Registry, whose: &str) -> Self {
        let metrics = AutoSwitchMetrics {
            epoch: Family::default(),
            confirm: Family::default(),
        };
        registry.register(
            "epoch",
            format!(
                "AutoSwitch: the last epoch of {whose} history (absent for the classic protocol)"
            ),
            metrics.epoch.clone(),
        );
        registry.register(
            "confirm_offset",
            format!(
                "AutoSwitch: the confirm offset {whose} side knows, below which every member of \
                 the sync-state set has the log (absent before there is one)"
            ),
            metrics.confirm.clone(),
        );
        metrics
    }

    fn set(&self, epoch: Option<i32>, confirm: Option<u64>) {
        if let Some(epoch) = epoch {
            self.epoch.get_or_create(&Vec::new()).set(i64::from(epoch));
        }
        if let Some(confirm) = confirm {
            self.confirm.get_or_create(&Vec::new()).set(gauge(confirm));
        }
    }
}

/// The master's metrics.
pub struct MasterMetrics {
    registry: Registry,
    log_end: Gauge,
    slaves: Gauge,
    in_sync: Gauge,
    accepted: Counter,
    closes: Family<Labels, Counter>,
    acked: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
    per_slave: TrafficMetrics,
    traffic: TrafficMetrics,
    sync_waits: Family<Labels, Counter>,
    sync_seconds: Histogram,
    pending_sync: Gauge,
    autoswitch: AutoSwitchMetrics,
    sync_state_set: Family<Labels, Gauge>,
    /// The slaves with series now, to remove those of slaves that left.
    listed: Mutex<BTreeSet<String>>,
}

impl MasterMetrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rocketmq_ha");
        let m = MasterMetrics {
            log_end: Gauge::default(),
            slaves: Gauge::default(),
            in_sync: Gauge::default(),
            accepted: Counter::default(),
            closes: Family::default(),
            acked: Family::default(),
            lag: Family::default(),
            per_slave: TrafficMetrics::register(
                &mut registry,
                "slave_",
                "on the slave's current connection",
            ),
            traffic: TrafficMetrics::register(&mut registry, "", "over all connections"),
            sync_waits: Family::default(),
            // 100 us to about 6.5 s: a SYNC_MASTER wait lasts a round trip on a LAN, up to
            // slaveTimeout (3 s) when no slave answers.
            sync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            pending_sync: Gauge::default(),
            autoswitch: AutoSwitchMetrics::register(&mut registry, "the master's"),
            sync_state_set: Family::default(),
            registry: Registry::default(),
            listed: Mutex::new(BTreeSet::new()),
        };
        let r = &mut registry;
        r.register(
            "log_end_offset",
            "Where the master's commit log ends",
            m.log_end.clone(),
        );
        r.register("slaves", "Connected slaves", m.slaves.clone());
        r.register(
            "in_sync_slaves",
            "Slaves whose ack is less than haMaxGapNotInSync behind the log's end (RocketMQ 5's \
             in-sync replicas less the master)",
            m.in_sync.clone(),
        );
        r.register(
            "connections_accepted",
            "Slave connections accepted",
            m.accepted.clone(),
        );
        r.register(
            "closes",
            "Slave connections closed, by reason (peer_closed and shutdown are normal)",
            m.closes.clone(),
        );
        r.register(
            "slave_acked_offset",
            "The offset each slave last acknowledged (absent until its first report)",
            m.acked.clone(),
        );
        r.register(
            "slave_lag_bytes",
            "How far each slave's ack is behind the log's end (absent until its first report)",
            m.lag.clone(),
        );
        r.register(
            "sync_waits",
            "Synchronous appends by outcome (ok, timeout, shutdown, slave_not_available, \
             not_enough_in_sync)",
            m.sync_waits.clone(),
        );
        r.register(
            "sync_wait_seconds",
            "How long synchronous appends waited for their acks, whatever the outcome",
            m.sync_seconds.clone(),
        );
        r.register(
            "pending_sync_waits",
            "Synchronous appends waiting for acks now",
            m.pending_sync.clone(),
        );
        r.register(
            "sync_state_set_size",
            "AutoSwitch: members of the sync-state set, the master included (absent for the \
             classic protocol)",
            m.sync_state_set.clone(),
        );
        for reason in CloseReason::ALL {
            drop(m.closes.get_or_create(&label("reason", reason.label())));
        }
        // Every series from the start, so that rates and alerts work before the first event.
        for outcome in SYNC_OUTCOMES {
            drop(m.sync_waits.get_or_create(&label("result", outcome)));
        }
        MasterMetrics { registry, ..m }
    }

    /// Records one synchronous append's outcome and how long it waited.
    pub fn observe_sync(&self, result: &Result<(), SyncError>, waited: Duration) {
        let outcome = match result {
            Ok(()) => SYNC_OUTCOMES[0],
            Err(SyncError::Timeout) => SYNC_OUTCOMES[1],
            Err(SyncError::Shutdown) => SYNC_OUTCOMES[2],
            Err(SyncError::SlaveNotAvailable) => SYNC_OUTCOMES[3],
            Err(SyncError::NotEnoughInSync { .. }) => SYNC_OUTCOMES[4],
            Err(_) => "other",
        };
        self.sync_waits
            .get_or_create(&label("result", outcome))
            .inc();
        self.sync_seconds.observe(waited.as_secs_f64());
    }

    /// The metrics as of now, in Prometheus' text format.
    pub fn render<L: LogSource>(&self, master: &MasterHandle<L>) -> String {
        let end = master.log().max_offset();
        let slaves = master.slaves();
        let totals = master.totals();
        self.log_end.set(gauge(end));
        self.slaves.set(gauge(slaves.len() as u64));
        self.in_sync.set(gauge(master.in_sync_count() as u64));
        self.pending_sync.set(gauge(master.pending_waits() as u64));
        self.autoswitch.set(master.epoch(), master.confirm_offset());
        if let Some(members) = master.sync_state_members() {
            self.sync_state_set
                .get_or_create(&Vec::new())
                .set(gauge(members.len() as u64));
        }
        raise(&self.accepted, totals.accepted);
        for (reason, n) in &totals.closes {
            raise(
                &self.closes.get_or_create(&label("reason", reason.label())),
                *n,
            );
        }
        self.traffic.set(Vec::new(), totals.traffic);
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        let mut now = BTreeSet::new();
        for slave in &slaves {
            let name = slave.peer.to_string();
            let labels = label("slave", name.clone());
            if let Some(acked) = slave.acked {
                self.acked.get_or_create(&labels).set(gauge(acked));
                self.lag
                    .get_or_create(&labels)
                    .set(gauge(end.saturating_sub(acked)));
            }
            self.per_slave.set(labels, slave.traffic);
            now.insert(name);
        }
        for gone in listed.difference(&now) {
            let labels = label("slave", gone.clone());
            self.acked.remove(&labels);
            self.lag.remove(&labels);
            self.per_slave.remove(labels);
        }
        *listed = now;
        drop(listed);
        encode(&self.registry)
    }
}

/// The slave's metrics.
pub struct SlaveMetrics {
    registry: Registry,
    log_end: Gauge,
    connected: Gauge,
    connections: Counter,
    reconnects: Counter,
    closes: Family<Labels, Counter>,
    traffic: TrafficMetrics,
    autoswitch: AutoSwitchMetrics,
}

impl SlaveMetrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rocketmq_ha");
        let m = SlaveMetrics {
            log_end: Gauge::default(),
            connected: Gauge::default(),
            connections: Counter::default(),
            reconnects: Counter::default(),
            closes: Family::default(),
            traffic: TrafficMetrics::register(&mut registry, "", "over all connections"),
            autoswitch: AutoSwitchMetrics::register(&mut registry, "the slave's"),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "log_end_offset",
            "Where the slave's commit log ends (what it has stored and reports)",
            m.log_end.clone(),
        );
        r.register(
            "connected",
            "1 while connected to the master",
            m.connected.clone(),
        );
        r.register(
            "connections",
            "Connections to the master established",
            m.connections.clone(),
        );
        r.register(
            "reconnects",
            "Connections established after the first",
            m.reconnects.clone(),
        );
        r.register(
            "closes",
            "Connections and dials that ended, by reason (peer_closed: the master closed it)",
            m.closes.clone(),
        );
        for reason in CloseReason::ALL {
            drop(m.closes.get_or_create(&label("reason", reason.label())));
        }
        SlaveMetrics { registry, ..m }
    }

    /// Counts a connection or dial that ended with `reason` (the handle keeps the errors only
    /// until they are taken; the program passes each here as it takes it).
    pub fn closed(&self, reason: CloseReason) {
        self.closes
            .get_or_create(&label("reason", reason.label()))
            .inc();
    }

    /// The metrics as of now, in Prometheus' text format.
    pub fn render<L: LogSource>(&self, slave: &SlaveHandle<L>) -> String {
        let status = slave.status();
        self.log_end.set(gauge(slave.log().max_offset()));
        self.connected.set(i64::from(status.connected));
        raise(&self.connections, status.connections);
        raise(&self.reconnects, status.connections.saturating_sub(1));
        raise(
            &self
                .closes
                .get_or_create(&label("reason", CloseReason::PeerClosed.label())),
            status.closed_by_master,
        );
        self.traffic.set(Vec::new(), status.traffic);
        self.autoswitch.set(status.epoch, status.confirm_offset);
        encode(&self.registry)
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut text, registry);
    text
}

/// Serves `render()`'s text on `addr` from a thread of its own, for the life of the process;
/// returns the address bound (`:0` picks a port).
pub fn serve(
    addr: SocketAddr,
    render: impl Fn() -> String + Send + 'static,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &render) {
                    tracing::debug!("metrics request: {e}");
                }
            }
        })?;
    Ok(bound)
}

/// Answers one HTTP/1.x request and closes the connection.
fn answer(stream: TcpStream, render: &impl Fn() -> String) -> io::Result<()> {
    // A client that sends nothing must not hold the only serving thread.
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Headers are not needed; read them so the client sees a clean close.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 && line.len() < 64 * 1024 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics" | "/") => ("200 OK", prometheus_text::CONTENT_TYPE, render()),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use std::time::{Duration, Instant};

    use rocketmq_ha::{Config, MemoryLog};
    use rocketmq_ha_transports::{
        AutoSwitchMaster, AutoSwitchSlave, MasterHandle, SlaveHandle, Transport,
    };

    use super::{MasterMetrics, SlaveMetrics};

    /// The metric names `docs/operations.md` lists in its table for one side (the rows after
    /// `heading`, up to the next blank-line paragraph that is no table).
    fn documented(heading: &str) -> BTreeSet<String> {
        let docs = include_str!("../../docs/operations.md");
        let table = docs.split(heading).nth(1).expect("the heading");
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter(|l| l.starts_with("| `rocketmq_ha_"))
            .flat_map(|l| {
                let first = l.split(" | ").next().unwrap_or("");
                first
                    .split('`')
                    .filter(|part| part.starts_with("rocketmq_ha_"))
                    .map(|name| name.split('{').next().unwrap_or(name).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The metric names in a scrape (`# TYPE` lines).
    fn exported(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    /// Master and slave over loopback, the slave connected and reported (so that the per-slave
    /// series exist too); the metrics each exports.
    fn exported_by_pair(autoswitch: bool) -> (BTreeSet<String>, BTreeSet<String>) {
        let config = Config::default();
        let (master, slave) = match autoswitch {
            false => (MasterHandle::new(MemoryLog::new(1 << 20), config), None),
            true => {
                let log = MemoryLog::new(1 << 20);
                let master = MasterHandle::autoswitch(log, config, AutoSwitchMaster::new(1, 1));
                (master.unwrap(), Some(AutoSwitchSlave::new(2, 1)))
            }
        };
        let server = Transport::Blocking
            .spawn_master("127.0.0.1:0".parse().unwrap(), master.clone())
            .unwrap();
        let addr = server.local_addr().unwrap();
        let slave = match slave {
            None => SlaveHandle::new(addr, MemoryLog::new(1 << 20), config),
            Some(options) => {
                let log = MemoryLog::new(1 << 20);
                SlaveHandle::autoswitch(&addr.to_string(), log, config, options).unwrap()
            }
        };
        let client = Transport::Blocking.spawn_slave(slave.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(
            master.wait_until_blocking(deadline, |m| m.slaves().iter().any(|s| s.acked.is_some()))
        );
        if autoswitch {
            assert!(slave.wait_until_blocking(deadline, |s| s.status().confirm_offset.is_some()));
        }
        let exported = (
            exported(&MasterMetrics::new().render(&master)),
            exported(&SlaveMetrics::new().render(&slave)),
        );
        client.shutdown().unwrap();
        server.shutdown().unwrap();
        exported
    }

    #[test]
    fn every_metric_is_documented_and_every_documented_metric_exists() {
        let (master, slave) = exported_by_pair(false);
        let (as_master, as_slave) = exported_by_pair(true);
        // The AutoSwitch figures are absent for the classic protocol, not zero.
        assert!(!master.contains("rocketmq_ha_epoch"), "{master:?}");
        assert!(!slave.contains("rocketmq_ha_confirm_offset"), "{slave:?}");
        assert!(master.is_subset(&as_master) && slave.is_subset(&as_slave));
        assert_eq!(as_master, documented("\nMaster:\n"));
        assert_eq!(as_slave, documented("\nSlave:\n"));
    }
}
