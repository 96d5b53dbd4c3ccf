//! Shared test helpers: the stand-in endpoint, a raw HTTP client, and an
//! exporter started in-process on 127.0.0.1:0.
#![allow(dead_code)]

pub mod attack;
pub mod prom;
pub mod standin;
pub mod tls;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use compute_optimizer_exporter::app::{self, Options};
use compute_optimizer_exporter::config::Config;
use compute_optimizer_exporter::shutdown::{self, Trigger};
use compute_optimizer_exporter::source::aws::StaticCredentials;
use compute_optimizer_exporter::state::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body, gunzipped when the response says it is gzip.
    pub fn decoded(&self) -> String {
        if self.header("content-encoding") == Some("gzip") {
            let mut out = String::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_string(&mut out)
                .expect("valid gzip");
            out
        } else {
            self.text()
        }
    }
}

/// One HTTP/1.1 request over a fresh connection; panics if it fails.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    try_request(addr, method, path, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One HTTP/1.1 request over a fresh connection, up to 10 s.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| "no response within 10s".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(format!("incomplete response ({} bytes)", raw.len()));
    }
    Ok(parse_response(&raw))
}

pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path, &[]).await
}

/// Reads exactly one response from a kept-alive connection (by its
/// Content-Length), up to 10 s; `None` if the connection ends first.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Option<HttpResponse> {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                return Some(parse_response(&raw[..end + 4 + len]));
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_line = String::from_utf8_lossy(&raw[..eol]);
        let size =
            usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
}

/// `aws_compute_optimizer_api_requests_total` for one operation and result (0 if absent).
pub fn api_requests(text: &str, operation: &str, result: &str) -> f64 {
    sample(
        text,
        &format!(
            "aws_compute_optimizer_api_requests_total{{operation=\"{operation}\",result=\"{result}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

/// The `aws_compute_optimizer_enrollment*` lines of a scrape, for comparing
/// what two scrapes export.
pub fn enrollment_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("aws_compute_optimizer_enrollment"))
        .collect()
}

/// A command from one of Debian's packages, or a clear failure saying how to get it.
pub fn debian_tool(name: &str, package: &str) -> std::process::Command {
    tool(name, &format!("install Debian's `{package}` package"))
}

/// A command on the PATH, or a clear failure saying how to get it.
pub fn tool(name: &str, how_to_get: &str) -> std::process::Command {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{name}` not found: run scripts/test.sh, or {how_to_get}"
    );
    std::process::Command::new(name)
}

/// The value of the first sample whose line starts with `series ` in a text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub struct Exporter {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    trigger: Trigger,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// `[aws]` keys for the role hop the stand-ins' IAM lets through: the
/// shipped reader role and the external ID its trust policy requires.
pub fn hop() -> String {
    format!(
        "role_arn = \"{}\"\nexternal_id = \"{}\"\n",
        standin::iam::READER_ROLE,
        standin::iam::Policies::shipped().external_id()
    )
}

impl Exporter {
    /// Starts the exporter against the stand-in, each service at its own
    /// endpoint, with `extra` TOML appended to a base config (fast retries,
    /// static test credentials). The stand-in's IAM takes the install the
    /// config implies: the hop from the tooling account with a `role_arn`,
    /// the exporter's role in the management account without.
    pub async fn start(standin: &standin::Standin, extra: &str) -> Exporter {
        standin.set_install(if extra.contains("role_arn") {
            standin::iam::Install::Hop
        } else {
            standin::iam::Install::Direct
        });
        let toml = format!(
            "[aws]\nregion = \"us-east-1\"\n{}retry_backoff = \"10ms\"\n{extra}",
            standin.endpoint_keys()
        );
        Exporter::start_toml(&toml).await
    }

    /// Starts the exporter with exactly this config file (static test credentials).
    pub async fn start_toml(toml: &str) -> Exporter {
        let dir = tempdir();
        let path = dir.join("config.toml");
        std::fs::write(&path, toml).unwrap();
        Exporter::start_with(Some(&path), false).await
    }

    pub async fn start_with(config_path: Option<&Path>, demo: bool) -> Exporter {
        let config =
            app::load_config(config_path, &Default::default(), demo).expect("valid test config");
        Exporter::start_config(config, config_path, demo).await
    }

    pub async fn start_config(config: Config, config_path: Option<&Path>, demo: bool) -> Exporter {
        Exporter::start_full(config, config_path, demo, None).await
    }

    pub async fn start_full(
        config: Config,
        config_path: Option<&Path>,
        demo: bool,
        web_config_file: Option<&Path>,
    ) -> Exporter {
        Exporter::start_stored(config, config_path, demo, web_config_file, None).await
    }

    /// [`Exporter::start_full`] with `--storage.path`.
    pub async fn start_stored(
        config: Config,
        config_path: Option<&Path>,
        demo: bool,
        web_config_file: Option<&Path>,
        storage: Option<&Path>,
    ) -> Exporter {
        let any = "127.0.0.1:0".parse().unwrap();
        Exporter::start_on(any, config, config_path, demo, web_config_file, storage).await
    }

    /// [`Exporter::start_stored`] on `bind` (a fixed address, to restart a
    /// replica where Prometheus scrapes it).
    pub async fn start_on(
        bind: SocketAddr,
        config: Config,
        config_path: Option<&Path>,
        demo: bool,
        web_config_file: Option<&Path>,
        storage: Option<&Path>,
    ) -> Exporter {
        let listener = compute_optimizer_exporter::web::server::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::new("test", "test"));
        let (trigger, shutdown) = shutdown::channel();
        let opts = Options {
            config,
            config_path: config_path.map(Path::to_owned),
            web_flags: Default::default(),
            demo,
            credentials: Some(StaticCredentials {
                access_key_id: "AKIDTEST".into(),
                secret_access_key: "test-secret".into(),
            }),
            sighup: false,
            web_config_file: web_config_file.map(Path::to_owned),
            enable_lifecycle: true,
            storage_path: storage.map(Path::to_owned),
        };
        let task = tokio::spawn(app::run(listener, opts, state.clone(), shutdown));
        Exporter {
            addr,
            state,
            trigger,
            task,
        }
    }

    pub async fn metrics(&self) -> String {
        let r = get(self.addr, "/metrics").await;
        assert_eq!(r.status, 200);
        r.text()
    }

    /// Waits until `cond` holds on a scrape (polls every 20 ms, up to `secs`).
    pub async fn wait_for(&self, secs: u64, cond: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.metrics().await;
            if cond(&text) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "condition not met within {secs}s; last scrape:\n{}",
                    tail(&text)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits, up to `secs`, for the first walk's outcome (its `up` series
    /// appears when it ends, success or failure); the scrape that shows it.
    pub async fn wait_walked(&self, secs: u64) -> String {
        self.wait_for(secs, |t| {
            sample(t, "aws_compute_optimizer_organizations_up").is_some()
        })
        .await
    }

    /// Waits, up to 20 s, for `/-/ready`: its first poll done and its saved
    /// walk served. The first scrape Kubernetes routes to a pod comes after.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while get(self.addr, "/-/ready").await.status != 200 {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the n-th poll (success or failure) to be recorded.
    pub async fn wait_polls(&self, n: u64) -> String {
        self.wait_for(20, |t| {
            let ok =
                sample(t, "aws_compute_optimizer_polls_total{result=\"success\"}").unwrap_or(0.0);
            let bad =
                sample(t, "aws_compute_optimizer_polls_total{result=\"failure\"}").unwrap_or(0.0);
            ok + bad >= n as f64
        })
        .await
    }

    pub async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("stops within 5s")
            .unwrap()
            .unwrap();
    }
}

fn tail(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("aws_compute_optimizer_") && !l.contains("enrollment_status{"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fresh directory under the target dir's tmp (removed with `cargo clean`).
pub fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "coe-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// CPU time (user and system) used so far by the process or thread whose
/// `/proc/.../stat` file is `path`, in seconds. Fields are taken by
/// position: some before `utime` can be negative (`tpgid` is -1 without a
/// controlling terminal).
#[cfg(target_os = "linux")]
pub fn cpu_seconds(path: &Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let Some(fields) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return 0.0;
    };
    let fields: Vec<&str> = fields.split(' ').collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (field(14) + field(15)) as f64 / ticks
}
