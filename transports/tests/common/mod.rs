//! What the socket test binaries share: a loopback address and the byte pattern whose
//! misplaced bytes a comparison catches.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::net::SocketAddr;

/// A mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// Any free port on 127.0.0.1.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Deterministic, offset-dependent bytes, so a misplaced byte is caught by comparison.
pub fn pattern(start: u64, len: u64) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}
