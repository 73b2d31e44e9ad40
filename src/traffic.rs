//! What a connection loop moved: bytes and frames each way, counted by the loops themselves so
//! that every driver (and the simulator) reports the same figures for the same traffic.

/// Bytes and frames one loop moved so far, each way.
///
/// On the master ([`MasterLoop::traffic`](crate::MasterLoop::traffic)) it covers one
/// connection: frames out are transfer frames (heartbeats included), frames in are the slave's
/// 8-byte reports. On the slave ([`SlaveLoop::traffic`](crate::SlaveLoop::traffic)) it covers
/// every connection the loop made: frames in are transfer frames, frames out are reports.
/// A frame counts once it is whole: written to the end, or read to the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive] // e.g. heartbeats on their own
pub struct Traffic {
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// Whole frames read from the peer.
    pub frames_in: u64,
    /// Whole frames written to the peer.
    pub frames_out: u64,
}

impl Traffic {
    /// A value with the four figures, for drivers that keep them elsewhere (atomics) and hand
    /// them back.
    pub fn new(bytes_in: u64, bytes_out: u64, frames_in: u64, frames_out: u64) -> Self {
        Traffic {
            bytes_in,
            bytes_out,
            frames_in,
            frames_out,
        }
    }

    /// Field-wise sum (saturating), e.g. closed connections plus live ones.
    pub fn saturating_add(self, other: Traffic) -> Traffic {
        Traffic {
            bytes_in: self.bytes_in.saturating_add(other.bytes_in),
            bytes_out: self.bytes_out.saturating_add(other.bytes_out),
            frames_in: self.frames_in.saturating_add(other.frames_in),
            frames_out: self.frames_out.saturating_add(other.frames_out),
        }
    }
}
