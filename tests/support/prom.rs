//! A real Prometheus server for end-to-end tests, and its HTTP API.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{debian_tool, get, tempdir};

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus scraping `targets` every second with `rules` loaded,
/// sending alerts to `alertmanager` if given.
pub fn start_prometheus(
    targets: &[SocketAddr],
    rules: &Path,
    alertmanager: Option<SocketAddr>,
) -> Prometheus {
    let dir = tempdir();
    let config = dir.join("prometheus.yml");
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let mut text = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: compute-optimizer\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.join(", ")
    );
    if let Some(am) = alertmanager {
        text.push_str(&format!(
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let port = free_port();
    let child = debian_tool("prometheus", "prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Prometheus {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn api(p: &Prometheus, path: &str) -> Value {
    let r = get(p.addr, path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "success", "{path}: {v}");
    v["data"].clone()
}

pub async fn query(p: &Prometheus, promql: &str) -> Vec<Value> {
    let data = api(p, &format!("/api/v1/query?query={}", encode(promql))).await;
    data["result"].as_array().cloned().unwrap_or_default()
}

/// Retries `check` for up to `secs` seconds until it returns Ok.
pub async fn eventually<F, Fut>(secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
