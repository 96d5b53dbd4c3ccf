//! The binary itself: flags, config checking, logs, signals.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::standin::{Fault, Standin, org};
use support::{get, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_compute-optimizer-exporter");

fn exporter() -> Command {
    let mut c = Command::new(BIN);
    // Nothing from the developer's environment leaks into a test.
    for var in [
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_ORGANIZATIONS",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        c.env_remove(var);
    }
    c.env("AWS_EC2_METADATA_DISABLED", "true");
    let empty = tempdir().join("empty");
    std::fs::write(&empty, "").unwrap();
    c.env("AWS_CONFIG_FILE", &empty);
    c.env("AWS_SHARED_CREDENTIALS_FILE", &empty);
    c
}

/// A running binary whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Which of `seen` a `wait_line` has returned: each line once.
    claimed: Vec<bool>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            claimed: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` that no earlier wait
    /// returned: lines read while waiting for another (a producer can log
    /// before "listening" does) count, so the order of two waits never
    /// hides a line.
    fn wait_line(&mut self, needle: &str) -> String {
        let unclaimed =
            (0..self.seen.len()).find(|&i| !self.claimed[i] && self.seen[i].contains(needle));
        if let Some(i) = unclaimed {
            self.claimed[i] = true;
            return self.seen[i].clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(needle);
                self.seen.push(line.clone());
                self.claimed.push(found);
                if found {
                    return line;
                }
            }
        }
        panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n"));
    }

    /// Waits for a line containing each needle, in any order.
    fn wait_lines(&mut self, needles: &[&str]) {
        for needle in needles {
            if !self.seen.iter().any(|l| l.contains(needle)) {
                self.wait_line(needle);
            }
        }
    }

    /// Collects the lines logged so far without waiting.
    fn drain(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
            self.claimed.push(false);
        }
        self.seen.join("\n")
    }

    fn addr(&mut self) -> SocketAddr {
        let line = self.wait_line("msg=listening");
        let addr = line
            .split(' ')
            .find_map(|kv| kv.strip_prefix("address="))
            .unwrap();
        addr.parse().unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The binary against the stand-in, with environment credentials.
fn against(standin: &Standin, extra_toml: &str, args: &[&str]) -> Running {
    let path = tempdir().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[aws]\nregion = \"eu-west-1\"\n{}{extra_toml}",
            standin.endpoint_keys()
        ),
    )
    .unwrap();
    Running::start(
        exporter()
            .env("AWS_ACCESS_KEY_ID", "AKIDCLI")
            .env("AWS_SECRET_ACCESS_KEY", "cli-secret-value")
            .args(["--web.listen-address", "127.0.0.1:0"])
            .args(args)
            .arg("--config")
            .arg(&path),
    )
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn version_names_version_and_revision() {
    let out = exporter().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "compute-optimizer-exporter {} (revision ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let dir = tempdir();
    let path = dir.join("ok.toml");
    std::fs::write(
        &path,
        "[aws]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nexternal_id = \"s3cr3t-id\"\n[poll]\ninterval = \"90s\"\n",
    )
    .unwrap();
    // node_exporter's spelling, and the older one kept as aliases.
    let mut printed = Vec::new();
    for [check, file] in [
        ["--config.check", "--config.file"],
        ["--check-config", "--config"],
    ] {
        let out = exporter().args([check, file]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{check} {file}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("configuration is valid"));
        assert!(text.contains("interval = \"1m30s\""), "{text}");
        assert!(text.contains("page_size = 100"));
        assert!(!text.contains("s3cr3t-id"));
        printed.push(text);
    }
    assert_eq!(printed[0], printed[1]);
}

#[test]
fn a_bad_config_exits_non_zero_with_one_line() {
    let dir = tempdir();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[poll]\npage_size = 500\n").unwrap();
    for check in [true, false] {
        let mut cmd = exporter();
        cmd.arg("--config").arg(&path);
        if check {
            cmd.arg("--check-config");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("bad.toml:2: poll.page_size: 500 must be between 1 and 100"),
            "{err}"
        );
        assert!(!err.contains("panicked"));
    }
    for (flag, value) in [
        ("--web.listen-address", "nowhere"),
        ("--web.telemetry-path", "metrics"),
        ("--web.telemetry-path", "/"),
    ] {
        let out = exporter().args([flag, value, "--demo"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with(&format!("error: {flag}: ")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// `--web.telemetry-path`, node_exporter's flag, wins over the file.
#[tokio::test]
async fn the_telemetry_path_flag_moves_the_metrics() {
    let dir = tempdir();
    let config = dir.join("c.toml");
    std::fs::write(&config, "[web]\ntelemetry_path = \"/from-file\"\n").unwrap();
    let mut run = Running::start(
        exporter()
            .args([
                "--demo",
                "--web.listen-address",
                "127.0.0.1:0",
                "--web.telemetry-path",
                "/prom",
                "--config.file",
            ])
            .arg(&config),
    );
    let addr = run.addr();
    run.wait_line("poll finished");
    assert_eq!(get(addr, "/prom").await.status, 200);
    assert!(
        get(addr, "/prom")
            .await
            .text()
            .contains("aws_compute_optimizer_up")
    );
    assert_eq!(get(addr, "/from-file").await.status, 404);
    assert_eq!(get(addr, "/metrics").await.status, 404);
    run.signal("TERM");
    assert_eq!(run.wait_exit(Duration::from_secs(5)), 0);
}

#[tokio::test]
async fn demo_serves_and_sigterm_exits_zero_quickly() {
    let mut run =
        Running::start(exporter().args(["--demo", "--web.listen-address", "127.0.0.1:0"]));
    let addr = run.addr();
    run.wait_line("poll finished");
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .contains("aws_compute_optimizer_enrollment_accounts{status=\"Pending\"}")
    );
    run.signal("TERM");
    // Exits 0 within 5 s, or wait_exit fails the test.
    assert_eq!(run.wait_exit(Duration::from_secs(5)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_slow_poll_cancels_it_and_exits_zero() {
    let standin = Standin::start(org(10)).await;
    standin.fault(0, Fault::Delay(Duration::from_secs(30)), 1);
    let mut run = against(&standin, "", &[]);
    run.addr();
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.signal("INT");
    assert_eq!(run.wait_exit(Duration::from_secs(5)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_poll_logs_what_to_fix_and_never_the_secret() {
    let standin = Standin::start(org(10)).await;
    standin.fault(0, Fault::Error(403, "AccessDeniedException"), 1);
    let mut run = against(
        &standin,
        "[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\n",
        &["--log.level", "debug"],
    );
    run.addr();
    let line = run.wait_line("poll failed");
    assert!(line.starts_with("time="), "{line}");
    assert!(line.contains("level=ERROR"), "{line}");
    assert!(line.contains("code=AccessDeniedException"), "{line}");
    assert!(
        line.contains("compute-optimizer:GetEnrollmentStatusesForOrganization"),
        "{line}"
    );
    assert!(
        line.contains("management account or a delegated administrator"),
        "{line}"
    );
    run.wait_line("poll finished");
    run.signal("TERM");
    assert_eq!(run.wait_exit(Duration::from_secs(5)), 0);
    let all = run.drain();
    assert!(!all.contains("cli-secret-value"), "secret leaked:\n{all}");
}

#[tokio::test]
async fn json_logs_and_sighup_reload() {
    let dir = tempdir();
    let path = dir.join("c.toml");
    std::fs::write(&path, "[poll]\ninterval = \"10s\"\n").unwrap();
    let mut run = Running::start(
        exporter()
            .args([
                "--demo",
                "--log.format",
                "json",
                "--web.listen-address",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&path),
    );
    let line = run.wait_line("\"listening\"");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let addr: SocketAddr = v["address"].as_str().unwrap().parse().unwrap();
    std::fs::write(&path, "[poll]\ninterval = \"20s\"\n").unwrap();
    run.signal("HUP");
    run.wait_line("configuration reloaded");
    std::fs::write(&path, "[poll]\ninterval = \"forever\"\n").unwrap();
    run.signal("HUP");
    let refused = run.wait_line("reload refused");
    assert!(refused.contains("poll.interval"), "{refused}");
    let text = get(addr, "/metrics").await.text();
    assert!(text.contains("aws_compute_optimizer_exporter_config_last_reload_successful 0"));
    assert_eq!(get(addr, "/-/healthy").await.status, 200);
    run.signal("TERM");
    assert_eq!(run.wait_exit(Duration::from_secs(5)), 0);
}

/// EKS IRSA: the default chain exchanges a web identity token file for
/// session credentials through STS, and renews them before they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_credentials_are_used_and_renewed() {
    let standin = Standin::start(org(10)).await;
    standin.set_session_seconds(15);
    let dir = tempdir();
    let token = dir.join("token");
    std::fs::write(
        &token,
        support::standin::iam::shipped_service_account_token(),
    )
    .unwrap();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "[aws]\nregion = \"eu-west-1\"\n[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\n",
    )
    .unwrap();
    let mut run = Running::start(
        exporter()
            .env("AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER", standin.url())
            .env("AWS_ENDPOINT_URL_STS", standin.sts_url())
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
            // IRSA's role: the exporter's own, in the management account
            // (the install without a hop).
            .env(
                "AWS_ROLE_ARN",
                support::standin::iam::EXPORTER_ROLE_IN_MANAGEMENT,
            )
            .env("AWS_ROLE_SESSION_NAME", "irsa-test")
            .args(["--web.listen-address", "127.0.0.1:0", "--config"])
            .arg(&config),
    );
    run.addr();
    run.wait_line("poll finished");
    let signed_with = |n: usize| {
        standin.seen().iter().any(|s| {
            s.authorization
                .as_deref()
                .unwrap_or("")
                .contains(&format!("Credential=ASIASESSION{n}/"))
        })
    };
    assert!(signed_with(1));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !signed_with(2) {
        assert!(
            Instant::now() < deadline,
            "web identity session was not renewed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = run.drain();
    assert!(log.matches("poll finished").count() >= 3, "{log}");
    assert!(!log.contains("poll failed"), "{log}");
    assert_eq!(standin.misrouted(), Vec::<String>::new());
    run.signal("TERM");
    assert_eq!(run.wait_exit(Duration::from_secs(5)), 0);
}

/// With no config file at all, the standard AWS variables decide region,
/// endpoint, profile and credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_aws_environment_variables_are_honoured() {
    let standin = Standin::start(org(5)).await;
    let dir = tempdir();
    let shared_config = dir.join("config");
    std::fs::write(&shared_config, "[profile exporter]\nregion = ap-south-1\n").unwrap();
    let credentials = dir.join("credentials");
    std::fs::write(
        &credentials,
        "[exporter]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
    )
    .unwrap();
    let mut run = Running::start(
        exporter()
            .env("AWS_CONFIG_FILE", &shared_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_PROFILE", "exporter")
            .env("AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER", standin.url())
            .args(["--web.listen-address", "127.0.0.1:0"]),
    );
    run.addr();
    run.wait_line("poll finished");
    let auth = standin.seen()[0].authorization.clone().unwrap();
    assert!(auth.contains("Credential=AKIDPROFILE/"), "{auth}");
    assert!(
        auth.contains("/ap-south-1/compute-optimizer/aws4_request"),
        "{auth}"
    );
    drop(run);

    // AWS_REGION wins over the profile's region.
    let standin = Standin::start(org(5)).await;
    let mut run = Running::start(
        exporter()
            .env("AWS_CONFIG_FILE", &shared_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_PROFILE", "exporter")
            .env("AWS_REGION", "eu-north-1")
            .env("AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER", standin.url())
            .args(["--web.listen-address", "127.0.0.1:0"]),
    );
    run.addr();
    run.wait_line("poll finished");
    let auth = standin.seen()[0].authorization.clone().unwrap();
    assert!(
        auth.contains("/eu-north-1/compute-optimizer/aws4_request"),
        "{auth}"
    );
}

/// Every way of pointing the exporter at an endpoint reaches exactly the
/// service it names: a call that lands on another service's stand-in is
/// refused there and recorded. The run assumes a role (STS) and lists names
/// (Organizations), so all three services are called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_setting_reaches_its_own_service_only() {
    type Case = (
        &'static str,
        fn(&Standin) -> (String, Vec<(&'static str, String)>),
    );
    let cases: [Case; 5] = [
        (
            "config key for Compute Optimizer only, the others from their variables",
            |s| {
                (
                    format!("endpoint_url = \"{}\"\n", s.url()),
                    vec![
                        ("AWS_ENDPOINT_URL_STS", s.sts_url()),
                        ("AWS_ENDPOINT_URL_ORGANIZATIONS", s.organizations_url()),
                    ],
                )
            },
        ),
        (
            "a config key per service, over a global variable that points elsewhere",
            |s| {
                (
                    s.endpoint_keys(),
                    vec![("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into())],
                )
            },
        ),
        ("the global variable reaches Compute Optimizer", |s| {
            (
                String::new(),
                vec![
                    ("AWS_ENDPOINT_URL", s.url()),
                    ("AWS_ENDPOINT_URL_STS", s.sts_url()),
                    ("AWS_ENDPOINT_URL_ORGANIZATIONS", s.organizations_url()),
                ],
            )
        }),
        ("the global variable reaches STS", |s| {
            (
                String::new(),
                vec![
                    ("AWS_ENDPOINT_URL", s.sts_url()),
                    ("AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER", s.url()),
                    ("AWS_ENDPOINT_URL_ORGANIZATIONS", s.organizations_url()),
                ],
            )
        }),
        ("the global variable reaches Organizations", |s| {
            (
                String::new(),
                vec![
                    ("AWS_ENDPOINT_URL", s.organizations_url()),
                    ("AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER", s.url()),
                    ("AWS_ENDPOINT_URL_STS", s.sts_url()),
                ],
            )
        }),
    ];
    for (name, setup) in cases {
        let standin = Standin::start(org(30)).await;
        standin.set_install(support::standin::iam::Install::Hop);
        let (keys, env) = setup(&standin);
        let path = tempdir().join("c.toml");
        let hop = support::hop();
        std::fs::write(
            &path,
            format!(
                "[aws]\nregion = \"eu-west-1\"\n{keys}{hop}organizations = true\n[poll]\ninterval = \"1h\"\n"
            ),
        )
        .unwrap();
        let mut cmd = exporter();
        cmd.env("AWS_ACCESS_KEY_ID", "AKIDCLI")
            .env("AWS_SECRET_ACCESS_KEY", "cli-secret-value")
            .args(["--web.listen-address", "127.0.0.1:0", "--config"])
            .arg(&path);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut run = Running::start(&mut cmd);
        run.wait_lines(&[
            "poll finished",
            "organisation structure and tags refreshed",
            "trusted access for Compute Optimizer read",
        ]);
        assert_eq!(standin.misrouted(), Vec::<String>::new(), "{name}");
        let ops: Vec<String> = standin.operations().into_iter().collect();
        assert_eq!(
            ops,
            [
                "compute-optimizer:GetEnrollmentStatus",
                "compute-optimizer:GetEnrollmentStatusesForOrganization",
                "organizations:ListAWSServiceAccessForOrganization",
                "organizations:ListAccountsForParent",
                "organizations:ListDelegatedAdministrators",
                "organizations:ListOrganizationalUnitsForParent",
                "organizations:ListRoots",
                "sts:AssumeRole",
            ],
            "{name}"
        );
        // STS is called in the configured region, like the others.
        // Organizations is a global service, signed for us-east-1.
        let regions: Vec<String> = standin.signed_regions().into_iter().collect();
        assert_eq!(
            regions,
            [
                "compute-optimizer eu-west-1",
                "organizations us-east-1",
                "sts eu-west-1"
            ],
            "{name}"
        );
    }
}

/// Defaults poll a large, slow organisation successfully (the timeout
/// follows the interval), and a poll close to its deadline says which setting
/// to raise. Scaled down in time: 30 pages at 140 ms against a 5 s interval
/// is the ratio of 300 pages at 200 ms against a few minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_slow_organisation_polls_under_defaults_and_warns_near_the_deadline() {
    let standin = Standin::start(org(3000)).await;
    standin.set_latency(Duration::from_millis(140));
    let mut run = against(&standin, "[poll]\ninterval = \"5s\"\n", &[]);
    let done = run.wait_line("poll finished");
    assert!(done.contains("accounts=3000"), "{done}");
    let warning = run.wait_line("used most of poll.timeout");
    assert!(warning.contains("level=WARN"), "{warning}");
    assert!(warning.contains("raise poll.interval"), "{warning}");
    assert!(!run.drain().contains("poll failed"));
    drop(run);

    // An explicit poll.timeout is honoured: the same organisation fails it.
    let mut run = against(
        &standin,
        "[poll]\ninterval = \"5s\"\ntimeout = \"2s\"\n",
        &[],
    );
    let failed = run.wait_line("poll failed");
    assert!(failed.contains("code=timeout"), "{failed}");
    assert!(failed.contains("raise poll.timeout"), "{failed}");
}

/// `[web]` applies at start only: while the file's `[web]` differs from the
/// running one, every reload says so, not just the first.
#[test]
fn every_reload_warns_while_web_settings_differ_from_the_running_ones() {
    let dir = tempdir();
    let path = dir.join("c.toml");
    std::fs::write(&path, "[poll]\ninterval = \"1m\"\n").unwrap();
    let mut run = Running::start(
        exporter()
            .args(["--demo", "--web.listen-address", "127.0.0.1:0", "--config"])
            .arg(&path),
    );
    run.addr();
    std::fs::write(
        &path,
        "[web]\nmax_connections = 9\n[poll]\ninterval = \"1m\"\n",
    )
    .unwrap();
    for _ in 0..2 {
        run.signal("HUP");
        run.wait_line("configuration reloaded");
    }
    let log = run.drain();
    assert_eq!(
        log.matches("take effect after a restart").count(),
        2,
        "{log}"
    );
    // Back to the running settings: no more warnings.
    std::fs::write(&path, "[poll]\ninterval = \"1m\"\n").unwrap();
    run.signal("HUP");
    run.wait_line("configuration reloaded");
    let log = run.drain();
    assert_eq!(
        log.matches("take effect after a restart").count(),
        2,
        "{log}"
    );
}

/// A connection failure says where to look: DNS, egress, proxy, endpoint.
#[test]
fn a_network_failure_logs_what_to_check() {
    // Nothing listens on the discard port of loopback.
    let path = tempdir().join("c.toml");
    std::fs::write(
        &path,
        "[aws]\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:9\"\nmax_attempts = 1\n[poll]\ninterval = \"1h\"\n",
    )
    .unwrap();
    let mut run = Running::start(
        exporter()
            .env("AWS_ACCESS_KEY_ID", "AKIDCLI")
            .env("AWS_SECRET_ACCESS_KEY", "cli-secret-value")
            .args(["--web.listen-address", "127.0.0.1:0", "--config"])
            .arg(&path),
    );
    let line = run.wait_line("poll failed");
    assert!(line.contains("code=network"), "{line}");
    for needle in ["DNS", "egress", "HTTPS_PROXY", "http://127.0.0.1:9"] {
        assert!(line.contains(needle), "{needle}: {line}");
    }
}

/// No credentials anywhere: the advice says none were found and where the
/// chain looked, not that an IAM permission is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_at_all_says_so_and_where_it_looked() {
    let standin = Standin::start(org(5)).await;
    let path = tempdir().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[aws]\nregion = \"eu-west-1\"\n{}[poll]\ninterval = \"1h\"\n",
            standin.endpoint_keys()
        ),
    )
    .unwrap();
    let mut run = Running::start(
        exporter()
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .args(["--web.listen-address", "127.0.0.1:0", "--config"])
            .arg(&path),
    );
    run.addr();
    let line = run.wait_line("poll failed");
    assert!(line.contains("code=credentials"), "{line}");
    assert!(line.contains("no credentials were found"), "{line}");
    assert!(line.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{line}");
    assert!(!line.contains("need IAM permission"), "{line}");
    assert_eq!(standin.requests(), 0, "nothing was sent unsigned");
    run.signal("TERM");
    assert_eq!(run.wait_exit(Duration::from_secs(5)), 0);
}

/// Socket activation, as systemd's socket unit does it: the socket is bound
/// before the exporter starts, the first scrape's connection waits in its
/// backlog and is answered, and web.listen_address is not used.
#[tokio::test]
async fn the_systemd_socket_is_served_and_its_absence_is_a_clear_error() {
    let port = support::prom::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut activate = support::debian_tool("systemd-socket-activate", "systemd");
    activate
        .args(["-l", &addr.to_string(), BIN])
        .args(["--demo", "--web.systemd-socket"])
        // Taken if the flag were ignored: the test would see no answer.
        .args(["--web.listen-address", "127.0.0.1:0"])
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let mut run = Running::start(&mut activate);
    run.wait_line(&format!("Listening on {addr}"));
    // systemd-socket-activate starts the exporter on the first connection.
    let first = get(addr, "/-/healthy").await;
    assert_eq!(first.status, 200);
    let line = run.wait_line("msg=listening");
    assert!(line.contains(&format!("address={addr}")), "{line}");
    run.wait_line("poll finished");
    assert!(
        get(addr, "/metrics")
            .await
            .text()
            .contains("aws_compute_optimizer_up 1")
    );
    run.signal("TERM");
    assert_eq!(run.wait_exit(Duration::from_secs(5)), 0);

    // Without systemd: one line naming the flag, exit 1.
    let out = exporter()
        .args(["--demo", "--web.systemd-socket"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.starts_with("error: --web.systemd-socket: systemd passed no socket"),
        "{said}"
    );
}

/// The documented Kubernetes setup, through the binary: the hop into the
/// shipped reader role with the external ID in a mounted Secret's file
/// (trailing newline included). The stand-in's STS checks the ID the
/// trust policy names, so the poll succeeding proves the file's ID was
/// sent; a wrong one is refused and reported, and never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_id_file_reaches_sts_through_the_binary() {
    use support::standin::iam::{Install, Policies, READER_ROLE};
    let standin = Standin::start(org(10)).await;
    standin.set_install(Install::Hop);
    let id = tempdir().join("external-id");
    let keys = format!(
        "role_arn = \"{READER_ROLE}\"\nexternal_id_file = {:?}\n[poll]\ninterval = \"2s\"\n",
        id.display().to_string()
    );
    std::fs::write(&id, format!("{}\n", Policies::shipped().external_id())).unwrap();
    let mut run = against(&standin, &keys, &[]);
    let done = run.wait_line("poll finished");
    assert!(done.contains("accounts=10"), "{done}");
    drop(run);

    std::fs::write(&id, "not-the-shared-id\n").unwrap();
    let mut run = against(&standin, &keys, &[]);
    let failed = run.wait_line("poll failed");
    assert!(failed.contains("AccessDenied"), "{failed}");
    assert!(!run.drain().contains("not-the-shared-id"));
}

/// Every producer's lines name their organisation, those written from a
/// blocking thread (the poll's publish: "poll finished", "poll failed")
/// included: the runbook sends operators to exactly these lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poll_line_names_its_organisation() {
    let standin = Standin::start(org(10)).await;
    let mut run = against(
        &standin,
        "organizations = true\n\
         [[organization]]\nname = \"alpha\"\n[[organization]]\nname = \"beta\"\n\
         [poll]\ninterval = \"1h\"\n",
        &[],
    );
    run.addr();
    let mut named = std::collections::BTreeSet::new();
    while named.len() < 4 {
        let line = run.wait_line("msg=");
        for (what, org) in [
            ("poll finished", "alpha"),
            ("poll finished", "beta"),
            ("organisation structure and tags refreshed", "alpha"),
            ("organisation structure and tags refreshed", "beta"),
        ] {
            if line.contains(what) && line.contains(&format!("organization={org}")) {
                named.insert((what, org));
            }
        }
        for what in ["poll finished", "poll failed", "refreshed"] {
            assert!(
                !line.contains(what) || line.contains("organization="),
                "no organisation: {line}"
            );
        }
    }
}

/// A missing external-ID file named relative to a config file given by a
/// relative path: the message names a real folder (`.`, never an empty
/// one), and speaks of a Secret only inside a Kubernetes pod.
#[test]
fn a_missing_external_id_file_names_its_folder_and_the_secret_only_in_a_pod() {
    let dir = tempdir();
    std::fs::write(
        dir.join("c.toml"),
        "[aws]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nexternal_id_file = \"external-id\"\n",
    )
    .unwrap();
    for pod in [false, true] {
        let mut cmd = exporter();
        cmd.current_dir(&dir)
            .args(["--config.file", "c.toml", "--config.check"]);
        if pod {
            cmd.env("KUBERNETES_SERVICE_HOST", "10.0.0.1");
        } else {
            cmd.env_remove("KUBERNETES_SERVICE_HOST");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("c.toml:4: aws.external_id_file: external-id does not exist"),
            "{err}"
        );
        assert!(!err.contains("  "), "an empty folder name: {err}");
        if pod {
            assert!(
                err.contains("create the Secret mounted at . (kubectl"),
                "{err}"
            );
        } else {
            assert!(
                err.contains("create it in . holding the external ID"),
                "{err}"
            );
            assert!(!err.contains("Secret") && !err.contains("kubectl"), "{err}");
        }
    }
}

/// STS unreachable for the role hop is a network failure (retried, and
/// advised about STS's endpoint), not a credentials or IAM problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sts_is_a_network_failure_advised_as_such() {
    let standin = Standin::start(org(10)).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let path = tempdir().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[aws]\nregion = \"eu-west-1\"\nendpoint_url = \"{}\"\nsts_endpoint_url = \"http://{closed}\"\n\
             role_arn = \"arn:aws:iam::123456789012:role/x\"\nmax_attempts = 1\n",
            standin.url()
        ),
    )
    .unwrap();
    let mut run = Running::start(
        exporter()
            .env("AWS_ACCESS_KEY_ID", "AKIDCLI")
            .env("AWS_SECRET_ACCESS_KEY", "cli-secret-value")
            .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
            .arg(&path),
    );
    let failed = run.wait_line("poll failed");
    assert!(failed.contains("code=network"), "{failed}");
    assert!(failed.contains("aws.sts_endpoint_url"), "{failed}");
    assert!(
        !failed.contains("compute-optimizer:GetEnrollment"),
        "{failed}"
    );
}

/// A profile the shared files do not define is named, by the check and in
/// the log of a start; a defined one is not warned about.
#[test]
fn a_profile_that_does_not_exist_is_named() {
    let dir = tempdir();
    let aws_config = dir.join("aws-config");
    std::fs::write(&aws_config, "[profile other]\nregion = eu-west-1\n").unwrap();
    for (profile, warned) in [("nosuch", true), ("other", false)] {
        let path = dir.join(format!("{profile}.toml"));
        std::fs::write(
            &path,
            format!("[aws]\nregion = \"eu-west-1\"\nprofile = \"{profile}\"\n"),
        )
        .unwrap();
        let out = exporter()
            .env("AWS_CONFIG_FILE", &aws_config)
            .args(["--config.check", "--config.file"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.contains("\"nosuch\""), warned, "{err}");
        if warned {
            assert!(
                err.starts_with("warning: aws.profile names the profile \"nosuch\""),
                "{err}"
            );
            assert!(err.contains("they define \"other\""), "{err}");
        }
    }
    let mut run = Running::start(
        exporter()
            .env("AWS_CONFIG_FILE", &aws_config)
            .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
            .arg(dir.join("nosuch.toml")),
    );
    let line = run.wait_line("AWS profile not found");
    assert!(
        line.contains("level=WARN") && line.contains("\\\"nosuch\\\""),
        "{line}"
    );
}

/// Lines logged from a blocking thread (the walk's save, here made to fail
/// by removing the storage folder) name their organisation too: the work
/// runs in the producer's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_from_a_blocking_thread_names_its_organisation() {
    let standin = Standin::start(org(3)).await;
    let storage = tempdir().join("state");
    let mut run = against(
        &standin,
        "organizations = true\norganizations_interval = \"1s\"\n\
         [[organization]]\nname = \"alpha\"\n[poll]\ninterval = \"1h\"\n",
        &["--storage.path", storage.to_str().unwrap()],
    );
    run.addr();
    run.wait_line("organisation structure and tags refreshed");
    std::fs::remove_dir_all(&storage).unwrap();
    let line = run.wait_line("cannot save the organisation");
    assert!(line.contains("organization=alpha"), "{line}");
}
