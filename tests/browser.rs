//! The status page in a real browser (Debian's headless Chromium): it
//! renders, and an account name carrying a script stays text.

mod support;

use support::standin::{Standin, org};
use support::{Exporter, tempdir};

/// Headless Chromium with the flags this closed network needs.
fn chromium(args: &[&str]) -> std::process::Output {
    let profile = tempdir();
    support::debian_tool("chromium", "chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_and_a_hostile_name_stays_text() {
    let standin = Standin::start(org(12)).await;
    standin.set_name("100000000002", "<script>document.title='pwned'</script>");
    standin.set_name(
        "100000000003",
        "<img src=x onerror=\"document.title='pwned'\">",
    );
    let e = Exporter::start(
        &standin,
        "organizations = true\norganizations_interval = \"1m\"\n[poll]\ninterval = \"1m\"\n",
    )
    .await;
    e.wait_for(20, |t| t.contains("aws_compute_optimizer_account_info{"))
        .await;
    let url = format!("http://{}/status", e.addr);

    let dom = chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.contains("<title>Accounts not Active</title>"),
        "script ran or page missing:\n{dom}"
    );
    assert!(!dom.contains("pwned</title>"));
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "{dom}"
    );
    assert!(
        !dom.contains("<img"),
        "markup from a name became an element"
    );
    // Every not-Active account is a row: 9 of the 12 (3 are Active).
    assert_eq!(dom.matches("<tr class=").count(), 9);

    let shot = tempdir().join("status.png");
    chromium(&[&format!("--screenshot={}", shot.display()), &url]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    e.stop().await;
}
