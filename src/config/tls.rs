//! The TLS keys: `[tls]` for the client listeners, `tls*` in `[backend]` and `[sentinel]` for
//! the connections to servers.

use serde::Deserialize;

use super::{BackendConfig, Config, ConfigError, SentinelConfig};

/// The `[tls]` table: when present, the client listeners (`listen`, `read_listen`) speak TLS
/// only, like a Redis server with `tls-port` and `port 0`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The proxy's certificate chain (PEM), leaf first.
    pub cert_file: String,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA certificates (PEM) that sign client certificates; a certificate a client offers is
    /// checked against them.
    pub ca_file: Option<String>,
    /// Refuse clients without a certificate signed by `ca_file` (mutual TLS).
    pub client_auth: bool,
    /// A client that has not finished the handshake by then is closed.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: None,
            client_auth: false,
            handshake_timeout_ms: 5000,
        }
    }
}

/// TLS to a kind of server, from the `tls*` keys of `[backend]` or `[sentinel]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsConfig {
    /// CA certificates (PEM) that sign the servers' certificates.
    pub ca_file: String,
    /// Client certificate (PEM) for servers that ask for one (`tls-auth-clients yes`).
    pub cert_file: Option<String>,
    /// Its private key.
    pub key_file: Option<String>,
    /// Name verified in the servers' certificates (and sent as SNI); default: each server's host.
    pub server_name: Option<String>,
}

/// The `tls*` keys shared by `[backend]` and `[sentinel]`.
struct ClientKeys<'a> {
    table: &'static str,
    tls: bool,
    ca_file: &'a Option<String>,
    cert_file: &'a Option<String>,
    key_file: &'a Option<String>,
    server_name: &'a Option<String>,
}

impl ClientKeys<'_> {
    fn settings(&self) -> Option<ClientTlsConfig> {
        self.tls.then(|| ClientTlsConfig {
            ca_file: self.ca_file.clone().unwrap_or_default(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: self.server_name.clone(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let (tls, ca, cert, key) = match self.table {
            "backend" => (
                "backend.tls",
                "backend.tls_ca_file",
                "backend.tls_cert_file",
                "backend.tls_key_file",
            ),
            _ => (
                "sentinel.tls",
                "sentinel.tls_ca_file",
                "sentinel.tls_cert_file",
                "sentinel.tls_key_file",
            ),
        };
        let any_set = self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some();
        if !self.tls {
            if any_set {
                return Err(invalid(tls, "the tls_* keys are set: set `tls = true` too"));
            }
            return Ok(());
        }
        if self.ca_file.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                ca,
                "needed with `tls = true`: the CA (PEM) that signed the servers' certificates",
            ));
        }
        match (self.cert_file, self.key_file) {
            (Some(_), None) => Err(invalid(key, "needed with `tls_cert_file`")),
            (None, Some(_)) => Err(invalid(cert, "needed with `tls_key_file`")),
            _ => Ok(()),
        }
    }
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

impl BackendConfig {
    fn tls_keys(&self) -> ClientKeys<'_> {
        ClientKeys {
            table: "backend",
            tls: self.tls,
            ca_file: &self.tls_ca_file,
            cert_file: &self.tls_cert_file,
            key_file: &self.tls_key_file,
            server_name: &self.tls_server_name,
        }
    }

    /// TLS to the Redis servers, when `tls = true`.
    pub fn client_tls(&self) -> Option<ClientTlsConfig> {
        self.tls_keys().settings()
    }
}

impl SentinelConfig {
    fn tls_keys(&self) -> ClientKeys<'_> {
        ClientKeys {
            table: "sentinel",
            tls: self.tls,
            ca_file: &self.tls_ca_file,
            cert_file: &self.tls_cert_file,
            key_file: &self.tls_key_file,
            server_name: &self.tls_server_name,
        }
    }

    /// TLS to the sentinels, when `tls = true`.
    pub fn client_tls(&self) -> Option<ClientTlsConfig> {
        self.tls_keys().settings()
    }
}

impl Config {
    /// Checks the TLS keys (the files themselves are read at start).
    pub(super) fn validate_tls(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.tls {
            if t.cert_file.is_empty() {
                return Err(invalid("tls.cert_file", "needed in `[tls]`"));
            }
            if t.key_file.is_empty() {
                return Err(invalid("tls.key_file", "needed in `[tls]`"));
            }
            if t.client_auth && t.ca_file.is_none() {
                return Err(invalid(
                    "tls.ca_file",
                    "needed with `client_auth = true`: the CA that signs client certificates",
                ));
            }
            if !(1..=60_000).contains(&t.handshake_timeout_ms) {
                return Err(invalid(
                    "tls.handshake_timeout_ms",
                    format!(
                        "must be between 1 and 60000 (got {})",
                        t.handshake_timeout_ms
                    ),
                ));
            }
        }
        self.backend.tls_keys().validate()?;
        if let Some(s) = &self.sentinel {
            s.tls_keys().validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<(), ConfigError> {
        let text = format!("servers = [\"127.0.0.1:6379\"]\n{extra}");
        Config::from_toml(&text, "test")?.validate()
    }

    #[test]
    fn tls_keys_are_checked() {
        assert!(parse("").is_ok());
        assert!(parse("[tls]\ncert_file = \"c\"\nkey_file = \"k\"").is_ok());
        let e = parse("[tls]\ncert_file = \"c\"").unwrap_err().to_string();
        assert!(e.contains("tls.key_file"), "{e}");
        let e = parse("[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_auth = true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.ca_file"), "{e}");
        let e = parse("[backend]\ntls = true").unwrap_err().to_string();
        assert!(e.contains("backend.tls_ca_file"), "{e}");
        let e = parse("[backend]\ntls_ca_file = \"ca\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.tls"), "{e}");
        let e = parse("[backend]\ntls = true\ntls_ca_file = \"ca\"\ntls_cert_file = \"c\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.tls_key_file"), "{e}");
        assert!(parse("[backend]\ntls = true\ntls_ca_file = \"ca\"").is_ok());
    }

    #[test]
    fn sentinel_tls_is_separate_from_backend_tls() {
        let text = "[sentinel]\naddrs = [\"127.0.0.1:26379\"]\ntls = true\ntls_ca_file = \"ca\"\ntls_server_name = \"sentinel.internal\"\n";
        let cfg = Config::from_toml(text, "test").unwrap();
        cfg.validate().unwrap();
        assert!(cfg.backend.client_tls().is_none());
        let s = cfg.sentinel.unwrap().client_tls().unwrap();
        assert_eq!(s.server_name.as_deref(), Some("sentinel.internal"));
    }
}
