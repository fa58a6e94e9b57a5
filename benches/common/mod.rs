//! What the benches that run `upgrade-guard serve` share: starting it as a
//! child process on loopback, reading its JSON log, and its peak memory.
#![allow(dead_code)]

pub mod sample;
#[path = "../../tests/common/tls_client.rs"]
pub mod tls_client;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("its address")
}

/// The peak resident memory of a process (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// The resident pages of files a process maps (RssFile: its binary's code
/// and libraries, shared with the page cache), in KiB.
#[allow(dead_code)] // the load bench's
pub fn file_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssFile:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Why a server was not started.
#[derive(Debug)]
pub enum StartError {
    /// The binary has no such flag (an older build): the caller skips.
    Lacks(String),
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Lacks(s) | StartError::Failed(s) => f.write_str(s),
        }
    }
}

/// An `upgrade-guard` binary and the `serve` flags it has.
pub struct Binary {
    pub path: PathBuf,
    help: String,
}

impl Binary {
    pub fn new(path: impl Into<PathBuf>) -> Result<Binary, String> {
        let path = path.into();
        let out = Command::new(&path)
            .args(["serve", "--help"])
            .output()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} serve --help: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(Binary { path, help })
    }

    /// Whether `serve --help` lists `flag` (whole, not as a prefix).
    pub fn has(&self, flag: &str) -> bool {
        self.help.match_indices(flag).any(|(at, _)| {
            !self.help[at + flag.len()..]
                .starts_with(|c: char| c == '-' || c.is_ascii_alphanumeric())
        })
    }

    /// `serve --log-format json` on a free loopback port with the
    /// development certificate and ./policies, plus `extra` arguments, and
    /// with `probe` a plain-HTTP probe port (`--metrics-addr`). Returns once
    /// the server logs that it serves. With `--tls-cert` in `extra`, the
    /// caller knows its CA and [`Server::ca`] is empty.
    pub fn serve(&self, rust_log: &str, probe: bool, extra: &[&str]) -> Result<Server, StartError> {
        let mut wanted: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|a| a.starts_with("--"))
            .collect();
        if probe {
            wanted.push("--metrics-addr");
        }
        if let Some(flag) = wanted.iter().find(|f| !self.has(f)) {
            return Err(StartError::Lacks(format!(
                "this binary's serve has no {flag}"
            )));
        }
        let addr = free_port();
        let probe = probe.then(free_port);
        let mut command = Command::new(&self.path);
        command
            .args(["serve", "--log-format", "json", "--addr", &addr.to_string()])
            .args(extra);
        if let Some(probe) = probe {
            command.args(["--metrics-addr", &probe.to_string()]);
        }
        // Its own CA file, so servers started side by side never read each
        // other's; older builds write theirs to a fixed path.
        let own_cert = extra.contains(&"--tls-cert");
        let dev_ca = (!own_cert && self.has("--dev-ca")).then(|| {
            static N: AtomicUsize = AtomicUsize::new(0);
            std::env::temp_dir().join(format!(
                "ug-bench-ca-{}-{}.crt",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ))
        });
        if let Some(path) = &dev_ca {
            command.arg("--dev-ca").arg(path);
        }
        let mut child = command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StartError::Failed(format!("{}: {e}", self.path.display())))?;
        let log = Log::default();
        let stderr = child.stderr.take().expect("stderr is piped");
        let drain = log.clone();
        // Drains the log for as long as the server runs, so it never blocks
        // on a full pipe.
        std::thread::spawn(move || drain.read(stderr));
        // From here on, dropping `server` kills the child.
        let mut server = Server {
            child,
            addr,
            probe,
            ca: String::new(),
            log,
            dev_ca,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.log.state().ready {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(StartError::Failed(format!(
                    "serve exited ({status}) before serving: {}",
                    server.log.tail(3)
                )));
            }
            if Instant::now() > deadline {
                return Err(StartError::Failed(format!(
                    "serve did not say it serves within 20 s: {}",
                    server.log.tail(3)
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if own_cert {
            return Ok(server);
        }
        let ca_path = server.log.state().ca.clone().ok_or_else(|| {
            StartError::Failed("no development CA path (field `ca`) in the log".into())
        })?;
        server.ca = std::fs::read_to_string(&ca_path)
            .map_err(|e| StartError::Failed(format!("{ca_path}: {e}")))?;
        Ok(server)
    }
}

/// A running `upgrade-guard serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The plain-HTTP probe port, when asked for.
    pub probe: Option<SocketAddr>,
    /// The development CA (PEM).
    pub ca: String,
    pub log: Log,
    dev_ca: Option<PathBuf>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.dev_ca {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What the server logged, as its lines arrive: every line's length and
/// message (cut short), and what starting it needs.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<LogState>>);

#[derive(Default)]
pub struct LogState {
    /// Each line's length in bytes, line break excluded.
    pub lengths: Vec<usize>,
    /// Each line's `message` field (the line itself when it is not JSON),
    /// cut to 200 bytes.
    pub messages: Vec<String>,
    /// The development CA's path, from the field `ca`.
    pub ca: Option<String>,
    /// The server said it serves /validate.
    pub ready: bool,
    /// The log is closed: the server exited.
    pub ended: bool,
}

impl Log {
    pub fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lines so far: an index for [`Log::longest_since`].
    pub fn lines(&self) -> usize {
        self.state().lengths.len()
    }

    /// The longest line from index `from` on, in bytes.
    pub fn longest_since(&self, from: usize) -> usize {
        let state = self.state();
        state
            .lengths
            .get(from..)
            .unwrap_or_default()
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Lines from `from` on whose message is `message`, with their lengths.
    pub fn find_since(&self, from: usize, message: &str) -> Vec<usize> {
        let state = self.state();
        (from..state.messages.len())
            .filter(|&i| state.messages[i] == message)
            .map(|i| state.lengths[i])
            .collect()
    }

    pub fn has_message(&self, message: &str) -> bool {
        self.state().messages.iter().any(|m| m == message)
    }

    /// The last `n` messages, for a failure's explanation.
    pub fn tail(&self, n: usize) -> String {
        let state = self.state();
        let from = state.messages.len().saturating_sub(n);
        state.messages[from..].join(" | ")
    }

    fn read(&self, stderr: impl std::io::Read) {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            let json: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
            let message = match json["message"].as_str() {
                Some(m) => cut(m, 200),
                None => cut(&String::from_utf8_lossy(&line), 200),
            };
            let mut state = self.state();
            if let Some(ca) = json["ca"].as_str() {
                state.ca = Some(ca.to_string());
            }
            if message.starts_with("serving /validate") {
                state.ready = true;
            }
            state.lengths.push(line.len());
            state.messages.push(message);
        }
        self.state().ended = true;
    }
}

/// `text`, at most `max` bytes of it (at a character boundary).
pub fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A directory of this run's files, removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("ug-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `upgrade-guard certs` into `dir`: a CA (`ca.crt`) and a serving
/// certificate (`tls.crt`, `tls.key`) for the servers of one run.
pub fn certificates(dir: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_upgrade-guard"))
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("upgrade-guard certs");
    assert!(status.success(), "upgrade-guard certs: {status}");
}
