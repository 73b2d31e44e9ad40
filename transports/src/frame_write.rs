//! How a master's frame reaches a socket: the one place that chooses between copying it from
//! memory (`writev` of header and body) and sending the body from its segment file
//! (`sendfile`, which spares the master the copy into the socket buffer).
//!
//! Sending from a file needs the master's consent (off by default: on loopback it cost the
//! slave more than it saved the master), a plain TCP socket, a
//! [`FileRegion`](rocketmq_ha::FileRegion) from the log (whose handle is a [`File`]) and a
//! body large enough that a second system call
//! costs less than the copy it saves. Whatever the way, the caller reports the bytes written to
//! the loop (`handle_written`), so partial writes go on from where they stopped, in either way.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;

use bytes::Buf;
use rocketmq_ha::Transmit;

use crate::shared::Frame;
use rustix::net::SendFlags;

/// Bodies smaller than this are copied: a sync put's small frame goes out in one `writev`,
/// not a header `send` plus a `sendfile`, and copying a few KiB costs less than the page
/// references and the extra call.
pub(crate) const SENDFILE_MIN: usize = 64 * 1024;

/// What to do next for the rest of a frame.
pub(crate) enum Step<'a> {
    /// Write these slices (header and/or body) with one vectored write.
    Copy([IoSlice<'a>; 2], usize),
    /// Send from the body's file.
    File(FileStep<'a>),
}

/// A step of sending a frame whose body goes from its file; [`run`](Self::run) does it once.
pub(crate) enum FileStep<'a> {
    /// Send the header's remaining bytes with `MSG_MORE`: the body follows from the file, and
    /// the two leave in full segments, not a 12-byte one first.
    Header(&'a [u8]),
    /// Send `len` bytes of `file` from `position`.
    Body {
        /// The segment file.
        file: &'a File,
        /// Where the unwritten body starts in it.
        position: u64,
        /// How many bytes are left.
        len: usize,
    },
}

/// The next step for `transmit`; `from_files` says whether to send bodies from their files
/// at all: the master allows it ([`MasterHandle::set_send_from_files`]) and the socket can
/// take `sendfile` (plain TCP; TLS, for one, cannot).
///
/// [`MasterHandle::set_send_from_files`]: crate::MasterHandle::set_send_from_files
pub(crate) fn next_step(frame: &Frame, from_files: bool) -> Step<'_> {
    match frame {
        Frame::Classic(transmit) => classic_step(transmit, from_files),
        // The AutoSwitch frame names no file region yet: copied.
        Frame::AutoSwitch(transmit) => copy(transmit),
    }
}

fn classic_step(transmit: &Transmit, from_files: bool) -> Step<'_> {
    let from_file = from_files && transmit.body().len() >= SENDFILE_MIN;
    if let Some((region, position)) = transmit.body_file().filter(|_| from_file) {
        if let Some(file) = region.file().downcast_ref::<File>() {
            if transmit.header_written() {
                return Step::File(FileStep::Body {
                    file,
                    position,
                    len: transmit.body().len(),
                });
            }
            return Step::File(FileStep::Header(transmit.chunk()));
        }
    }
    copy(transmit)
}

/// Header and body as the slices of one vectored write.
fn copy(frame: &impl Buf) -> Step<'_> {
    let mut slices = [IoSlice::new(&[]), IoSlice::new(&[])];
    let n = frame.chunks_vectored(&mut slices);
    Step::Copy(slices, n)
}

/// Sends `bufs` on `socket` at once or not at all: `WouldBlock` when it has no room, never
/// blocking, whatever the socket's mode (a producer writing a frame itself, beside the
/// connection's own writer).
pub(crate) fn send_now<S: AsFd>(socket: S, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let mut control = rustix::net::SendAncillaryBuffer::default();
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    Ok(rustix::net::sendmsg(socket, bufs, &mut control, flags)?)
}

impl FileStep<'_> {
    /// Does the step once on `socket` (blocking or not, as the socket is) and returns the
    /// bytes sent. A file that ends before the region the log named (it never should) is an
    /// error, not a loop that sends nothing.
    pub(crate) fn run<S: AsFd>(&self, socket: S) -> io::Result<usize> {
        match *self {
            FileStep::Header(header) => Ok(rustix::net::send(
                socket,
                header,
                SendFlags::MORE | SendFlags::NOSIGNAL,
            )?),
            FileStep::Body {
                file,
                position,
                len,
            } => {
                let mut at = position;
                match rustix::fs::sendfile(socket, file, Some(&mut at), len) {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the segment file ends before the frame's body",
                    )),
                    Ok(n) => Ok(n),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::time::Instant;

    use bytes::BytesMut;
    use rocketmq_ha::wire::{decode_transfer, encode_report};
    use rocketmq_ha::{Config, LogSource, MasterLoop, StartPosition};

    use super::*;
    use crate::file_log::FileLog;

    const SEGMENT: u64 = 256 * 1024;

    fn pattern(len: u64) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect()
    }

    /// A master's loop writing through a non-blocking socket whose send buffer holds a few KiB:
    /// `sendfile` and `writev` both stop part-way again and again, and the stream that arrives
    /// still decodes into frames holding the log byte for byte. Frames ramp up from 32 KiB
    /// (copied) to 128 KiB (from the file), and end at segment boundaries.
    #[test]
    fn bodies_sent_from_segment_files_arrive_whole_through_short_writes() {
        let dir = std::env::temp_dir().join(format!("frame_write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let len = 4 * SEGMENT + 1000;
        let mut log = FileLog::create(&dir, SEGMENT).unwrap();
        log.append_at_end(&pattern(len)).unwrap();
        let config = Config::builder()
            .transfer_batch_size(128 * 1024)
            .first_batch_size(Some(32 * 1024))
            .start_position(StartPosition::OldestRetained)
            .build()
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut rx, _) = listener.accept().unwrap();
        socket2::SockRef::from(&tx)
            .set_send_buffer_size(4096)
            .unwrap();
        tx.set_nonblocking(true).unwrap();

        let now = Instant::now();
        let mut lp = MasterLoop::new(config, now);
        lp.handle_read(now, &encode_report(0), &log).unwrap();
        let (mut file_writes, mut partial_file_writes) = (0, 0);
        let mut received = Vec::new();
        let mut buf = vec![0u8; 1500];
        while let Some(transmit) = lp.poll_write(now, &log).unwrap() {
            let (wrote, file_len) = match classic_step(transmit, true) {
                Step::Copy(slices, n) => ((&tx).write_vectored(&slices[..n]), None),
                Step::File(step) => {
                    let len = match step {
                        FileStep::Body { len, .. } => Some(len),
                        FileStep::Header(_) => None,
                    };
                    (step.run(&tx), len)
                }
            };
            match wrote {
                Ok(n) => {
                    if let Some(len) = file_len {
                        file_writes += 1;
                        partial_file_writes += usize::from(n < len);
                    }
                    lp.handle_written(now, n).unwrap();
                }
                // Full: take a little off the other end, so the next write is short again.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let n = rx.read(&mut buf).unwrap();
                    received.extend_from_slice(&buf[..n]);
                }
                Err(e) => panic!("writing a frame: {e}"),
            }
        }
        assert_eq!(lp.connection().next_offset(), Some(len));
        tx.shutdown(Shutdown::Write).unwrap();
        rx.read_to_end(&mut received).unwrap();

        let mut stream = BytesMut::from(&received[..]);
        let mut replica = Vec::new();
        while let Some(frame) = decode_transfer(&mut stream, config.max_frame_size()).unwrap() {
            assert_eq!(frame.header.offset, replica.len() as u64, "frames in order");
            replica.extend_from_slice(&frame.body);
        }
        assert!(stream.is_empty(), "a torn frame at the end");
        assert!(replica == pattern(len), "the replica differs from the log");
        assert!(file_writes > 0, "no body went from its file");
        assert!(partial_file_writes > 0, "no sendfile stopped part-way");
        assert_eq!(log.max_offset(), len);
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A log without regions, or a socket that is not plain TCP, copies.
    #[test]
    fn without_a_region_or_plain_tcp_the_frame_is_copied() {
        let mut log = rocketmq_ha::MemoryLog::new(1 << 20);
        log.push(pattern(200 * 1024));
        let config = Config::builder()
            .transfer_batch_size(128 * 1024)
            .start_position(StartPosition::OldestRetained)
            .build()
            .unwrap();
        let now = Instant::now();
        let mut lp = MasterLoop::new(config, now);
        lp.handle_read(now, &encode_report(0), &log).unwrap();
        let transmit = lp.poll_write(now, &log).unwrap().unwrap();
        assert!(matches!(classic_step(transmit, true), Step::Copy(_, 2)));

        let dir = std::env::temp_dir().join(format!("frame_write-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut file_log = FileLog::create(&dir, SEGMENT).unwrap();
        file_log.append_at_end(&pattern(200 * 1024)).unwrap();
        let mut lp = MasterLoop::new(config, now);
        lp.handle_read(now, &encode_report(0), &file_log).unwrap();
        let transmit = lp.poll_write(now, &file_log).unwrap().unwrap();
        assert!(matches!(classic_step(transmit, false), Step::Copy(_, 2)));
        assert!(matches!(
            classic_step(transmit, true),
            Step::File(FileStep::Header(h)) if h.len() == 12
        ));
        drop(file_log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
