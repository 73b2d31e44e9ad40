//! `--tls-cert`, `--tls-key`, `--tls-ca` as a user runs them (cargo feature `tls`): a master and
//! a slave process with mutual authentication replicate to identical stores, a plain slave is
//! told the master speaks TLS, and inconsistent options are refused naming the option.
//! Certificates are made at run time and written to a temporary directory.

#![cfg(feature = "tls")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rocketmq_ha::LogSource;
use rocketmq_ha_transports::file_log::{compare_logs, FileLog};

mod common;

use common::{KillOnDrop, TempStore, BIN};

/// PEM files of a CA, a master certificate for 127.0.0.1 and a slave certificate, in `dir`.
struct Files {
    ca: String,
    master_cert: String,
    master_key: String,
    slave_cert: String,
    slave_key: String,
}

fn write_pki(dir: &std::path::Path) -> Files {
    std::fs::create_dir_all(dir).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let issue = |names: &[&str], prefix: &str| {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (
            write(&format!("{prefix}.crt"), &cert.pem()),
            write(&format!("{prefix}.key"), &key.serialize_pem()),
        )
    };
    let (master_cert, master_key) = issue(&["127.0.0.1"], "master");
    let (slave_cert, slave_key) = issue(&["slave.example"], "slave");
    Files {
        ca: write("ca.crt", &ca.pem()),
        master_cert,
        master_key,
        slave_cert,
        slave_key,
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn start_master(args: &[&str]) -> (KillOnDrop, SocketAddr) {
    let mut master = KillOnDrop(
        Command::new(BIN)
            .args(["master", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = master.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("master listening on ") {
            assert!(rest.contains(", TLS)"), "{line}");
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            std::thread::spawn(move || lines.for_each(drop));
            return (master, addr);
        }
    }
    panic!("the master exited before listening");
}

#[test]
fn a_master_and_a_slave_replicate_over_mutual_tls_and_a_plain_slave_is_told_why_not() {
    let dir = TempStore::new("tls-pki");
    let files = write_pki(&dir.0);
    let master_store = TempStore::new("tls-master");
    let slave_store = TempStore::new("tls-slave");
    let segment = 1u64 << 20;
    let len = 3u64 << 20;
    {
        let mut log = FileLog::create(master_store.path(), segment).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        log.append_at_end(&data).unwrap();
        log.close().unwrap();
    }
    let (master, addr) = start_master(&[
        "--store",
        master_store.path(),
        "--segment-size",
        "1MiB",
        "--from-oldest",
        "--transport",
        "tokio",
        "--tls-cert",
        &files.master_cert,
        "--tls-key",
        &files.master_key,
        "--tls-ca",
        &files.ca,
    ]);
    let addr = addr.to_string();

    let slave = Command::new(BIN)
        .args(["slave", "--master", &addr, "--until", "3MiB"])
        .args(["--store", slave_store.path(), "--segment-size", "1MiB"])
        .args(["--transport", "smol", "--tls-ca", &files.ca])
        .args([
            "--tls-cert",
            &files.slave_cert,
            "--tls-key",
            &files.slave_key,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&slave.stderr);
    assert!(slave.status.success(), "{stderr}");
    assert!(
        stderr.contains("TLS"),
        "the slave says it dials over TLS: {stderr}"
    );

    // A plain slave keeps reconnecting; its log says why it gets nothing.
    let plain_store = TempStore::new("tls-plain");
    let mut plain = KillOnDrop(
        Command::new(BIN)
            .args(["slave", "--master", &addr, "--store", plain_store.path()])
            .args(["--segment-size", "1MiB", "--transport", "tokio"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let lines = BufReader::new(plain.0.stderr.take().unwrap()).lines();
    let hinted = lines.map_while(Result::ok).any(|line| {
        let hint = line.contains("the master speaks TLS but this slave connects over plain TCP");
        seen.push(line);
        assert!(Instant::now() < deadline, "no TLS hint: {seen:#?}");
        hint
    });
    assert!(
        hinted,
        "the plain slave exited without the TLS hint: {seen:#?}"
    );
    drop((plain, master));

    // The stores are unlocked once both processes are gone.
    let ours = FileLog::open(master_store.path(), segment).unwrap();
    let theirs = FileLog::open(slave_store.path(), segment).unwrap();
    assert_eq!(theirs.max_offset(), len);
    let comparison = compare_logs(&theirs, &ours).unwrap();
    assert!(comparison.a_is_prefix_of_b(), "{comparison:?}");
    assert_eq!(comparison.a.start, 0);
    drop((ours, theirs));
}

#[test]
fn inconsistent_tls_options_are_refused_naming_the_option() {
    let dir = TempStore::new("tls-options");
    let files = write_pki(&dir.0);
    let store = TempStore::new("tls-options-store");
    let master = |more: &[&str]| {
        let mut args = vec!["master", "--listen", "127.0.0.1:0", "--store", store.path()];
        args.extend_from_slice(more);
        run(&args)
    };
    // A certificate without its key, and a CA without a certificate.
    let (ok, err) = master(&["--tls-cert", &files.master_cert]);
    assert!(!ok && err.contains("--tls-key"), "{err}");
    let (ok, err) = master(&["--tls-ca", &files.ca]);
    assert!(!ok && err.contains("--tls-cert"), "{err}");
    // The blocking transport has no TLS.
    let (ok, err) = master(&[
        "--transport",
        "blocking",
        "--tls-cert",
        &files.master_cert,
        "--tls-key",
        &files.master_key,
    ]);
    assert!(
        !ok && err.contains("--transport blocking has no TLS"),
        "{err}"
    );
    // A key file given as the certificate: named with its option and path.
    let (ok, err) = master(&[
        "--transport",
        "smol",
        "--tls-cert",
        &files.master_key,
        "--tls-key",
        &files.master_key,
    ]);
    assert!(
        !ok && err.contains("--tls-cert") && err.contains("master.key"),
        "{err}"
    );
    // The slave: a certificate needs the CA that makes it a TLS slave.
    let (ok, err) = run(&[
        "slave",
        "--master",
        "127.0.0.1:1",
        "--store",
        store.path(),
        "--tls-cert",
        &files.slave_cert,
        "--tls-key",
        &files.slave_key,
    ]);
    assert!(!ok && err.contains("--tls-ca"), "{err}");
}
