//! TLS: the acceptor of the client listeners (`[tls]`), the connector to backends and sentinels
//! (`[backend] tls`, `[sentinel] tls`), and the [`Stream`] both legs use.
//!
//! rustls with the `ring` provider (quicker to build than aws-lc and with no C toolchain
//! beyond `cc`). Certificates and keys are read once at start; a bad file stops the proxy with
//! the key that names it.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod stream;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

pub use stream::{ReadHalf, Shared, Stream, WriteHalf};

use crate::config::{ClientTlsConfig, Config, ConfigError, TlsConfig};

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(key, format!("cannot read certificates from {path}: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(key, format!("no PEM certificate in {path}")));
    }
    Ok(certs)
}

fn load_key(key: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| invalid(key, format!("cannot read a private key from {path}: {e}")))
}

fn load_roots(key: &'static str, path: &str) -> Result<Arc<RootCertStore>, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(key, format!("{path}: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The client listeners' TLS (`[tls]`): a handshake with a deadline on each accepted client.
pub struct ServerTls {
    /// Replaced by a reload that finds the certificate, key or CA files changed.
    acceptor: arc_swap::ArcSwap<tokio_rustls::TlsAcceptor>,
    /// A digest of the files the acceptor was built from.
    files: arc_swap::ArcSwap<[u8; 32]>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain, the key and (for client certificates) the CA.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a key that does not fit the certificate, named
    /// by its config key.
    pub fn from_config(c: &TlsConfig) -> Result<ServerTls, ConfigError> {
        Ok(ServerTls {
            acceptor: arc_swap::ArcSwap::from_pointee(acceptor(c)?),
            files: arc_swap::ArcSwap::from_pointee(files_digest(c)?),
            handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
        })
    }

    /// Reads `c`'s files again (a reload) and builds what new handshakes use; `None` when they
    /// are the files in use, unchanged. Nothing is replaced until [`ServerTls::install`].
    ///
    /// # Errors
    /// As [`ServerTls::from_config`]: the reload is refused, and the running certificate stays.
    pub fn reread(&self, c: &TlsConfig) -> Result<Option<TlsFiles>, ConfigError> {
        let digest = files_digest(c)?;
        if **self.files.load() == digest {
            return Ok(None);
        }
        Ok(Some(TlsFiles {
            acceptor: acceptor(c)?,
            digest,
        }))
    }

    /// New handshakes use `files` from now on; connections already up keep theirs.
    pub fn install(&self, files: TlsFiles) {
        self.acceptor.store(Arc::new(files.acceptor));
        self.files.store(Arc::new(files.digest));
    }

    /// Runs the server side of the handshake on an accepted client.
    ///
    /// # Errors
    /// The handshake failing (a plaintext client, an unknown or missing client certificate) or
    /// not finishing within `handshake_timeout_ms`.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let acceptor = self.acceptor.load_full();
        let tls = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
    }
}

/// The certificate files a reload read, checked, ready for [`ServerTls::install`].
pub struct TlsFiles {
    acceptor: tokio_rustls::TlsAcceptor,
    digest: [u8; 32],
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").finish_non_exhaustive()
    }
}

/// A SHA-256 over the certificate, key and CA files' bytes: whether a reload finds them changed.
fn files_digest(c: &TlsConfig) -> Result<[u8; 32], ConfigError> {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    let files = [
        ("tls.cert_file", Some(&c.cert_file)),
        ("tls.key_file", Some(&c.key_file)),
        ("tls.ca_file", c.ca_file.as_ref()),
    ];
    for (key, path) in files {
        let Some(path) = path else { continue };
        let bytes =
            std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
    }
    Ok(digest.finalize().into())
}

/// The acceptor of `c`'s certificate chain, key and client CA.
fn acceptor(c: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, ConfigError> {
    {
        let certs = load_certs("tls.cert_file", &c.cert_file)?;
        let key = load_key("tls.key_file", &c.key_file)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls", e.to_string()))?;
        let builder = match &c.ca_file {
            Some(ca) => {
                let roots = load_roots("tls.ca_file", ca)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
                // Without `client_auth` a certificate is checked when a client offers one
                // (Redis's `tls-auth-clients optional`).
                let verifier = if c.client_auth {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| invalid("tls.ca_file", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| invalid("tls.key_file", e.to_string()))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// TLS to servers (`[backend] tls`, `[sentinel] tls`): the CA that signed their certificates, an
/// optional client certificate, and the name to verify.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the connector of one `[backend]` or `[sentinel]` table; `table` names it in errors.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a bad `tls_server_name`.
    pub fn from_config(table: Table, c: &ClientTlsConfig) -> Result<ClientTls, ConfigError> {
        let roots = load_roots(table.key("tls_ca_file"), &c.ca_file)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(table.key("tls"), e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&c.cert_file, &c.key_file) {
            (Some(cert), Some(key)) => {
                let certs = load_certs(table.key("tls_cert_file"), cert)?;
                let key = load_key(table.key("tls_key_file"), key)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| invalid(table.key("tls_key_file"), e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name = match &c.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| invalid(table.key("tls_server_name"), e.to_string()))?,
            ),
            None => None,
        };
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the client side of the handshake on a connection to `addr` (`host:port`), verifying
    /// the server's certificate for `tls_server_name` or else the host.
    ///
    /// # Errors
    /// A host that is no valid name, or the handshake failing (unknown CA, wrong name, a
    /// plaintext server).
    pub async fn connect(&self, tcp: TcpStream, addr: &str) -> io::Result<Stream> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host_of(addr).to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        };
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {addr}: {e}")))?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }
}

/// Which config table a [`ClientTls`] comes from (for the keys named in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `[backend]`.
    Backend,
    /// `[sentinel]`.
    Sentinel,
}

impl Table {
    fn key(self, name: &str) -> &'static str {
        match (self, name) {
            (Table::Backend, "tls_ca_file") => "backend.tls_ca_file",
            (Table::Backend, "tls_cert_file") => "backend.tls_cert_file",
            (Table::Backend, "tls_key_file") => "backend.tls_key_file",
            (Table::Backend, "tls_server_name") => "backend.tls_server_name",
            (Table::Backend, _) => "backend.tls",
            (Table::Sentinel, "tls_ca_file") => "sentinel.tls_ca_file",
            (Table::Sentinel, "tls_cert_file") => "sentinel.tls_cert_file",
            (Table::Sentinel, "tls_key_file") => "sentinel.tls_key_file",
            (Table::Sentinel, "tls_server_name") => "sentinel.tls_server_name",
            (Table::Sentinel, _) => "sentinel.tls",
        }
    }
}

/// The host of `host:port` or `[v6]:port`, for certificate verification.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The TLS configs, read from their files once at start.
pub(crate) struct Setup {
    pub(crate) server: Option<Arc<ServerTls>>,
    pub(crate) backend: Option<Arc<ClientTls>>,
    pub(crate) sentinel: Option<Arc<ClientTls>>,
}

impl Setup {
    /// Reads every TLS file the config names.
    ///
    /// # Errors
    /// A file that cannot be read or used, named by its key.
    pub(crate) fn load(cfg: &Config) -> Result<Setup, ConfigError> {
        let client = |table, c: Option<ClientTlsConfig>| {
            c.map(|c| ClientTls::from_config(table, &c).map(Arc::new))
                .transpose()
        };
        Ok(Setup {
            server: cfg
                .tls
                .as_ref()
                .map(|t| ServerTls::from_config(t).map(Arc::new))
                .transpose()?,
            backend: client(Table::Backend, cfg.backend.client_tls())?,
            sentinel: client(
                Table::Sentinel,
                cfg.sentinel.as_ref().and_then(|s| s.client_tls()),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("redis-1.internal:6380"), "redis-1.internal");
        assert_eq!(host_of("[::1]:6379"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn missing_files_are_named_by_key() {
        let c = TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            ..TlsConfig::default()
        };
        let e = ServerTls::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("tls.cert_file"), "{e}");
        let b = ClientTlsConfig {
            ca_file: "/nonexistent/ca.pem".into(),
            cert_file: None,
            key_file: None,
            server_name: None,
        };
        let e = ClientTls::from_config(Table::Sentinel, &b)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sentinel.tls_ca_file"), "{e}");
    }
}
