//! The stats page as a person sees it (issue 16): rendered by headless Chromium at 1280 px, after
//! real failovers (whose sentinel event lists are the page's longest lines), with every section
//! there and nothing wider than the window.

use std::process::Command;
use std::time::Duration;

use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::Topology;
use crate::stats_http::{get, sets, stats_json};

/// The width the page must fit without horizontal scrolling.
const WIDTH: u32 = 1280;

/// Appended to the page before Chromium loads it: measures the layout and writes it into the
/// DOM, which `--dump-dom` prints. It measures only; the page is the proxy's, byte for byte.
const MEASURE: &str = "<script>\
const w = window.innerWidth;\
const wide = [...document.querySelectorAll('body *')]\
  .filter(e => e.getBoundingClientRect().right > w + 0.5)\
  .map(e => e.tagName + ' ' + (e.textContent || '').slice(0, 60) + ' ends at ' + Math.round(e.getBoundingClientRect().right));\
const sections = [...document.querySelectorAll('h2')].map(h => h.textContent);\
document.body.setAttribute('data-layout', JSON.stringify({width: w, scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 8), sections}));\
</script>";

/// Chromium's binary, if installed (`apt-get install chromium`; required with `CI=true`).
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed (apt-get install chromium; scripts/test.sh does)"
        );
        eprintln!("skipped: chromium is missing (scripts/test.sh installs it)");
    }
    found
}

/// What Chromium saw of the page at [`WIDTH`] px.
#[derive(serde::Deserialize, Debug)]
struct Layout {
    width: u32,
    scroll: u32,
    wide: Vec<String>,
    sections: Vec<String>,
}

/// Renders the proxy's stats page in headless Chromium at [`WIDTH`] px and measures it.
async fn render(browser: &str, proxy: &TestProxy) -> Layout {
    let (status, html) = get(proxy.stats_addr(), "/").await;
    assert_eq!(status, 200, "{html}");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("stats.html");
    std::fs::write(&page, format!("{html}{MEASURE}")).unwrap();
    let out = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
            &format!("--window-size={WIDTH},900"),
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("chromium answers within 60 s")
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let attr = dom
        .split_once("data-layout=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(json, _)| json.replace("&quot;", "\"").replace("&amp;", "&"))
        .unwrap_or_else(|| {
            panic!(
                "the page rendered no layout: {}\n{dom}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(&attr).unwrap()
}

fn assert_fits(layout: &Layout, sections: &[&str]) {
    assert_eq!(layout.width, WIDTH, "{layout:?}");
    assert!(
        layout.scroll <= WIDTH && layout.wide.is_empty(),
        "the page scrolls sideways at {WIDTH} px: {layout:?}"
    );
    for s in sections {
        assert!(
            layout.sections.iter().any(|h| h.starts_with(s)),
            "no section {s}: {layout:?}"
        );
    }
}

/// Sentinel mode after two failovers: the failover history holds two long sentinel event
/// lists, and the page still fits 1280 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_page_fits_1280_px_after_failovers() {
    let Some(browser) = chromium() else { return };
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    sets(&proxy, 20).await;
    for round in 1..=2 {
        let new = topo.failover().await;
        crate::eventually!(
            Duration::from_secs(30),
            proxy.master().as_deref() == Some(new.as_str())
                && stats_json(proxy.stats_addr()).await["failovers"]
                    .as_array()
                    .is_some_and(|f| f.len() >= round),
            "failover {round} is in the history"
        );
    }
    let layout = render(browser, &proxy).await;
    assert_fits(
        &layout,
        &[
            "Listeners",
            "Commands",
            "Backends",
            "Sentinels",
            "Requests held",
            "Failover history",
        ],
    );
}

/// Cluster mode: the slot map and the nodes fit too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_stats_page_fits_1280_px() {
    let Some(browser) = chromium() else { return };
    let cluster = crate::harness::Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    sets(&proxy, 20).await;
    let layout = render(browser, &proxy).await;
    assert_fits(&layout, &["Listeners", "Commands", "Cluster", "Backends"]);
}
