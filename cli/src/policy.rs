//! `--sync-policy`: how many slaves a synchronous append waits for, in RocketMQ's terms.

use std::str::FromStr;

use rocketmq_ha::AckPolicy;

/// A parsed `--sync-policy` value.
#[derive(Debug, Clone, Copy)]
pub struct Policy(pub AckPolicy);

impl FromStr for Policy {
    type Err = String;

    /// `slaves:N` (wait for N slaves; the default, `slaves:1`), `slave-ok` (RocketMQ 4.9's
    /// SYNC_MASTER), `in-sync:N[,min=M][,auto]` (RocketMQ 5's inSyncReplicas, counting the
    /// master; minInSyncReplicas; enableAutoInSyncReplicas), `all-in-sync`
    /// (allAckInSyncStateSet).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |v: &str, what: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{what} must be a whole number, not {v:?}"))
        };
        let policy = match s.split_once(':') {
            _ if s == "slave-ok" => AckPolicy::SlaveOk,
            _ if s == "all-in-sync" => AckPolicy::AllInSync,
            Some(("slaves", n)) => AckPolicy::Slaves(number(n, "slaves")?),
            Some(("in-sync", rest)) => {
                let mut parts = rest.split(',');
                let replicas = number(parts.next().unwrap_or(""), "in-sync")?;
                let (mut min, mut auto) = (1, false);
                for part in parts {
                    match part.split_once('=') {
                        Some(("min", m)) => min = number(m, "min")?,
                        None if part == "auto" => auto = true,
                        _ => return Err(format!("unknown in-sync option {part:?}")),
                    }
                }
                if replicas == 0 || min == 0 {
                    return Err("replica counts include the master: at least 1".into());
                }
                AckPolicy::InSyncReplicas {
                    replicas,
                    min,
                    auto,
                }
            }
            _ => {
                return Err(format!(
                    "{s:?}: expected slaves:N, slave-ok, in-sync:N[,min=M][,auto] or all-in-sync"
                ))
            }
        };
        Ok(Policy(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_nonsense_does_not() {
        let p = |s: &str| s.parse::<Policy>().map(|p| p.0);
        assert_eq!(p("slaves:2"), Ok(AckPolicy::Slaves(2)));
        assert_eq!(p("slave-ok"), Ok(AckPolicy::SlaveOk));
        assert_eq!(p("all-in-sync"), Ok(AckPolicy::AllInSync));
        assert_eq!(
            p("in-sync:3,min=2,auto"),
            Ok(AckPolicy::InSyncReplicas {
                replicas: 3,
                min: 2,
                auto: true
            })
        );
        assert_eq!(
            p("in-sync:1"),
            Ok(AckPolicy::InSyncReplicas {
                replicas: 1,
                min: 1,
                auto: false
            })
        );
        for bad in [
            "",
            "slaves",
            "slaves:x",
            "in-sync:0",
            "in-sync:2,bogus",
            "quorum",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
