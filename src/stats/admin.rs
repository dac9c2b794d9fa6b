//! The guard every admin action of the stats listener goes through: the admin token, and no
//! browser page from another origin.
//!
//! The stats listener serves read-only `GET`s to anyone who reaches it (Prometheus, the page);
//! an action (`POST /switchover`, and whatever comes next) changes the topology, so it needs
//! `Authorization: Bearer <admin_token>`. A page a browser opens elsewhere could still send
//! that request with a token it guessed or learnt; the browser says where such a request
//! comes from (`Origin`, `Sec-Fetch-Site`), and a request from another origin is refused even
//! with the right token.

use hyper::header::{HeaderValue, AUTHORIZATION, HOST, ORIGIN};
use hyper::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use crate::config::MaskedString;

/// The configured admin token, kept as its SHA-256 digest only.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(****)")
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

impl AdminToken {
    /// Keeps the digest of `token`.
    pub fn new(token: &MaskedString) -> Self {
        AdminToken {
            digest: sha256(token.expose().as_bytes()),
        }
    }

    /// Whether `presented` is the token. Digests of fixed length are compared in constant
    /// time, so neither the content nor the length of the token leaks through timing.
    fn matches(&self, presented: &[u8]) -> bool {
        sha256(presented).ct_eq(&self.digest).into()
    }
}

/// Why an action was refused; [`Refusal::status`] and [`Refusal::message`] make the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `admin_token` is configured: actions are off.
    NotConfigured,
    /// No `Authorization: Bearer` header, or the wrong token.
    Unauthorized,
    /// A browser sent it from a page of another origin.
    CrossOrigin,
}

impl Refusal {
    /// 403 for [`NotConfigured`](Refusal::NotConfigured) and
    /// [`CrossOrigin`](Refusal::CrossOrigin), 401 for [`Unauthorized`](Refusal::Unauthorized).
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::NotConfigured | Refusal::CrossOrigin => StatusCode::FORBIDDEN,
        }
    }

    /// The body of the answer, one line.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotConfigured => {
                "admin actions are disabled: set `admin_token` in the config file \
                 (or --admin-token, HAPROXY_RS_ADMIN_TOKEN) and send it as \
                 `Authorization: Bearer <token>`\n"
            }
            Refusal::Unauthorized => {
                "admin actions need the proxy's admin token: `Authorization: Bearer <token>`\n"
            }
            Refusal::CrossOrigin => {
                "admin actions are refused from another origin's page (Origin, Sec-Fetch-Site)\n"
            }
        }
    }

    /// The headers the answer carries besides the body's: `WWW-Authenticate: Bearer` on a 401.
    pub fn challenge(self) -> Option<HeaderValue> {
        (self == Refusal::Unauthorized).then(|| HeaderValue::from_static("Bearer"))
    }
}

/// Decides whether an action may run; every action of the stats listener calls it first.
///
/// The order: without a configured token nothing runs (403, saying how to enable actions); a
/// request from a browser page of another origin is refused (403) before its token is looked at,
/// so such a page learns nothing about the token; then the bearer token must match (401).
///
/// # Errors
/// The [`Refusal`] to answer with.
pub fn authorize(token: Option<&AdminToken>, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Err(Refusal::NotConfigured);
    };
    if cross_origin(headers) {
        return Err(Refusal::CrossOrigin);
    }
    match bearer(headers) {
        Some(presented) if token.matches(presented) => Ok(()),
        _ => Err(Refusal::Unauthorized),
    }
}

/// Whether the headers show a browser request from a page that is not the stats listener's
/// own: `Sec-Fetch-Site: cross-site`, or an `Origin` other than `http://<Host>` or
/// `https://<Host>` (`Origin: null`, sent by sandboxed and file pages, included).
fn cross_origin(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if fetch_site.is_some_and(|s| s.eq_ignore_ascii_case(b"cross-site")) {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        // Not a browser's cross-origin request (curl, the CLI, a same-origin GET).
        return false;
    };
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let origin = origin.as_bytes();
    !["http://", "https://"].iter().any(|scheme| {
        origin.len() == scheme.len() + host.len()
            && origin.starts_with(scheme.as_bytes())
            && origin
                .get(scheme.len()..)
                .is_some_and(|o| o.eq_ignore_ascii_case(host.as_bytes()))
    })
}

/// The token of `Authorization: Bearer <token>` (the scheme's case ignored, RFC 9110).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn token() -> AdminToken {
        AdminToken::new(&MaskedString::new("s3cret-token"))
    }

    #[test]
    fn without_a_configured_token_every_action_is_refused_saying_how_to_enable_it() {
        let h = headers(&[("authorization", "Bearer s3cret-token")]);
        assert_eq!(authorize(None, &h), Err(Refusal::NotConfigured));
        assert_eq!(Refusal::NotConfigured.status(), StatusCode::FORBIDDEN);
        let m = Refusal::NotConfigured.message();
        for name in ["admin_token", "--admin-token", "HAPROXY_RS_ADMIN_TOKEN"] {
            assert!(m.contains(name), "{m}");
        }
    }

    #[test]
    fn the_bearer_token_must_match() {
        let t = token();
        let ok = |pairs| authorize(Some(&t), &headers(pairs));
        assert_eq!(ok(&[("authorization", "Bearer s3cret-token")]), Ok(()));
        assert_eq!(ok(&[("authorization", "bearer  s3cret-token ")]), Ok(()));
        for bad in [
            &[][..],
            &[("authorization", "Bearer s3cret-tokeN")],
            &[("authorization", "Bearer s3cret-token-and-more")],
            &[("authorization", "Bearer ")],
            &[("authorization", "Bearer")],
            &[("authorization", "Basic czNjcmV0LXRva2Vu")],
            &[("authorization", "s3cret-token")],
        ] {
            assert_eq!(ok(bad), Err(Refusal::Unauthorized), "{bad:?}");
        }
        assert_eq!(Refusal::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            Refusal::Unauthorized.challenge(),
            Some(HeaderValue::from_static("Bearer"))
        );
        assert_eq!(Refusal::CrossOrigin.challenge(), None);
    }

    #[test]
    fn a_browser_page_of_another_origin_is_refused_even_with_the_token() {
        let t = token();
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![
                ("authorization", "Bearer s3cret-token"),
                ("host", "127.0.0.1:8404"),
            ];
            pairs.extend_from_slice(extra);
            authorize(Some(&t), &headers(&pairs))
        };
        assert_eq!(with(&[("origin", "http://127.0.0.1:8404")]), Ok(()));
        assert_eq!(with(&[("origin", "https://127.0.0.1:8404")]), Ok(()));
        assert_eq!(with(&[("sec-fetch-site", "same-origin")]), Ok(()));
        for foreign in [
            "http://evil.example",
            "http://127.0.0.1:8405",
            "http://127.0.0.1:8404.evil.example",
            "ftp://127.0.0.1:8404",
            "null",
        ] {
            let origin = HeaderValue::from_static(foreign);
            let mut h = headers(&[
                ("authorization", "Bearer s3cret-token"),
                ("host", "127.0.0.1:8404"),
            ]);
            h.insert(ORIGIN, origin);
            assert_eq!(
                authorize(Some(&t), &h),
                Err(Refusal::CrossOrigin),
                "{foreign}"
            );
        }
        assert_eq!(
            with(&[("sec-fetch-site", "cross-site")]),
            Err(Refusal::CrossOrigin)
        );
        // An Origin without a Host to compare it with.
        let h = headers(&[
            ("authorization", "Bearer s3cret-token"),
            ("origin", "http://127.0.0.1:8404"),
        ]);
        assert_eq!(authorize(Some(&t), &h), Err(Refusal::CrossOrigin));
        // Refused as cross-origin before the token is looked at.
        let h = headers(&[("origin", "http://evil.example"), ("host", "a:1")]);
        assert_eq!(authorize(Some(&t), &h), Err(Refusal::CrossOrigin));
        assert_eq!(Refusal::CrossOrigin.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let shown = format!("{:?}", token());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
