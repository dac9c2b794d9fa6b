//! The `CLIENT` subcommands with the proxy's own clients as their subject (issue 14 item 5):
//! `LIST`/`INFO` in Redis 7.0's format, `KILL`, `REPLY`, `UNBLOCK`, `PAUSE`/`UNPAUSE`, in Sentinel
//! and cluster mode, against real servers.

use tokio::net::TcpStream;

use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::{Cluster, RedisServer, Topology};
use crate::security::send;

/// The text of a bulk-string reply frame (`$n\r\n...`).
fn bulk_text(frame: &str) -> String {
    frame
        .split_once("\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// `key=value` of a `CLIENT LIST` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// The keys of a `CLIENT LIST` line, in order.
fn keys(line: &str) -> Vec<&str> {
    line.split(' ')
        .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
        .collect()
}

/// `CLIENT LIST [args]` on `s`: its lines.
async fn list(s: &mut TcpStream, args: &[&str]) -> Vec<String> {
    let mut cmd = vec!["CLIENT", "LIST"];
    cmd.extend_from_slice(args);
    let reply = send(s, &[&cmd]).await;
    bulk_text(&reply[0])
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

async fn id_of(s: &mut TcpStream) -> String {
    send(s, &[&["CLIENT", "ID"]]).await[0]
        .trim_start_matches(':')
        .to_string()
}

async fn connect(proxy: &TestProxy) -> TcpStream {
    TcpStream::connect(proxy.addr()).await.unwrap()
}

/// `CLIENT LIST`, `LIST TYPE`/`ID` and `INFO` show the proxy's clients, in Redis 7.0's format.
async fn lists_the_proxys_clients(proxy: &TestProxy) {
    let direct_line = {
        let server = RedisServer::start().await;
        let mut s = TcpStream::connect(server.addr()).await.unwrap();
        bulk_text(&send(&mut s, &[&["CLIENT", "INFO"]]).await[0])
    };
    let mut a = connect(proxy).await;
    let mut b = connect(proxy).await;
    let mut sub = connect(proxy).await;
    assert_eq!(
        send(&mut a, &[&["CLIENT", "SETNAME", "alpha"]]).await,
        ["+OK"]
    );
    let (ida, idb) = (id_of(&mut a).await, id_of(&mut b).await);
    let ids = id_of(&mut sub).await;
    send(&mut sub, &[&["SUBSCRIBE", "news"]]).await;

    let lines = list(&mut b, &[]).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let line_of = |id: &str| {
        lines
            .iter()
            .find(|l| field(l, "id") == id)
            .cloned()
            .unwrap_or_else(|| panic!("client {id} not in {lines:?}"))
    };
    let (la, lb, ls) = (line_of(&ida), line_of(&idb), line_of(&ids));
    assert_eq!(keys(&la), keys(&direct_line), "{la}\n{direct_line}");
    assert_eq!(field(&la, "name"), "alpha");
    assert_eq!(field(&la, "cmd"), "client|id");
    assert_eq!(field(&la, "addr"), a.local_addr().unwrap().to_string());
    assert_eq!(field(&la, "laddr"), proxy.addr().to_string());
    assert_eq!(field(&la, "flags"), "N");
    assert_eq!(field(&lb, "cmd"), "client|list");
    assert_eq!(
        (field(&ls, "flags"), field(&ls, "sub"), field(&ls, "cmd")),
        ("P", "1", "subscribe")
    );

    assert_eq!(list(&mut b, &["TYPE", "pubsub"]).await, [ls]);
    assert_eq!(list(&mut b, &["TYPE", "normal"]).await.len(), 2);
    let by_id = list(&mut b, &["ID", &ida, "999999999"]).await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(field(&by_id[0], "id"), ida);
    assert_eq!(
        send(&mut b, &[&["CLIENT", "LIST", "TYPE", "foo"]]).await,
        ["-ERR Unknown client type 'foo'"]
    );
    // INFO is the client's own LIST line.
    let info = bulk_text(&send(&mut a, &[&["CLIENT", "INFO"]]).await[0]);
    let info = info.trim_end();
    assert_eq!(field(info, "id"), ida);
    assert_eq!(field(info, "cmd"), "client|info");
    assert_eq!(keys(info), keys(&la));
    // A client that leaves is no longer listed.
    drop(sub);
    crate::eventually!(
        std::time::Duration::from_secs(5),
        list(&mut b, &[]).await.len() == 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_and_info_show_the_proxys_clients_in_sentinel_mode() {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    lists_the_proxys_clients(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_and_info_show_the_proxys_clients_in_cluster_mode() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    lists_the_proxys_clients(&proxy).await;
}
