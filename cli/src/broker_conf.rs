//! `--config FILE` (alias `--broker-conf`): the HA and store settings of a RocketMQ
//! `broker.conf` (Java properties: `key=value` or `key: value` lines, `#` and `!` comments).
//! Only the keys this program understands are read; the rest of a broker's configuration is
//! ignored, and the program says which keys it used and which it ignored. Flags given on the
//! command line win over the file.
//!
//! | key | meaning here |
//! |---|---|
//! | `brokerRole` | `SLAVE`, `ASYNC_MASTER` or `SYNC_MASTER`; must match the command (`slave` or `master`). `SYNC_MASTER`: the master's `--append-rate` appends are synchronous (`--sync`) |
//! | `storePathRootDir` | `--store` (the directory holding `commitlog/`) |
//! | `storePathCommitLog` | `--store` is its parent; it must be a directory named `commitlog` (this program keeps its checkpoint beside it) |
//! | `flushDiskType` | `SYNC_FLUSH`: the slave flushes before it acks (`--flush-before-ack`), the master flushes every append; `ASYNC_FLUSH` (RocketMQ's default): periodic flushes |
//! | `haListenPort` | the master's listening port (`--listen`) |
//! | `haMasterAddress` | the slave's master (`--master`) |
//! | `mappedFileSizeCommitLog` | `--segment-size` |
//! | `haSendHeartbeatInterval`, `haHousekeepingInterval` (ms) | `Config::heartbeat_interval`, `housekeeping_interval` |
//! | `haTransferBatchSize` | `--batch-size` |
//! | `haMaxGapNotInSync`, `haSlaveFallbehindMax` | `Config::max_gap_not_in_sync` |
//! | `slaveTimeout` (ms) | how long a synchronous append waits |
//! | `haFlowControlEnable`, `maxHaTransferByteInSecond` | `--rate-limit` (100 MiB/s when enabled without a rate) |
//! | `inSyncReplicas`, `minInSyncReplicas`, `enableAutoInSyncReplicas`, `allAckInSyncStateSet` | `--sync-policy` (`in-sync:N,min=M[,auto]`, `all-in-sync`) |
//!
//! A `SYNC_MASTER` whose file does not set `inSyncReplicas` waits for one slave (`slaves:1`),
//! not RocketMQ 5's default of none: an operator who wants 5.x's behaviour writes
//! `inSyncReplicas=1` explicitly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rocketmq_ha::{AckPolicy, ConfigBuilder};

use crate::Failure;

/// Every key this program reads; the others are reported as ignored.
const KNOWN_KEYS: &[&str] = &[
    "brokerRole",
    "storePathRootDir",
    "storePathCommitLog",
    "flushDiskType",
    "haListenPort",
    "haMasterAddress",
    "mappedFileSizeCommitLog",
    "haSendHeartbeatInterval",
    "haHousekeepingInterval",
    "haTransferBatchSize",
    "haMaxGapNotInSync",
    "haSlaveFallbehindMax",
    "slaveTimeout",
    "haFlowControlEnable",
    "maxHaTransferByteInSecond",
    "inSyncReplicas",
    "minInSyncReplicas",
    "enableAutoInSyncReplicas",
    "allAckInSyncStateSet",
];

/// `brokerRole` (RocketMQ's `BrokerRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `ASYNC_MASTER`, RocketMQ's default.
    AsyncMaster,
    /// `SYNC_MASTER`.
    SyncMaster,
    /// `SLAVE`.
    Slave,
}

/// RocketMQ's `maxHaTransferByteInSecond` default.
const DEFAULT_FLOW_RATE: u64 = 100 * 1024 * 1024;

/// The HA keys of one `broker.conf`.
#[derive(Debug, Default)]
pub struct BrokerConf {
    entries: BTreeMap<String, String>,
    origin: String,
}

impl BrokerConf {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<BrokerConf, Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure(format!("reading {}: {e}", path.display())))?;
        Ok(Self::parse(&text, &path.display().to_string()))
    }

    /// Parses the text of a properties file; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> BrokerConf {
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('!'))
            .filter_map(|line| {
                let at = line.find(['=', ':'])?;
                Some((
                    line[..at].trim().to_owned(),
                    line[at + 1..].trim().to_owned(),
                ))
            })
            .collect();
        BrokerConf {
            entries,
            origin: origin.to_owned(),
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    fn bad(&self, key: &str, value: &str, what: &str) -> Failure {
        Failure(format!("{}: {key}={value}: {what}", self.origin))
    }

    fn number(&self, key: &str) -> Result<Option<u64>, Failure> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| self.bad(key, v, "not a whole number"))
            })
            .transpose()
    }

    fn millis(&self, key: &str) -> Result<Option<Duration>, Failure> {
        Ok(self.number(key)?.map(Duration::from_millis))
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, Failure> {
        self.get(key)
            .map(|v| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.bad(key, v, "expected true or false")),
            })
            .transpose()
    }

    /// `brokerRole`, upper case (`SYNC_MASTER`, `ASYNC_MASTER`, `SLAVE`).
    pub fn role(&self) -> Option<String> {
        self.get("brokerRole").map(str::to_ascii_uppercase)
    }

    /// `brokerRole`, checked.
    pub fn broker_role(&self) -> Result<Option<Role>, Failure> {
        let Some(role) = self.role() else {
            return Ok(None);
        };
        match role.as_str() {
            "ASYNC_MASTER" => Ok(Some(Role::AsyncMaster)),
            "SYNC_MASTER" => Ok(Some(Role::SyncMaster)),
            "SLAVE" => Ok(Some(Role::Slave)),
            _ => Err(self.bad(
                "brokerRole",
                &role,
                "expected SLAVE, ASYNC_MASTER or SYNC_MASTER",
            )),
        }
    }

    /// Refuses a file whose `brokerRole` is not the command's: a slave's broker.conf given to
    /// `master` would serve the slave's store to others.
    pub fn check_role(&self, master: bool) -> Result<(), Failure> {
        let role = self.broker_role()?;
        let (wrong, command) = match role {
            Some(Role::Slave) if master => ("a slave's", "rocketmq-ha slave"),
            Some(Role::AsyncMaster | Role::SyncMaster) if !master => {
                ("a master's", "rocketmq-ha master")
            }
            _ => return Ok(()),
        };
        let role = self.role().unwrap_or_default();
        Err(Failure(format!(
            "{}: brokerRole={role} is {wrong} configuration: run `{command}` with it",
            self.origin
        )))
    }

    /// The store directory (the one holding `commitlog/`): `storePathCommitLog`'s parent, else
    /// `storePathRootDir`.
    pub fn store_dir(&self) -> Result<Option<PathBuf>, Failure> {
        if let Some(commitlog) = self.get("storePathCommitLog") {
            let path = Path::new(commitlog);
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            return match (path.file_name(), parent) {
                (Some(name), Some(parent)) if name == "commitlog" => Ok(Some(parent.to_owned())),
                _ => Err(self.bad(
                    "storePathCommitLog",
                    commitlog,
                    "this program keeps the commit log in <store>/commitlog: name a directory \
                     called commitlog, or give storePathRootDir instead",
                )),
            };
        }
        Ok(self.get("storePathRootDir").map(PathBuf::from))
    }

    /// `flushDiskType`: whether every append is flushed before it counts (`SYNC_FLUSH`).
    pub fn sync_flush(&self) -> Result<Option<bool>, Failure> {
        self.get("flushDiskType")
            .map(|v| match v.to_ascii_uppercase().as_str() {
                "SYNC_FLUSH" => Ok(true),
                "ASYNC_FLUSH" => Ok(false),
                _ => Err(self.bad("flushDiskType", v, "expected SYNC_FLUSH or ASYNC_FLUSH")),
            })
            .transpose()
    }

    /// One line for the operator: the keys used, and how many (and which) were ignored.
    /// `None` for an empty configuration (no file given).
    pub fn summary(&self) -> Option<String> {
        if self.entries.is_empty() && self.origin.is_empty() {
            return None;
        }
        let (used, ignored): (Vec<&str>, Vec<&str>) = self
            .entries
            .keys()
            .map(String::as_str)
            .partition(|key| KNOWN_KEYS.contains(key));
        let mut line = format!(
            "config {}: using {}",
            self.origin,
            if used.is_empty() {
                "no key".to_owned()
            } else {
                used.join(", ")
            }
        );
        if !ignored.is_empty() {
            line += &format!(
                "; ignoring {} key(s) that are no HA or store settings: {}",
                ignored.len(),
                ignored.join(", ")
            );
        }
        Some(line)
    }

    /// `haListenPort`.
    pub fn listen_port(&self) -> Result<Option<u16>, Failure> {
        self.number("haListenPort")?
            .map(|p| {
                u16::try_from(p).map_err(|_| self.bad("haListenPort", &p.to_string(), "not a port"))
            })
            .transpose()
    }

    /// `haMasterAddress`.
    pub fn master_address(&self) -> Option<&str> {
        self.get("haMasterAddress")
    }

    /// `mappedFileSizeCommitLog`.
    pub fn segment_size(&self) -> Result<Option<u64>, Failure> {
        self.number("mappedFileSizeCommitLog")
    }

    /// `haTransferBatchSize`, at least 1.
    pub fn batch_size(&self) -> Result<Option<u64>, Failure> {
        match self.number("haTransferBatchSize")? {
            Some(0) => Err(self.bad("haTransferBatchSize", "0", "must be at least 1")),
            batch => Ok(batch),
        }
    }

    /// `slaveTimeout`.
    pub fn slave_timeout(&self) -> Result<Option<Duration>, Failure> {
        self.millis("slaveTimeout")
    }

    /// `haFlowControlEnable` + `maxHaTransferByteInSecond`: the rate limit, if enabled.
    pub fn rate_limit(&self) -> Result<Option<u64>, Failure> {
        if self.flag("haFlowControlEnable")? != Some(true) {
            return Ok(None);
        }
        let rate = self
            .number("maxHaTransferByteInSecond")?
            .unwrap_or(DEFAULT_FLOW_RATE);
        if rate < rocketmq_ha::flow::MIN_RATE {
            return Err(self.bad(
                "maxHaTransferByteInSecond",
                &rate.to_string(),
                "must be at least 1024 bytes a second",
            ));
        }
        Ok(Some(rate))
    }

    /// The ack policy the quorum keys ask for, if they say anything.
    pub fn ack_policy(&self) -> Result<Option<AckPolicy>, Failure> {
        if self.flag("allAckInSyncStateSet")? == Some(true) {
            return Ok(Some(AckPolicy::AllInSync));
        }
        let Some(replicas) = self.number("inSyncReplicas")? else {
            return Ok(None);
        };
        let min = self.number("minInSyncReplicas")?.unwrap_or(1);
        let auto = self.flag("enableAutoInSyncReplicas")?.unwrap_or(false);
        if replicas == 0 || min == 0 {
            return Err(self.bad(
                "inSyncReplicas",
                &replicas.to_string(),
                "counts include the master: at least 1",
            ));
        }
        Ok(Some(AckPolicy::InSyncReplicas {
            replicas: replicas as usize,
            min: min as usize,
            auto,
        }))
    }

    /// Applies the timer and gap keys to `config`.
    pub fn apply(&self, mut config: ConfigBuilder) -> Result<ConfigBuilder, Failure> {
        if let Some(d) = self.millis("haSendHeartbeatInterval")? {
            config = config.heartbeat_interval(d);
        }
        if let Some(d) = self.millis("haHousekeepingInterval")? {
            config = config.housekeeping_interval(d);
        }
        let gap = match self.number("haMaxGapNotInSync")? {
            Some(gap) => Some(gap),
            None => self.number("haSlaveFallbehindMax")?,
        };
        if let Some(gap) = gap {
            config = config.max_gap_not_in_sync(gap);
        }
        if let Some(d) = self.slave_timeout()? {
            config = config.slave_timeout(d);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# a 2m-2s-sync broker-a.properties
brokerClusterName = DefaultCluster
brokerRole=SYNC_MASTER
haListenPort : 10912
haSendHeartbeatInterval=2000
haHousekeepingInterval=10000
haTransferBatchSize=65536
haMaxGapNotInSync=1048576
slaveTimeout=1500
haFlowControlEnable=true
inSyncReplicas=2
minInSyncReplicas=2
enableAutoInSyncReplicas=true
! a comment too
";

    #[test]
    fn the_ha_keys_of_a_broker_conf_are_read() {
        let conf = BrokerConf::parse(SAMPLE, "broker.conf");
        assert_eq!(conf.role().as_deref(), Some("SYNC_MASTER"));
        assert_eq!(conf.listen_port().unwrap(), Some(10912));
        assert_eq!(conf.batch_size().unwrap(), Some(65536));
        assert_eq!(conf.rate_limit().unwrap(), Some(DEFAULT_FLOW_RATE));
        assert_eq!(
            conf.ack_policy().unwrap(),
            Some(AckPolicy::InSyncReplicas {
                replicas: 2,
                min: 2,
                auto: true
            })
        );
        let config = conf
            .apply(rocketmq_ha::Config::builder())
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(config.heartbeat_interval(), Duration::from_secs(2));
        assert_eq!(config.housekeeping_interval(), Duration::from_secs(10));
        assert_eq!(config.max_gap_not_in_sync(), 1 << 20);
        assert_eq!(config.slave_timeout(), Duration::from_millis(1500));
    }

    #[test]
    fn store_flush_and_role_keys_are_read_and_checked() {
        let conf = BrokerConf::parse(
            "brokerRole=SLAVE\nstorePathRootDir=/data/store\nflushDiskType=SYNC_FLUSH\n\
             brokerName=broker-a\ndeleteWhen=04\n",
            "b.conf",
        );
        assert_eq!(conf.broker_role().unwrap(), Some(Role::Slave));
        assert!(conf.check_role(false).is_ok());
        let err = conf.check_role(true).unwrap_err().0;
        assert!(
            err.contains("brokerRole=SLAVE") && err.contains("rocketmq-ha slave"),
            "{err}"
        );
        assert_eq!(
            conf.store_dir().unwrap(),
            Some(PathBuf::from("/data/store"))
        );
        assert_eq!(conf.sync_flush().unwrap(), Some(true));
        let summary = conf.summary().unwrap();
        assert!(
            summary.contains("using brokerRole, flushDiskType, storePathRootDir")
                && summary.contains("ignoring 2 key(s)")
                && summary.contains("brokerName, deleteWhen"),
            "{summary}"
        );
        // storePathCommitLog wins, its parent is the store.
        let conf = BrokerConf::parse(
            "storePathRootDir=/a\nstorePathCommitLog=/b/commitlog\nflushDiskType=ASYNC_FLUSH\n",
            "b.conf",
        );
        assert_eq!(conf.store_dir().unwrap(), Some(PathBuf::from("/b")));
        assert_eq!(conf.sync_flush().unwrap(), Some(false));
        assert!(conf.check_role(true).is_ok() && conf.check_role(false).is_ok());
        for (text, key) in [
            ("storePathCommitLog=/b/log\n", "storePathCommitLog=/b/log"),
            (
                "storePathCommitLog=commitlog\n",
                "storePathCommitLog=commitlog",
            ),
            ("flushDiskType=SOMETIMES\n", "flushDiskType=SOMETIMES"),
            ("brokerRole=LEADER\n", "brokerRole=LEADER"),
            ("haTransferBatchSize=0\n", "haTransferBatchSize=0"),
        ] {
            let conf = BrokerConf::parse(text, "b.conf");
            let err = conf
                .store_dir()
                .and(conf.sync_flush())
                .and(conf.broker_role().map(|_| None::<u64>))
                .and(conf.batch_size())
                .unwrap_err()
                .0;
            assert!(err.contains(key), "{text}: {err}");
        }
        assert_eq!(BrokerConf::default().summary(), None);
        let slow = BrokerConf::parse(
            "haFlowControlEnable=true\nmaxHaTransferByteInSecond=10\n",
            "b.conf",
        );
        let err = slow.rate_limit().unwrap_err().0;
        assert!(err.contains("maxHaTransferByteInSecond=10"), "{err}");
    }

    #[test]
    fn absent_keys_say_nothing_and_bad_values_name_the_key() {
        let conf = BrokerConf::parse("brokerRole=SYNC_MASTER\n", "b.conf");
        assert_eq!(
            conf.ack_policy().unwrap(),
            None,
            "the program's default applies"
        );
        assert_eq!(conf.rate_limit().unwrap(), None);
        let bad = BrokerConf::parse("haSendHeartbeatInterval=soon\n", "b.conf");
        let err = bad.apply(rocketmq_ha::Config::builder()).unwrap_err();
        assert!(err.0.contains("haSendHeartbeatInterval=soon"), "{}", err.0);
        let all = BrokerConf::parse("allAckInSyncStateSet=true\ninSyncReplicas=3\n", "b.conf");
        assert_eq!(all.ack_policy().unwrap(), Some(AckPolicy::AllInSync));
    }
}
