//! The deployment files agree with the exporter: they parse, the shipped
//! config is valid, ports and probe paths are the real ones, the IAM policy
//! grants exactly the operations the exporter calls, and the hardening is in
//! place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use compute_optimizer_exporter::config::{Config, DEFAULT_PORT};
use serde_norway::Value;

mod support;

use support::Exporter;
use support::standin::{Standin, org};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn kubernetes_manifests_match_the_exporter() {
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    for resource in kustomization["resources"].as_sequence().unwrap() {
        let file = format!("deploy/kubernetes/{}", resource.as_str().unwrap());
        let doc = yaml(&file);
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "{file}"
        );
    }

    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let toml = configmap["data"]["config.toml"].as_str().unwrap();
    let config =
        Config::parse(Path::new("configmap.yaml"), toml).expect("ConfigMap config is valid");
    assert_eq!(config.web.listen_address, format!(":{DEFAULT_PORT}"));

    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let c = &pod["containers"][0];
    assert_eq!(
        c["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(DEFAULT_PORT))
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/-/healthy")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/-/ready")
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true)
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"],
        Value::Bool(false)
    );
    assert!(c["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(!args.contains(&"--demo"));
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(args, ["--config", &format!("{mount}/config.toml")]);

    let sa = yaml("deploy/kubernetes/serviceaccount.yaml");
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string());
    let monitor = yaml("deploy/kubernetes/servicemonitor.yaml");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["path"].as_str(),
        Some("/metrics")
    );
    let service = yaml("deploy/kubernetes/service.yaml");
    assert_eq!(
        service["spec"]["ports"][0]["port"].as_u64(),
        Some(u64::from(DEFAULT_PORT))
    );
}

/// Every statement's actions, as IAM names them.
fn actions(path: &str) -> BTreeSet<String> {
    let policy: serde_json::Value = serde_json::from_str(&read(path)).unwrap();
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| match &s["Action"] {
            serde_json::Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        })
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// The policies are checked against what the stand-ins really received while
/// the exporter ran with every feature that calls AWS switched on, not
/// against a list written by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iam_policies_grant_exactly_what_the_exporter_calls() {
    let standin = Standin::start(org(30)).await;
    let exporter = Exporter::start(
        &standin,
        "role_arn = \"arn:aws:iam::123456789012:role/compute-optimizer-exporter\"\n\
         external_id = \"x\"\norganizations = true\norganizations_interval = \"1h\"\n\
         [poll]\ninterval = \"1h\"\n",
    )
    .await;
    exporter
        .wait_for(20, |t| {
            t.contains("aws_compute_optimizer_account_info{")
                && t.contains("aws_compute_optimizer_organization_member_accounts_enrolled ")
        })
        .await;
    exporter.stop().await;
    assert_eq!(standin.misrouted(), Vec::<String>::new());
    let called = standin.operations();
    // The assumed role holds the read permissions; the hop into it is the
    // runner's permission and the target role's trust.
    let (hop, reads): (BTreeSet<String>, BTreeSet<String>) =
        called.into_iter().partition(|op| op.starts_with("sts:"));
    assert_eq!(actions("deploy/iam-policy.json"), reads);
    assert_eq!(hop, BTreeSet::from(["sts:AssumeRole".to_owned()]));
    assert_eq!(actions("deploy/iam-trust-policy.json"), hop);
}

#[test]
fn dockerfile_and_systemd_unit_are_hardened() {
    let docker = read("deploy/Dockerfile");
    assert!(docker.contains(&format!("EXPOSE {DEFAULT_PORT}")));
    assert!(docker.contains("USER nonroot"));
    assert!(docker.matches("FROM ").count() >= 2, "multi-stage");
    assert!(docker.contains("CMD [\"--config\""));
    assert!(!docker.contains("--demo"));

    let unit = read("deploy/systemd/compute-optimizer-exporter.service");
    for key in [
        "User=compute-optimizer-exporter",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(key), "unit lacks {key:?}");
    }
}
