//! The program's options as an operator meets them: nonsense refused naming the option, the
//! master's limits and access list at work, and a RocketMQ broker.conf read with `--config`.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use rocketmq_ha::LogSource;
use rocketmq_ha_transports::file_log::{compare_logs, FileLog};

const BIN: &str = env!("CARGO_BIN_EXE_rocketmq-ha");

/// Runs the program to its end: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .output()
        .expect("run rocketmq-ha");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A directory under the target directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("options-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("a UTF-8 path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of a child's stderr, as they come.
fn lines_of(stderr: ChildStderr) -> Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

/// Waits up to 30 s for a line containing every one of `words`; returns it, or panics with
/// what came instead.
fn expect_line(lines: &Receiver<String>, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if words.iter().all(|w| line.contains(w)) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!(
        "no line with {words:?}; the program said:\n{}",
        seen.join("\n")
    );
}

/// The address after "listening on" in `line`.
fn address_in(line: &str) -> SocketAddr {
    line.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Whether the master closed `stream` within `limit` (EOF or a reset).
fn is_closed_within(mut stream: &TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }
}

#[test]
fn bench_refuses_zero_bytes_naming_the_option() {
    for (option, value) in [
        ("--bytes", "0"),
        ("--fanout-bytes", "0"),
        ("--runs", "0"),
        ("--messages", "0"),
        ("--fanout", "0"),
    ] {
        let (code, stdout, stderr) = run(&["bench", option, value, "--only", "throughput"]);
        assert_eq!(code, Some(1), "{option} {value}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("{option} 0: must be more than 0")),
            "{option}: {stderr}"
        );
        assert!(
            !stdout.contains("MB/s"),
            "{option}: measured anyway: {stdout}"
        );
    }
}

#[test]
fn zero_sizes_and_rates_are_refused_naming_the_option() {
    let dir = TempDir::new("zero");
    let store = dir.join("store");
    for (args, expected) in [
        (
            &["demo", "--bytes", "0"][..],
            "--bytes 0: must be more than 0",
        ),
        (
            &["master", "--append-rate", "0"][..],
            "--append-rate 0: must be more than 0",
        ),
        (
            &["master", "--rate-limit", "100"][..],
            "--rate-limit 100: must be at least 1024",
        ),
        (
            &["bench", "--flow-rate", "0"][..],
            "--flow-rate 0: must be at least 1024",
        ),
    ] {
        let mut command = vec!["--store", &store, "--listen", "127.0.0.1:0"];
        if args[0] != "master" {
            command.clear();
        }
        let (code, stdout, stderr) = run(&[args, &command].concat());
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stdout.contains("MB/s"), "{args:?}: ran anyway: {stdout}");
        assert!(!std::path::Path::new(&store).exists(), "{args:?}: started");
    }
}

#[test]
fn bench_refuses_a_fanout_on_the_blocking_transport_alone() {
    let (code, stdout, stderr) = run(&["bench", "--only", "fanout", "--transport", "blocking"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("--only fanout") && stderr.contains("async transports only"),
        "{stderr}"
    );
}

#[test]
fn batch_sizes_of_zero_are_refused_naming_the_option() {
    let dir = TempDir::new("batch");
    let store = dir.join("store");
    for (option, value, expected) in [
        (
            "--first-batch-size",
            "0",
            "--first-batch-size 0: must be at least 1 byte",
        ),
        (
            "--batch-size",
            "0",
            "--batch-size 0: must be at least 1 byte",
        ),
        (
            "--batch-size",
            "5MiB",
            "--batch-size 5242880: at most 4194292 bytes",
        ),
    ] {
        let (code, _, stderr) = run(&[
            "master",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &store,
            option,
            value,
        ]);
        assert_eq!(code, Some(1), "{option} {value}: {stderr}");
        assert!(stderr.contains(expected), "{option} {value}: {stderr}");
        assert!(!stderr.contains("transfer_batch_size"), "{stderr}");
        assert!(
            !std::path::Path::new(&store).exists(),
            "{option} {value}: the master started"
        );
    }
}

#[test]
fn master_limits_and_allow_list_are_refused_when_nonsense() {
    for (option, value) in [
        ("--max-connections", "0"),
        ("--allow", "10.0.0.0/33"),
        ("--allow", "not-an-address"),
        ("--first-report-timeout", "0"),
    ] {
        let (code, _, stderr) = run(&["master", "--store", "unused", option, value]);
        assert_eq!(code, Some(2), "{option} {value}: {stderr}");
        assert!(stderr.contains(option), "{option} {value}: {stderr}");
    }
}

#[test]
fn a_master_at_its_connection_limit_closes_newcomers_and_silent_peers() {
    let dir = TempDir::new("limit");
    let mut master = KillOnDrop(
        Command::new(BIN)
            .args([
                "master",
                "--listen",
                "localhost:0",
                "--store",
                &dir.join("store"),
            ])
            .args(["--max-connections", "1", "--first-report-timeout", "1"])
            .args(["--status-interval", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the master"),
    );
    let lines = lines_of(master.0.stderr.take().expect("stderr"));
    let listening = expect_line(&lines, &["master listening on"]);
    let addr = address_in(&listening);
    assert!(addr.ip().is_loopback(), "--listen took a host name: {addr}");

    let silent = TcpStream::connect(addr).expect("connect");
    // Give the master a moment to register the first, so the second is over the limit.
    std::thread::sleep(Duration::from_millis(300));
    let over = TcpStream::connect(addr).expect("connect");
    assert!(
        is_closed_within(&over, Duration::from_secs(10)),
        "a connection over the limit stayed open"
    );
    expect_line(&lines, &["refused ", "--max-connections"]);
    // The silent one holds its place only until its first-report deadline.
    assert!(
        is_closed_within(&silent, Duration::from_secs(20)),
        "a silent peer stayed connected"
    );
    // However the close is worded, it names the reason.
    expect_line(&lines, &["no report"]);
}

#[test]
fn master_and_slave_run_from_rocketmq_broker_confs() {
    let dir = TempDir::new("config");
    let segment = 4u64 << 20;
    let master_root = dir.join("master-store");
    {
        let mut log = FileLog::create(&master_root, segment).expect("master store");
        let data: Vec<u8> = (0..6u64 << 20).map(|i| (i % 251) as u8).collect();
        log.append_at_end(&data).expect("fill");
        log.close().expect("close");
    }
    let master_conf = dir.join("broker-a.properties");
    std::fs::write(
        &master_conf,
        format!(
            "brokerClusterName=DefaultCluster\nbrokerName=broker-a\nbrokerId=0\n\
             brokerRole=ASYNC_MASTER\nflushDiskType=ASYNC_FLUSH\nstorePathRootDir={master_root}\n\
             mappedFileSizeCommitLog={segment}\nhaListenPort=10\n"
        ),
    )
    .expect("write");
    // A slave's file given to the master is refused: it would serve the slave's store.
    let slave_conf = dir.join("broker-a-s.properties");
    let slave_store = dir.join("slave-store");
    let write_slave_conf = |master: &str| {
        std::fs::write(
            &slave_conf,
            format!(
                "brokerName=broker-a\nbrokerId=1\nbrokerRole=SLAVE\nflushDiskType=SYNC_FLUSH\n\
                 storePathRootDir=/nonexistent\nstorePathCommitLog={slave_store}/commitlog\n\
                 mappedFileSizeCommitLog={segment}\nhaMasterAddress={master}\n"
            ),
        )
        .expect("write");
    };
    write_slave_conf("localhost:1");
    let (code, _, stderr) = run(&["master", "--config", &slave_conf]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("brokerRole=SLAVE") && stderr.contains("rocketmq-ha slave"),
        "{stderr}"
    );

    // haListenPort=10 is overridden by the flag; the store and segment size come from the
    // file (its other keys are named as ignored).
    let mut master = KillOnDrop(
        Command::new(BIN)
            .args([
                "master",
                "--config",
                &master_conf,
                "--listen",
                "localhost:0",
            ])
            .args(["--from-oldest", "--status-interval", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the master"),
    );
    let lines = lines_of(master.0.stderr.take().expect("stderr"));
    let summary = expect_line(&lines, &["config ", "using "]);
    assert!(
        summary.contains("haListenPort")
            && summary.contains("storePathRootDir")
            && summary.contains("ignoring 3 key(s)")
            && summary.contains("brokerName"),
        "{summary}"
    );
    let listening = expect_line(&lines, &["master listening on"]);
    let port = address_in(&listening).port();
    assert_ne!(port, 10, "the flag wins over haListenPort");

    // The slave takes its master (a host name), store and flush type from its file.
    write_slave_conf(&format!("localhost:{port}"));
    let (code, stdout, stderr) = run(&["slave", "--config", &slave_conf, "--until", "6MiB"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("reached offset"), "{stdout}");
    assert!(
        stderr.contains("acking only what is on disk") && stderr.contains("from localhost:"),
        "SYNC_FLUSH flushes before acking: {stderr}"
    );
    drop(master);
    let ours = FileLog::open(&master_root, segment).expect("master store");
    let theirs =
        FileLog::open(&slave_store, segment).expect("slave store in storePathCommitLog's parent");
    assert_eq!(theirs.max_offset(), 6 << 20);
    assert!(compare_logs(&theirs, &ours).expect("compare").identical());
}
