//! The master's limits and access options: `--max-connections`, `--allow`, `--full-copy-for`,
//! `--first-report-timeout`. The decisions are the core's ([`Admission`],
//! [`Config::first_report_timeout`](rocketmq_ha::Config::first_report_timeout)); this module
//! only reads the flags and words the refusals for the operator.

use std::num::NonZeroUsize;

use rocketmq_ha::{Admission, ConfigBuilder, IpNet, Refusal};
use rocketmq_ha_transports::RefusedConnection;

use crate::seconds::Seconds;

/// Who may connect to a master, how many at once, and how long a new connection may stay
/// silent.
#[derive(clap::Args)]
pub struct AccessArgs {
    /// Serve at most this many connections at once (at least 1); more are closed as they
    /// arrive, and logged once each time the limit is reached. The blocking transport spends
    /// two threads on each connection, so this is what bounds its threads. No limit by default,
    /// as in RocketMQ.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<NonZeroUsize>,
    /// Serve only peers whose address is in one of these blocks (CIDR like 10.0.0.0/8 or
    /// 2001:db8::/32, or single addresses, separated by commas; the option may be repeated).
    /// Others are closed before a byte is read, and logged once per address. Everyone by
    /// default, as in RocketMQ.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub allow: Vec<IpNet>,
    /// Give an empty slave connecting from one of these blocks (CIDR or single addresses,
    /// separated by commas; the option may be repeated) the whole retained log, from the oldest
    /// segment, instead of RocketMQ's start at the last segment. Other slaves keep the rule
    /// (or --from-oldest). A slave that has data resumes where it is either way.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub full_copy_for: Vec<IpNet>,
    /// Close a connection whose first offset report has not arrived this many seconds after it
    /// was accepted (a scanner, a stuck client). Keep it above 6 for Java 4.9 slaves, which
    /// hold their first report back by about haSendHeartbeatInterval.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "10",
        allow_hyphen_values = true
    )]
    pub first_report_timeout: Seconds,
}

impl AccessArgs {
    /// The admission policy the flags ask for.
    pub fn admission(&self) -> Admission {
        let admission = Admission::new()
            .max_connections(self.max_connections.map(usize::from))
            .full_copy_for(self.full_copy_for.iter().copied());
        if self.allow.is_empty() {
            admission
        } else {
            admission.allow(self.allow.iter().copied())
        }
    }

    /// Applies the first-report deadline to `config`.
    pub fn apply(&self, config: ConfigBuilder) -> ConfigBuilder {
        config.first_report_timeout(self.first_report_timeout.0)
    }
}

/// The line an operator reads for a refusal worth reporting.
pub fn describe(refused: &RefusedConnection) -> String {
    match refused.reason {
        Refusal::NotAllowed => format!(
            "refused {}: its address is not in --allow (further connections from it are closed \
             without a message)",
            refused.peer
        ),
        Refusal::TooManyConnections { limit } => format!(
            "refused {}: {limit} connections are open, the --max-connections limit (further \
             refusals are not logged until a connection closes)",
            refused.peer
        ),
        other => format!("refused {}: {other}", refused.peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        access: AccessArgs,
    }

    #[test]
    fn flags_build_the_admission_and_the_deadline() {
        let cli = Cli::try_parse_from([
            "x",
            "--max-connections",
            "3",
            "--allow",
            "10.0.0.0/8,::1",
            "--allow",
            "192.0.2.7",
            "--first-report-timeout",
            "2.5",
            "--full-copy-for",
            "10.1.0.0/16",
        ])
        .unwrap();
        let admission = cli.access.admission();
        assert_eq!(admission.connection_limit(), Some(3));
        let full: Vec<String> = admission
            .full_copy_blocks()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(full, ["10.1.0.0/16"]);
        let allowed: Vec<String> = admission
            .allowed()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        let config = cli
            .access
            .apply(rocketmq_ha::Config::builder())
            .build()
            .unwrap();
        assert_eq!(
            config.first_report_timeout(),
            std::time::Duration::from_millis(2500)
        );
        let open = Cli::try_parse_from(["x"]).unwrap().access.admission();
        assert_eq!((open.connection_limit(), open.allowed()), (None, None));
    }

    #[test]
    fn nonsense_is_refused_naming_the_option() {
        for (args, option) in [
            (&["--max-connections", "0"][..], "--max-connections"),
            (&["--allow", "10.0.0.0/33"][..], "--allow"),
            (&["--allow", "example.com"][..], "--allow"),
            (&["--full-copy-for", "10.0.0.0/40"][..], "--full-copy-for"),
            (
                &["--first-report-timeout", "0"][..],
                "--first-report-timeout",
            ),
        ] {
            let err = Cli::try_parse_from(std::iter::once(&"x").chain(args))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(option), "{args:?}: {err}");
        }
    }
}
