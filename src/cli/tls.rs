//! The TLS flags of `haproxy-rs run`, laid over the `[tls]`, `[backend]` and `[sentinel]` keys.

use clap::builder::BoolishValueParser;
use clap::Args;

use crate::config::{Config, TlsConfig};

/// The TLS flags of `haproxy-rs run`: `--tls-*` for the client endpoints (`[tls]`, the proxy's
/// own, `HAPROXY_RS_TLS_*`), `--backend-tls*` and `--sentinel-tls*` for the connections to the
/// servers and to the sentinels (`tls*` of `[backend]` and `[sentinel]`, `REDIS_TLS_*` and
/// `REDIS_SENTINEL_TLS_*`, like `REDIS_PASSWORD`). A switch takes `=false` to turn off what the
/// file turns on.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// The proxy's certificate chain (PEM) for its client endpoints, which then speak TLS only.
    #[arg(long, value_name = "FILE", env = "HAPROXY_RS_TLS_CERT_FILE")]
    pub tls_cert_file: Option<String>,
    /// The private key (PEM) of `--tls-cert-file`.
    #[arg(long, value_name = "FILE", env = "HAPROXY_RS_TLS_KEY_FILE")]
    pub tls_key_file: Option<String>,
    /// CA certificates (PEM) that sign client certificates.
    #[arg(long, value_name = "FILE", env = "HAPROXY_RS_TLS_CA_FILE")]
    pub tls_ca_file: Option<String>,
    /// Refuse clients without a certificate signed by `--tls-ca-file` (mutual TLS).
    #[arg(long, value_name = "BOOL", env = "HAPROXY_RS_TLS_CLIENT_AUTH", num_args = 0..=1,
        require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub tls_client_auth: Option<bool>,
    /// Close a client that has not finished the TLS handshake within this many milliseconds.
    #[arg(long, value_name = "MS", env = "HAPROXY_RS_TLS_HANDSHAKE_TIMEOUT_MS")]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// TLS to the Redis servers.
    #[arg(long, value_name = "BOOL", env = "REDIS_TLS", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub backend_tls: Option<bool>,
    /// CA certificates (PEM) that sign the Redis servers' certificates.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_CA_FILE")]
    pub backend_tls_ca_file: Option<String>,
    /// Client certificate (PEM) for servers with `tls-auth-clients yes`.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_CERT_FILE")]
    pub backend_tls_cert_file: Option<String>,
    /// The private key (PEM) of `--backend-tls-cert-file`.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_KEY_FILE")]
    pub backend_tls_key_file: Option<String>,
    /// Name verified in the servers' certificates (and sent as SNI); default each server's host.
    #[arg(long, value_name = "NAME", env = "REDIS_TLS_SERVER_NAME")]
    pub backend_tls_server_name: Option<String>,
    /// TLS to the sentinels (Sentinel mode).
    #[arg(long, value_name = "BOOL", env = "REDIS_SENTINEL_TLS", num_args = 0..=1,
        require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub sentinel_tls: Option<bool>,
    /// CA certificates (PEM) that sign the sentinels' certificates.
    #[arg(long, value_name = "FILE", env = "REDIS_SENTINEL_TLS_CA_FILE")]
    pub sentinel_tls_ca_file: Option<String>,
    /// Client certificate (PEM) for sentinels that ask for one.
    #[arg(long, value_name = "FILE", env = "REDIS_SENTINEL_TLS_CERT_FILE")]
    pub sentinel_tls_cert_file: Option<String>,
    /// The private key (PEM) of `--sentinel-tls-cert-file`.
    #[arg(long, value_name = "FILE", env = "REDIS_SENTINEL_TLS_KEY_FILE")]
    pub sentinel_tls_key_file: Option<String>,
    /// Name verified in the sentinels' certificates (and sent as SNI).
    #[arg(long, value_name = "NAME", env = "REDIS_SENTINEL_TLS_SERVER_NAME")]
    pub sentinel_tls_server_name: Option<String>,
}

impl TlsArgs {
    /// Lays the given TLS flags over `cfg`. Any `--tls-*` turns TLS on for the client endpoints
    /// (`[tls]`, with its defaults for the keys not given); the sentinel ones apply in Sentinel
    /// mode, as `--sentinel-password` does. Validation checks the result as it checks the file.
    pub(super) fn apply(&self, cfg: &mut Config) {
        let listener = self.tls_cert_file.is_some()
            || self.tls_key_file.is_some()
            || self.tls_ca_file.is_some()
            || self.tls_client_auth.is_some()
            || self.tls_handshake_timeout_ms.is_some();
        if listener {
            let t = cfg.tls.get_or_insert_with(TlsConfig::default);
            set(&mut t.cert_file, &self.tls_cert_file);
            set(&mut t.key_file, &self.tls_key_file);
            set_some(&mut t.ca_file, &self.tls_ca_file);
            set(&mut t.client_auth, &self.tls_client_auth);
            set(&mut t.handshake_timeout_ms, &self.tls_handshake_timeout_ms);
        }
        let b = &mut cfg.backend;
        set(&mut b.tls, &self.backend_tls);
        set_some(&mut b.tls_ca_file, &self.backend_tls_ca_file);
        set_some(&mut b.tls_cert_file, &self.backend_tls_cert_file);
        set_some(&mut b.tls_key_file, &self.backend_tls_key_file);
        set_some(&mut b.tls_server_name, &self.backend_tls_server_name);
        if let Some(s) = cfg.sentinel.as_mut() {
            set(&mut s.tls, &self.sentinel_tls);
            set_some(&mut s.tls_ca_file, &self.sentinel_tls_ca_file);
            set_some(&mut s.tls_cert_file, &self.sentinel_tls_cert_file);
            set_some(&mut s.tls_key_file, &self.sentinel_tls_key_file);
            set_some(&mut s.tls_server_name, &self.sentinel_tls_server_name);
        }
    }
}

/// `key = flag` when the flag was given.
fn set<T: Clone>(key: &mut T, flag: &Option<T>) {
    if let Some(v) = flag {
        *key = v.clone();
    }
}

/// `key = Some(flag)` when the flag was given.
fn set_some<T: Clone>(key: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        key.clone_from(flag);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::tests::run_args;
    use crate::cli::Cli;

    #[test]
    fn tls_flags_set_the_three_legs_apart() {
        let cfg = run_args(&[
            "--sentinel",
            "127.0.0.1:26379",
            "--tls-cert-file",
            "proxy.pem",
            "--tls-key-file",
            "proxy.key",
            "--tls-ca-file",
            "clients-ca.pem",
            "--tls-client-auth",
            "--tls-handshake-timeout-ms",
            "2000",
            "--backend-tls",
            "--backend-tls-ca-file",
            "redis-ca.pem",
            "--backend-tls-cert-file",
            "client.pem",
            "--backend-tls-key-file",
            "client.key",
            "--backend-tls-server-name",
            "redis.internal",
            "--sentinel-tls=yes",
            "--sentinel-tls-ca-file",
            "sentinel-ca.pem",
            "--sentinel-tls-server-name",
            "sentinel.internal",
        ])
        .to_config()
        .unwrap();
        let t = cfg.tls.as_ref().unwrap();
        assert_eq!(
            (t.cert_file.as_str(), t.key_file.as_str()),
            ("proxy.pem", "proxy.key")
        );
        assert_eq!(t.ca_file.as_deref(), Some("clients-ca.pem"));
        assert!(t.client_auth);
        assert_eq!(t.handshake_timeout_ms, 2000);
        let b = cfg.backend.client_tls().unwrap();
        assert_eq!(b.ca_file, "redis-ca.pem");
        assert_eq!(b.cert_file.as_deref(), Some("client.pem"));
        assert_eq!(b.key_file.as_deref(), Some("client.key"));
        assert_eq!(b.server_name.as_deref(), Some("redis.internal"));
        let s = cfg.sentinel.unwrap().client_tls().unwrap();
        assert_eq!(s.ca_file, "sentinel-ca.pem");
        assert_eq!(s.cert_file, None);
        assert_eq!(s.server_name.as_deref(), Some("sentinel.internal"));
    }

    #[test]
    fn tls_flags_override_the_file_and_are_checked_like_it() {
        let dir = std::env::temp_dir().join(format!("haproxy-rs-cli-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "servers = [\"127.0.0.1:1\"]\n[tls]\ncert_file = \"a.pem\"\nkey_file = \"a.key\"\n\
             [backend]\ntls = true\ntls_ca_file = \"ca.pem\"\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        // `tls = false` over the file's `tls_ca_file` is refused, as it is in the file.
        let cfg =
            run_args(&["-c", file, "--tls-cert-file", "b.pem", "--backend-tls=off"]).to_config();
        let err = cfg.unwrap_err().to_string();
        assert!(
            err.contains("backend.tls"),
            "the file's tls_ca_file stays: {err}"
        );
        let cfg = run_args(&[
            "-c",
            file,
            "--tls-cert-file",
            "b.pem",
            "--tls-client-auth=false",
        ])
        .to_config()
        .unwrap();
        let t = cfg.tls.unwrap();
        assert_eq!(
            (t.cert_file.as_str(), t.key_file.as_str()),
            ("b.pem", "a.key")
        );
        assert!(cfg.backend.client_tls().is_some());
        // Without a key the client endpoints cannot speak TLS: refused with the key's name.
        let err = run_args(&["--servers", "127.0.0.1:1", "--tls-cert-file", "c.pem"])
            .to_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.key_file"), "{err}");
        assert!(Cli::try_parse_from(["haproxy-rs", "run", "--backend-tls=maybe"]).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn tls_flags_have_their_variables() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        let env = |flag: &str| {
            run.get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .and_then(|a| a.get_env())
                .and_then(|e| e.to_str())
                .map(str::to_string)
        };
        for (flag, var) in [
            ("tls-cert-file", "HAPROXY_RS_TLS_CERT_FILE"),
            ("tls-key-file", "HAPROXY_RS_TLS_KEY_FILE"),
            ("tls-ca-file", "HAPROXY_RS_TLS_CA_FILE"),
            ("tls-client-auth", "HAPROXY_RS_TLS_CLIENT_AUTH"),
            (
                "tls-handshake-timeout-ms",
                "HAPROXY_RS_TLS_HANDSHAKE_TIMEOUT_MS",
            ),
            ("backend-tls", "REDIS_TLS"),
            ("backend-tls-ca-file", "REDIS_TLS_CA_FILE"),
            ("backend-tls-cert-file", "REDIS_TLS_CERT_FILE"),
            ("backend-tls-key-file", "REDIS_TLS_KEY_FILE"),
            ("backend-tls-server-name", "REDIS_TLS_SERVER_NAME"),
            ("sentinel-tls", "REDIS_SENTINEL_TLS"),
            ("sentinel-tls-ca-file", "REDIS_SENTINEL_TLS_CA_FILE"),
            ("sentinel-tls-cert-file", "REDIS_SENTINEL_TLS_CERT_FILE"),
            ("sentinel-tls-key-file", "REDIS_SENTINEL_TLS_KEY_FILE"),
            ("sentinel-tls-server-name", "REDIS_SENTINEL_TLS_SERVER_NAME"),
        ] {
            assert_eq!(env(flag).as_deref(), Some(var), "--{flag}");
        }
    }
}
