//! Alerts reach the team that owns the account: the shipped Alertmanager
//! configuration passes amtool and routes as documented, and end to end a
//! real Prometheus with the shipped rules (their `for:` shortened in a test
//! copy) and a real Alertmanager, fed by two exporter replicas, notify each
//! team's webhook with exactly the stuck accounts it owns, each once, with
//! name, OU and tags; one notification for the accounts tagged with a team.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use support::prom::{eventually, free_port, start_prometheus};
use support::standin::{Standin, org};
use support::{Exporter, api_requests, debian_tool, tempdir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn amtool() -> std::process::Command {
    debian_tool("amtool", "prometheus-alertmanager")
}

#[test]
fn the_shipped_configuration_passes_amtool() {
    let out = amtool()
        .args(["check-config", "deploy/alertmanager/alertmanager.yml"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 templates"));
}

/// The organisation's own team, then the team tag, then the OU, then the
/// platform team.
#[test]
fn routes_go_by_team_tag_then_ou_then_default() {
    let cases: [(&[&str], &str); 9] = [
        (&["organization=govcloud", "tag_team=payments"], "govcloud"),
        (
            &["organization=commercial", "tag_team=payments"],
            "team-payments",
        ),
        (
            &["tag_team=payments", "ou_path=Root/Sandbox"],
            "team-payments",
        ),
        (
            &["tag_team=data", "ou_path=Root/Prod/Payments"],
            "team-data",
        ),
        (&["tag_team=mobile"], "platform"),
        (&["ou_path=Root/Prod/Payments"], "team-payments"),
        (&["ou_path=Root/Prod/Payments/Cards"], "team-payments"),
        (&["ou_path=Root/Prod/PaymentsOld"], "platform"),
        (&["ou_path=Root/Sandbox"], "platform"),
    ];
    for (labels, receiver) in cases {
        for alert in [
            "ComputeOptimizerAccountPendingTooLong",
            "ComputeOptimizerAccountFailed",
        ] {
            let mut all = vec![format!("alertname={alert}")];
            all.extend(labels.iter().map(|l| l.to_string()));
            assert_eq!(route_of(&all), receiver, "{alert} {labels:?}");
        }
    }
    // The exporter's own alerts go to the platform team.
    let own = [
        "alertname=ComputeOptimizerPollsFailing",
        "tag_team=payments",
    ]
    .map(String::from);
    assert_eq!(route_of(&own), "platform");
}

/// The receiver `amtool config routes test` picks for an alert's labels.
fn route_of(labels: &[String]) -> String {
    let out = amtool()
        .args([
            "config",
            "routes",
            "test",
            "--config.file=deploy/alertmanager/alertmanager.yml",
        ])
        .args(labels)
        .current_dir(root())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Webhook receivers on one port, each notification kept with its path.
struct Webhooks {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn webhooks() -> Webhooks {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Head, then Content-Length bytes of body; 1 MB at most.
                while buf.len() < 1 << 20 {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let body = serde_json::from_slice(&buf[end + 4..end + 4 + length])
                        .unwrap_or(Value::Null);
                    store.lock().unwrap().push((path, body));
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    Webhooks { addr, received }
}

struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped configuration and template, with the receivers pointed at
/// `hooks` and the waits shortened.
fn start_alertmanager(hooks: SocketAddr) -> (Alertmanager, SocketAddr) {
    let dir = tempdir();
    let shipped = root().join("deploy/alertmanager");
    let config = std::fs::read_to_string(shipped.join("alertmanager.yml"))
        .unwrap()
        .replace(
            "http://alert-gateway.example.internal",
            &format!("http://{hooks}"),
        )
        .replace("group_wait: 30s", "group_wait: 2s")
        .replace("group_interval: 5m", "group_interval: 2s");
    std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
    std::fs::copy(
        shipped.join("compute-optimizer.tmpl"),
        dir.join("compute-optimizer.tmpl"),
    )
    .unwrap();
    let port = free_port();
    let child = debian_tool("prometheus-alertmanager", "prometheus-alertmanager")
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (
        Alertmanager(child),
        SocketAddr::from(([127, 0, 0, 1], port)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_team_is_notified_of_exactly_its_stuck_accounts_once() {
    // org(12): accounts 2, 6, 10 are Pending and 3, 7, 11 Failed, all for
    // years by AWS's timestamps.
    let standin = Standin::start(org(12)).await;
    let id = |i: u64| format!("{}", 100_000_000_000u64 + i);
    for (i, ou, team, name) in [
        (2, "Prod/Payments", Some("payments"), "payments-prod"),
        (3, "Data", Some("data"), "lake"),
        (6, "Prod/Payments/Cards", None, "cards"),
        (7, "Prod/Payments", Some("data"), "reports"),
        (10, "Sandbox", None, "sandbox-1"),
        (11, "Sandbox", Some("mobile"), "app"),
    ] {
        standin.set_ou(&id(i), ou);
        standin.set_name(&id(i), name);
        if let Some(team) = team {
            standin.set_tag(&id(i), "team", team);
        }
    }
    let config = "organizations = true\norganizations_interval = \"1h\"\n\
                  organizations_requests_per_second = 1000\naccount_tags = [\"team\"]\n\
                  [poll]\ninterval = \"1h\"\n";
    // Two replicas, as an HA pair runs.
    let replicas = [
        Exporter::start(&standin, config).await,
        Exporter::start(&standin, config).await,
    ];
    for e in &replicas {
        e.wait_for(20, |t| {
            api_requests(t, "ListTagsForResource", "success") >= 12.0
        })
        .await;
    }

    let hooks = webhooks().await;
    let (_am, am_addr) = start_alertmanager(hooks.addr);
    let rules = tempdir().join("rules.yml");
    let shipped = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    assert!(shipped.contains("for: 15m"));
    std::fs::write(&rules, shipped.replace("for: 15m", "for: 1s")).unwrap();
    let _prom = start_prometheus(&[replicas[0].addr, replicas[1].addr], &rules, Some(am_addr));

    let want: BTreeMap<&str, BTreeSet<String>> = [
        ("/payments", BTreeSet::from([id(2), id(6)])),
        ("/data", BTreeSet::from([id(3), id(7)])),
        ("/platform", BTreeSet::from([id(10), id(11)])),
    ]
    .into();
    let firing_ids = |body: &Value| -> Vec<String> {
        body["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["status"] == "firing")
            .filter(|a| {
                a["labels"]["alertname"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("ComputeOptimizerAccount"))
            })
            .map(|a| a["labels"]["account_id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // Each receiver gets exactly the stuck accounts its team owns; the
    // accounts tagged with one team come in one notification (data's two).
    eventually(60, || {
        let received = hooks.received.lock().unwrap().clone();
        let want = want.clone();
        async move {
            for (path, ids) in &want {
                let got: BTreeSet<String> = received
                    .iter()
                    .filter(|(p, _)| p == path)
                    .flat_map(|(_, body)| firing_ids(body))
                    .collect();
                if got != *ids {
                    return Err(format!("{path}: {got:?}, want {ids:?}; all: {received:?}"));
                }
            }
            let data_together = received
                .iter()
                .any(|(p, body)| p == "/data" && firing_ids(body).len() == 2);
            if !data_together {
                return Err("team data's two accounts were not in one notification".into());
            }
            Ok(())
        }
    })
    .await;

    let received = hooks.received.lock().unwrap().clone();
    for (path, body) in &received {
        let ids = firing_ids(body);
        let unique: BTreeSet<_> = ids.iter().cloned().collect();
        // Once each, whatever the two replicas report.
        assert_eq!(ids.len(), unique.len(), "{path}: an account twice: {body}");
        // And only to the team that owns it.
        let owned = want.get(path.as_str()).cloned().unwrap_or_default();
        assert!(unique.is_subset(&owned), "{path} got {unique:?}");
        for alert in body["alerts"].as_array().into_iter().flatten() {
            let labels = &alert["labels"];
            assert!(labels.get("instance").is_none(), "{labels}");
            assert!(labels["account_name"].is_string(), "{labels}");
            assert!(
                labels["ou_path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("Root/")),
                "{labels}"
            );
            assert!(alert["annotations"]["in_status_for"].is_string(), "{alert}");
        }
    }
    let labels_of = |account: &str| -> Value {
        received
            .iter()
            .flat_map(|(_, b)| b["alerts"].as_array().cloned().unwrap_or_default())
            .find(|a| a["labels"]["account_id"] == account)
            .map(|a| a["labels"].clone())
            .unwrap()
    };
    let payments = labels_of(&id(2));
    assert_eq!(payments["account_name"], "payments-prod");
    assert_eq!(payments["ou_path"], "Root/Prod/Payments");
    assert_eq!(payments["tag_team"], "payments");
    assert_eq!(payments["status"], "Pending");
    // No team tag: routed by OU, and no empty tag label.
    let cards = labels_of(&id(6));
    assert_eq!(cards["ou_path"], "Root/Prod/Payments/Cards");
    assert!(cards.get("tag_team").is_none(), "{cards}");
    assert_eq!(labels_of(&id(10))["ou_path"], "Root/Sandbox");

    // The chat receiver renders the shipped template: both of team data's
    // accounts by name and ID in one message, its owner, and the runbook.
    let slack: Vec<&Value> = received
        .iter()
        .filter(|(p, _)| p == "/slack/data")
        .map(|(_, body)| body)
        .collect();
    let together = slack.iter().find(|b| {
        let text = b["attachments"][0]["text"].as_str().unwrap_or("");
        text.contains(&format!("lake ({})", id(3)))
            && text.contains(&format!("reports ({})", id(7)))
    });
    let message = together.unwrap_or_else(|| panic!("no message with both accounts: {slack:?}"));
    let attachment = &message["attachments"][0];
    assert_eq!(message["channel"], "#team-data");
    let title = attachment["title"].as_str().unwrap_or("");
    assert!(title.contains("for team data"), "{title}");
    let text = attachment["text"].as_str().unwrap_or("");
    assert!(
        text.contains("What to do: README.md#runbook-computeoptimizeraccount"),
        "{text}"
    );

    for e in replicas {
        e.stop().await;
    }
}

/// Continuity, end to end: with an account alert firing and notified, one
/// replica restarts with its storage kept while Organizations refuses tags,
/// and a fresh replica joins whose tags are not known (complete 0). Neither
/// makes Alertmanager send anything: no resolved notification, no second
/// one, none at another receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_and_a_fresh_replica_change_no_notification() {
    let standin = Standin::start(org(4)).await;
    // org(4): account 2 is Pending (for years), 3 Failed.
    let id = |i: u64| format!("{}", 100_000_000_000u64 + i);
    for (i, team) in [(2, "payments"), (3, "data")] {
        standin.set_ou(&id(i), "Prod/Payments");
        standin.set_tag(&id(i), "team", team);
    }
    let dir = tempdir();
    let toml = format!(
        "[aws]\nregion = \"us-east-1\"\n{}retry_backoff = \"10ms\"\norganizations = true\norganizations_interval = \"1h\"\norganizations_requests_per_second = 1000\naccount_tags = [\"team\"]\n[poll]\ninterval = \"1h\"\n",
        standin.endpoint_keys()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, &toml).unwrap();
    let config = || {
        compute_optimizer_exporter::app::load_config(Some(&path), &Default::default(), false)
            .unwrap()
    };
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (a_addr, b_addr, c_addr) = (addr(free_port()), addr(free_port()), addr(free_port()));
    let (a_store, b_store) = (dir.join("a"), dir.join("b"));
    let a = Exporter::start_on(a_addr, config(), Some(&path), false, None, Some(&a_store)).await;
    let b = Exporter::start_on(b_addr, config(), Some(&path), false, None, Some(&b_store)).await;
    let complete =
        |t: &str| support::sample(t, "aws_compute_optimizer_organizations_complete") == Some(1.0);
    a.wait_for(20, complete).await;
    b.wait_for(20, complete).await;

    let hooks = webhooks().await;
    let (_am, am_addr) = start_alertmanager(hooks.addr);
    let rules = tempdir().join("rules.yml");
    let shipped = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    std::fs::write(&rules, shipped.replace("for: 15m", "for: 1s")).unwrap();
    // The fresh replica's address is a target from the start (down until it joins).
    let prom = start_prometheus(&[a_addr, b_addr, c_addr], &rules, Some(am_addr));
    // The label sets of the firing account alerts, as Prometheus sends them.
    let firing = || async {
        let mut sets: Vec<String> = support::prom::query(
            &prom,
            "ALERTS{alertstate=\"firing\",alertname=~\"ComputeOptimizerAccount.*\"}",
        )
        .await
        .iter()
        .map(|s| s["metric"].to_string())
        .collect();
        sets.sort();
        sets
    };
    let notified = |path: &str, account: &str| {
        hooks.received.lock().unwrap().iter().any(|(p, body)| {
            p == path
                && body["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["labels"]["account_id"] == account && x["status"] == "firing")
        })
    };
    eventually(60, || async {
        if notified("/payments", &id(2)) && notified("/data", &id(3)) {
            Ok(())
        } else {
            Err(format!("not yet: {:?}", hooks.received.lock().unwrap()))
        }
    })
    .await;
    // Settled: three group intervals with nothing new.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let before = hooks.received.lock().unwrap().len();
    let alerts_before = firing().await;
    assert_eq!(alerts_before.len(), 2, "{alerts_before:?}");

    // Organizations now refuses tags to everyone.
    standin.fail_tags_after(Some(0));
    // B restarts, its storage kept.
    b.stop().await;
    let b = Exporter::start_on(b_addr, config(), Some(&path), false, None, Some(&b_store)).await;
    b.wait_ready().await;
    let first = b.metrics().await;
    assert!(complete(&first), "restored complete");
    // C joins without storage: names and OUs, but no tag known.
    let c = Exporter::start_on(c_addr, config(), Some(&path), false, None, None).await;
    let fresh = c
        .wait_for(20, |t| {
            t.contains("aws_compute_optimizer_account_info{")
                && support::sample(t, "aws_compute_optimizer_organizations_up") == Some(0.0)
        })
        .await;
    assert!(!complete(&fresh));
    assert!(
        fresh.contains("tag_team=\"\""),
        "the fresh replica knows no tag"
    );
    // Positive evidence first: Prometheus has scraped the fresh replica,
    // and rules evaluated since (1 s apart) send exactly the alerts they
    // sent before the restart and the join.
    let c_seen =
        format!("aws_compute_optimizer_organizations_complete{{instance=\"{c_addr}\"}} == 0");
    eventually(30, || async {
        if support::prom::query(&prom, &c_seen).await.is_empty() {
            Err("the fresh replica not scraped yet".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        firing().await,
        alerts_before,
        "the alerts Prometheus sends changed"
    );
    // Then two group intervals (2 s): a change would have been notified.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let received = hooks.received.lock().unwrap().clone();
    let after: Vec<_> = received[before..].to_vec();
    assert!(
        after.is_empty(),
        "notifications after the restart and the join: {after:?}"
    );
    for e in [a, b, c] {
        e.stop().await;
    }
}
