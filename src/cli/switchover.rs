//! `haproxy-rs switchover`: asks a running proxy for a switchover over its stats listener,
//! with the admin token.

use clap::Args;

use super::small_runtime;

/// `--admin-token`, the same flag and variable for `run` (the token the proxy asks for) and
/// `switchover` (the token it sends).
#[derive(Debug, Args)]
pub struct AdminTokenArg {
    /// The admin token (`admin_token`): admin actions on the stats listener (`POST /switchover`)
    /// need it as `Authorization: Bearer <token>`, and are refused on a proxy without one.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HAPROXY_RS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

/// Flags of `haproxy-rs switchover`.
#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// The running proxy's stats address (its admin endpoint is `POST /switchover` there).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8404")]
    pub stats: String,
    /// The token sent.
    #[command(flatten)]
    pub admin: AdminTokenArg,
    /// Print the proxy's report as JSON (`old_master`, `new_master`, `writes_held_ms`,
    /// `catch_up_ms`) instead of a sentence, for scripts.
    #[arg(long)]
    pub json: bool,
}

impl SwitchoverArgs {
    /// Asks the proxy for a switchover and prints its report; fails unless it happened.
    pub fn execute(self) -> std::process::ExitCode {
        use std::process::ExitCode;
        let Some(runtime) = small_runtime() else {
            return ExitCode::FAILURE;
        };
        let token = self.admin.admin_token.as_deref();
        match runtime.block_on(post_switchover(&self.stats, token)) {
            Ok((200, body)) => {
                let report =
                    serde_json::from_str::<crate::stats::switchover::SwitchoverReport>(&body);
                match report {
                    Ok(r) if !self.json => println!("{r}"),
                    // An answer this version does not know: as it came.
                    _ => println!("{}", body.trim_end()),
                }
                ExitCode::SUCCESS
            }
            Ok((status, body)) => {
                eprint!("haproxy-rs: switchover: HTTP {status}: {body}");
                if let Some(hint) = refusal_hint(status, token.is_some()) {
                    eprintln!("haproxy-rs: switchover: {hint}");
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("haproxy-rs: switchover: {}: {e}", self.stats);
                ExitCode::FAILURE
            }
        }
    }
}

/// What to do about a 401 (a 403's body says itself how to enable admin actions).
fn refusal_hint(status: u16, sent_token: bool) -> Option<&'static str> {
    match (status, sent_token) {
        (401, false) => Some(
            "the proxy needs its admin token: give it with --admin-token or HAPROXY_RS_ADMIN_TOKEN",
        ),
        (401, true) => Some("the admin token given is not the proxy's `admin_token`"),
        _ => None,
    }
}

/// `POST /switchover` over a plain HTTP/1.1 connection, with `Authorization: Bearer <token>`
/// when a token is given; the status code and the body.
///
/// # Errors
/// The connection failed, or no answer came within 90 s.
pub async fn post_switchover(addr: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST /switchover HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(90),
        s.read_to_end(&mut response),
    )
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn the_admin_token_comes_from_the_flag_or_the_variable() {
        let cli = Cli::try_parse_from(["haproxy-rs", "switchover", "--admin-token", "t0k"]);
        match cli.unwrap().command {
            Command::Switchover(a) => assert_eq!(a.admin.admin_token.as_deref(), Some("t0k")),
            Command::Run(_) | Command::Bench(_) | Command::ImportHaproxy(_) => {
                unreachable!("parsed `switchover`")
            }
        }
        assert_eq!(
            admin_token_variable("switchover").as_deref(),
            Some("HAPROXY_RS_ADMIN_TOKEN")
        );
    }

    #[test]
    fn a_401_says_how_to_give_the_token() {
        assert!(refusal_hint(401, false).is_some_and(|h| h.contains("--admin-token")));
        assert!(refusal_hint(401, true).is_some_and(|h| h.contains("admin_token")));
        assert_eq!(refusal_hint(403, true), None);
        assert_eq!(refusal_hint(409, true), None);
    }

    /// The variable of `--admin-token` in subcommand `sub`.
    pub(crate) fn admin_token_variable(sub: &str) -> Option<String> {
        use clap::CommandFactory;
        let cli = Cli::command();
        let arg = cli
            .find_subcommand(sub)?
            .get_arguments()
            .find(|a| a.get_long() == Some("admin-token"))?;
        arg.get_env()?.to_str().map(str::to_string)
    }
}
