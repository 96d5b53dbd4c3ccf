//! Several organisations in one exporter (`[[organization]]` tables): each
//! against its own stand-in (Compute Optimizer, STS and Organizations on
//! ports of their own), hopping into its own reader role with its own
//! external ID. Their series carry their names, one failing leaves the
//! others current, and a reload of one sends no request to the others.

mod support;

use support::standin::{self, Fault, OrgAccount, Standin, iam};
use support::{Exporter, get, sample};

const NAMES: [&str; 3] = ["commercial", "govcloud", "acquired.eu"];

/// `n` accounts whose IDs are this organisation's own (`base..`).
fn accounts(base: u64, n: usize) -> Vec<OrgAccount> {
    standin::org(n)
        .into_iter()
        .enumerate()
        .map(|(i, mut a)| {
            a.id = format!("{}", base + i as u64);
            a
        })
        .collect()
}

/// One stand-in per organisation, each trusting only its own external ID.
async fn standins() -> Vec<Standin> {
    let mut out = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let s = Standin::start(accounts(200_000_000_000 + i as u64 * 1000, 3 + i)).await;
        s.set_install(iam::Install::Hop);
        s.set_policies(iam::Policies::shipped().with_external_id(&external_id(name)));
        out.push(s);
    }
    out
}

fn external_id(name: &str) -> String {
    format!("ext-{}", name.replace('.', "-"))
}

/// `[[organization]]` tables, one per stand-in; `extra[i]` is appended to
/// the i-th. The hop's role comes from `[aws]`, each ID from its table.
fn config(standins: &[Standin], extra: &[&str]) -> String {
    let mut toml = format!(
        "[aws]\nregion = \"us-east-1\"\nretry_backoff = \"10ms\"\nmax_attempts = 2\nrole_arn = \"{}\"\n",
        iam::READER_ROLE
    );
    for (i, (s, name)) in standins.iter().zip(NAMES).enumerate() {
        toml.push_str(&format!(
            "\n[[organization]]\nname = \"{name}\"\n{}external_id = \"{}\"\n{}\n",
            s.endpoint_keys(),
            external_id(name),
            extra.get(i).copied().unwrap_or("")
        ));
    }
    toml
}

fn polls(text: &str, org: &str, result: &str) -> f64 {
    sample(
        text,
        &format!("aws_compute_optimizer_polls_total{{organization=\"{org}\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_organisations_each_on_its_own_credentials_labelled_and_isolated() {
    let standins = standins().await;
    // The second organisation answers its first poll, then fails every
    // attempt of the next: its faults are queued per request, so nothing
    // races the poll interval.
    standins[1].fault(0, Fault::Pass, 1);
    standins[1].fault(0, Fault::Error(400, "AccessDeniedException"), 1000);
    let toml = config(
        &standins,
        &["organizations = true\naccount_tags = [\"team\"]\n", "", ""],
    )
    .replace("[aws]\n", "[poll]\ninterval = \"1s\"\n\n[aws]\n");
    let exporter = Exporter::start_toml(&toml).await;

    // The failing one has failed, and the others have polled again since.
    let text = exporter
        .wait_for(20, |t| {
            polls(t, NAMES[1], "failure") >= 1.0
                && polls(t, NAMES[0], "success") >= 3.0
                && polls(t, NAMES[2], "success") >= 3.0
        })
        .await;
    for (i, name) in NAMES.iter().enumerate() {
        let up = sample(
            &text,
            &format!("aws_compute_optimizer_up{{organization=\"{name}\"}}"),
        );
        assert_eq!(up, Some(if i == 1 { 0.0 } else { 1.0 }), "{name}");
        // Each account's series carry its own organisation's name: the
        // failing one's are its last good data.
        for a in accounts(200_000_000_000 + i as u64 * 1000, 3 + i) {
            let series = format!(
                "aws_compute_optimizer_enrollment_status{{account_id=\"{}\",organization=\"{name}\",status=\"{}\"}} 1\n",
                a.id, a.status
            );
            assert!(text.contains(&series), "{series}");
        }
        let count = sample(
            &text,
            &format!(
                "aws_compute_optimizer_enrollment_accounts{{organization=\"{name}\",status=\"Active\"}}"
            ),
        );
        let active = (3 + i).div_ceil(4) as f64;
        assert_eq!(count, Some(active), "{name}");
    }
    // The walk ran for the first only, labelled likewise.
    assert!(text.contains(
        "aws_compute_optimizer_account_info{account_id=\"200000000000\",account_name=\"account-200000000000\",account_state=\"ACTIVE\",organization=\"commercial\","
    ), "{text}");
    assert!(!text.contains("account_info{account_id=\"200000001000\""));
    // One family, one header: however many organisations share it.
    for family in [
        "aws_compute_optimizer_enrollment_status",
        "aws_compute_optimizer_up",
        "aws_compute_optimizer_api_requests_total",
    ] {
        let headers = text.matches(&format!("# TYPE {family} ")).count();
        assert_eq!(headers, 1, "{family}");
    }
    // No per-organisation series without its label; the exporter's own
    // (build, configuration, HTTP side, process) have none.
    let exporter_wide = [
        "aws_compute_optimizer_exporter_build_info",
        "aws_compute_optimizer_exporter_config_",
        "aws_compute_optimizer_exporter_connections_",
        "aws_compute_optimizer_exporter_requests_refused_total",
        "process_",
    ];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let wide = exporter_wide.iter().any(|p| line.starts_with(p));
        assert_eq!(wide, !line.contains("organization=\""), "{line}");
    }
    // Each stand-in saw its own organisation's hop, with its own ID, and
    // refused nothing: no organisation used another's credentials.
    for (s, name) in standins.iter().zip(NAMES) {
        assert!(s.denied().is_empty(), "{name}: {:?}", s.denied());
        assert!(s.assume_role_calls() >= 1, "{name}");
        assert!(s.misrouted().is_empty(), "{name}");
    }
    // The status page and its JSON group by organisation.
    let json: serde_json::Value =
        serde_json::from_str(&get(exporter.addr, "/status.json").await.text()).unwrap();
    let orgs = json["organizations"].as_array().unwrap();
    let listed: Vec<&str> = orgs
        .iter()
        .map(|o| o["organization"].as_str().unwrap())
        .collect();
    assert_eq!(listed, NAMES);
    assert_eq!(orgs[1]["last_poll"]["success"], false);
    assert_eq!(orgs[0]["last_poll"]["success"], true);
    assert_eq!(orgs[2]["accounts_total"], 5);
    let html = get(exporter.addr, "/status").await.text();
    for name in NAMES {
        assert!(
            html.contains(&format!("<h2 id=\"{name}\">{name}</h2>")),
            "{html}"
        );
    }
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_one_organisation_sends_no_request_to_the_others() {
    let standins = standins().await;
    let dir = support::tempdir();
    let path = dir.join("config.toml");
    std::fs::write(&path, config(&standins, &[])).unwrap();
    let exporter = Exporter::start_with(Some(&path), false).await;
    exporter
        .wait_for(20, |t| NAMES.iter().all(|n| polls(t, n, "success") >= 1.0))
        .await;
    let before: Vec<usize> = standins.iter().map(Standin::requests).collect();

    // The third organisation's own setting changes: new clients for it.
    std::fs::write(
        &path,
        config(&standins, &["", "", "request_timeout = \"15s\""]),
    )
    .unwrap();
    let reload = support::request(exporter.addr, "POST", "/-/reload", &[]).await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    let text = exporter
        .wait_for(20, |t| polls(t, NAMES[2], "success") >= 2.0)
        .await;
    // Its poll ran again; the others were not touched, not even asked.
    assert!(standins[2].requests() > before[2]);
    for i in 0..2 {
        assert_eq!(standins[i].requests(), before[i], "{}", NAMES[i]);
        assert_eq!(polls(&text, NAMES[i], "success"), 1.0, "{}", NAMES[i]);
    }

    // An organisation taken out goes with its series; the others stay.
    let two = config(&standins[..2], &[]);
    std::fs::write(&path, &two).unwrap();
    assert_eq!(
        support::request(exporter.addr, "POST", "/-/reload", &[])
            .await
            .status,
        200
    );
    let text = exporter.metrics().await;
    assert!(!text.contains("organization=\"acquired.eu\""));
    assert_eq!(polls(&text, NAMES[0], "success"), 1.0);
    assert_eq!(standins[0].requests(), before[0]);
    exporter.stop().await;
}
