//! The epoch file in RocketMQ's format and place: `${storePathRootDir}/epochFileCheckpoint`,
//! with a `.bak` beside it (§5.6; Java's `EpochFileCache` over `CheckpointFile`).
//!
//! The file is UTF-8 text, one item a line:
//!
//! ```text
//! 2            the number of entries
//! 773307083    CRC32 of the entry lines (each with its "\n"), top bit cleared; 0 = unchecked
//! 7-7000       "<epoch>-<startOffset>", oldest first
//! 8-8000
//! ```
//!
//! Java rewrites it in place after copying the old content to `.bak`, so a crash can leave a
//! torn file (and reading falls back to `.bak`). Here every write is crash-safe: the old
//! content goes to `.bak` and the new one to the file, each through a temporary file that is
//! fsynced and renamed over the old name, and the directory is fsynced. At every instant both
//! names hold a complete file, so a Java broker and this crate read the same history.
//!
//! An empty history is never written (Java would then read the stale `.bak`): both files are
//! removed instead, `.bak` first, so a crash in between leaves the previous history.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rocketmq_ha::autoswitch::{EpochEntry, EpochList};
use rocketmq_ha::record::body_crc;

/// The file's name in the store root (Java's default `storePathEpochFile`).
pub const EPOCH_FILE_NAME: &str = "epochFileCheckpoint";

/// Why the epoch file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive] // more format checks may come
pub enum EpochFileError {
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The content is not a valid epoch file.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<EpochFileError> for io::Error {
    fn from(e: EpochFileError) -> Self {
        match e {
            EpochFileError::Io { ref source, .. } => io::Error::new(source.kind(), e),
            EpochFileError::Format { .. } => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// Encodes `epochs` as the file's text.
pub fn encode(epochs: &EpochList) -> String {
    let lines: String = epochs
        .entries()
        .iter()
        .map(|e| format!("{}-{}\n", e.epoch, e.start))
        .collect();
    format!(
        "{}\n{}\n{}",
        epochs.len(),
        body_crc(lines.as_bytes()),
        lines
    )
}

/// Decodes the file's text as Java's reader does: the count must match the entries found and
/// the CRC (unless 0) the entry lines; a line that is not `<epoch>-<start>` counts for the CRC
/// but is no entry. Entries must also ascend, which every file Java writes does.
pub fn decode(text: &str) -> Result<EpochList, String> {
    let mut lines = text.lines();
    let count: usize = lines
        .next()
        .ok_or("empty file")?
        .trim()
        .parse()
        .map_err(|e| format!("entry count: {e}"))?;
    let crc: i32 = lines
        .next()
        .ok_or("no CRC line")?
        .trim()
        .parse()
        .map_err(|e| format!("CRC: {e}"))?;
    let mut body = String::new();
    let mut entries = Vec::new();
    for line in lines {
        body.push_str(line);
        body.push('\n');
        let parts: Vec<&str> = line.split('-').collect();
        if let [epoch, start] = parts[..] {
            let epoch = epoch
                .parse()
                .map_err(|e| format!("epoch in {line:?}: {e}"))?;
            let start = start
                .parse()
                .map_err(|e| format!("start in {line:?}: {e}"))?;
            entries.push(EpochEntry::new(epoch, start));
        }
    }
    if entries.len() != count {
        return Err(format!("expected {count} entries, found {}", entries.len()));
    }
    let actual = body_crc(body.as_bytes());
    if crc != 0 && i64::from(crc) != i64::from(actual) {
        return Err(format!("CRC {crc} recorded, {actual} computed"));
    }
    EpochList::from_entries(entries).map_err(|e| e.to_string())
}

/// The epoch file of one store.
#[derive(Debug, Clone)]
pub struct EpochFile {
    path: PathBuf,
}

impl EpochFile {
    /// The file at RocketMQ's default place in the store root `root`.
    pub fn in_store(root: impl AsRef<Path>) -> Self {
        Self::at(root.as_ref().join(EPOCH_FILE_NAME))
    }

    /// The file at `path` (RocketMQ's `storePathEpochFile`).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        EpochFile { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backup's path: the file's with `.bak` appended.
    pub fn backup_path(&self) -> PathBuf {
        with_suffix(&self.path, ".bak")
    }

    /// Reads the history: the file, or the backup when the file is unreadable, invalid or
    /// empty (as Java). No file at all is an empty history.
    pub fn load(&self) -> Result<EpochList, EpochFileError> {
        match read(&self.path) {
            Ok(Some(list)) if !list.is_empty() => Ok(list),
            first => match read(&self.backup_path())? {
                Some(list) => Ok(list),
                None => first.map(Option::unwrap_or_default),
            },
        }
    }

    /// Replaces the history with `epochs`, crash-safely (see the module docs).
    pub fn store(&self, epochs: &EpochList) -> Result<(), EpochFileError> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        let backup = self.backup_path();
        if epochs.is_empty() {
            remove_if_exists(&backup)?;
            remove_if_exists(&self.path)?;
            return sync_dir(&dir);
        }
        match fs::read(&self.path) {
            Ok(old) => replace(&backup, &old)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", &self.path, e)),
        }
        replace(&self.path, encode(epochs).as_bytes())?;
        sync_dir(&dir)
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> EpochFileError {
    EpochFileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// `Ok(None)` when the file does not exist.
fn read(path: &Path) -> Result<Option<EpochList>, EpochFileError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path, e)),
    };
    let format = |reason: String| EpochFileError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|e| format(e.to_string()))?;
    decode(&text).map(Some).map_err(format)
}

/// Writes `content` to a temporary file, fsyncs it and renames it over `path`.
fn replace(path: &Path, content: &[u8]) -> Result<(), EpochFileError> {
    let tmp = with_suffix(path, ".tmp");
    let mut file = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    file.write_all(content)
        .map_err(|e| io_err("write", &tmp, e))?;
    file.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("rename", path, e))
}

fn remove_if_exists(path: &Path) -> Result<(), EpochFileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), EpochFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(i32, u64)]) -> EpochList {
        EpochList::from_entries(entries.iter().map(|&(e, s)| EpochEntry::new(e, s))).unwrap()
    }

    #[test]
    fn javas_documented_example_round_trips() {
        // CheckpointFile's Javadoc: 2 entries, CRC 773307083, 7-7000 and 8-8000.
        let text = "2\n773307083\n7-7000\n8-8000\n";
        assert_eq!(encode(&list(&[(7, 7000), (8, 8000)])), text);
        assert_eq!(decode(text), Ok(list(&[(7, 7000), (8, 8000)])));
    }

    #[test]
    fn java_reader_rules() {
        // CRC 0 is not checked.
        assert_eq!(decode("1\n0\n1-0\n"), Ok(list(&[(1, 0)])));
        // A wrong CRC or count is an error.
        assert!(decode("1\n5\n1-0\n").unwrap_err().contains("CRC"));
        assert!(decode("2\n0\n1-0\n").unwrap_err().contains("expected 2"));
        // CRLF line ends read as Java's readLine reads them.
        assert_eq!(
            decode("2\r\n773307083\r\n7-7000\r\n8-8000\r\n"),
            Ok(list(&[(7, 7000), (8, 8000)]))
        );
        // Entries out of order never come from Java.
        assert!(decode("2\n0\n8-8000\n7-7000\n").is_err());
        assert!(decode("").is_err());
    }
}
