//! What the program's test files share: the binary, a child killed on drop, and temporary
//! store directories.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `rocketmq-ha` program under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rocketmq-ha");

/// A child process, killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A store directory under the target directory (not created), removed on drop. The name
/// holds the process and thread, so parallel tests never share one.
pub struct TempStore(pub PathBuf);

impl TempStore {
    pub fn new(name: &str) -> TempStore {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "cli-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempStore(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `master --listen 127.0.0.1:0` with `store` and `more` arguments; returns it with the
/// address it listens on.
pub fn start_master(store: &[&str], more: &[&str], stdout: Stdio) -> (KillOnDrop, SocketAddr) {
    let mut master = KillOnDrop(
        Command::new(BIN)
            .args(["master", "--listen", "127.0.0.1:0"])
            .args(store)
            .args(more)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let addr = listening_address(&mut master.0);
    (master, addr)
}

/// Reads the master's stderr until it says where it listens.
pub fn listening_address(master: &mut Child) -> SocketAddr {
    let stderr = master.stderr.take().expect("piped stderr");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = BufReader::new(stderr).lines();
    while let Some(line) = lines.next() {
        let line = line.expect("master output");
        if let Some(rest) = line.strip_prefix("master listening on ") {
            let addr = rest.split_whitespace().next().expect("an address");
            // Keep draining, so the master's later messages never meet a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return addr.parse().expect("a socket address");
        }
        assert!(Instant::now() < deadline, "the master never listened");
    }
    panic!("the master exited before listening");
}
