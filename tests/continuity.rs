//! Right across time, not only at an instant: restarts (kept storage, a
//! `kill -9`, damaged files), reloads that touch one producer, and the
//! walk's own health and account states.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compute_optimizer_exporter::app;
use support::standin::{Standin, org};
use support::{Exporter, api_requests, get, request, sample, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_compute-optimizer-exporter");

/// Organizations with tags, fast; the poll slow (once, at start).
fn config(standin: &Standin, rate: f64) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\n{}retry_backoff = \"10ms\"\nmax_attempts = 1\norganizations = true\norganizations_interval = \"1h\"\norganizations_requests_per_second = {rate}\naccount_tags = [\"team\"]\n[poll]\ninterval = \"1h\"\n",
        standin.endpoint_keys()
    )
}

fn info_lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("aws_compute_optimizer_account_info{"))
        .map(str::to_owned)
        .collect()
}

/// Waits, with a deadline, for `/-/ready`: the first scrape Kubernetes
/// routes to a pod comes after it (the saved walk is served by then).
async fn ready(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(addr, "/-/ready").await.status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tagged_standin(accounts: usize) -> Standin {
    let standin = Standin::start(org(accounts)).await;
    for (i, a) in org(accounts).iter().enumerate() {
        standin.set_tag(&a.id, "team", ["payments", "data", "platform"][i % 3]);
        standin.set_ou(&a.id, if i % 2 == 0 { "Prod" } else { "Dev" });
    }
    standin
}

async fn start(toml: &str, storage: &Path) -> Exporter {
    let dir = tempdir();
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let config = app::load_config(Some(&path), &Default::default(), false).unwrap();
    Exporter::start_stored(config, Some(&path), false, None, Some(storage)).await
}

/// A restart with its storage kept serves the same `account_info` label
/// sets, tags included, from the first scrape, while Organizations answers
/// nothing but TooManyRequestsException.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_storage_kept_serves_the_same_labels_while_organizations_throttles() {
    let standin = tagged_standin(30).await;
    let storage = tempdir().join("state");
    let e = start(&config(&standin, 1000.0), &storage).await;
    // The walk's health is set just after its last publish: wait for both.
    let before = e
        .wait_for(10, |t| {
            sample(t, "aws_compute_optimizer_organizations_complete") == Some(1.0)
                && sample(t, "aws_compute_optimizer_organizations_up") == Some(1.0)
        })
        .await;
    let before = info_lines(&before);
    assert_eq!(before.len(), 30);
    assert!(
        before
            .iter()
            .all(|l| l.contains("tag_team=\"") && !l.contains("tag_team=\"\""))
    );
    let walked = sample(
        &e.metrics().await,
        "aws_compute_optimizer_organizations_last_success_timestamp_seconds",
    )
    .unwrap();
    e.stop().await;

    standin.limit_organizations(0.0);
    let e = start(&config(&standin, 1000.0), &storage).await;
    ready(e.addr).await;
    let first = e.metrics().await;
    assert_eq!(
        info_lines(&first),
        before,
        "the first scrape after the restart"
    );
    assert_eq!(
        sample(&first, "aws_compute_optimizer_organizations_complete"),
        Some(1.0)
    );
    // When the saved walk succeeded, from the first scrape: the data's age
    // shows before any walk of this run ends.
    let restored = sample(
        &first,
        "aws_compute_optimizer_organizations_last_success_timestamp_seconds",
    )
    .expect("the restored walk's success time");
    assert!((restored - walked).abs() < 1.0, "{restored} vs {walked}");
    // The walk fails, says so, and keeps what was restored.
    let failed = e
        .wait_for(10, |t| {
            sample(t, "aws_compute_optimizer_organizations_up") == Some(0.0)
        })
        .await;
    assert!(standin.organizations_throttled() > 0);
    assert_eq!(info_lines(&failed), before);
    e.stop().await;
}

/// The binary with `--storage.path`, its stderr in `log`.
// The child is killed and waited for by the caller.
#[allow(clippy::zombie_processes)]
fn spawn(config: &Path, storage: &Path, log: &Path) -> (std::process::Child, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(config)
        .arg("--storage.path")
        .arg(storage)
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("address="))
        {
            return (child, addr.parse().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no listening line:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kill -9` in the middle of the tag pass: what was published survives,
/// and the next start serves it from its first scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_tag_pass_loses_nothing_that_was_published() {
    let standin = tagged_standin(60).await;
    let dir = tempdir();
    let (config_path, storage, log) = (dir.join("c.toml"), dir.join("state"), dir.join("log"));
    // 20 requests a second: the walk takes ~0.3 s, the tags ~3 s.
    std::fs::write(&config_path, config(&standin, 20.0)).unwrap();
    let (mut child, addr) = spawn(&config_path, &storage, &log);
    let deadline = Instant::now() + Duration::from_secs(10);
    let published = loop {
        let text = get(addr, "/metrics").await.text();
        if info_lines(&text).len() == 60 {
            break text;
        }
        assert!(Instant::now() < deadline, "the walk never published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        sample(&published, "aws_compute_optimizer_organizations_complete"),
        Some(0.0),
        "killed before the tag pass ended"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    standin.limit_organizations(0.0);
    let (mut child, addr) = spawn(&config_path, &storage, &dir.join("log2"));
    ready(addr).await;
    let first = get(addr, "/metrics").await.text();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(info_lines(&first), info_lines(&published));
}

/// A truncated, corrupt or foreign-version snapshot is a warning naming the
/// file, never a crash; the exporter walks afresh. An unwritable folder is
/// a one-line startup error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshots_are_warnings_and_an_unwritable_folder_is_an_error() {
    let standin = tagged_standin(5).await;
    let dir = tempdir();
    let config_path = dir.join("c.toml");
    std::fs::write(&config_path, config(&standin, 1000.0)).unwrap();
    for (case, bytes, warning) in [
        (
            "truncated",
            &b"{\"version\":1,\"saved_at\":1.0,\"direc"[..],
            "damaged",
        ),
        ("corrupt", &b"\x00\x01garbage"[..], "damaged"),
        (
            "foreign",
            &b"{\"version\":7,\"anything\":true}"[..],
            "another format version",
        ),
    ] {
        let storage = dir.join(case);
        std::fs::create_dir_all(&storage).unwrap();
        let file = storage.join("organization.json");
        std::fs::write(&file, bytes).unwrap();
        let log = dir.join(format!("{case}.log"));
        let (mut child, addr) = spawn(&config_path, &storage, &log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while info_lines(&get(addr, "/metrics").await.text()).len() < 5 {
            assert!(Instant::now() < deadline, "{case}: no fresh walk");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&log).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(warning))
            .unwrap_or_else(|| panic!("{case}: no warning:\n{text}"));
        assert!(line.contains(&file.display().to_string()), "{case}: {line}");
        assert!(line.contains("level=WARN"), "{case}: {line}");
        // The fresh walk replaced the damaged file.
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .contains("\"version\":1")
        );
    }

    let not_a_folder = dir.join("file");
    std::fs::write(&not_a_folder, "x").unwrap();
    let out = Command::new(BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(&config_path)
        .arg("--storage.path")
        .arg(not_a_folder.join("sub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--storage.path") && err.contains("cannot create the folder"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A reload restarts only the producer whose settings changed: a poll
/// setting sends no Organizations request, an Organizations setting no
/// enrollment request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_only_the_producer_whose_settings_changed() {
    let standin = tagged_standin(10).await;
    let dir = tempdir();
    let path = dir.join("config.toml");
    let toml = config(&standin, 1000.0);
    std::fs::write(&path, &toml).unwrap();
    let c = app::load_config(Some(&path), &Default::default(), false).unwrap();
    let e = Exporter::start_config(c, Some(&path), false).await;
    e.wait_for(10, |t| {
        sample(t, "aws_compute_optimizer_organizations_complete") == Some(1.0)
            && t.contains("aws_compute_optimizer_enrollment_status{")
    })
    .await;
    let organizations = |s: &Standin| {
        ["ListRoots", "ListAccountsForParent", "ListTagsForResource"]
            .iter()
            .map(|op| s.organizations_calls(op))
            .sum::<usize>()
    };
    let walked = organizations(&standin);
    let reload = || async {
        let r = request(e.addr, "POST", "/-/reload", &[("Content-Length", "0")]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    };

    std::fs::write(&path, toml.replace("[poll]\n", "[poll]\npage_size = 7\n")).unwrap();
    reload().await;
    let text = e
        .wait_for(10, |t| {
            api_requests(t, "GetEnrollmentStatusesForOrganization", "success") >= 3.0
        })
        .await;
    assert_eq!(
        organizations(&standin),
        walked,
        "a poll setting re-walked the organisation"
    );
    let polled = api_requests(&text, "GetEnrollmentStatusesForOrganization", "success");

    std::fs::write(
        &path,
        toml.replace("[poll]\n", "[poll]\npage_size = 7\n").replace(
            "organizations_requests_per_second = 1000",
            "organizations_requests_per_second = 999",
        ),
    )
    .unwrap();
    reload().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while organizations(&standin) < 2 * walked {
        assert!(Instant::now() < deadline, "the walk did not restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = e.metrics().await;
    assert_eq!(
        api_requests(&text, "GetEnrollmentStatusesForOrganization", "success"),
        polled,
        "an Organizations setting restarted the poll"
    );
    e.stop().await;
}

/// `account_state` comes from Organizations' `State`; an account without a
/// `Name` is kept (empty name), not dropped; an item without an ID is
/// counted in skipped_items_total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_state_and_nameless_accounts() {
    let standin = tagged_standin(4).await;
    let ids: Vec<String> = org(4).into_iter().map(|a| a.id).collect();
    standin.set_state(&ids[0], "SUSPENDED");
    standin.set_state(&ids[1], "PENDING_CLOSURE");
    standin.set_name(&ids[2], "");
    let storage = tempdir().join("state");
    let e = start(&config(&standin, 1000.0), &storage).await;
    let text = e.wait_for(10, |t| info_lines(t).len() == 4).await;
    let line = |id: &str| {
        info_lines(&text)
            .into_iter()
            .find(|l| l.contains(&format!("account_id=\"{id}\"")))
            .unwrap()
    };
    assert!(line(&ids[0]).contains("account_state=\"SUSPENDED\""));
    assert!(line(&ids[1]).contains("account_state=\"PENDING_CLOSURE\""));
    assert!(
        line(&ids[2]).contains("account_name=\"\""),
        "{}",
        line(&ids[2])
    );
    assert!(line(&ids[3]).contains("account_state=\"ACTIVE\""));
    e.stop().await;
}

/// Switching `aws.organizations` off by reload in the middle of a tag pass:
/// the walk is stopped before names are cleared, so none come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_switched_off_stay_off() {
    let standin = tagged_standin(40).await;
    let dir = tempdir();
    let path = dir.join("config.toml");
    let toml = config(&standin, 20.0);
    std::fs::write(&path, &toml).unwrap();
    let c = app::load_config(Some(&path), &Default::default(), false).unwrap();
    let e = Exporter::start_config(c, Some(&path), false).await;
    e.wait_for(10, |t| info_lines(t).len() == 40).await;
    std::fs::write(
        &path,
        toml.replace("organizations = true\n", "")
            .replace("account_tags = [\"team\"]\n", ""),
    )
    .unwrap();
    let r = request(e.addr, "POST", "/-/reload", &[("Content-Length", "0")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Past the next tag batch the old pass would have published. (The
    // ordering itself, a stopped walk publishing nothing after it ended, is
    // proven without timing by produce::walk's
    // a_stopped_walk_publishes_nothing_after_it_ended; this is the end to
    // end view of it.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = e.metrics().await;
    assert!(info_lines(&text).is_empty(), "names came back");
    assert_eq!(
        sample(&text, "aws_compute_optimizer_organizations_up"),
        None
    );
    e.stop().await;
}

/// A save that fails after start (the folder gone, a full disk) is a
/// warning and a counter; serving goes on with what is in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_save_is_counted_and_serving_goes_on() {
    let standin = tagged_standin(6).await;
    let storage = tempdir().join("state");
    let toml = config(&standin, 1000.0).replace(
        "organizations_interval = \"1h\"",
        "organizations_interval = \"1s\"",
    );
    let e = start(&toml, &storage).await;
    e.wait_for(10, |t| {
        sample(t, "aws_compute_optimizer_organizations_complete") == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(
            &e.metrics().await,
            "aws_compute_optimizer_exporter_storage_write_failures_total"
        ),
        Some(0.0)
    );
    std::fs::remove_dir_all(&storage).unwrap();
    let text = e
        .wait_for(10, |t| {
            sample(
                t,
                "aws_compute_optimizer_exporter_storage_write_failures_total",
            )
            .is_some_and(|n| n >= 1.0)
        })
        .await;
    assert_eq!(info_lines(&text).len(), 6);
    assert_eq!(
        sample(&text, "aws_compute_optimizer_organizations_up"),
        Some(1.0)
    );
    e.stop().await;
}

/// A pace slower than `aws.request_timeout` (1 request a second, 500 ms
/// per attempt): waiting for a turn is not an AWS timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pace_is_not_a_timeout() {
    let standin = Standin::start(org(3)).await;
    let toml = format!(
        "[aws]\nregion = \"us-east-1\"\n{}retry_backoff = \"10ms\"\nrequest_timeout = \"500ms\"\norganizations = true\norganizations_interval = \"1h\"\norganizations_requests_per_second = 1.0\n[poll]\ninterval = \"1h\"\n",
        standin.endpoint_keys()
    );
    let e = Exporter::start_toml(&toml).await;
    let text = e.wait_walked(15).await;
    assert_eq!(
        sample(&text, "aws_compute_optimizer_organizations_up"),
        Some(1.0),
        "{text}"
    );
    for op in [
        "ListRoots",
        "ListAccountsForParent",
        "ListOrganizationalUnitsForParent",
    ] {
        assert_eq!(api_requests(&text, op, "timeout"), 0.0, "{op}");
        assert_eq!(api_requests(&text, op, "success"), 1.0, "{op}");
    }
    e.stop().await;
}

/// A saved walk in a file of the same name: one from 2001, one of another
/// organisation. The old one is served, but never as complete, and says
/// when it was learned; the other organisation's is dropped at the first
/// `ListRoots`, so none of its tags carry over to an account of the same ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_or_foreign_saved_walk_is_not_trusted() {
    use compute_optimizer_exporter::model::{AccountInfo, Directory, Learned};
    use compute_optimizer_exporter::storage::Storage;
    let saved = |organization: &str| Directory {
        organization: organization.into(),
        tag_labels: vec![("tag_team".into(), "team".into())],
        accounts: [(
            "100000000000".to_owned(),
            AccountInfo {
                name: "from-the-file".into(),
                ou_id: "ou-old".into(),
                ou_path: "Root/Old".into(),
                tags: vec!["stale".into()],
                state: "ACTIVE".into(),
                tags_known: true,
            },
        )]
        .into(),
    };
    let in_2001 = Learned {
        structure: 978_307_200.0,
        tags: 978_307_200.0,
        walked: 978_307_200.0,
    };

    // Old: served from the first ready scrape, not complete, its time shown;
    // the walk (refused) does not make it complete either.
    let standin = tagged_standin(3).await;
    standin.limit_organizations(0.0);
    let storage = tempdir().join("state");
    Storage::open(&storage)
        .unwrap()
        .save(&saved("o-example"), in_2001)
        .unwrap();
    let e = start(&config(&standin, 1000.0), &storage).await;
    ready(e.addr).await;
    let first = e.metrics().await;
    assert!(first.contains("account_name=\"from-the-file\""), "{first}");
    assert_eq!(
        sample(&first, "aws_compute_optimizer_organizations_complete"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &first,
            "aws_compute_optimizer_organizations_last_success_timestamp_seconds"
        ),
        Some(978_307_200.0)
    );
    let failed = e
        .wait_for(10, |t| {
            sample(t, "aws_compute_optimizer_organizations_up") == Some(0.0)
        })
        .await;
    assert_eq!(
        sample(&failed, "aws_compute_optimizer_organizations_complete"),
        Some(0.0)
    );
    e.stop().await;

    // Another organisation's (the stand-in's is o-example): dropped once
    // ListRoots names this one; the tag pass then fails at once, and the
    // account of the same ID has no tag rather than the file's.
    let standin = tagged_standin(3).await;
    standin.fail_tags_after(Some(0));
    let storage = tempdir().join("state");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    Storage::open(&storage)
        .unwrap()
        .save(
            &saved("o-another"),
            Learned {
                structure: now,
                tags: now,
                walked: now,
            },
        )
        .unwrap();
    let e = start(&config(&standin, 1000.0), &storage).await;
    let walked = e
        .wait_for(10, |t| {
            sample(t, "aws_compute_optimizer_organizations_up") == Some(0.0)
        })
        .await;
    let line = info_lines(&walked)
        .into_iter()
        .find(|l| l.contains("account_id=\"100000000000\""))
        .expect("the account, from the walk");
    assert!(line.contains("tag_team=\"\""), "{line}");
    assert!(!walked.contains("stale") && !walked.contains("from-the-file"));
    assert_eq!(
        sample(&walked, "aws_compute_optimizer_organizations_complete"),
        Some(0.0)
    );
    e.stop().await;
}

/// The restore is off the startup path: with the saved file unreadable for
/// as long as the test likes (a FIFO nobody writes yet), the binary listens,
/// answers `/-/healthy`, and is not ready; once the file arrives it serves
/// it and is ready. A SIGTERM during such a restore still exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_the_saved_walk_is_read() {
    use compute_optimizer_exporter::model::{AccountInfo, Directory, Learned};
    use compute_optimizer_exporter::storage::{FILE, Storage};
    let standin = tagged_standin(3).await;
    // Organizations refuses everything: what is served is the file's.
    standin.limit_organizations(0.0);
    let dir = tempdir();
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config(&standin, 1000.0)).unwrap();
    // The bytes a saved walk has, made by the exporter's own writer.
    let made = tempdir().join("made");
    let mut saved = Directory {
        tag_labels: vec![("tag_team".into(), "team".into())],
        ..Directory::default()
    };
    saved.accounts.insert(
        "100000000001".into(),
        AccountInfo {
            name: "from-the-file".into(),
            tags: vec!["payments".into()],
            tags_known: true,
            ..AccountInfo::default()
        },
    );
    Storage::open(&made)
        .unwrap()
        .save(&saved, Learned::default())
        .unwrap();
    let bytes = std::fs::read(made.join(FILE)).unwrap();

    for sigterm_while_blocked in [true, false] {
        let storage = dir.join(format!("state-{sigterm_while_blocked}"));
        std::fs::create_dir_all(&storage).unwrap();
        let fifo = storage.join(FILE);
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success(),
            "mkfifo"
        );
        let log = dir.join(format!("log-{sigterm_while_blocked}"));
        let (mut child, addr) = spawn(&config_path, &storage, &log);
        assert_eq!(get(addr, "/-/healthy").await.status, 200);
        // The poll is done; only the restore holds readiness back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("poll finished")
        {
            assert!(Instant::now() < deadline, "no poll");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(get(addr, "/-/ready").await.status, 503);
        if sigterm_while_blocked {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            let code = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status.code();
                }
                assert!(Instant::now() < deadline, "no exit within 5 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(code, Some(0));
            continue;
        }
        // Opening the FIFO for writing releases the reader.
        let writer = std::thread::spawn({
            let (fifo, bytes) = (fifo.clone(), bytes.clone());
            move || std::fs::write(fifo, bytes).unwrap()
        });
        ready(addr).await;
        writer.join().unwrap();
        let text = get(addr, "/metrics").await.text();
        assert!(text.contains("account_name=\"from-the-file\""), "{text}");
        let _ = child.kill();
        let _ = child.wait();
    }
}
