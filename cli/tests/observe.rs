//! What an operator watches while master and slave run as processes: the Prometheus metrics
//! move with replication, status lines and JSON status say what is going on (a connection that
//! never reported is not "lag"), a slave that stops is a normal close, and SIGTERM / SIGINT end
//! everything cleanly (exit 0, stores synced, sync waits failed at once, demo stores removed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketmq_ha::LogSource;
use rocketmq_ha_transports::file_log::FileLog;

const BIN: &str = env!("CARGO_BIN_EXE_rocketmq-ha");

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory under the target directory, removed on drop.
struct TempStore(PathBuf);

impl TempStore {
    fn new(name: &str) -> TempStore {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "observe-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempStore(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process's stderr, read by a thread into a shared string.
#[derive(Clone)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn start(stderr: ChildStderr) -> Captured {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Captured(text)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until a line starts with `prefix`, and returns the word after it.
    fn word_after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.text();
            if let Some(word) = text
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return word.to_owned();
            }
            assert!(Instant::now() < deadline, "no {prefix:?} in:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the text contains `needle` (the reader thread may lag behind the process,
    /// even after it exited), and returns the text.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics_addr(&self) -> SocketAddr {
        let url = self.word_after("metrics on http://");
        url.trim_end_matches("/metrics")
            .parse()
            .expect("an address")
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to 30 s for `child` to exit; returns its exit code.
fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `GET /metrics`, the body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the sample `series` (name and labels exactly as printed), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("a number"))
    })
}

fn value(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

/// The series of `name` with one label `{label="..."}` whatever its value.
fn labelled(metrics: &str, name: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Master and slave as processes, each with `--metrics`: the figures move with replication
/// (acks, bytes and frames each way, sync waits and their latency, in-sync slaves); a slave that
/// stops is counted as a normal close, logged at info and not as a broken pipe; SIGTERM ends
/// both with exit 0 and synced stores.
#[test]
fn metrics_move_with_replication_and_sigterm_stops_master_and_slave_cleanly() {
    let master_store = TempStore::new("master");
    let slave_store = TempStore::new("slave");
    let mut master = KillOnDrop(
        Command::new(BIN)
            .args(["master", "--listen", "127.0.0.1:0", "--from-oldest"])
            .args(["--store", master_store.path(), "--segment-size", "1MiB"])
            .args([
                "--append-rate",
                "4MiB",
                "--sync",
                "--status-interval",
                "0.2",
            ])
            .args(["--metrics", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let master_err = Captured::start(master.0.stderr.take().unwrap());
    let master_metrics = master_err.metrics_addr();
    let addr = master_err.word_after("master listening on ");
    let mut slave = KillOnDrop(
        Command::new(BIN)
            .args(["slave", "--master", &addr, "--status", "json"])
            .args(["--store", slave_store.path(), "--segment-size", "1MiB"])
            .args(["--metrics", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let slave_err = Captured::start(slave.0.stderr.take().unwrap());
    let slave_metrics = slave_err.metrics_addr();

    let acked = r#"rocketmq_ha_sync_waits_total{result="ok"}"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let m = scrape(master_metrics);
        if sample(&m, acked).unwrap_or(0.0) >= 3.0 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no synchronous append acked:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(700));
    let second = scrape(master_metrics);
    for m in [&first, &second] {
        assert_eq!(value(m, "rocketmq_ha_slaves"), 1.0, "{m}");
        assert_eq!(value(m, "rocketmq_ha_connections_accepted_total"), 1.0);
        assert_eq!(value(m, "rocketmq_ha_in_sync_slaves"), 1.0, "{m}");
    }
    // Everything that counts replication moved between the two scrapes.
    for series in [
        r#"rocketmq_ha_bytes_total{direction="sent"}"#,
        r#"rocketmq_ha_frames_total{direction="sent"}"#,
        r#"rocketmq_ha_frames_total{direction="received"}"#,
        "rocketmq_ha_log_end_offset",
        "rocketmq_ha_sync_wait_seconds_count",
        acked,
    ] {
        assert!(
            value(&second, series) > value(&first, series),
            "{series} did not move:\n{first}\n{second}"
        );
    }
    let per_slave = |m: &str| labelled(m, "rocketmq_ha_slave_acked_offset");
    let (before, after) = (per_slave(&first), per_slave(&second));
    assert_eq!((before.len(), after.len()), (1, 1), "{second}");
    assert!(after[0].1 > before[0].1, "{before:?} {after:?}");
    assert!(value(&second, "rocketmq_ha_sync_wait_seconds_sum") > 0.0);
    assert_eq!(
        labelled(&second, "rocketmq_ha_slave_lag_bytes").len(),
        1,
        "{second}"
    );

    let s = scrape(slave_metrics);
    assert_eq!(value(&s, "rocketmq_ha_connected"), 1.0, "{s}");
    assert_eq!(value(&s, "rocketmq_ha_connections_total"), 1.0, "{s}");
    assert!(value(&s, r#"rocketmq_ha_bytes_total{direction="received"}"#) > 0.0);
    assert!(value(&s, "rocketmq_ha_log_end_offset") > 0.0);

    // The slave stops: exit 0, store synced, JSON status on stdout the whole time.
    signal(&slave.0, "TERM");
    assert_eq!(wait_exit(&mut slave.0), Some(0), "{}", slave_err.text());
    let mut out = String::new();
    slave
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut kinds = Vec::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let object: serde_json::Value = serde_json::from_str(line).expect(line);
        kinds.push(object["type"].as_str().expect("a type").to_owned());
    }
    assert!(kinds.contains(&"connected".to_owned()), "{out}");
    assert!(kinds.contains(&"status".to_owned()), "{out}");
    let log = FileLog::open(slave_store.path(), 1 << 20).unwrap();
    assert_eq!(log.synced_offset(), log.max_offset());
    assert!(log.max_offset() > 0);
    drop(log);

    // The master saw a normal close: counted as peer_closed, logged at info.
    let deadline = Instant::now() + Duration::from_secs(30);
    let closed = r#"rocketmq_ha_closes_total{reason="peer_closed"}"#;
    loop {
        let m = scrape(master_metrics);
        if value(&m, closed) == 1.0 {
            assert_eq!(value(&m, "rocketmq_ha_slaves"), 0.0, "{m}");
            assert!(per_slave(&m).is_empty(), "{m}");
            for (series, n) in labelled(&m, "rocketmq_ha_closes_total") {
                assert!(series == closed || n == 0.0, "{m}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "no close counted:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = master_err.wait_for("slave connection");
    let close = log
        .lines()
        .find(|l| l.contains("slave connection"))
        .unwrap_or_else(|| panic!("no close logged:\n{log}"));
    assert!(
        close.contains(" INFO ") && close.contains("closed by the peer"),
        "{close}"
    );
    assert!(!log.contains(" WARN "), "{log}");
    assert!(
        log.contains("transfer starts") && log.contains("requested=0"),
        "{log}"
    );

    signal(&master.0, "TERM");
    assert_eq!(wait_exit(&mut master.0), Some(0), "{}", master_err.text());
    let log = FileLog::open(master_store.path(), 1 << 20).unwrap();
    assert_eq!(log.synced_offset(), log.max_offset());
}

/// With no slave, each synchronous append waits up to 3 s (slaveTimeout); SIGTERM fails the
/// pending one with `Shutdown` at once and the master exits 0 with its store synced and
/// unlocked, well before the wait would have timed out.
#[test]
fn sigterm_fails_a_pending_sync_wait_at_once_and_exits_0() {
    let store = TempStore::new("sync-stop");
    let mut master = KillOnDrop(
        Command::new(BIN)
            .args(["master", "--listen", "127.0.0.1:0"])
            .args(["--store", store.path(), "--segment-size", "1MiB"])
            .args(["--append-rate", "1MiB", "--sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = Captured::start(master.0.stderr.take().unwrap());
    err.word_after("master listening on ");
    // The first append is made at once and then waits for a slave that never comes.
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    signal(&master.0, "TERM");
    assert_eq!(wait_exit(&mut master.0), Some(0), "{}", err.text());
    let took = signalled.elapsed();
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    err.wait_for("the master is stopping");
    err.wait_for("store synced up to offset");
    // The lock is released: the store opens.
    let log = FileLog::open(store.path(), 1 << 20).unwrap();
    assert_eq!(log.synced_offset(), log.max_offset());
    assert!(log.max_offset() > 0);
}

/// Ctrl-C on a demo removes its temporary stores.
#[test]
fn sigint_on_the_demo_removes_its_stores() {
    let tmp = TempStore::new("demo-tmp");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let mut demo = KillOnDrop(
        Command::new(BIN)
            .args(["demo", "--bytes", "8GiB", "--segment-size", "64MiB"])
            .env("TMPDIR", &tmp.0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = Captured::start(demo.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait until the master store has data on disk.
    loop {
        let stores: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().flatten().collect();
        let segments = stores
            .first()
            .and_then(|d| std::fs::read_dir(d.path().join("master/commitlog")).ok())
            .map_or(0, |files| files.count());
        if segments > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the demo never wrote its store");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&demo.0, "INT");
    assert_eq!(wait_exit(&mut demo.0), Some(1), "{}", err.text());
    err.wait_for("stopped by SIGINT");
    let left: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A connection that never sends its first report shows as not yet reported, never as
/// "acked 0" with a lag of the whole log; in JSON its `acked` and `lag` are null.
#[test]
fn a_connection_that_never_reported_is_not_lag() {
    for format in ["text", "json"] {
        let store = TempStore::new(&format!("silent-{format}"));
        {
            let mut log = FileLog::create(store.path(), 1 << 20).unwrap();
            log.append_at_end(&vec![7u8; 3 << 20]).unwrap();
            log.close().unwrap();
        }
        let mut master = KillOnDrop(
            Command::new(BIN)
                .args(["master", "--listen", "127.0.0.1:0", "--status", format])
                .args(["--store", store.path(), "--segment-size", "1MiB"])
                .args(["--status-interval", "0.1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let err = Captured::start(master.0.stderr.take().unwrap());
        let addr: SocketAddr = err.word_after("master listening on ").parse().unwrap();
        let silent = TcpStream::connect(addr).unwrap();
        let mut lines = BufReader::new(master.0.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            let line = lines.next().expect("status output").unwrap();
            let listed = match format {
                "text" => line.contains("1 slave(s)"),
                _ => line.contains(r#""type":"status""#) && line.contains(r#""peer""#),
            };
            if listed {
                break line;
            }
            assert!(Instant::now() < deadline, "the connection never showed");
        };
        match format {
            "text" => {
                assert!(line.contains("1 not yet reported"), "{line}");
                assert!(!line.contains("lag") && !line.contains("acked"), "{line}");
            }
            _ => {
                let status: serde_json::Value = serde_json::from_str(&line).unwrap();
                let slave = &status["slaves"][0];
                assert_eq!(slave["reported"], false, "{line}");
                assert!(slave["acked"].is_null() && slave["lag"].is_null(), "{line}");
                assert_eq!(status["log_end"], 3 << 20, "{line}");
            }
        }
        drop(silent);
        signal(&master.0, "INT");
        assert_eq!(wait_exit(&mut master.0), Some(0), "{}", err.text());
    }
}
