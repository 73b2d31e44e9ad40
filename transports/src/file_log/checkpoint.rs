//! Our small checkpoint file beside `commitlog/`: what the segment files alone cannot tell.
//!
//! RocketMQ's segment files carry no header, so three facts live here:
//! - the segment size the store was written with (reopening with another one is refused);
//! - the log's start offset, for a slave that began mid-segment (the bytes before it in the first
//!   file are not log bytes);
//! - the offset up to which everything was fsynced, and the kernel boot that wrote it, which is
//!   what recovery trusts after the machine (not just the process) went down.
//!
//! The file is replaced atomically (write a temporary file, fsync it, rename it over the old
//! one, fsync the directory), so a crash leaves either the old or the new checkpoint, never a
//! torn one. The format is a few `key value` text lines so an operator can read it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::FileLogError;

/// The checkpoint's file name inside the store directory (outside `commitlog/`, which must hold
/// nothing but segments).
pub const CHECKPOINT_FILE: &str = "ha-checkpoint";

/// Where a checkpoint is written before it is renamed into place.
const CHECKPOINT_TMP: &str = "ha-checkpoint.tmp";

const HEADER: &str = "rocketmq-ha file_log checkpoint v1";

/// The checkpoint's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub segment_size: u64,
    /// The log's min offset when the checkpoint was written.
    pub base: u64,
    /// Every byte below this offset had been fsynced when the checkpoint was written.
    pub synced_max: u64,
    /// The kernel boot that wrote the checkpoint, if the platform tells.
    pub boot_id: Option<String>,
    /// The store is in RocketMQ's format (preallocated segments, end found by records); the
    /// line is written only then, so raw stores keep their old checkpoint text.
    pub rocketmq: bool,
}

impl Checkpoint {
    fn encode(&self) -> String {
        let mut text = format!(
            "{HEADER}\nsegment_size {}\nbase {}\nsynced_max {}\nboot_id {}\n",
            self.segment_size,
            self.base,
            self.synced_max,
            self.boot_id.as_deref().unwrap_or("-"),
        );
        if self.rocketmq {
            text.push_str("format rocketmq\n");
        }
        text
    }

    fn parse(text: &str, path: &Path) -> Result<Checkpoint, FileLogError> {
        let bad = |reason: String| FileLogError::BadCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad(format!("first line is not {HEADER:?}")));
        }
        let mut segment_size = None;
        let mut base = None;
        let mut synced_max = None;
        let mut boot_id = None;
        let mut format = None;
        for line in lines {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| bad(format!("line {line:?} is not `key value`")))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{key} {value:?} is not a number")))
            };
            let slot_filled = match key {
                "segment_size" => segment_size.replace(number()?).is_some(),
                "base" => base.replace(number()?).is_some(),
                "synced_max" => synced_max.replace(number()?).is_some(),
                "boot_id" => {
                    let id = (value != "-").then(|| value.to_owned());
                    boot_id.replace(id).is_some()
                }
                "format" => {
                    let rocketmq = match value {
                        "rocketmq" => true,
                        "raw" => false,
                        _ => return Err(bad(format!("unknown format {value:?}"))),
                    };
                    format.replace(rocketmq).is_some()
                }
                _ => return Err(bad(format!("unknown key {key:?}"))),
            };
            if slot_filled {
                return Err(bad(format!("{key} appears twice")));
            }
        }
        let missing = |key: &str| bad(format!("{key} is missing"));
        let checkpoint = Checkpoint {
            segment_size: segment_size.ok_or_else(|| missing("segment_size"))?,
            base: base.ok_or_else(|| missing("base"))?,
            synced_max: synced_max.ok_or_else(|| missing("synced_max"))?,
            boot_id: boot_id.ok_or_else(|| missing("boot_id"))?,
            rocketmq: format.unwrap_or(false),
        };
        if checkpoint.segment_size == 0 {
            return Err(bad("segment_size is 0".into()));
        }
        if checkpoint.synced_max < checkpoint.base {
            return Err(bad(format!(
                "synced_max {} is below base {}",
                checkpoint.synced_max, checkpoint.base
            )));
        }
        Ok(checkpoint)
    }

    /// Reads the checkpoint of the store at `root`; `None` if it has none (a store written by
    /// RocketMQ or by hand).
    pub fn load(root: &Path) -> Result<Option<Checkpoint>, FileLogError> {
        let path = root.join(CHECKPOINT_FILE);
        match fs::read(&path) {
            Ok(raw) => {
                let text = String::from_utf8(raw).map_err(|_| FileLogError::BadCheckpoint {
                    path: path.clone(),
                    reason: "not UTF-8 text".into(),
                })?;
                Checkpoint::parse(&text, &path).map(Some)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileLogError::io("read", path, e)),
        }
    }

    /// Replaces the checkpoint of the store at `root` atomically and durably.
    pub fn store(&self, root: &Path) -> Result<(), FileLogError> {
        let tmp = root.join(CHECKPOINT_TMP);
        let path = root.join(CHECKPOINT_FILE);
        let mut file = File::create(&tmp).map_err(|e| FileLogError::io("create", &tmp, e))?;
        file.write_all(self.encode().as_bytes())
            .map_err(|e| FileLogError::io("write to", &tmp, e))?;
        // The contents must be on disk before the name points at them, or a power loss could
        // leave an empty checkpoint under the final name.
        file.sync_all()
            .map_err(|e| FileLogError::io("fsync", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| FileLogError::io("rename", &tmp, e))?;
        sync_dir(root)
    }

    /// The checkpoint's path in the store at `root`.
    pub fn path(root: &Path) -> PathBuf {
        root.join(CHECKPOINT_FILE)
    }
}

/// Makes a directory's entries (created, renamed, deleted files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), FileLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileLogError::io("fsync directory", dir, e))
}

/// An id that changes whenever the machine boots, so recovery can tell "only the process died,
/// the page cache survived" from "the machine went down".
pub(super) fn current_boot_id() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        let valid = !id.is_empty() && id != "-" && !id.chars().any(char::is_whitespace);
        valid.then(|| id.to_owned())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            segment_size: 4096,
            base: 5000,
            synced_max: 9000,
            boot_id: Some("3aef00ea-2577".into()),
            rocketmq: false,
        }
    }

    #[test]
    fn encoding_round_trips() {
        let p = Path::new("x");
        assert_eq!(Checkpoint::parse(&sample().encode(), p).unwrap(), sample());
        let no_boot = Checkpoint {
            boot_id: None,
            ..sample()
        };
        assert_eq!(Checkpoint::parse(&no_boot.encode(), p).unwrap(), no_boot);
        let rocketmq = Checkpoint {
            rocketmq: true,
            ..sample()
        };
        assert!(rocketmq.encode().contains("format rocketmq\n"));
        assert_eq!(Checkpoint::parse(&rocketmq.encode(), p).unwrap(), rocketmq);
    }

    #[test]
    fn malformed_checkpoints_are_rejected() {
        let p = Path::new("x");
        let good = sample().encode();
        let cases = [
            String::new(),
            good.replace(HEADER, "something else"),
            good.replace("base 5000\n", ""),
            good.replace("base 5000", "base five"),
            good.replace("base 5000", "base 5000\nbase 5000"),
            good.replace("base 5000", "colour blue"),
            good.replace("synced_max 9000", "synced_max 10"),
            good.replace("segment_size 4096", "segment_size 0"),
            good.replace("base 5000", "base5000"),
        ];
        for text in cases {
            assert!(
                matches!(
                    Checkpoint::parse(&text, p),
                    Err(FileLogError::BadCheckpoint { .. })
                ),
                "accepted {text:?}"
            );
        }
    }
}
