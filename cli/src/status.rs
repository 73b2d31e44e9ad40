//! What the master and the slave print while they run, on stdout: one summary line per
//! `--status-interval` (`--status text`, the default), or one JSON object per line
//! (`--status json`) for scripts: a `status` object per interval and one per change (a slave
//! connected, reported its offset, closed).
//!
//! In text mode changes are not repeated here: the library logs each one (stderr, `info` or
//! `warn`) with its reason, so the summary line is the only thing printed per interval however
//! many slaves there are.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use rocketmq_ha::{ConnectionId, LogSource};
use rocketmq_ha_transports::{ClosedConnection, MasterHandle, SlaveHandle};
use serde_json::{json, Value};

use crate::progress::Rate;
use crate::size::Human;

/// How status is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// One summary line per interval.
    #[default]
    Text,
    /// One JSON object per line: `"type": "status"` per interval, `"connected"`, `"started"`
    /// and `"closed"` as they happen.
    Json,
}

/// Milliseconds since the Unix epoch, for JSON lines.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Prints one JSON object with `type` and `time_ms` added.
fn emit(kind: &str, mut object: Value) {
    if let Value::Object(map) = &mut object {
        map.insert("type".into(), kind.into());
        map.insert("time_ms".into(), unix_ms().into());
    }
    println!("{object}");
}

/// Synchronous appends so far (`--sync`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncCounts {
    /// Acknowledged in time.
    pub ok: u64,
    /// Timed out, refused by the policy, or failed by a shutdown.
    pub failed: u64,
}

/// The master's status printer.
pub struct MasterStatus {
    format: StatusFormat,
    started: Instant,
    rates: HashMap<ConnectionId, Rate>,
    /// Slaves seen so far, and whether their first report was announced (JSON changes).
    known: BTreeMap<ConnectionId, bool>,
}

impl MasterStatus {
    /// A printer whose elapsed times count from now.
    pub fn new(format: StatusFormat) -> Self {
        MasterStatus {
            format,
            started: Instant::now(),
            rates: HashMap::new(),
            known: BTreeMap::new(),
        }
    }

    /// Prints what changed since the last call (JSON only): connects, first reports, and the
    /// connections in `closed`.
    pub fn changes<L>(&mut self, master: &MasterHandle<L>, closed: &[ClosedConnection]) {
        if self.format != StatusFormat::Json {
            return;
        }
        for slave in master.slaves() {
            let announced = self.known.entry(slave.id).or_insert_with(|| {
                emit(
                    "connected",
                    json!({"id": slave.id.get(), "peer": slave.peer.to_string()}),
                );
                false
            });
            if let (false, Some(requested)) = (*announced, slave.requested) {
                *announced = true;
                emit(
                    "started",
                    json!({"id": slave.id.get(), "peer": slave.peer.to_string(),
                           "requested": requested}),
                );
            }
        }
        for c in closed {
            self.known.remove(&c.id);
            emit(
                "closed",
                json!({"id": c.id.get(), "peer": c.peer.to_string(),
                       "reason": c.reason.label(), "error": c.error.as_ref().map(|e| e.to_string()),
                       "bytes_sent": c.traffic.bytes_out, "bytes_received": c.traffic.bytes_in}),
            );
        }
    }

    /// Prints the summary of this interval.
    pub fn report<L: LogSource>(&mut self, master: &MasterHandle<L>, sync: Option<SyncCounts>) {
        let end = master.log().max_offset();
        let slaves = master.slaves();
        let in_sync = master.in_sync_count();
        self.rates
            .retain(|id, _| slaves.iter().any(|s| s.id == *id));
        let mut rate = 0.0;
        let mut listed = Vec::new();
        for slave in &slaves {
            let r = match slave.acked {
                Some(acked) => self
                    .rates
                    .entry(slave.id)
                    .or_insert_with(|| Rate::new(Duration::from_secs(5), acked))
                    .sample(acked),
                None => 0.0,
            };
            rate += r;
            listed.push(json!({
                "id": slave.id.get(),
                "peer": slave.peer.to_string(),
                "reported": slave.acked.is_some(),
                "requested": slave.requested,
                "acked": slave.acked,
                "lag": slave.acked.map(|a| end.saturating_sub(a)),
                "mb_per_s": (r * 10.0).round() / 10.0,
                "connected_s": slave.connected_at.elapsed().as_secs(),
                "bytes_sent": slave.traffic.bytes_out,
                "frames_sent": slave.traffic.frames_out,
                "bytes_received": slave.traffic.bytes_in,
                "frames_received": slave.traffic.frames_in,
                "broker_id": slave.broker_id,
            }));
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        if self.format == StatusFormat::Json {
            let mut object = json!({
                "elapsed_s": (elapsed * 10.0).round() / 10.0,
                "log_end": end,
                "in_sync": in_sync,
                "slaves": listed,
            });
            if let (Some(sync), Value::Object(map)) = (sync, &mut object) {
                map.insert("sync_ok".into(), sync.ok.into());
                map.insert("sync_failed".into(), sync.failed.into());
            }
            if let (Some(epoch), Value::Object(map)) = (master.epoch(), &mut object) {
                map.insert("epoch".into(), epoch.into());
                map.insert("confirm_offset".into(), json!(master.confirm_offset()));
                map.insert("sync_state_set".into(), json!(master.sync_state_members()));
            }
            return emit("status", object);
        }
        let reported: Vec<u64> = slaves.iter().filter_map(|s| s.acked).collect();
        let waiting = slaves.len() - reported.len();
        let mut line = format!(
            "[{elapsed:7.1}s] log ends at {end} ({}); {} slave(s)",
            Human(end),
            slaves.len()
        );
        if waiting > 0 {
            // A connection that never reported has acknowledged nothing: it is not "lag".
            line += &format!(", {waiting} not yet reported");
        }
        if let Some(&slowest) = reported.iter().min() {
            line += &format!(
                "; slowest acked {slowest}, lag {}; {rate:.1} MB/s acked; {in_sync} in sync",
                Human(end.saturating_sub(slowest))
            );
        }
        // RocketMQ's start rule gives an empty slave the start of the master's last segment
        // (the machine decides it; `start` is its answer): while the log ends there, there is
        // nothing to send, which would otherwise look like a stuck slave.
        let starved: Vec<u64> = slaves
            .iter()
            .filter(|s| s.requested == Some(0))
            .filter_map(|s| s.start.filter(|&start| start >= end))
            .collect();
        if let Some(&start) = starved.iter().min() {
            line += &format!(
                "; {} empty slave(s) wait for the log to grow past {start}: an empty slave \
                 starts at the master's last segment, which holds nothing yet (master \
                 --from-oldest sends all it keeps)",
                starved.len()
            );
        }
        if let Some(sync) = sync {
            line += &format!(
                "; synchronous appends: {} acknowledged, {} not",
                sync.ok, sync.failed
            );
        }
        if let (Some(epoch), Some(members)) = (master.epoch(), master.sync_state_members()) {
            let confirm = master
                .confirm_offset()
                .map_or_else(|| "none yet".to_owned(), |c| c.to_string());
            line +=
                &format!("; epoch {epoch}, confirm offset {confirm}, sync-state set {members:?}");
        }
        println!("{line}");
    }
}

/// The slave's JSON status (`--status json`): the text form is the progress line.
pub struct SlaveStatusJson {
    connections: u64,
    connected: bool,
}

impl SlaveStatusJson {
    /// A printer that has announced nothing yet.
    pub fn new() -> Self {
        SlaveStatusJson {
            connections: 0,
            connected: false,
        }
    }

    /// Prints connects and closes since the last call: `errors` were taken from the handle.
    pub fn changes<L>(&mut self, slave: &SlaveHandle<L>, errors: &[(String, &'static str)]) {
        let status = slave.status();
        if status.connections > self.connections && status.connected {
            emit(
                "connected",
                json!({"master": slave.master().to_string(), "connection": status.connections}),
            );
        }
        for (error, reason) in errors {
            emit("closed", json!({"reason": reason, "error": error}));
        }
        if self.connected && !status.connected && errors.is_empty() {
            emit("closed", json!({"reason": "peer_closed", "error": null}));
        }
        self.connections = status.connections;
        self.connected = status.connected;
    }

    /// Prints the status of this interval; `state` is the progress line's wording.
    pub fn report<L: LogSource>(&self, slave: &SlaveHandle<L>, rate: f64, state: &str) {
        let status = slave.status();
        let end = slave.log().max_offset();
        emit(
            "status",
            json!({
                "master": slave.master().to_string(),
                "log_end": end,
                "connected": status.connected,
                "state": state,
                "mb_per_s": (rate * 10.0).round() / 10.0,
                "connections": status.connections,
                "failures": status.failures,
                "bytes_received": status.traffic.bytes_in,
                "frames_received": status.traffic.frames_in,
                "bytes_sent": status.traffic.bytes_out,
                "frames_sent": status.traffic.frames_out,
                "epoch": status.epoch,
                "confirm_offset": status.confirm_offset,
            }),
        );
    }
}
