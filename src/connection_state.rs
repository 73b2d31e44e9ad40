//! Where a connection is in its life, as RocketMQ 5 names it (`HAConnectionState`, §3.10).

/// A connection's state, RocketMQ 5's `HAConnectionState`. The classic protocol uses three of
/// the five: a slave is [`Ready`](Self::Ready) while it has no connection, [`Transfer`](Self::Transfer)
/// while connected, and [`Shutdown`](Self::Shutdown) for good; a master's connection is
/// `Transfer` from accept until it closes, then `Shutdown`. `Handshake` and `Suspend` belong to
/// AutoSwitch (§5); Java never sets `Suspend` at all.
///
/// The state is local: the classic wire never carries it. Brokers use it to wait until a peer's
/// connection reaches a state (Java's `HAConnectionStateNotificationService`); the drivers offer
/// the same waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive] // AutoSwitch may refine the handshake
pub enum ConnectionState {
    /// No connection yet (a slave waiting to dial, or dialing).
    #[default]
    Ready,
    /// AutoSwitch's handshake (not used by the classic protocol).
    Handshake,
    /// Connected: reports and frames flow.
    Transfer,
    /// Declared by Java, set nowhere.
    Suspend,
    /// Closed for good.
    Shutdown,
}

impl ConnectionState {
    /// The ordinal AutoSwitch puts on the wire (`READY=0` .. `SHUTDOWN=4`).
    pub fn ordinal(self) -> u8 {
        self as u8
    }

    /// RocketMQ's name for it (`TRANSFER`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ConnectionState::Ready => "READY",
            ConnectionState::Handshake => "HANDSHAKE",
            ConnectionState::Transfer => "TRANSFER",
            ConnectionState::Suspend => "SUSPEND",
            ConnectionState::Shutdown => "SHUTDOWN",
        }
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_are_rocketmqs() {
        let all = [
            ConnectionState::Ready,
            ConnectionState::Handshake,
            ConnectionState::Transfer,
            ConnectionState::Suspend,
            ConnectionState::Shutdown,
        ];
        let ordinals: Vec<u8> = all.iter().map(|s| s.ordinal()).collect();
        assert_eq!(ordinals, [0, 1, 2, 3, 4]);
        assert_eq!(ConnectionState::Transfer.to_string(), "TRANSFER");
    }
}
