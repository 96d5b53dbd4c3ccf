//! Configuration rules: one bad file per rule, each checked against its
//! one-line message (file, key or line, allowed values).

use std::path::Path;

use compute_optimizer_exporter::config::Config;

/// (fixture, substrings the message must contain)
const CASES: &[(&str, &[&str])] = &[
    (
        "organization_without_name.toml",
        &[
            "organization_without_name.toml:4:",
            "organization[0].name",
            "every [[organization]] needs a name",
        ],
    ),
    (
        "organization_bad_name.toml",
        &[
            "organization_bad_name.toml:2:",
            "organization[0].name",
            "\"gov cloud\" must be 1-64 characters of letters, digits and _.-",
        ],
    ),
    (
        "organization_duplicate_name.toml",
        &[
            "organization_duplicate_name.toml:5:",
            "organization[1].name",
            "\"commercial\" names two organizations",
        ],
    ),
    (
        "organization_unknown_key.toml",
        &[
            "organization_unknown_key.toml:",
            "organization[0]",
            "unknown field `regoin`",
            "region",
        ],
    ),
    (
        "organization_wrong_type.toml",
        &[
            "organization_wrong_type.toml:6:",
            "organization[1].max_attempts",
            "invalid type",
        ],
    ),
    (
        "organization_inherited_invalid.toml",
        &[
            "organization_inherited_invalid.toml:2:",
            "aws.account_tags",
            "set aws.organizations = true too",
            "the [aws] default of organization \"govcloud\"",
        ],
    ),
    (
        "organization_shared_external_id.toml",
        &[
            "organization_shared_external_id.toml:2:",
            "aws.external_id_file",
            "an external ID is each organisation's own",
        ],
    ),
    ("syntax_error.toml", &["syntax_error.toml:2:"]),
    (
        "telemetry_path_with_space.toml",
        &[
            "telemetry_path_with_space.toml:2:",
            "web.telemetry_path",
            "without spaces",
        ],
    ),
    (
        "external_id_invalid.toml",
        &[
            "external_id_invalid.toml:3:",
            "aws.external_id",
            "must be 2-1224 characters of letters, digits and +=,.@:/-_",
        ],
    ),
    (
        "external_id_wrong_type.toml",
        &[
            "external_id_wrong_type.toml:3:",
            "aws.external_id",
            "invalid type: integer, expected a string",
        ],
    ),
    (
        "unknown_key.toml",
        &[
            "unknown_key.toml:3:1:",
            "unknown field `page_sizes`",
            "page_size",
        ],
    ),
    (
        "unknown_section.toml",
        &[
            "unknown_section.toml:1:",
            "unknown field `scrape`",
            "expected one of `web`, `aws`, `poll`",
        ],
    ),
    (
        "wrong_type.toml",
        &["wrong_type.toml:2:", "poll.page_size", "expected u32"],
    ),
    (
        "page_size_zero.toml",
        &[
            "page_size_zero.toml:2:",
            "poll.page_size",
            "between 1 and 100",
        ],
    ),
    (
        "page_size_too_big.toml",
        &[
            "page_size_too_big.toml:3:",
            "poll.page_size",
            "101 must be between 1 and 100",
        ],
    ),
    (
        "unknown_status.toml",
        &[
            "poll.statuses",
            "\"Stuck\"",
            "Active, Inactive, Pending, Failed",
        ],
    ),
    (
        "zero_interval.toml",
        &[
            "zero_interval.toml:2:",
            "poll.interval",
            "between 1s and 24h",
        ],
    ),
    (
        "absurd_interval.toml",
        &["poll.interval", "720h must be between 1s and 24h"],
    ),
    (
        "bad_duration.toml",
        &["bad_duration.toml:2:", "poll.interval", "not a duration"],
    ),
    (
        "timeout_longer_than_interval.toml",
        &[
            "timeout_longer_than_interval.toml:3:",
            "poll.timeout",
            "longer than poll.interval",
        ],
    ),
    (
        "allowed_hosts_not_a_name.toml",
        &[
            "allowed_hosts_not_a_name.toml:2:",
            "web.allowed_hosts",
            "not a host name",
        ],
    ),
    (
        "bad_listen_address.toml",
        &[
            "bad_listen_address.toml:2:",
            "web.listen_address",
            "\"localhost\"",
        ],
    ),
    (
        "relative_telemetry_path.toml",
        &["web.telemetry_path", "absolute path"],
    ),
    (
        "external_id_without_role.toml",
        &["aws.external_id", "aws.role_arn"],
    ),
    ("bad_role_arn.toml", &["aws.role_arn", "arn:aws:iam::"]),
    (
        "bad_endpoint_url.toml",
        &["aws.endpoint_url", "http:// or https://"],
    ),
    (
        "zero_attempts.toml",
        &["aws.max_attempts", "between 1 and 10"],
    ),
    ("bad_region.toml", &["aws.region", "us-east-1"]),
    (
        "automation_bad_region.toml",
        &[
            "automation_bad_region.toml:4:",
            "aws.automation_region",
            "\"EU West\" is not a region name",
        ],
    ),
    (
        "automation_zero_interval.toml",
        &[
            "automation_zero_interval.toml:3:",
            "aws.automation_interval",
            "0s must be between 1s and 168h",
        ],
    ),
    (
        "automation_endpoint_not_a_url.toml",
        &[
            "automation_endpoint_not_a_url.toml:2:",
            "aws.automation_endpoint_url",
            "must be an http:// or https:// URL",
        ],
    ),
    (
        "organization_automation_wrong_type.toml",
        &[
            "organization_automation_wrong_type.toml:",
            "organization[0].automation",
            "invalid type",
        ],
    ),
    (
        "account_tags_collide.toml",
        &[
            "account_tags_collide.toml:3:",
            "aws.account_tags",
            "\"cost-center\" and \"cost.center\" would both be the label tag_cost_center",
        ],
    ),
    (
        "account_tags_without_organizations.toml",
        &["aws.account_tags", "set aws.organizations = true too"],
    ),
    (
        "organizations_rate_zero.toml",
        &[
            "organizations_rate_zero.toml:3:",
            "aws.organizations_requests_per_second",
            "between 0.1 and 1000",
        ],
    ),
    (
        "external_id_twice.toml",
        &[
            "external_id_twice.toml:4:",
            "aws.external_id_file",
            "not both",
        ],
    ),
    (
        "external_id_file_missing.toml",
        &[
            "external_id_file_missing.toml:3:",
            "aws.external_id_file",
            "no-such-external-id does not exist",
            "create it in ",
            "or remove aws.external_id_file",
        ],
    ),
    (
        "external_id_file_without_role.toml",
        &["aws.external_id_file", "set aws.role_arn too"],
    ),
    (
        "section_not_a_table.toml",
        &[
            "section_not_a_table.toml:1:",
            "poll: invalid type: integer `5`, expected a table",
        ],
    ),
];

#[test]
fn every_bad_file_is_rejected_with_a_precise_one_line_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut covered: Vec<String> = CASES.iter().map(|(f, _)| f.to_string()).collect();
    covered.sort();
    assert_eq!(
        files, covered,
        "every fixture has a case and every case a fixture"
    );

    for (file, needles) in CASES {
        let path = dir.join(file);
        let err = Config::load(&path).expect_err(file).to_string();
        assert!(
            !err.contains("has spaces"),
            "{file}: a secret quoted: {err}"
        );
        assert!(!err.contains('\n'), "{file}: not one line: {err}");
        assert!(
            err.contains(&*path.to_string_lossy()),
            "{file}: no file name: {err}"
        );
        for n in *needles {
            assert!(err.contains(n), "{file}: {err:?} lacks {n:?}");
        }
    }
}

#[test]
fn a_missing_file_is_named() {
    let err = Config::load(Path::new("/nonexistent/exporter.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/nonexistent/exporter.toml: cannot read config file"),
        "{err}"
    );
}

#[test]
fn the_shipped_example_is_valid_and_spells_out_every_default() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = Config::load(&root.join("config/compute-optimizer-exporter.toml")).unwrap();
    assert_eq!(example, Config::default());
    // Every key of the effective config appears in the example file.
    let text =
        std::fs::read_to_string(root.join("config/compute-optimizer-exporter.toml")).unwrap();
    let effective = Config::default().effective_toml();
    for line in effective.lines().filter(|l| l.contains(" = ")) {
        let key = line.split(" = ").next().unwrap();
        assert!(text.contains(&format!("{key} =")), "example lacks {key}");
    }
    // Copied and edited, it still follows the defaults: a shorter interval
    // takes the timeout with it.
    let edited = text.replace("interval = \"5m\"", "interval = \"1m\"");
    let c = Config::parse(&root.join("edited.toml"), &edited).expect("the edited example loads");
    assert_eq!(c.poll.timeout, std::time::Duration::from_secs(60));
    for key in [
        "timeout",
        "region",
        "profile",
        "endpoint_url",
        "sts_endpoint_url",
        "organizations_endpoint_url",
        "role_arn",
        "external_id",
        "external_id_file",
    ] {
        assert!(text.contains(&format!("# {key} =")), "example lacks {key}");
    }
}

#[test]
fn the_several_organizations_example_loads_each_over_the_aws_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/several-organizations.toml")).unwrap();
    // Beside the external ID files it names, as a deployment has them.
    let dir = std::env::temp_dir().join(format!("coe-several-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("several-organizations.toml");
    std::fs::write(&path, &text).unwrap();
    std::fs::write(dir.join("external-id-commercial"), "commercial-id-1\n").unwrap();
    std::fs::write(dir.join("external-id-govcloud"), "govcloud-id-2\n").unwrap();
    let c = Config::load(&path).unwrap();
    let names: Vec<&str> = c.organization.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["commercial", "govcloud"]);
    let (commercial, govcloud) = (&c.organization[0].aws, &c.organization[1].aws);
    // Its own keys win; the rest come from [aws].
    assert_eq!(commercial.region.as_deref(), Some("us-east-1"));
    assert_eq!(govcloud.region.as_deref(), Some("us-gov-west-1"));
    assert!(commercial.organizations && govcloud.organizations);
    assert_eq!(commercial.account_tags, ["team"]);
    assert!(govcloud.account_tags.is_empty());
    assert_eq!(commercial.external_id(), Some("commercial-id-1"));
    assert_eq!(govcloud.external_id(), Some("govcloud-id-2"));
    assert_eq!(govcloud.profile.as_deref(), Some("govcloud"));
    assert!(commercial.profile.is_none());
    // What --config.check prints loads back to the same, secrets left out.
    let printed = c.effective_toml();
    assert!(!printed.contains("commercial-id-1") && !printed.contains("govcloud-id-2"));
    let again_path = dir.join("printed.toml");
    std::fs::write(&again_path, &printed).unwrap();
    let again = Config::load(&again_path).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again, c);
}

#[test]
fn the_external_id_file_is_read_at_every_load_and_never_printed() {
    let dir = std::env::temp_dir().join(format!("coe-external-id-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "[aws]\nrole_arn = \"arn:aws:iam::444455556666:role/r\"\nexternal_id_file = \"id\"\n",
    )
    .unwrap();
    // Relative to the config file; a Secret's trailing newline is not part of it.
    std::fs::write(dir.join("id"), "first-id-1234\n").unwrap();
    let c = Config::load(&config).unwrap();
    assert_eq!(c.aws.external_id(), Some("first-id-1234"));
    assert!(!c.effective_toml().contains("first-id-1234"));
    // What --config.check prints loads back, beside the same file.
    let printed = dir.join("printed.toml");
    std::fs::write(&printed, c.effective_toml()).unwrap();
    let again = Config::load(&printed).unwrap_or_else(|e| panic!("{e}\n{}", c.effective_toml()));
    assert_eq!(again, c);
    std::fs::write(dir.join("id"), "second-id-5678").unwrap();
    let c = Config::load(&config).unwrap();
    assert_eq!(c.aws.external_id(), Some("second-id-5678"));
    // A value that cannot be an external ID is refused without being quoted.
    std::fs::write(dir.join("id"), "two\nlines and spaces").unwrap();
    let err = Config::load(&config).unwrap_err().to_string();
    assert!(err.contains("aws.external_id_file"), "{err}");
    assert!(!err.contains("two") && !err.contains("spaces"), "{err}");
}

#[test]
fn tag_keys_become_label_names() {
    use compute_optimizer_exporter::config::{tag_label, tag_labels};
    assert_eq!(tag_label("cost-center"), "tag_cost_center");
    assert_eq!(tag_label("team"), "tag_team");
    assert_eq!(tag_label("aws:Owner/é 1"), "tag_aws_Owner___1");
    let keys = ["team".to_owned(), "cost-center".to_owned()];
    assert_eq!(
        tag_labels(&keys),
        [
            ("tag_cost_center".to_owned(), "cost-center".to_owned()),
            ("tag_team".to_owned(), "team".to_owned())
        ]
    );
}
