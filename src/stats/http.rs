//! The stats HTTP server: `/`, `/stats.json`, `/metrics`, `/healthz` over hyper http1, and the
//! admin actions (`POST /switchover`) behind [`super::admin::authorize`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::admin::{authorize, AdminToken, Refusal};
use super::switchover::{SwitchoverRequest, SwitchoverSender};
use super::{render_html, render_json, render_prometheus, Snapshot, Stats};

/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest `POST /switchover` waits for the outcome.
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How often ops/s rates are resampled.
const RATE_TICK: Duration = Duration::from_secs(1);

/// A response with a body and content type.
fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

const TEXT: &str = "text/plain; charset=utf-8";

/// What the stats listener needs for its admin actions.
#[derive(Debug, Clone, Default)]
pub struct Admin {
    /// The admin token; without one every action answers 403.
    pub token: Option<AdminToken>,
    /// Sentinel mode: where `POST /switchover` goes.
    pub switchover: Option<SwitchoverSender>,
    /// Where `POST /reload` goes (`None`: the proxy has no config file to read again).
    pub reload: Option<super::ReloadSender>,
}

/// When the stats listener stops, and whether the proxy is stopping meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Cancelled when the proxy begins to stop: `/healthz` answers 503 ("shutting down") from
    /// then on, so a load balancer stops sending clients while the listener still answers.
    pub draining: CancellationToken,
    /// Stops the listener (the end of the shutdown, or a takeover by a new process).
    pub stop: CancellationToken,
}

/// The admin actions. Each changes the topology, so each goes through [`authorize`] first
/// (in [`perform`]); a new action is a new variant here and nothing else to secure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// `POST /switchover`.
    Switchover,
    /// `POST /reload`.
    Reload,
}

impl Action {
    fn from_path(path: &str) -> Option<Action> {
        match path {
            "/switchover" => Some(Action::Switchover),
            "/reload" => Some(Action::Reload),
            _ => None,
        }
    }
}

/// Answers 405 with the methods `path` takes.
fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut resp = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        TEXT,
        "method not allowed\n".to_owned(),
    );
    resp.headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Maps a read-only request (method and path) to a response; pure apart from taking a snapshot.
/// `draining`: the proxy is stopping.
fn route(method: &Method, path: &str, stats: &Stats, draining: bool) -> Response<Full<Bytes>> {
    if Action::from_path(path).is_some() {
        return method_not_allowed("POST");
    }
    let known = matches!(
        path,
        "/" | "/stats" | "/stats.json" | "/metrics" | "/healthz"
    );
    if !known {
        return respond(StatusCode::NOT_FOUND, TEXT, "not found\n".to_owned());
    }
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let snap = stats.snapshot();
    match path {
        "/stats.json" => respond(StatusCode::OK, "application/json", render_json(&snap)),
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render_prometheus(&snap),
        ),
        "/healthz" if draining => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "shutting down\n".to_owned(),
        ),
        "/healthz" if snap.healthy() => respond(StatusCode::OK, TEXT, "ok\n".to_owned()),
        "/healthz" => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, unhealthy(&snap)),
        _ => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            render_html(&snap),
        ),
    }
}

/// Why `/healthz` answers 503.
fn unhealthy(snap: &Snapshot) -> String {
    match &snap.cluster {
        Some(c) => format!(
            "{} of {} slots served\n",
            c.view.slots_served,
            crate::router::slot::SLOTS
        ),
        None => "no master\n".to_owned(),
    }
}

/// Runs `action` if [`authorize`] lets it: the one way into an admin action.
async fn perform(
    action: Action,
    headers: &hyper::HeaderMap,
    admin: &Admin,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    if let Err(refusal) = authorize(admin.token.as_ref(), headers) {
        tracing::info!(client.addr = %peer, ?action, ?refusal, "admin action refused");
        return refused(refusal);
    }
    tracing::info!(client.addr = %peer, ?action, "admin action");
    match action {
        Action::Switchover => switchover_response(admin.switchover.clone()).await,
        Action::Reload => reload_response(admin.reload.as_ref()).await,
    }
}

/// The answer to a refused action: 401 with `WWW-Authenticate: Bearer`, or 403.
fn refused(refusal: Refusal) -> Response<Full<Bytes>> {
    let mut resp = respond(refusal.status(), TEXT, refusal.message().to_owned());
    if let Some(challenge) = refusal.challenge() {
        resp.headers_mut()
            .insert(hyper::header::WWW_AUTHENTICATE, challenge);
    }
    resp
}

/// `POST /switchover`: runs one and answers with its report (200) or why not (409).
async fn switchover_response(admin: Option<SwitchoverSender>) -> Response<Full<Bytes>> {
    let Some(admin) = admin else {
        return respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "switchover needs Sentinel mode\n".to_owned(),
        );
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if admin.send(SwitchoverRequest { reply: tx }).is_err() {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "the topology manager is not running\n".to_owned(),
        );
    }
    match tokio::time::timeout(SWITCHOVER_TIMEOUT, rx).await {
        Ok(Ok(Ok(report))) => respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&report).unwrap_or_default() + "\n",
        ),
        Ok(Ok(Err(why))) => respond(
            StatusCode::CONFLICT,
            TEXT,
            format!("switchover failed: {why}\n"),
        ),
        Ok(Err(_)) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "the topology manager stopped\n".to_owned(),
        ),
        Err(_) => respond(
            StatusCode::GATEWAY_TIMEOUT,
            TEXT,
            "switchover still running after 60 s; see the stats page\n".to_owned(),
        ),
    }
}

/// `POST /reload`: reads the config again and answers with what the reload did, as JSON: 200 when
/// applied (`changed`, `needs_restart`), 422 when the config was refused (`error`; the running
/// config stays).
async fn reload_response(reload: Option<&super::ReloadSender>) -> Response<Full<Bytes>> {
    let Some(reload) = reload else {
        return respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "reload needs a config file (haproxy-rs run -c FILE)\n".to_owned(),
        );
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if reload
        .send(super::ReloadRequest { reply: Some(tx) })
        .is_err()
    {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "the reload task is not running\n".to_owned(),
        );
    }
    match rx.await {
        Ok(record) => {
            let status = match record.outcome {
                "applied" => StatusCode::OK,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let body = serde_json::to_string(&record).unwrap_or_default() + "\n";
            respond(status, "application/json", body)
        }
        Err(_) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "the reload task stopped\n".to_owned(),
        ),
    }
}

/// Serves the stats page on `listener` until `lifecycle.stop` is cancelled (with `/healthz`
/// answering 503 once `lifecycle.draining` is).
///
/// Also resamples ops/s every second so rates stay fresh between page loads.
/// On stop it stops accepting and asks open connections to finish their current request
/// and close (hyper graceful shutdown); it returns without waiting for them.
///
/// `admin` holds the admin token and, in Sentinel mode, where `POST /switchover` goes (the
/// topology's Sentinel task, which answers each [`SwitchoverRequest`]).
pub async fn serve(listener: TcpListener, stats: Arc<Stats>, lifecycle: Lifecycle, admin: Admin) {
    let shutdown = lifecycle.stop.clone();
    // The ticker lives in this loop rather than its own task so that dropping `serve`
    // leaves nothing behind.
    let mut tick = tokio::time::interval(RATE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                stats.refresh_rates();
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::trace!(client.addr = %peer, "stats connection");
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    Arc::clone(&stats),
                    lifecycle.clone(),
                    admin.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "stats accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    tracing::debug!("stats server stopped accepting");
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    stats: Arc<Stats>,
    lifecycle: Lifecycle,
    admin: Admin,
) {
    let Lifecycle { draining, stop } = lifecycle;
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let action = Action::from_path(req.uri().path()).filter(|_| req.method() == Method::POST);
        let (stats, admin) = (Arc::clone(&stats), admin.clone());
        let draining = draining.is_cancelled();
        async move {
            Ok::<_, Infallible>(match action {
                Some(action) => perform(action, req.headers(), &admin, peer).await,
                None => route(req.method(), req.uri().path(), &stats, draining),
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Browsers and scrapers hang up mid-request all the time.
        tracing::debug!(error = %e, "stats connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn lifecycle(stop: &CancellationToken) -> Lifecycle {
        Lifecycle {
            draining: CancellationToken::new(),
            stop: stop.clone(),
        }
    }

    async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8(buf).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn serves_page_json_metrics_health_and_404() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Stats::new("sentinel", Some("mymaster"));
        stats.backend("127.0.0.1:6391").set_up(true);
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Arc::clone(&stats),
            lifecycle(&token),
            Admin::default(),
        ));

        let (status, head, body) = get(addr, "GET", "/").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/html"));
        assert!(body.contains("127.0.0.1:6391"));

        let (status, head, body) = get(addr, "GET", "/stats.json").await;
        assert_eq!(status, 200);
        assert!(head.contains("application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["backends"][0]["state"], "UP");

        let (status, head, body) = get(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(head.contains("version=0.0.4"));
        assert!(body.contains("# TYPE haproxy_rs_backend_up gauge"));

        let (status, _, body) = get(addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (503, "no master\n"));
        stats.set_master(Some("127.0.0.1:6391"));
        let (status, _, body) = get(addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        assert_eq!(get(addr, "GET", "/nope").await.0, 404);
        assert_eq!(get(addr, "POST", "/metrics").await.0, 405);
        // Actions go through the guard: without an admin token, refused saying how to enable them.
        let (status, _, body) = get(addr, "POST", "/switchover").await;
        assert_eq!(status, 403);
        assert!(body.contains("admin_token"), "{body}");
        let (status, head, _) = get(addr, "GET", "/switchover").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: post"), "{head}");

        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after cancel")
            .expect("no panic");
    }

    #[tokio::test]
    async fn cluster_mode_json_metrics_and_health_follow_the_slot_map() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Stats::new("cluster", None);
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Arc::clone(&stats),
            lifecycle(&token),
            Admin::default(),
        ));

        let (status, _, body) = get(addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (503, "0 of 16384 slots served\n"));
        let (_, _, body) = get(addr, "GET", "/stats.json").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["cluster"]["view"]["slots_served"], 0);
        assert_eq!(v["cluster"]["refreshes"], 0);

        stats.cluster().moved();
        stats.cluster().refreshed(Some(crate::stats::ClusterView {
            slots_served: 16384,
            ..Default::default()
        }));
        let (status, _, body) = get(addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (_, _, body) = get(addr, "GET", "/stats.json").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["mode"], "cluster");
        assert_eq!(v["cluster"]["view"]["slots_served"], 16384);
        assert_eq!(
            (
                v["cluster"]["refreshes"].as_u64(),
                v["cluster"]["moved"].as_u64()
            ),
            (Some(1), Some(1))
        );
        let (_, _, body) = get(addr, "GET", "/metrics").await;
        assert!(body.contains("haproxy_rs_cluster_slots_served 16384\n"));
        let (_, _, body) = get(addr, "GET", "/").await;
        assert!(body.contains("<h2>Cluster</h2>"));

        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after cancel")
            .expect("no panic");
    }

    #[tokio::test]
    async fn healthz_fails_once_the_proxy_drains_while_the_page_still_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Stats::new("sentinel", Some("mymaster"));
        stats.set_master(Some("127.0.0.1:6391"));
        let lifecycle = Lifecycle::default();
        let server = tokio::spawn(serve(
            listener,
            Arc::clone(&stats),
            lifecycle.clone(),
            Admin::default(),
        ));
        assert_eq!(get(addr, "GET", "/healthz").await.0, 200);
        lifecycle.draining.cancel();
        let (status, _, body) = get(addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (503, "shutting down\n"));
        assert_eq!(get(addr, "GET", "/stats.json").await.0, 200);
        lifecycle.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after stop")
            .expect("no panic");
    }

    #[tokio::test]
    async fn cancel_stops_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Stats::new("static", None),
            lifecycle(&token),
            Admin::default(),
        ));
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns")
            .expect("no panic");
        // The listener was dropped with the task, so nothing answers any more.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
