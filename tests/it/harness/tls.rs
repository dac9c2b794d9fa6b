//! TLS for tests: a CA, server and client certificates made with rcgen, a `redis-server` that
//! speaks TLS only (`port 0`, `tls-port`), and a raw tokio-rustls client that sends RESP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::eventually::Deadline;
use super::ports;
use super::redis::Process;

/// A test CA and the certificates it signed, as PEM files in a temp dir.
pub struct Pki {
    dir: TempDir,
}

/// A certificate and key signed by the test CA, valid for `127.0.0.1` and `localhost`, for both
/// server and client use (Redis presents its server certificate as a client too).
fn leaf(name: &str, ca: &rcgen::Certificate, ca_key: &KeyPair) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("certificate names");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("generate a key");
    let cert = params
        .signed_by(&key, ca, ca_key)
        .expect("sign a certificate");
    (cert, key)
}

impl Pki {
    /// Makes `ca.pem`, `server.pem` + `server.key`, `client.pem` + `client.key`, and a second,
    /// unrelated CA (`other-ca.pem`) with a client certificate of its own (`stranger.*`).
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("haproxy-rs-pki-")
            .tempdir()
            .expect("create a temp dir for certificates");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write a PEM file");
        };
        for (prefix, leaves) in [
            ("", &["server", "client"][..]),
            ("other-", &["stranger"][..]),
        ] {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, format!("haproxy-rs {prefix}test CA"));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let ca_key = KeyPair::generate().expect("generate the CA key");
            let ca = params.self_signed(&ca_key).expect("self-sign the CA");
            write(&format!("{prefix}ca.pem"), ca.pem());
            for &name in leaves {
                let (cert, key) = leaf(name, &ca, &ca_key);
                write(&format!("{name}.pem"), cert.pem());
                write(&format!("{name}.key"), key.serialize_pem());
            }
        }
        Pki { dir }
    }

    /// A file of the PKI (`ca.pem`, `server.key`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The same, as a string for a config.
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A client config trusting the test CA, with the certificate `cert` (`client`,
    /// `stranger`) or none.
    pub fn client_config(&self, cert: Option<&str>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("read ca.pem") {
            roots.add(c.expect("a CA certificate")).expect("add the CA");
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let config = match cert {
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .expect("read the client certificate")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("parse the client certificate");
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key")))
                    .expect("read the client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

/// Connects with TLS to `addr` (verifying the server as `127.0.0.1`).
///
/// # Errors
/// Connect or handshake failure.
pub async fn tls_connect(
    addr: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP address name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Sends `request` (raw RESP) and reads until `expect_len` bytes or the connection ends, within
/// 5 s. Returns what was read (possibly short) or the I/O error.
pub async fn exchange<S>(
    stream: &mut S,
    request: &[u8],
    expect_len: usize,
) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let io = async {
        stream.write_all(request).await?;
        stream.flush().await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < expect_len {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no reply in 5 s",
            ))
        })
}

/// A `redis-server` or `redis-sentinel` that speaks TLS only (`port 0`, `tls-port`), with a
/// certificate from the test CA.
pub struct TlsRedis {
    port: u16,
    process: Process,
}

impl TlsRedis {
    /// Starts one; `auth_clients` is Redis's `tls-auth-clients` (`yes`/`no`). Waits until it
    /// answers `PING` over TLS.
    ///
    /// # Panics
    /// When redis-server does not start (or has no TLS support).
    pub async fn start(pki: &Pki, auth_clients: bool) -> TlsRedis {
        let extra = format!(
            "save \"\"\nappendonly no\ntls-auth-clients {}\n",
            if auth_clients { "yes" } else { "no" }
        );
        Self::spawn(pki, "redis-server", "redis.conf", &extra).await
    }

    /// Starts a `redis-sentinel` that speaks TLS only and monitors `master` (as
    /// [`MASTER_NAME`](super::MASTER_NAME), quorum 1) over TLS (`tls-replication yes`).
    pub async fn start_sentinel(pki: &Pki, master: &TlsRedis) -> TlsRedis {
        let extra = format!(
            "tls-auth-clients no\ntls-replication yes\n\
             sentinel monitor {} 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds {} 5000\n",
            super::MASTER_NAME,
            master.port(),
            super::MASTER_NAME,
        );
        Self::spawn(pki, "redis-sentinel", "sentinel.conf", &extra).await
    }

    /// Starts a TLS-only `redis-server` with `extra` appended to its config.
    pub async fn start_with(pki: &Pki, extra: &str) -> TlsRedis {
        Self::spawn(pki, "redis-server", "redis.conf", extra).await
    }

    async fn spawn(pki: &Pki, program: &'static str, conf_name: &str, extra: &str) -> TlsRedis {
        let port = ports::free_port();
        let conf = format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\ndaemonize no\n\
             logfile server.log\nloglevel verbose\ndir .\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\n{extra}",
            pki.file("server.pem"),
            pki.file("server.key"),
            pki.file("ca.pem"),
        );
        let server = TlsRedis {
            port,
            process: Process::spawn(program, conf_name, &conf),
        };
        server.wait_ready(pki).await;
        server
    }

    /// "127.0.0.1:port".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's temp dir.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    async fn wait_ready(&self, pki: &Pki) {
        let deadline = Deadline::after(Duration::from_secs(10));
        let config = pki.client_config(Some("client"));
        loop {
            assert!(
                self.process.is_running(),
                "redis-server with TLS exited:\n{}",
                self.process.log_tail()
            );
            if let Ok(mut s) = tls_connect(&self.addr(), config.clone()).await {
                if let Ok(reply) = exchange(&mut s, b"PING\r\n", 7).await {
                    if reply == b"+PONG\r\n" {
                        return;
                    }
                }
            }
            assert!(
                !deadline.expired(),
                "redis-server with TLS on {} did not answer PING:\n{}",
                self.addr(),
                self.process.log_tail()
            );
            deadline.tick().await;
        }
    }
}
