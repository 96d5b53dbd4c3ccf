//! Every configuration the project ships, through the front door: the
//! built binary, its flags and its signals, as a user runs it.
//!
//! The shipped files are `config/*.toml`, the `config.toml` inside
//! `deploy/kubernetes/configmap.yaml` and the TOML blocks of the README.
//! Each is tried as shipped and with every commented `# key = value` option
//! turned on (the file form of an either/or pair such as `external_id` /
//! `external_id_file`, with the files it names created). For each:
//! `--config.check` exits 0 and prints no secret; a start with
//! `--storage.path` stays up, answers `/-/healthy`, and exits 0 on SIGTERM.
//!
//! No AWS is reachable here: every endpoint points at a closed loopback
//! port, so the producers fail and log it, which is fine; a refusal to
//! start is not. Library calls cannot see what this sees: the binary's own
//! loading path (flags applied over the file, then validated) once refused
//! every `external_id_file` while the rest of the suite passed.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::tempdir;

const BIN: &str = env!("CARGO_BIN_EXE_compute-optimizer-exporter");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One configuration the project ships: where it comes from and its text.
struct Shipped {
    origin: String,
    text: String,
}

/// Every shipped configuration. Fails when one of the places it reads
/// holds none, so an extractor that stops matching cannot pass silently.
fn shipped() -> Vec<Shipped> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "config/*.toml: {files:?}");
    for f in files {
        out.push(Shipped {
            origin: f.strip_prefix(ROOT).unwrap().display().to_string(),
            text: std::fs::read_to_string(&f).unwrap(),
        });
    }

    // The ConfigMap's `config.toml: |` block, de-indented.
    let yaml =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/kubernetes/configmap.yaml")).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "config.toml: |");
    assert!(lines.next().is_some(), "configmap.yaml has no config.toml");
    let block: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    let text: String = block
        .iter()
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(text.contains("[aws]"), "{text}");
    out.push(Shipped {
        origin: "deploy/kubernetes/configmap.yaml (config.toml)".into(),
        text,
    });

    // The README's ```toml blocks.
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + "```toml\n".len()..];
        let end = body.find("```").expect("an unclosed ```toml block");
        blocks += 1;
        out.push(Shipped {
            origin: format!("README.md (TOML block {blocks})"),
            text: body[..end].to_owned(),
        });
        rest = &body[end..];
    }
    assert!(blocks >= 1, "README.md has no ```toml block");
    out
}

/// Either/or pairs: with both documented, the file form is the one turned
/// on (it is what the Kubernetes and several-organisations setups use).
const EITHER_OR: &[(&str, &str)] = &[("external_id", "external_id_file")];

/// `text` with every commented `# key = value` line turned on, and how
/// many were. A commented line counts when, uncommented, it parses as one
/// TOML key-value pair.
fn all_on(text: &str) -> (String, usize) {
    let mut turned = 0;
    let mut out = String::new();
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let option = line.trim_start().strip_prefix("# ").filter(|rest| {
            let key = rest.split(" = ").next().unwrap_or("");
            rest.contains(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && toml::from_str::<toml::Table>(rest).is_ok_and(|t| t.len() == 1)
                && !EITHER_OR
                    .iter()
                    .any(|(plain, file)| key == *plain && text.contains(file))
        });
        match option {
            Some(rest) => {
                turned += 1;
                out.push_str(&format!("{indent}{rest}\n"));
            }
            None => out.push_str(&format!("{line}\n")),
        }
    }
    (out, turned)
}

/// A loopback port nothing listens on: every AWS call is refused at once,
/// and no request leaves the machine.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A variant ready to run: its config file in a folder of its own, with
/// every file it names created and every endpoint on loopback.
struct Prepared {
    name: String,
    dir: PathBuf,
    config: PathBuf,
    secrets: Vec<String>,
    closed: u16,
}

fn prepare(name: &str, text: &str) -> Prepared {
    let dir = tempdir();
    let closed = closed_port();
    let mut secrets = Vec::new();
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_owned();
        if let Some((key, value)) = line.split_once(" = ")
            && key.trim() == "external_id_file"
            && !key.trim_start().starts_with('#')
        {
            // Absolute paths (a Secret's mount) move into the test's folder.
            let named = PathBuf::from(value.trim().trim_matches('"'));
            let file = dir.join(named.file_name().unwrap());
            let secret = format!("shipped-secret-{}", secrets.len() + 1);
            std::fs::write(&file, format!("{secret}\n")).unwrap();
            secrets.push(secret);
            line = format!("{key} = {:?}", file.display().to_string());
        }
        if let Some((key, value)) = line.split_once(" = ")
            && key.trim() == "external_id"
        {
            let secret = value.trim().trim_matches('"').to_owned();
            secrets.push(secret);
        }
        if let Some((key, value)) = line.split_once(" = ")
            && key.trim().ends_with("endpoint_url")
            && value.contains("amazonaws.com")
        {
            line = format!("{key} = \"http://127.0.0.1:{closed}\"");
        }
        out.push_str(&line);
        out.push('\n');
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, out).unwrap();
    Prepared {
        name: name.to_owned(),
        dir,
        config,
        secrets,
        closed,
    }
}

/// The binary with nothing of the developer's AWS environment, a region
/// (as the README's quick start gives one), no instance metadata, and
/// every AWS endpoint on a closed loopback port.
fn exporter(closed: u16, dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_ORGANIZATIONS",
        "AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER_AUTOMATION",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ] {
        c.env_remove(var);
    }
    c.env("AWS_REGION", "us-east-1");
    c.env("AWS_EC2_METADATA_DISABLED", "true");
    c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed}"));
    c.env("AWS_ACCESS_KEY_ID", "AKIDSHIPPEDCONFIGS");
    c.env("AWS_SECRET_ACCESS_KEY", "shipped-configs-not-a-secret");
    let empty = dir.join("aws-empty");
    std::fs::write(&empty, "").unwrap();
    c.env("AWS_CONFIG_FILE", &empty);
    c.env("AWS_SHARED_CREDENTIALS_FILE", &empty);
    c
}

/// `--config.check`: exits 0 and prints no secret.
fn check(p: &Prepared) -> Result<(), String> {
    let out = exporter(p.closed, &p.dir)
        .args(["--config.file".as_ref(), p.config.as_os_str()])
        .arg("--config.check")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!(
            "{}: --config.check exited {:?}: {printed}",
            p.name,
            out.status.code()
        ));
    }
    if let Some(s) = p.secrets.iter().find(|s| printed.contains(s.as_str())) {
        return Err(format!(
            "{}: --config.check printed the secret {s:?}",
            p.name
        ));
    }
    Ok(())
}

/// GET `path` with a deadline; the status code.
fn status_of(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head:?}"))
}

/// Waits, with a deadline, for the child to exit.
fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A start: listening, healthy, still up a few seconds later, and a clean
/// exit on SIGTERM.
fn start(p: &Prepared) -> Result<(), String> {
    let storage = p.dir.join("storage");
    let mut child = exporter(p.closed, &p.dir)
        .args(["--config.file".as_ref(), p.config.as_os_str()])
        .args(["--storage.path".as_ref(), storage.as_os_str()])
        .args(["--web.listen-address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let outcome = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr: SocketAddr = loop {
            if Instant::now() > deadline {
                return Err("never logged msg=listening".to_owned());
            }
            if let Some(code) = child.try_wait().unwrap() {
                return Err(format!("exited {code:?} before listening"));
            }
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                let addr = line
                    .contains("msg=listening")
                    .then(|| {
                        line.split(' ')
                            .find_map(|kv| kv.strip_prefix("address="))
                            .and_then(|a| a.parse().ok())
                    })
                    .flatten();
                seen.push(line);
                if let Some(addr) = addr {
                    break addr;
                }
            }
        };
        match status_of(addr, "/-/healthy") {
            Ok(200) => {}
            other => return Err(format!("/-/healthy answered {other:?}")),
        }
        // Still running a few seconds on: the producers have started,
        // failed against the closed port, and the process stays up.
        if let Some(code) = wait_exit(&mut child, Duration::from_secs(3)) {
            return Err(format!("exited {code} after it started"));
        }
        let killed = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        match wait_exit(&mut child, Duration::from_secs(10)) {
            Some(0) => Ok(()),
            other => Err(format!("SIGTERM: exit {other:?}")),
        }
    })();
    let _ = child.kill();
    let _ = child.wait();
    seen.extend(lines.try_iter());
    let log = seen.join("\n");
    if let Some(s) = p.secrets.iter().find(|s| log.contains(s.as_str())) {
        return Err(format!("{}: the log shows the secret {s:?}", p.name));
    }
    outcome.map_err(|e| format!("{}: {e}; its log:\n{log}", p.name))
}

#[test]
fn every_shipped_configuration_passes_the_check_and_starts_through_the_binary() {
    let mut variants = Vec::new();
    for s in shipped() {
        let (on, turned) = all_on(&s.text);
        variants.push(prepare(&format!("{} as shipped", s.origin), &s.text));
        if turned > 0 {
            variants.push(prepare(
                &format!("{} with its {turned} commented options on", s.origin),
                &on,
            ));
        }
    }
    // The main example documents every key, the ConfigMap the hop: both
    // have commented options, so both have a second variant.
    assert!(variants.len() >= 6, "{}", variants.len());
    assert!(
        variants.iter().filter(|v| !v.secrets.is_empty()).count() >= 3,
        "the external ID setups are among the variants"
    );
    // In parallel, two at a time (each start waits seconds, not CPU).
    let failures: Vec<String> = variants
        .chunks(2)
        .flat_map(|pair| {
            std::thread::scope(|scope| {
                let runs: Vec<_> = pair
                    .iter()
                    .map(|p| scope.spawn(move || check(p).and_then(|()| start(p))))
                    .collect();
                runs.into_iter()
                    .filter_map(|r| r.join().unwrap().err())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn commented_options_are_found_and_the_file_form_is_chosen() {
    let (on, turned) = all_on(
        "[aws]\n# Region.\n# region = \"us-east-1\"\n# external_id = \"...\"\n# external_id_file = \"/x/id\"\n# A sentence = not an option.\n",
    );
    assert_eq!(turned, 2, "{on}");
    assert!(on.contains("\nregion = \"us-east-1\"\n"), "{on}");
    assert!(on.contains("\nexternal_id_file = \"/x/id\"\n"), "{on}");
    assert!(on.contains("# external_id = \"...\""), "{on}");
    assert!(on.contains("# A sentence = not an option."), "{on}");
}

/// `--config.check` refuses what a start refuses: an organisation with no
/// region anywhere (not in its table, `[aws]`, the environment or a
/// profile) passes every rule of the file but cannot build its clients.
#[test]
fn the_check_refuses_an_organisation_a_start_refuses() {
    let dir = tempdir();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "[[organization]]\nname = \"a\"\nregion = \"eu-west-1\"\n\n[[organization]]\nname = \"b\"\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut c = exporter(closed_port(), &dir);
        c.env_remove("AWS_REGION");
        c.args(["--config.file".as_ref(), config.as_os_str()])
            .args(["--web.listen-address", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null());
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let code = wait_exit(&mut child, Duration::from_secs(20));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (code, text)
    };
    let (code, text) = run(&["--config.check"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("organization \"b\": no AWS region found"),
        "{text}"
    );
    let (code, text) = run(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("organization \\\"b\\\": no AWS region found")
            || text.contains("organization \"b\": no AWS region found"),
        "{text}"
    );
}
