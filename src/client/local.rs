//! Commands a session answers itself because they concern the client's connection to the proxy:
//! `AUTH` and `HELLO`.

use bytes::Bytes;

use super::acl::{constant_time_eq, ClientAuth, WRONGPASS};
use super::client_state::{valid_client_name, ClientState, BAD_CLIENT_NAME};
use super::ProxyContext;
use crate::backend::Protocol;
use crate::config::AuthMode;
use crate::resp::{error_reply, status_reply, Request};
use crate::stats::Denied;

/// `AUTH [user] password`. In `mode = "proxy"`, checked against the proxy's own users; in
/// `"backend"`, by the master itself (a failed attempt leaves the client as it was, as in
/// Redis). In `"none"`, compared with the backend's credentials: a client configured with the
/// servers' password keeps working through the proxy.
pub async fn auth_reply(ctx: &ProxyContext, client: &mut ClientAuth, req: &Request) -> Bytes {
    let (user, pass) = match (req.argc(), req.arg(1), req.arg(2)) {
        (2, Some(p), _) => (None, p),
        (3, Some(u), Some(p)) => (Some(u), p),
        _ if req.argc() > 3 => return error_reply("ERR syntax error"),
        _ => return error_reply("ERR wrong number of arguments for 'auth' command"),
    };
    // In backend mode the master says so itself.
    let no_password = ctx.security.mode() == AuthMode::None && ctx.backend_password.is_none();
    if no_password && user.is_none() {
        return error_reply("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    }
    match login(ctx, client, user, pass).await {
        Ok(()) => status_reply("OK"),
        Err(refusal) => refusal,
    }
}

/// Checks credentials and, when clients must authenticate, authenticates the client.
///
/// # Errors
/// The reply for the client (`WRONGPASS`, or the server's own in backend mode).
async fn login(
    ctx: &ProxyContext,
    client: &mut ClientAuth,
    user: Option<&[u8]>,
    pass: &[u8],
) -> Result<(), Bytes> {
    let found = match (ctx.security.mode(), ctx.security.backend()) {
        (AuthMode::None, _) => {
            if credentials_match(ctx, user, pass) {
                return Ok(());
            }
            ctx.security.counters().denied(Denied::Auth);
            return Err(error_reply(WRONGPASS));
        }
        (AuthMode::Backend, Some(backend)) => backend.login(user, pass).await,
        _ => ctx
            .security
            .authenticate(user.unwrap_or(b"default"), pass)
            .ok_or_else(|| error_reply(WRONGPASS)),
    };
    match found {
        Ok(u) => {
            tracing::debug!(user = u.name(), "client authenticated");
            client.login(u);
            Ok(())
        }
        Err(refusal) => {
            // The name may be a mistyped password: never logged.
            tracing::debug!("client authentication failed");
            ctx.security.counters().denied(Denied::Auth);
            Err(refusal)
        }
    }
}

fn credentials_match(ctx: &ProxyContext, user: Option<&[u8]>, pass: &[u8]) -> bool {
    let Some(expected) = &ctx.backend_password else {
        // No password: Redis's default user accepts any password via HELLO ... AUTH default x.
        return user.is_none_or(|u| u == b"default");
    };
    let expected_user = ctx.backend_username.as_deref().unwrap_or("default");
    let user_ok = user.is_none_or(|u| constant_time_eq(u, expected_user.as_bytes()));
    user_ok && constant_time_eq(pass, expected.expose().as_bytes())
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, answered as Redis 7.0 does (the id it
/// reports is `CLIENT ID`'s; `SETNAME` names the connection as `CLIENT SETNAME` does, once the
/// command succeeds, as Redis 7.2 does). Returns the reply and the protocol the session speaks
/// from now on (`HELLO 3` moves it to RESP3 backend connections, so replies keep their RESP3
/// types).
pub async fn hello(
    ctx: &ProxyContext,
    client: &mut ClientAuth,
    current: Protocol,
    state: &mut ClientState,
    req: &Request,
) -> (Bytes, Protocol) {
    let mut protocol = current;
    let mut i = 1;
    if let Some(v) = req.arg(1) {
        protocol = match v {
            b"2" => Protocol::Resp2,
            b"3" => Protocol::Resp3,
            _ if std::str::from_utf8(v).is_ok_and(|s| s.parse::<i64>().is_ok()) => {
                let e = error_reply("NOPROTO sorry, this protocol version is not supported.");
                return (e, current);
            }
            _ => {
                let e = error_reply("ERR Protocol version is not an integer or out of range");
                return (e, current);
            }
        };
        i = 2;
    }
    let mut creds = None;
    let mut name = None;
    while let Some(opt) = req.arg(i) {
        if opt.eq_ignore_ascii_case(b"auth") {
            let (Some(user), Some(pass)) = (req.arg(i + 1), req.arg(i + 2)) else {
                return (hello_syntax_error(opt), current);
            };
            creds = Some((user, pass));
            i += 3;
        } else if let (true, Some(n)) = (opt.eq_ignore_ascii_case(b"setname"), req.arg(i + 1)) {
            if !valid_client_name(n) {
                return (error_reply(BAD_CLIENT_NAME), current);
            }
            name = Some(n);
            i += 2;
        } else {
            return (hello_syntax_error(opt), current);
        }
    }
    // Like Redis, every option is checked before the credentials.
    if let Some((user, pass)) = creds {
        if let Err(refusal) = login(ctx, client, Some(user), pass).await {
            return (refusal, current);
        }
    }
    if !client.authenticated() {
        return (error_reply(HELLO_NOAUTH), current);
    }
    if let Some(n) = name {
        state.name = (!n.is_empty()).then(|| Bytes::copy_from_slice(n));
    }
    let reply = hello_map(protocol, &ctx.server_version.load(), state.id);
    (reply, protocol)
}

/// Redis 7.0's reply to `HELLO` without `AUTH` from an unauthenticated client.
const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";

fn hello_syntax_error(opt: &[u8]) -> Bytes {
    error_reply(&format!(
        "ERR Syntax error in HELLO option '{}'",
        String::from_utf8_lossy(opt)
    ))
}

/// The `HELLO` reply: a map in RESP3, a flat array in RESP2.
fn hello_map(protocol: Protocol, version: &str, id: u64) -> Bytes {
    let proto = if protocol == Protocol::Resp3 { 3 } else { 2 };
    let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
    let mut out = if proto == 3 {
        "%7\r\n".to_string()
    } else {
        "*14\r\n".to_string()
    };
    for (k, v) in [("server", bulk("redis")), ("version", bulk(version))] {
        out.push_str(&bulk(k));
        out.push_str(&v);
    }
    out.push_str(&format!("{}:{proto}\r\n", bulk("proto")));
    out.push_str(&format!("{}:{id}\r\n", bulk("id")));
    for (k, v) in [("mode", "standalone"), ("role", "master")] {
        out.push_str(&bulk(k));
        out.push_str(&bulk(v));
    }
    out.push_str(&format!("{}*0\r\n", bulk("modules")));
    Bytes::from(out)
}
