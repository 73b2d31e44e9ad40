//! The async drivers' connected socket: plain TCP, or TLS over it (cargo feature `tls`).
//!
//! The run loops race a read against a write on one socket through `&` (see `runtime`), so a
//! TLS socket must let both proceed at once. Instead of splitting a TLS stream into halves, the
//! rustls connection sits behind a mutex that is held only for non-blocking steps, never across
//! an `.await`; the TCP socket's readiness is what the futures wait on. The one thing a half
//! cannot see is the other half's state, so an [`Event`] tells the reader that the writer left
//! ciphertext in rustls (the reader then also waits for room to send it), and tells the writer
//! that the handshake moved on (rustls holds only a bounded amount of early plaintext).
//!
//! A plain socket checks its first bytes for a TLS record: a plain peer meeting a TLS one would
//! otherwise see only a report offset or frame header of absurd size (§3.2, §3.3), and the
//! error would say nothing about TLS.

use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::tls::TlsError;

/// The TLS record types a peer's first bytes can start with: alert (21) and handshake (22),
/// followed by the major version 3. A report or frame header starts with a big-endian offset,
/// whose first byte is never 21 or 22 below 1.5 EiB.
fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16] | [0x15 | 0x16, 0x03, ..])
}

/// Which end of the connection this socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The master's end of a connection it accepted.
    Master,
    /// The slave's end of a connection it dialed.
    Slave,
}

/// What a driver's TCP socket offers: reads and writes that wait, and, for TLS, their
/// non-blocking forms with readiness.
pub(crate) trait Io: Send + Sync {
    /// Reads once into `buf`; `Ok(0)` is EOF. Dropping the future reads nothing.
    fn read<'a>(&'a self, buf: &'a mut [u8])
        -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Writes once from `bufs`. Dropping the future writes nothing.
    fn write_vectored<'a>(
        &'a self,
        bufs: &'a [IoSlice<'a>],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Completes when a read may not block.
    #[cfg(feature = "tls")]
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;

    /// Completes when a write may not block.
    #[cfg(feature = "tls")]
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;

    /// Reads without blocking (`WouldBlock` when nothing is there).
    #[cfg(feature = "tls")]
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes without blocking (`WouldBlock` when the send buffer is full).
    #[cfg(feature = "tls")]
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// A connected socket of an async driver.
pub(crate) enum Stream<S> {
    /// Plain TCP.
    Plain(Plain<S>),
    /// TLS over TCP (boxed: the rustls connection is large).
    #[cfg(feature = "tls")]
    Tls(Box<tls::TlsStream<S>>),
}

/// A plain TCP socket that checks the peer's first bytes.
pub(crate) struct Plain<S> {
    io: S,
    side: Side,
    /// Whether the first bytes were checked (set on the first non-empty read).
    checked: AtomicBool,
}

impl<S: Io> Stream<S> {
    /// A plain socket.
    pub(crate) fn plain(io: S, side: Side) -> Self {
        Stream::Plain(Plain {
            io,
            side,
            checked: AtomicBool::new(false),
        })
    }

    /// The TCP socket of a plain stream, for writes that bypass the stream (a producer's
    /// direct send, `sendfile`); `None` for TLS, whose bytes must go through rustls. Reads
    /// must not bypass it: the first read checks for a TLS peer.
    pub(crate) fn as_plain(&self) -> Option<&S> {
        match self {
            Stream::Plain(plain) => Some(&plain.io),
            #[cfg(feature = "tls")]
            Stream::Tls(_) => None,
        }
    }

    /// Reads once into `buf`; `Ok(0)` is EOF. Dropping the future before it completes reads
    /// nothing.
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(plain) => {
                let n = plain.io.read(buf).await?;
                if n > 0 && !plain.checked.load(Ordering::Relaxed) {
                    plain.checked.store(true, Ordering::Relaxed);
                    if looks_like_tls(&buf[..n.min(2)]) {
                        return Err(match plain.side {
                            Side::Master => TlsError::TlsSlave,
                            Side::Slave => TlsError::TlsMaster,
                        }
                        .into());
                    }
                }
                Ok(n)
            }
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.read(buf).await,
        }
    }

    /// Writes once from `bufs`. Dropping the future before it completes writes nothing: a TLS
    /// socket takes plaintext only in the poll that returns its count.
    pub(crate) async fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(plain) => plain.io.write_vectored(bufs).await,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.write_vectored(bufs).await,
        }
    }
}

#[cfg(feature = "tls")]
pub(crate) use tls::TlsStream;

#[cfg(feature = "tls")]
mod tls {
    use std::io::{self, IoSlice, Read, Write};
    use std::sync::{Mutex, MutexGuard, PoisonError};

    use event_listener::{Event, EventListener};
    use futures_lite::FutureExt;

    use super::{Io, Side};
    use crate::tls::TlsError;

    /// A rustls connection over a TCP socket, usable from a reading and a writing future at once.
    pub(crate) struct TlsStream<S> {
        io: S,
        side: Side,
        state: Mutex<State>,
        /// Fires when the writer left ciphertext unsent or the reader advanced the handshake.
        changed: Event,
    }

    /// What the lock guards.
    struct State {
        conn: rustls::Connection,
        inbox: Inbox,
    }

    /// Ciphertext read from the socket and not yet handed to rustls. rustls reads at most 4 KiB
    /// per call; going to the socket for each would cost a system call per 4 KiB (measured:
    /// TLS replication at a third of plain TCP's rate), so reads take up to this much at once.
    struct Inbox {
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    }

    const INBOX: usize = 64 * 1024;

    impl Inbox {
        fn is_empty(&self) -> bool {
            self.start == self.end
        }
    }

    /// The TCP socket as the `Write` rustls sends ciphertext through.
    struct Wire<'a, S>(&'a S);

    /// The inbox, refilled from the socket when empty, as the `Read` rustls takes ciphertext
    /// from.
    struct Feed<'a, S> {
        io: &'a S,
        inbox: &'a mut Inbox,
    }

    impl<S: Io> Read for Feed<'_, S> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let inbox = &mut *self.inbox;
            if inbox.is_empty() {
                let n = self.io.try_read(&mut inbox.buf)?;
                (inbox.start, inbox.end) = (0, n);
            }
            let n = buf.len().min(inbox.end - inbox.start);
            buf[..n].copy_from_slice(&inbox.buf[inbox.start..inbox.start + n]);
            inbox.start += n;
            Ok(n)
        }
    }

    impl<S: Io> Write for Wire<'_, S> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.try_write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.0.try_write_vectored(bufs)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn would_block(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::WouldBlock
    }

    impl<S: Io> TlsStream<S> {
        pub(crate) fn new(io: S, side: Side, conn: rustls::Connection) -> Self {
            TlsStream {
                io,
                side,
                state: Mutex::new(State {
                    conn,
                    inbox: Inbox {
                        buf: vec![0; INBOX].into_boxed_slice(),
                        start: 0,
                        end: 0,
                    },
                }),
                changed: Event::new(),
            }
        }

        /// Every step under this lock is non-blocking, and a panic inside one leaves rustls'
        /// state as consistent as any error would.
        fn lock(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// Sends what rustls holds until it is empty or the socket is full.
        fn flush(&self, conn: &mut rustls::Connection) -> io::Result<()> {
            while conn.wants_write() {
                match conn.write_tls(&mut Wire(&self.io)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if would_block(&e) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }

        /// The error for a failed record or handshake, named after what the peer most likely
        /// is when it did not speak TLS at all.
        fn failed(&self, conn: &mut rustls::Connection, error: rustls::Error) -> io::Error {
            let handshaking = conn.is_handshaking();
            // The alert rustls queued tells a peer that does speak TLS why.
            let _ = self.flush(conn);
            match (self.side, handshaking, &error) {
                (Side::Master, true, rustls::Error::InvalidMessage(_)) => TlsError::PlainSlave,
                (Side::Slave, true, rustls::Error::InvalidMessage(_)) => TlsError::PlainMaster,
                _ => TlsError::Protocol(error),
            }
            .into()
        }

        /// The connection ended (EOF or reset) before the handshake finished.
        fn ended_in_handshake(&self, cause: io::Error) -> io::Error {
            match self.side {
                // A plain master reads the ClientHello as a report and closes.
                Side::Slave => TlsError::PlainMaster.into(),
                Side::Master => cause,
            }
        }

        /// Reads plaintext into `buf`: what rustls holds, then more from the inbox while it has
        /// some and `buf` has room, so one call carries many records as a plain read would.
        pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
            if buf.is_empty() {
                return Ok(0);
            }
            loop {
                let (listener, flushing) = {
                    let mut guard = self.lock();
                    let State { conn, inbox } = &mut *guard;
                    let mut filled = 0;
                    loop {
                        match conn.reader().read(&mut buf[filled..]) {
                            Ok(n) => {
                                filled += n;
                                // 0: close_notify came (or `buf` is full).
                                if n == 0 || filled == buf.len() {
                                    return Ok(filled);
                                }
                                continue;
                            }
                            Err(e) if would_block(&e) => {}
                            // Our peers close without close_notify; a cut frame is the
                            // machines' to notice (§3.3), as on plain TCP.
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                return Ok(filled)
                            }
                            // The plaintext first; the error comes again at the next call.
                            Err(_) if filled > 0 => return Ok(filled),
                            Err(e) => return Err(e),
                        }
                        if filled > 0 {
                            // Top up only from what was already read: no wait, no system call.
                            if inbox.is_empty() {
                                return Ok(filled);
                            }
                            let fed = conn.read_tls(&mut Feed {
                                io: &self.io,
                                inbox,
                            });
                            // An error comes again at the next call, after this plaintext.
                            if fed.is_err() || conn.process_new_packets().is_err() {
                                return Ok(filled);
                            }
                            continue;
                        }
                        // What the handshake owes the peer goes out before we wait for its
                        // answer.
                        self.flush(conn)?;
                        match conn.read_tls(&mut Feed {
                            io: &self.io,
                            inbox,
                        }) {
                            Ok(n) => {
                                let handshaking = conn.is_handshaking();
                                if n == 0 && handshaking {
                                    return Err(self
                                        .ended_in_handshake(io::ErrorKind::UnexpectedEof.into()));
                                }
                                if let Err(e) = conn.process_new_packets() {
                                    return Err(self.failed(conn, e));
                                }
                                if handshaking {
                                    self.changed.notify(usize::MAX);
                                }
                                continue;
                            }
                            Err(e) if would_block(&e) => break,
                            Err(e) if conn.is_handshaking() => {
                                return Err(if e.kind() == io::ErrorKind::ConnectionReset {
                                    self.ended_in_handshake(e)
                                } else {
                                    e
                                })
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    (self.changed.listen(), conn.wants_write())
                };
                self.wait(listener, flushing).await?;
            }
        }

        /// Waits until the socket is readable, or writable when ciphertext is waiting, or the
        /// writer says it left some.
        async fn wait(&self, listener: EventListener, flushing: bool) -> io::Result<()> {
            let changed = async {
                listener.await;
                Ok(())
            };
            if flushing {
                self.io.readable().or(self.io.writable()).or(changed).await
            } else {
                self.io.readable().or(changed).await
            }
        }

        pub(crate) async fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            loop {
                let listener = {
                    let mut guard = self.lock();
                    let conn = &mut guard.conn;
                    self.flush(conn)?;
                    if conn.wants_write() {
                        None
                    } else {
                        // rustls takes up to its buffer limit (64 KiB) and encrypts it at once.
                        let n = conn.writer().write_vectored(bufs)?;
                        if n > 0 || bufs.iter().all(|b| b.is_empty()) {
                            self.flush(conn)?;
                            if conn.wants_write() {
                                // Nobody else may write soon: the reader sends the rest.
                                self.changed.notify(usize::MAX);
                            }
                            return Ok(n);
                        }
                        // Mid-handshake rustls holds as much early plaintext as it allows: wait
                        // for the reader to finish the handshake.
                        Some(self.changed.listen())
                    }
                };
                match listener {
                    Some(listener) => listener.await,
                    None => self.io.writable().await?,
                }
            }
        }
    }
}

/// How a master's driver wraps the sockets it accepts: TLS when the handle has a
/// [`ServerTls`](crate::tls::ServerTls), plain otherwise.
#[derive(Clone, Default)]
pub(crate) struct Acceptor {
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ServerTls>,
}

impl Acceptor {
    /// Wraps an accepted socket; the handshake runs in the connection's first reads and writes.
    pub(crate) fn wrap<S: Io>(&self, io: S) -> io::Result<Stream<S>> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return Ok(tls.accept(io)?);
        }
        Ok(Stream::plain(io, Side::Master))
    }

    /// Whether accepted sockets speak TLS.
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// How a slave's driver wraps the sockets it dials: TLS when the handle has a
/// [`ClientTls`](crate::tls::ClientTls), plain otherwise.
#[derive(Clone, Default)]
pub(crate) struct Dialer {
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ClientTls>,
}

impl Dialer {
    /// Wraps a connected socket; the handshake runs in the connection's first reads and writes.
    pub(crate) fn wrap<S: Io>(&self, io: S) -> io::Result<Stream<S>> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return Ok(tls.connect(io)?);
        }
        Ok(Stream::plain(io, Side::Slave))
    }

    /// Whether dialed sockets speak TLS.
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}
