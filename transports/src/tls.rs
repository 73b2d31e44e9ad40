//! TLS between our own masters and slaves (cargo feature `tls`), on the `smol` and `tokio`
//! drivers.
//!
//! RocketMQ's Java brokers speak plain TCP on the HA port; TLS here is for a master and slaves
//! of this crate only. A Java slave (or any plain one) that meets a TLS master fails with
//! [`TlsError::PlainSlave`] on the master; it sees the master's TLS alert and, if it is ours,
//! fails with [`TlsError::TlsMaster`]. A TLS slave meeting a plain master fails with
//! [`TlsError::PlainMaster`], and the master logs [`TlsError::TlsSlave`]. Those checks of a
//! plain socket's first bytes are in every build, so a build without the feature still names
//! the problem.
//!
//! * A master serves with a `ServerTls`: its certificate chain and key, and optionally the CA
//!   that must have signed each slave's certificate (mutual authentication).
//! * A slave dials with a `ClientTls`: the CA it trusts for the master's certificate, the name
//!   to check that certificate against, and optionally its own certificate for a master that
//!   asks for one.
//!
//! Both use rustls with the `ring` provider, TLS 1.3 only; the master sends no session tickets
//! (a slave's connections are long-lived, and tickets would be writes the loops never asked for).
//! The blocking driver has no TLS: [`blocking::serve`](crate::blocking::serve) and
//! [`Transport::Blocking`](crate::Transport::Blocking) refuse a handle that has it.

#[cfg(feature = "tls")]
pub use config::{ClientTls, ServerTls};

/// Why a connection failed because of TLS, on either side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive] // more configuration failures may be told apart later
pub enum TlsError {
    /// This TLS master received bytes that are not TLS from a slave.
    #[error(
        "the slave does not speak TLS (a plain slave, or a Java broker?); this master requires \
         TLS on every connection"
    )]
    PlainSlave,
    /// This plain master received a TLS handshake from a slave.
    #[error(
        "the slave speaks TLS but this master serves plain TCP: give the master --tls-cert and \
         --tls-key, or start the slave without TLS"
    )]
    TlsSlave,
    /// This plain slave received a TLS record from its master.
    #[error(
        "the master speaks TLS but this slave connects over plain TCP: give the slave --tls-ca \
         (and --tls-cert/--tls-key if the master wants a client certificate)"
    )]
    TlsMaster,
    /// This TLS slave's master closed the connection or answered with something that is not
    /// TLS during the handshake.
    #[error(
        "the master ended the TLS handshake without answering in TLS: it most likely serves plain \
         TCP (a plain master, or a Java broker?)"
    )]
    PlainMaster,
    /// The TLS handshake or a record failed: a certificate not trusted or not given where one is
    /// required, a name that does not match, a corrupt record.
    #[cfg(feature = "tls")]
    #[error("TLS failed: {0}")]
    Protocol(rustls::Error),
    /// A PEM input held no certificate or key, or could not be parsed.
    #[cfg(feature = "tls")]
    #[error("reading the {what}: {source}")]
    Pem {
        /// Which input: "certificate chain", "private key", "CA certificates".
        what: &'static str,
        /// The parser's error.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificates and key do not make a valid configuration.
    #[cfg(feature = "tls")]
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    /// The CA certificates do not make a client-certificate verifier.
    #[cfg(feature = "tls")]
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The name to check the master's certificate against is neither a DNS name nor an IP
    /// address.
    #[cfg(feature = "tls")]
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

impl From<TlsError> for std::io::Error {
    fn from(e: TlsError) -> std::io::Error {
        let kind = match e {
            TlsError::PlainSlave | TlsError::TlsSlave | TlsError::TlsMaster => {
                std::io::ErrorKind::InvalidData
            }
            TlsError::PlainMaster => std::io::ErrorKind::ConnectionAborted,
            #[cfg(feature = "tls")]
            TlsError::Protocol(_) => std::io::ErrorKind::InvalidData,
            #[cfg(feature = "tls")]
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}

#[cfg(feature = "tls")]
mod config {
    use std::fmt;
    use std::sync::Arc;

    use rustls::crypto::{ring, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, RootCertStore, ServerConfig};

    use super::TlsError;
    use crate::stream::{Io, Side, Stream, TlsStream};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(ring::default_provider())
    }

    fn certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem { what, source })?;
        if certs.is_empty() {
            return Err(TlsError::Pem {
                what,
                source: rustls::pki_types::pem::Error::NoItemsFound,
            });
        }
        Ok(certs)
    }

    fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsError::Pem {
            what: "private key",
            source,
        })
    }

    fn roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certs(pem, "CA certificates")? {
            roots.add(cert).map_err(TlsError::Config)?;
        }
        Ok(roots)
    }

    /// A master's TLS: its certificate, and who may connect.
    #[derive(Clone)]
    pub struct ServerTls {
        config: Arc<ServerConfig>,
        /// Whether slaves must present a certificate (rustls does not say after building).
        mutual: bool,
    }

    impl fmt::Debug for ServerTls {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ServerTls")
                .field("mutual", &self.mutual)
                .finish_non_exhaustive()
        }
    }

    impl ServerTls {
        /// A master presenting `cert_chain` (PEM, its own certificate first) with `key` (PEM:
        /// PKCS#8, PKCS#1 or SEC1). With `client_ca` (PEM), every slave must present a
        /// certificate signed by one of those CAs (mutual authentication); without, any slave
        /// that speaks TLS may connect.
        pub fn from_pem(
            cert_chain: &[u8],
            key_pem: &[u8],
            client_ca: Option<&[u8]>,
        ) -> Result<Self, TlsError> {
            let provider = provider();
            let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(TlsError::Config)?;
            let mutual = client_ca.is_some();
            let builder = match client_ca {
                Some(ca) => {
                    let verifier =
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                            .build()?;
                    builder.with_client_cert_verifier(verifier)
                }
                None => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(certs(cert_chain, "certificate chain")?, key(key_pem)?)
                .map_err(TlsError::Config)?;
            config.send_tls13_tickets = 0;
            Ok(ServerTls {
                config: Arc::new(config),
                mutual,
            })
        }

        /// A master using a rustls configuration made by the caller; `mutual` says whether its
        /// verifier requires client certificates (for [`Debug`] and
        /// [`requires_client_certificate`](Self::requires_client_certificate) only).
        pub fn new(config: Arc<ServerConfig>, mutual: bool) -> Self {
            ServerTls { config, mutual }
        }

        /// Whether slaves must present a certificate.
        pub fn requires_client_certificate(&self) -> bool {
            self.mutual
        }

        pub(crate) fn accept<S: Io>(&self, io: S) -> Result<Stream<S>, TlsError> {
            let conn = rustls::ServerConnection::new(Arc::clone(&self.config))
                .map_err(TlsError::Config)?;
            let stream = TlsStream::new(io, Side::Master, conn.into());
            Ok(Stream::Tls(Box::new(stream)))
        }
    }

    /// A slave's TLS: whom it trusts as its master, and what it presents.
    #[derive(Clone)]
    pub struct ClientTls {
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    }

    impl fmt::Debug for ClientTls {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ClientTls")
                .field("server_name", &self.server_name)
                .field(
                    "client_auth",
                    &self.config.client_auth_cert_resolver.has_certs(),
                )
                .finish_non_exhaustive()
        }
    }

    impl ClientTls {
        /// A slave that accepts a master certificate signed by one of the CAs in `ca` (PEM) and
        /// valid for `server_name` (a DNS name or an IP address), presenting `identity` (its
        /// certificate chain and key, PEM) when the master asks for one.
        pub fn from_pem(
            ca: &[u8],
            server_name: &str,
            identity: Option<(&[u8], &[u8])>,
        ) -> Result<Self, TlsError> {
            let builder = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(TlsError::Config)?
                .with_root_certificates(roots(ca)?);
            let config = match identity {
                Some((chain, key_pem)) => builder
                    .with_client_auth_cert(certs(chain, "certificate chain")?, key(key_pem)?)
                    .map_err(TlsError::Config)?,
                None => builder.with_no_client_auth(),
            };
            let server_name = ServerName::try_from(server_name.to_owned())
                .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
            Ok(ClientTls::new(Arc::new(config), server_name))
        }

        /// A slave using a rustls configuration made by the caller.
        pub fn new(config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
            ClientTls {
                config,
                server_name,
            }
        }

        pub(crate) fn connect<S: Io>(&self, io: S) -> Result<Stream<S>, TlsError> {
            let conn =
                rustls::ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
                    .map_err(TlsError::Config)?;
            let stream = TlsStream::new(io, Side::Slave, conn.into());
            Ok(Stream::Tls(Box::new(stream)))
        }
    }
}
