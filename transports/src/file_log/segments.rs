//! Segment files: names, the directory scan with its layout checks, and memory mapping.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::MmapOptions;

use super::error::FileLogError;

/// Length of a segment file name: RocketMQ's `UtilAll.offset2FileName` pads to 20 digits.
const NAME_LEN: usize = 20;

/// The file name of the segment starting at `start`, e.g. `00000000001073741824`.
pub fn segment_file_name(start: u64) -> String {
    format!("{start:0NAME_LEN$}")
}

/// The start offset a segment file name stands for, if it is one.
fn parse_name(name: &str) -> Option<u64> {
    if name.len() != NAME_LEN || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // 20 digits can exceed what an offset can be (`i64` on the wire, §0.3).
    name.parse()
        .ok()
        .filter(|&start: &u64| i64::try_from(start).is_ok())
}

/// One segment file as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SegmentFile {
    pub start: u64,
    pub path: PathBuf,
    pub len: u64,
}

/// Lists `commitlog/`, checking each entry on its own: a 20-digit name, a regular file, aligned
/// to the segment size, no longer than a segment. Sorted by start offset.
///
/// A store whose first two files show another segment size (the first is as long as the
/// distance to the second, and that is not `segment_size`) is reported as such, before the
/// alignment and length checks would report a symptom of it.
pub(super) fn scan(commitlog: &Path, segment_size: u64) -> Result<Vec<SegmentFile>, FileLogError> {
    let files = list(commitlog)?;
    if let [first, second, ..] = files.as_slice() {
        let spacing = second.start - first.start;
        if first.len == spacing && spacing != segment_size {
            return Err(FileLogError::SegmentSizeMismatch {
                path: first.path.clone(),
                recorded: spacing,
                requested: segment_size,
            });
        }
    }
    for file in &files {
        if file.start % segment_size != 0 {
            return Err(FileLogError::UnalignedSegment {
                path: file.path.clone(),
                start: file.start,
                segment_size,
            });
        }
        if file.len > segment_size {
            return Err(FileLogError::SegmentTooLong {
                path: file.path.clone(),
                len: file.len,
                segment_size,
            });
        }
    }
    Ok(files)
}

/// The segment files of `commitlog/` with their lengths, sorted by start offset: every entry
/// must have a segment file name and be a regular file.
fn list(commitlog: &Path) -> Result<Vec<SegmentFile>, FileLogError> {
    let entries = fs::read_dir(commitlog).map_err(|e| FileLogError::io("list", commitlog, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FileLogError::io("list", commitlog, e))?;
        let path = entry.path();
        let start = entry
            .file_name()
            .to_str()
            .and_then(parse_name)
            .ok_or_else(|| FileLogError::BadFileName { path: path.clone() })?;
        // Follows symbolic links: a store may link segments from another disk.
        let meta = fs::metadata(&path).map_err(|e| FileLogError::io("stat", &path, e))?;
        if !meta.is_file() {
            return Err(FileLogError::NotAFile { path });
        }
        files.push(SegmentFile {
            start,
            path,
            len: meta.len(),
        });
    }
    files.sort_by_key(|f| f.start);
    Ok(files)
}

/// Checks that segments follow each other without holes and that every segment but the last
/// is full.
pub(super) fn check_chain(files: &[SegmentFile], segment_size: u64) -> Result<(), FileLogError> {
    for pair in files.windows(2) {
        let (this, next) = (&pair[0], &pair[1]);
        if this.len != segment_size {
            return Err(FileLogError::WrongSegmentLength {
                path: this.path.clone(),
                len: this.len,
                segment_size,
            });
        }
        // `scan` sorted and aligned the starts, so a larger one means missing segments.
        let expected = this.start + segment_size;
        if next.start != expected {
            return Err(FileLogError::Gap {
                path: next.path.clone(),
                expected,
            });
        }
    }
    Ok(())
}

/// Maps a whole segment (`segment_size` bytes, however long the file is now) read-only and
/// wraps the mapping in [`Bytes`], so reads are slices of it: zero-copy and reference-counted,
/// the mapping lives until the last slice handed out is dropped.
pub(super) fn map_segment(
    file: &File,
    path: &Path,
    segment_size: u64,
) -> Result<Bytes, FileLogError> {
    let len = usize::try_from(segment_size).map_err(|_| FileLogError::InvalidSegmentSize {
        size: segment_size,
        min: super::MIN_SEGMENT_SIZE,
        max: super::MAX_SEGMENT_SIZE,
    })?;
    // SAFETY: memmap2 requires that nobody changes or truncates the mapped file while the
    // mapping is alive, since Rust treats the mapped bytes as an immutable `&[u8]`.
    // - Only this process writes segment files, and only at offsets at or above the log's max
    //   offset; readers are only ever handed slices below the max offset at the time of the
    //   read. Bytes that a slice covers are therefore never written again while it lives. (One
    //   `FileLog` per store at a time, like one broker per store in RocketMQ.)
    // - The mapping is `segment_size` long although the growing last segment is shorter; pages
    //   past the end of the file would fault (SIGBUS), but no slice reaches past the max offset,
    //   which never exceeds the file's length: the length grows before the max offset is
    //   published, and a failed write is rolled back only down to the published max offset.
    // - Retention and an empty store moving its start unlink files; an unlinked file keeps its
    //   data until the last mapping goes, so slices held by readers stay valid.
    // - Another process truncating or rewriting a segment file while we run breaks this
    //   contract: readers of the truncated pages get SIGBUS, rewritten bytes change under a
    //   `Bytes`. RocketMQ's own broker must not run on the same store at the same time, which is
    //   the same rule RocketMQ has for its own mapped files.
    let map = unsafe { MmapOptions::new().len(len).map(file) }
        .map_err(|e| FileLogError::io("map", path, e))?;
    Ok(Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_20_digit_offsets() {
        assert_eq!(segment_file_name(1 << 30), "00000000001073741824");
        assert_eq!(parse_name("00000000001073741824"), Some(1 << 30));
        let top = i64::MAX as u64;
        assert_eq!(parse_name(&segment_file_name(top)), Some(top));
        assert_eq!(parse_name(&segment_file_name(top + 1)), None);
        for bad in [
            "0000000000107374182",
            "000000000010737418240",
            "0000000000107374182x",
            "+0000000001073741824",
            "99999999999999999999",
            "",
        ] {
            assert_eq!(parse_name(bad), None, "{bad:?}");
        }
    }
}
