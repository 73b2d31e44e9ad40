//! Who may connect to a master and how many at once: the decision a driver asks for on each
//! accepted socket, before it reads a byte from it.
//!
//! RocketMQ's master accepts anyone, any number of times: any TCP client that sends 8 bytes
//! becomes a slave (§3.7, #3015), and every connection costs the master two threads. An
//! [`Admission`] adds an allow list of address blocks ([`IpNet`]) and a limit on live
//! connections. It also decides which refusals are worth a log line, so that a scanner or a
//! flood of connections produces a few lines rather than one per socket.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;
use std::collections::HashSet;

use crate::StartPosition;

/// How many distinct refused peers an [`Admission`] remembers having reported; past that it
/// forgets them all and starts again, so memory stays bounded however many addresses a flood
/// comes from, and the log gets at most one line per peer per this many peers.
pub const REPORTED_PEERS: usize = 1024;

/// A block of IP addresses, as in `10.0.0.0/8`, `2001:db8::/32`, or a single address.
///
/// Bits of the address beyond the prefix are cleared: `10.1.2.3/8` is `10.0.0.0/8`. An IPv4
/// block also contains the IPv4-mapped IPv6 form of its addresses (`::ffff:10.1.2.3`), which is
/// how a master listening on `[::]` sees IPv4 peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not an [`IpNet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // other notations (ranges, host names) may come
pub enum IpNetError {
    /// The part before the `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The prefix length is not a number, or is longer than the address (32 for IPv4, 128 for
    /// IPv6).
    #[error("{prefix:?} is not a prefix length for {addr} (0 to {max})")]
    Prefix {
        /// The address.
        addr: IpAddr,
        /// The prefix as written.
        prefix: String,
        /// The longest prefix for this address family.
        max: u8,
    },
}

impl IpNet {
    /// The block of `addr`'s first `prefix` bits.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, IpNetError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(IpNetError::Prefix {
                addr,
                prefix: prefix.to_string(),
                max,
            });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask128(prefix))),
        };
        Ok(IpNet { addr, prefix })
    }

    /// The block holding exactly `addr`.
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet {
            addr,
            prefix: max_prefix(addr),
        }
    }

    /// The block's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// How many leading bits of an address must match.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                ip.to_bits() & mask32(self.prefix) == net.to_bits()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                ip.to_bits() & mask128(self.prefix) == net.to_bits()
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = IpNetError;

    /// `ADDR/PREFIX` or a bare `ADDR` (one host).
    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| IpNetError::Address(addr.to_owned()))?;
        match prefix {
            None => Ok(IpNet::host(addr)),
            Some(prefix) => {
                let bad = || IpNetError::Prefix {
                    addr,
                    prefix: prefix.to_owned(),
                    max: max_prefix(addr),
                };
                // Only digits: `u8::from_str` would also take a leading `+`.
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let len = prefix.parse().map_err(|_| bad())?;
                IpNet::new(addr, len).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // per-address limits may add reasons
pub enum Refusal {
    /// The peer's address is in none of the allowed blocks.
    #[error("its address is not in the allow list")]
    NotAllowed,
    /// `limit` connections were already live.
    #[error("{limit} connections are open, the most allowed")]
    TooManyConnections {
        /// The limit in force.
        limit: usize,
    },
}

/// What to do with an accepted socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Serve it.
    Accept,
    /// Close it at once, without reading from it.
    Refuse {
        /// Why.
        reason: Refusal,
        /// Whether to log this refusal: the first one from this peer for
        /// [`Refusal::NotAllowed`], the first one since the master was last below its limit for
        /// [`Refusal::TooManyConnections`]. The others are only counted.
        report: bool,
    },
}

/// The admission policy of a master and what it has reported so far; it does no I/O.
///
/// A driver calls [`decide`](Self::decide) for every socket it accepts, with the number of
/// connections being served, and closes the socket at once when told to refuse it. The default
/// admits everyone, any number of times, as RocketMQ does.
///
/// ```
/// use std::net::IpAddr;
/// use rocketmq_ha::{Admission, Decision, IpNet, Refusal};
///
/// let lan: IpNet = "10.0.0.0/8".parse()?;
/// let mut admission = Admission::new().allow([lan]).max_connections(Some(2));
/// let slave: IpAddr = "10.1.2.3".parse()?;
/// assert_eq!(admission.decide(slave, 0), Decision::Accept);
/// // Full: refused, and worth a log line the first time.
/// assert_eq!(
///     admission.decide(slave, 2),
///     Decision::Refuse { reason: Refusal::TooManyConnections { limit: 2 }, report: true }
/// );
/// let stranger: IpAddr = "192.0.2.1".parse()?;
/// assert!(matches!(
///     admission.decide(stranger, 0),
///     Decision::Refuse { reason: Refusal::NotAllowed, .. }
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Admission {
    max_connections: Option<usize>,
    allow: Option<Vec<IpNet>>,
    /// Peers whose empty slaves get the whole retained log.
    full_copy: Vec<IpNet>,
    /// Peers whose refusal (not allowed) was reported; at most [`REPORTED_PEERS`].
    reported: HashSet<IpAddr>,
    /// Whether a refusal at the limit was reported since the last admitted connection.
    limit_reported: bool,
    refused: u64,
}

impl Admission {
    /// Admits everyone, any number of times.
    pub fn new() -> Admission {
        Admission::default()
    }

    /// Serve at most `limit` connections at once (`None`: no limit); more are closed as they
    /// arrive. Zero refuses everyone.
    pub fn max_connections(mut self, limit: Option<usize>) -> Admission {
        self.max_connections = limit;
        self
    }

    /// Serve only peers whose address is in one of `nets` (none: nobody). Without a call,
    /// everyone is allowed.
    pub fn allow(mut self, nets: impl IntoIterator<Item = IpNet>) -> Admission {
        self.allow = Some(nets.into_iter().collect());
        self
    }

    /// Give an empty slave (one that reports offset 0) connecting from one of `nets` the whole
    /// retained log, from the oldest segment, instead of RocketMQ's start at the master's last
    /// segment (§3.3). Others keep the master's [`Config::start_position`](crate::Config).
    ///
    /// RocketMQ's classic master has no such choice; its AutoSwitch master does the opposite
    /// by default (the whole log, unless the slave asks for the last file with
    /// `syncFromLastFile`, §5.5). Here the master decides, by address: a full copy of a large
    /// log is a heavy read on the master, so a slave cannot ask for one by itself.
    pub fn full_copy_for(mut self, nets: impl IntoIterator<Item = IpNet>) -> Admission {
        self.full_copy = nets.into_iter().collect();
        self
    }

    /// The blocks whose empty slaves get a full copy.
    pub fn full_copy_blocks(&self) -> &[IpNet] {
        &self.full_copy
    }

    /// Where an empty slave connecting from `peer` starts: the oldest retained segment when
    /// [`full_copy_for`](Self::full_copy_for) names its address, else `default` (the master's
    /// [`Config::start_position`](crate::Config::start_position)). A driver hands the result to
    /// the connection ([`MasterConnection::set_start_position`](crate::MasterConnection::set_start_position)).
    pub fn start_position(&self, peer: IpAddr, default: StartPosition) -> StartPosition {
        if self.full_copy.iter().any(|net| net.contains(peer)) {
            StartPosition::OldestRetained
        } else {
            default
        }
    }

    /// The connection limit, if any.
    pub fn connection_limit(&self) -> Option<usize> {
        self.max_connections
    }

    /// The allowed blocks, or `None` when everyone is allowed.
    pub fn allowed(&self) -> Option<&[IpNet]> {
        self.allow.as_deref()
    }

    /// How many connections were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether a connection from `peer` is served, given that `live` connections are being
    /// served now (not counting this one). The allow list is checked first: a peer that may
    /// not connect is refused as such even when the master is also full.
    pub fn decide(&mut self, peer: IpAddr, live: usize) -> Decision {
        if let Some(allow) = &self.allow {
            if !allow.iter().any(|net| net.contains(peer)) {
                self.refused += 1;
                if self.reported.len() >= REPORTED_PEERS && !self.reported.contains(&peer) {
                    self.reported.clear();
                }
                let report = self.reported.insert(peer);
                return Decision::Refuse {
                    reason: Refusal::NotAllowed,
                    report,
                };
            }
        }
        if let Some(limit) = self.max_connections {
            if live >= limit {
                self.refused += 1;
                let report = !self.limit_reported;
                self.limit_reported = true;
                return Decision::Refuse {
                    reason: Refusal::TooManyConnections { limit },
                    report,
                };
            }
        }
        self.limit_reported = false;
        Decision::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_full_copy_blocks_start_an_empty_slave_at_the_oldest_segment() {
        let admission = Admission::new().full_copy_for(["10.1.0.0/16".parse().unwrap()]);
        assert_eq!(
            admission.start_position(ip("10.1.2.3"), StartPosition::LastSegment),
            StartPosition::OldestRetained
        );
        assert_eq!(
            admission.start_position(ip("::ffff:10.1.2.3"), StartPosition::LastSegment),
            StartPosition::OldestRetained
        );
        assert_eq!(
            admission.start_position(ip("10.2.0.1"), StartPosition::LastSegment),
            StartPosition::LastSegment
        );
        // A master that starts everyone at the oldest segment still does.
        assert_eq!(
            Admission::new().start_position(ip("10.2.0.1"), StartPosition::OldestRetained),
            StartPosition::OldestRetained
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_print_and_contain() {
        let n = net("10.1.2.3/8");
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(ip("10.255.0.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped");
        assert!(!n.contains(ip("::1")));
        assert_eq!(net("192.168.1.7").to_string(), "192.168.1.7/32");
        assert!(net("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(!net("192.168.1.7").contains(ip("192.168.1.8")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        let v6 = net("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(net("::/0").contains(ip("::1")));
        assert_eq!(net("::1").prefix_len(), 128);
        assert_eq!(net(" 10.0.0.0/24 ").addr(), ip("10.0.0.0"));
    }

    #[test]
    fn bad_blocks_say_what_is_wrong() {
        assert_eq!(
            "10.0.0/8".parse::<IpNet>(),
            Err(IpNetError::Address("10.0.0".into()))
        );
        assert!(matches!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetError::Prefix { max: 32, .. })
        ));
        assert!(matches!(
            "::/129".parse::<IpNet>(),
            Err(IpNetError::Prefix { max: 128, .. })
        ));
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/x",
            "host.example",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        let e = "10.0.0.0/40".parse::<IpNet>().unwrap_err().to_string();
        assert!(e.contains("\"40\"") && e.contains("0 to 32"), "{e}");
    }

    #[test]
    fn everyone_is_admitted_by_default() {
        let mut a = Admission::new();
        for live in [0, 1, 10_000] {
            assert_eq!(a.decide(ip("203.0.113.1"), live), Decision::Accept);
        }
        assert_eq!(a.refused(), 0);
    }

    #[test]
    fn the_limit_refuses_beyond_it_and_reports_once_per_episode() {
        let mut a = Admission::new().max_connections(Some(2));
        let peer = ip("127.0.0.1");
        assert_eq!(a.decide(peer, 0), Decision::Accept);
        assert_eq!(a.decide(peer, 1), Decision::Accept);
        let full = |report| Decision::Refuse {
            reason: Refusal::TooManyConnections { limit: 2 },
            report,
        };
        assert_eq!(a.decide(peer, 2), full(true));
        for _ in 0..100 {
            assert_eq!(a.decide(ip("127.0.0.2"), 2), full(false));
        }
        // A connection closed and another took its place: the next time the master is full
        // is a new episode, worth one line again.
        assert_eq!(a.decide(peer, 1), Decision::Accept);
        assert_eq!(a.decide(peer, 2), full(true));
        assert_eq!(a.refused(), 102);
        let mut none = Admission::new().max_connections(Some(0));
        assert!(matches!(none.decide(peer, 0), Decision::Refuse { .. }));
    }

    #[test]
    fn the_allow_list_refuses_others_reporting_each_peer_once() {
        let mut a = Admission::new().allow([net("10.0.0.0/8"), net("::1")]);
        assert_eq!(a.decide(ip("10.2.3.4"), 0), Decision::Accept);
        assert_eq!(a.decide(ip("::1"), 0), Decision::Accept);
        let refused = |report| Decision::Refuse {
            reason: Refusal::NotAllowed,
            report,
        };
        assert_eq!(a.decide(ip("192.0.2.1"), 0), refused(true));
        assert_eq!(a.decide(ip("192.0.2.1"), 0), refused(false));
        assert_eq!(a.decide(ip("192.0.2.2"), 0), refused(true));
        // Not allowed wins over full: the reason says what the operator can change.
        let mut both = Admission::new()
            .allow([net("10.0.0.0/8")])
            .max_connections(Some(1));
        assert_eq!(both.decide(ip("192.0.2.1"), 5), refused(true));
        // An empty list allows nobody.
        let mut nobody = Admission::new().allow([]);
        assert_eq!(nobody.decide(ip("10.0.0.1"), 0), refused(true));
    }

    #[test]
    fn reported_peers_stay_bounded_under_a_flood() {
        let mut a = Admission::new().allow([net("10.0.0.0/8")]);
        let mut reports = 0;
        for i in 0..(3 * REPORTED_PEERS as u32) {
            let peer = IpAddr::V4(Ipv4Addr::from_bits(0xC000_0000 | i));
            if let Decision::Refuse { report: true, .. } = a.decide(peer, 0) {
                reports += 1;
            }
            assert!(a.reported.len() <= REPORTED_PEERS);
        }
        assert_eq!(reports, 3 * REPORTED_PEERS);
        assert_eq!(a.refused(), 3 * REPORTED_PEERS as u64);
    }
}
