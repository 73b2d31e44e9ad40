//! `--tls-cert`, `--tls-key`, `--tls-ca` (and the slave's `--tls-server-name`): TLS between our
//! own master and slaves, read from PEM files. Java brokers speak plain TCP on the HA port, so
//! a master with TLS serves only our slaves (see the transports crate's `tls` module).
//!
//! The options exist in every build, so that a build without the cargo feature `tls` says so
//! instead of calling them unknown.

#[cfg(feature = "tls")]
use std::path::Path;
use std::path::PathBuf;

use rocketmq_ha_transports::{MasterHandle, SlaveHandle, Transport};

use crate::Failure;

/// A master's TLS options.
#[derive(clap::Args, Debug, Default)]
pub struct MasterTlsArgs {
    /// Serve slaves over TLS with this certificate chain (PEM, the master's certificate first);
    /// needs --tls-key and the smol or tokio transport. For our slaves only: Java slaves speak
    /// plain TCP and are refused.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-cert: require every slave to present a certificate signed by one of these
    /// CAs (PEM), mutual authentication.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
}

/// A slave's TLS options.
#[derive(clap::Args, Debug, Default)]
pub struct SlaveTlsArgs {
    /// Dial the master over TLS, trusting a master certificate signed by one of these CAs
    /// (PEM); needs the smol or tokio transport. Only our masters speak TLS; a Java master
    /// speaks plain TCP.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: present this certificate chain (PEM) to a master that requires one.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-ca: the name the master's certificate must be valid for (a DNS name or an
    /// IP address); the host of --master by default.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl MasterTlsArgs {
    fn given(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Gives `master` the TLS the options ask for, if any.
    pub fn apply<L>(&self, master: &MasterHandle<L>, transport: Transport) -> Result<(), Failure> {
        if !self.given() {
            return Ok(());
        }
        check_transport(transport)?;
        #[cfg(feature = "tls")]
        {
            let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
                return Err(Failure("--tls-cert needs --tls-key".into()));
            };
            let ca = self.tls_ca.as_deref().map(read).transpose()?;
            let tls = rocketmq_ha_transports::tls::ServerTls::from_pem(
                &read(cert)?,
                &read(key)?,
                ca.as_deref(),
            )
            .map_err(|e| pem_failure(e, cert, key, self.tls_ca.as_deref()))?;
            master.set_tls(Some(tls));
            Ok(())
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = master;
            Err(not_built())
        }
    }
}

impl SlaveTlsArgs {
    fn given(&self) -> bool {
        self.tls_ca.is_some()
    }

    /// Gives `slave` the TLS the options ask for, if any; `master` is `HOST:PORT` as given.
    pub fn apply<L>(
        &self,
        slave: &SlaveHandle<L>,
        transport: Transport,
        master: &str,
    ) -> Result<(), Failure> {
        if !self.given() {
            return Ok(());
        }
        check_transport(transport)?;
        #[cfg(feature = "tls")]
        {
            let Some(ca_path) = &self.tls_ca else {
                return Ok(());
            };
            let ca = read(ca_path)?;
            let name = match &self.tls_server_name {
                Some(name) => name.clone(),
                None => host_of(master).to_owned(),
            };
            let identity = match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            };
            let tls = rocketmq_ha_transports::tls::ClientTls::from_pem(
                &ca,
                &name,
                identity.as_ref().map(|(c, k)| (&c[..], &k[..])),
            )
            .map_err(|e| match e {
                rocketmq_ha_transports::TlsError::ServerName(name) => Failure(format!(
                    "TLS server name {name:?} (the host of --master, or --tls-server-name) is \
                     neither a DNS name nor an IP address"
                )),
                e => pem_failure(
                    e,
                    self.tls_cert.as_deref().unwrap_or(Path::new("")),
                    self.tls_key.as_deref().unwrap_or(Path::new("")),
                    Some(ca_path),
                ),
            })?;
            slave.set_tls(Some(tls));
            Ok(())
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (slave, master);
            Err(not_built())
        }
    }
}

fn check_transport(transport: Transport) -> Result<(), Failure> {
    if transport.has_tls() {
        Ok(())
    } else {
        Err(Failure(format!(
            "--transport {transport} has no TLS: use --transport smol or tokio with --tls-*"
        )))
    }
}

#[cfg(not(feature = "tls"))]
fn not_built() -> Failure {
    Failure("--tls-*: this rocketmq-ha was built without TLS (cargo feature `tls`)".into())
}

/// The host of `HOST:PORT` (`[V6]:PORT` without its brackets).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(feature = "tls")]
fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure(format!("reading {}: {e}", path.display())))
}

/// Names the option whose file failed to parse.
#[cfg(feature = "tls")]
fn pem_failure(
    error: rocketmq_ha_transports::TlsError,
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
) -> Failure {
    use rocketmq_ha_transports::TlsError;
    let (option, path) = match &error {
        TlsError::Pem { what, .. } if *what == "private key" => ("--tls-key", key),
        TlsError::Pem { what, .. } if *what == "CA certificates" => {
            ("--tls-ca", ca.unwrap_or(Path::new("")))
        }
        TlsError::Verifier(_) => ("--tls-ca", ca.unwrap_or(Path::new(""))),
        _ => ("--tls-cert", cert),
    };
    Failure(format!("{option} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_server_name_defaults_to_the_host_of_the_master_address() {
        assert_eq!(host_of("master.example:10912"), "master.example");
        assert_eq!(host_of("127.0.0.1:10912"), "127.0.0.1");
        assert_eq!(host_of("[::1]:10912"), "::1");
    }
}
