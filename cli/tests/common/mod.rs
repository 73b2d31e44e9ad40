//! What the program's test files share: the binary, a child killed on drop, and temporary
//! store directories.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::Child;

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
