//! TLS between our own master and slaves (feature `tls`) on the async drivers: replication to
//! identical bytes with acks flowing back, mutual authentication, and the clear errors when a
//! plain peer meets a TLS one on either side. Certificates are made here at run time.

#![cfg(feature = "tls")]

mod common;

use std::time::{Duration, Instant};

use common::{loopback, pattern, MIB};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rocketmq_ha::autoswitch::{EpochEntry, EpochList};
use rocketmq_ha::{Config, MemoryLog, StartPosition};
use rocketmq_ha_transports::tls::{ClientTls, ServerTls};
use rocketmq_ha_transports::{
    AutoSwitchMaster, AutoSwitchSlave, Error, MasterHandle, SlaveHandle, TlsError, Transport,
};

const PATIENCE: Duration = Duration::from_secs(60);

/// The async transports compiled in: the ones that speak TLS.
fn async_transports() -> impl Iterator<Item = Transport> {
    Transport::ALL.iter().copied().filter(|t| t.has_tls())
}

/// A CA and certificates it signed, as PEM.
struct Pki {
    ca: String,
    master: (String, String),
    slave: (String, String),
}

fn issue(ca: &CertifiedIssuer<'_, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = CertificateParams::new(names).expect("params");
    let cert = params.signed_by(&key, ca).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    Pki {
        ca: ca.pem(),
        master: issue(&ca, &["localhost", "127.0.0.1"]),
        slave: issue(&ca, &["slave.example"]),
    }
}

impl Pki {
    fn server(&self, mutual: bool) -> ServerTls {
        let ca = mutual.then_some(self.ca.as_bytes());
        ServerTls::from_pem(self.master.0.as_bytes(), self.master.1.as_bytes(), ca)
            .expect("server config")
    }

    fn client(&self, identity: bool) -> ClientTls {
        let identity = identity.then_some((self.slave.0.as_bytes(), self.slave.1.as_bytes()));
        ClientTls::from_pem(self.ca.as_bytes(), "127.0.0.1", identity).expect("client config")
    }
}

fn config() -> Config {
    Config::builder()
        .start_position(StartPosition::OldestRetained)
        .reconnect_backoff_initial(Duration::from_millis(10))
        .reconnect_backoff_max(Duration::from_millis(100))
        .build()
        .expect("valid test config")
}

fn master_with(len: u64) -> MasterHandle<MemoryLog> {
    let mut log = MemoryLog::new(64 * MIB);
    log.push(pattern(0, len));
    MasterHandle::new(log, config())
}

/// Waits until the slave has recorded an error that `wanted` accepts; returns them all.
fn wait_for_slave_error(
    slave: &SlaveHandle<MemoryLog>,
    wanted: impl Fn(&Error) -> bool,
) -> Vec<Error> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen.extend(slave.take_errors());
        if seen.iter().any(&wanted) {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no such slave error in time; saw {seen:?}");
}

/// Waits until the master has closed a connection with an error that `wanted` accepts.
fn wait_for_master_close(master: &MasterHandle<MemoryLog>, wanted: impl Fn(&Error) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen.extend(master.take_closed().into_iter().filter_map(|c| c.error));
        if seen.iter().any(&wanted) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no such close on the master in time; saw {seen:?}");
}

/// Replicates 4 MiB over TLS, then 1 MiB more in synchronous appends (each waits for the
/// slave's ack, which comes back over TLS), and compares every byte.
fn replicate(transport: Transport, server: ServerTls, client: ClientTls) {
    let master = master_with(4 * MIB);
    master.set_tls(Some(server));
    let running = transport
        .spawn_master(loopback(), master.clone())
        .expect("master starts");
    let addr = running.local_addr().expect("a master listens");
    let slave = SlaveHandle::new(addr, MemoryLog::new(64 * MIB), config());
    slave.set_tls(Some(client));
    assert!(slave.is_tls() && master.is_tls());
    let client_running = transport.spawn_slave(slave.clone()).expect("slave starts");
    let deadline = Instant::now() + PATIENCE;
    assert!(
        slave.wait_until_blocking(deadline, |s| s.log().max_offset() >= 4 * MIB),
        "{transport}: the slave stopped at {}; errors: {:?}",
        slave.log().max_offset(),
        slave.take_errors()
    );
    let mut end = 4 * MIB;
    for i in 0..16 {
        let chunk = pattern(end, 64 * 1024);
        end = master
            .append_replicated_blocking(chunk, 1, PATIENCE)
            .unwrap_or_else(|e| panic!("{transport}: sync append {i}: {e}"));
    }
    assert_eq!(end, 5 * MIB);
    assert_eq!(slave.log().max_offset(), end, "{transport}");
    let theirs = slave.log().read().copy_range(0, end).expect("range");
    assert!(theirs == pattern(0, end), "{transport}: bytes differ");
    assert!(
        slave.take_errors().is_empty(),
        "{transport}: the slave recorded errors"
    );
    client_running.shutdown().expect("slave stops");
    running.shutdown().expect("master stops");
}

#[test]
fn a_tls_slave_replicates_from_a_tls_master_to_identical_bytes_with_acks_back() {
    let pki = pki();
    for transport in async_transports() {
        replicate(transport, pki.server(false), pki.client(false));
    }
}

#[test]
fn with_a_client_ca_the_master_serves_a_slave_that_presents_a_certificate_it_signed() {
    let pki = pki();
    for transport in async_transports() {
        replicate(transport, pki.server(true), pki.client(true));
    }
}

/// AutoSwitch over mutual TLS: the handshake, the epoch answer, data and the 12-byte reports
/// all cross the encrypted stream, and the slave joins the sync-state set.
#[test]
fn an_autoswitch_slave_replicates_over_mutual_tls() {
    let pki = pki();
    for transport in async_transports() {
        let mut log = MemoryLog::new(64 * MIB);
        log.push(pattern(0, 2 * MIB));
        let history = EpochList::from_entries([EpochEntry::new(1, 0)]).unwrap();
        let options = AutoSwitchMaster::new(1, 1).history(history);
        let master = MasterHandle::autoswitch(log, config(), options).unwrap();
        master.set_tls(Some(pki.server(true)));
        let running = transport.spawn_master(loopback(), master.clone()).unwrap();
        let addr = running.local_addr().unwrap().to_string();
        let options = AutoSwitchSlave::new(2, 1);
        let slave =
            SlaveHandle::autoswitch(&addr, MemoryLog::new(64 * MIB), config(), options).unwrap();
        slave.set_tls(Some(pki.client(true)));
        let client = transport.spawn_slave(slave.clone()).unwrap();
        let deadline = Instant::now() + PATIENCE;
        assert!(
            master.wait_until_blocking(deadline, |m| m.sync_state_members().unwrap().len() == 2),
            "{transport}: slave at {}; errors {:?}",
            slave.log().max_offset(),
            slave.take_errors()
        );
        assert_eq!(slave.log().max_offset(), 2 * MIB);
        let theirs = slave.log().read().copy_range(0, 2 * MIB).unwrap();
        assert!(theirs == pattern(0, 2 * MIB), "{transport}: bytes differ");
        client.shutdown().unwrap();
        running.shutdown().unwrap();
    }
}

#[test]
fn with_a_client_ca_the_master_refuses_a_slave_without_a_certificate() {
    let pki = pki();
    for transport in async_transports() {
        let master = master_with(MIB);
        master.set_tls(Some(pki.server(true)));
        let running = transport.spawn_master(loopback(), master.clone()).unwrap();
        let slave = SlaveHandle::new(running.local_addr().unwrap(), MemoryLog::new(MIB), config());
        slave.set_tls(Some(pki.client(false)));
        let client = transport.spawn_slave(slave.clone()).unwrap();
        wait_for_master_close(&master, |e| {
            matches!(
                e,
                Error::Tls(TlsError::Protocol(rustls::Error::NoCertificatesPresented))
            )
        });
        let errors = wait_for_slave_error(&slave, |e| {
            matches!(
                e,
                Error::Tls(TlsError::Protocol(rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateRequired
                )))
            )
        });
        assert_eq!(slave.log().max_offset(), 0, "{transport}: {errors:?}");
        client.shutdown().unwrap();
        running.shutdown().unwrap();
    }
}

#[test]
fn a_slave_that_does_not_trust_the_masters_ca_refuses_it() {
    let (pki, other) = (pki(), pki());
    for transport in async_transports() {
        let master = master_with(MIB);
        master.set_tls(Some(pki.server(false)));
        let running = transport.spawn_master(loopback(), master.clone()).unwrap();
        let slave = SlaveHandle::new(running.local_addr().unwrap(), MemoryLog::new(MIB), config());
        slave.set_tls(Some(other.client(false)));
        let client = transport.spawn_slave(slave.clone()).unwrap();
        let errors = wait_for_slave_error(&slave, |e| {
            matches!(
                e,
                Error::Tls(TlsError::Protocol(rustls::Error::InvalidCertificate(_)))
            )
        });
        assert_eq!(slave.log().max_offset(), 0, "{transport}: {errors:?}");
        client.shutdown().unwrap();
        running.shutdown().unwrap();
    }
}

#[test]
fn a_plain_slave_meeting_a_tls_master_fails_clearly_on_both_sides() {
    let pki = pki();
    for transport in async_transports() {
        let master = master_with(MIB);
        master.set_tls(Some(pki.server(false)));
        let running = transport.spawn_master(loopback(), master.clone()).unwrap();
        let slave = SlaveHandle::new(running.local_addr().unwrap(), MemoryLog::new(MIB), config());
        let client = transport.spawn_slave(slave.clone()).unwrap();
        wait_for_master_close(&master, |e| matches!(e, Error::Tls(TlsError::PlainSlave)));
        let errors = wait_for_slave_error(&slave, |e| matches!(e, Error::Tls(TlsError::TlsMaster)));
        let shown = errors
            .iter()
            .find(|e| matches!(e, Error::Tls(_)))
            .unwrap()
            .to_string();
        assert!(shown.contains("the master speaks TLS"), "{shown}");
        assert_eq!(slave.log().max_offset(), 0, "{transport}");
        client.shutdown().unwrap();
        running.shutdown().unwrap();
    }
}

#[test]
fn a_tls_slave_meeting_a_plain_master_fails_clearly_on_both_sides() {
    let pki = pki();
    for transport in async_transports() {
        let master = master_with(MIB);
        let running = transport.spawn_master(loopback(), master.clone()).unwrap();
        let slave = SlaveHandle::new(running.local_addr().unwrap(), MemoryLog::new(MIB), config());
        slave.set_tls(Some(pki.client(false)));
        let client = transport.spawn_slave(slave.clone()).unwrap();
        wait_for_master_close(&master, |e| matches!(e, Error::Tls(TlsError::TlsSlave)));
        let errors =
            wait_for_slave_error(&slave, |e| matches!(e, Error::Tls(TlsError::PlainMaster)));
        let shown = errors
            .iter()
            .find(|e| matches!(e, Error::Tls(_)))
            .unwrap()
            .to_string();
        assert!(shown.contains("plain TCP"), "{shown}");
        assert_eq!(slave.log().max_offset(), 0, "{transport}");
        client.shutdown().unwrap();
        running.shutdown().unwrap();
    }
}

#[test]
fn the_blocking_transport_refuses_handles_with_tls() {
    let pki = pki();
    let master = master_with(MIB);
    master.set_tls(Some(pki.server(false)));
    let refused = Transport::Blocking
        .spawn_master(loopback(), master)
        .expect_err("no TLS on the blocking driver");
    assert_eq!(refused.kind(), std::io::ErrorKind::Unsupported);
    let slave = SlaveHandle::new(loopback(), MemoryLog::new(MIB), config());
    slave.set_tls(Some(pki.client(false)));
    let refused = Transport::Blocking
        .spawn_slave(slave)
        .expect_err("no TLS on the blocking driver");
    assert_eq!(refused.kind(), std::io::ErrorKind::Unsupported);
}

#[test]
fn pem_without_a_certificate_is_refused_naming_the_input() {
    let pki = pki();
    let err = ServerTls::from_pem(b"", pki.master.1.as_bytes(), None).unwrap_err();
    assert!(err.to_string().contains("certificate chain"), "{err}");
    let err = ServerTls::from_pem(pki.master.0.as_bytes(), b"nothing", None).unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
    let err = ClientTls::from_pem(pki.ca.as_bytes(), "not a name!", None).unwrap_err();
    assert!(matches!(err, TlsError::ServerName(_)), "{err}");
}
