//! The `weir` binary as a child process: [`Weir`] (its output goes to
//! files; killed when dropped), [`Daemon`] (`weir serve` on port 0 with its
//! own flows and data folders), [`wait_until`], and flow files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`Weir::finish`] look again.
const POLL: Duration = Duration::from_millis(20);

/// The `weir` binary: `WEIR_BIN` if set, else the one cargo built next to
/// the running test (`target/<profile>/weir`; test binaries live in
/// `target/<profile>/deps`).
pub fn weir_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("WEIR_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let bin = profile.join(format!("weir{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no weir binary at {}; run the tests with `cargo test` (it builds it), or set WEIR_BIN",
        bin.display()
    );
    bin
}

/// Runs a peer's command (a client script, a validator) to the end and
/// answers its standard output; panics with both outputs unless it
/// succeeded.
pub fn peer_output(command: &mut std::process::Command, what: &str) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Writes `yaml` to `dir/name` and returns the file's path.
pub fn write_flow(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write the flow file");
    path
}

/// A path as a command-line argument (temp folders have UTF-8 names).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A running `weir` process. Its stdout and stderr go to files next to each
/// other in a folder of the test, so they can be read while it runs. Dropping
/// it kills the process (SIGKILL) if it still runs.
pub struct Weir {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a `weir` process ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Panics if the output shows a Rust panic.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stdout.contains("panicked") && !self.stderr.contains("panicked"),
            "weir panicked:\n{self}"
        );
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Weir {
    /// Starts `weir ARGS...` in `dir`; `label` names its output files
    /// (`dir/label.stdout`, `dir/label.stderr`).
    pub fn spawn(dir: &Path, label: &str, args: &[&str]) -> Self {
        Self::spawn_with(dir, label, args, &[("WEIR_LOG", "warn")])
    }

    /// [`Weir::spawn`] with environment variables.
    pub fn spawn_with(dir: &Path, label: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_under(dir, label, &[], args, env)
    }

    /// [`Weir::spawn_with`] under a wrapper command, like
    /// `["prlimit", "--nofile=300", "--"]` (empty: none).
    pub fn spawn_under(
        dir: &Path,
        label: &str,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let stdout = dir.join(format!("{label}.stdout"));
        let stderr = dir.join(format!("{label}.stderr"));
        let file = |p: &Path| std::fs::File::create(p).expect("create an output file");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(weir_binary());
                c
            }
            None => Command::new(weir_binary()),
        };
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .args(args)
            .current_dir(dir)
            .env_remove("WEIR_FLOWS")
            .env_remove("WEIR_DATA")
            .env_remove("WEIR_LISTEN")
            // Requests to the test server must not go through a proxy.
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .stdin(Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .expect("start the weir binary");
        Self {
            child,
            label: label.to_owned(),
            stdout,
            stderr,
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Panics, with the process's output, if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("check the weir process") {
            panic!(
                "`weir` ({}) exited early with {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.label,
                self.stdout(),
                self.stderr()
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// `kill -9` and reap the process.
    pub fn kill(&mut self) {
        // `kill` fails only if the process was already reaped.
        let _ = self.child.kill();
        self.child.wait().expect("reap the killed weir process");
    }

    /// Waits (up to `timeout`) for the process to exit; on timeout kills
    /// it and panics with its output.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("check the weir process") {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "`weir` ({}) did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.label,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(POLL);
        };
        Finished {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// `weir token WHO...` (like `--tenant a` or `--admin`) for the workspace
/// of `env` (`WEIR_WORKSPACE_SECRET`, ...): the token it prints.
pub fn weir_token(dir: &Path, env: &[(&str, &str)], who: &[&str]) -> String {
    let mut args = vec!["token"];
    args.extend_from_slice(who);
    let done = Weir::spawn_with(dir, "token", &args, env).finish(Duration::from_secs(30));
    assert_eq!(done.code, Some(0), "weir token: {done}");
    done.stdout.trim().to_owned()
}

/// Runs `weir ARGS...` in `dir` to its end (at most `timeout`).
pub fn run_weir(dir: &Path, label: &str, args: &[&str], timeout: Duration) -> Finished {
    Weir::spawn(dir, label, args).finish(timeout)
}

/// Calls `condition` every 20 ms until it holds; panics after `timeout`,
/// naming `what` was awaited.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A `weir serve` on 127.0.0.1:0, with its flows in `DIR/flows` and its
/// data in `DIR/data`.
pub struct Daemon {
    pub weir: Weir,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub flows: PathBuf,
    pub data: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until it logs the address it serves on.
    pub fn start(dir: &Path, label: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_under(dir, label, &[], extra, env)
    }

    /// [`Daemon::start`] under a wrapper command ([`Weir::spawn_under`]).
    pub fn start_under(
        dir: &Path,
        label: &str,
        wrapper: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let flows = dir.join("flows");
        let data = dir.join("data");
        std::fs::create_dir_all(&flows).expect("create the flows folder");
        let mut args = vec![
            "serve",
            "--flows",
            flows.to_str().expect("utf-8 path"),
            "--data",
            data.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut all_env = vec![("WEIR_LOG", "info")];
        all_env.extend_from_slice(env);
        let mut weir = Weir::spawn_under(dir, label, wrapper, &args, &all_env);
        let mut address = None;
        wait_until(
            "the daemon logs its address",
            Duration::from_secs(20),
            || {
                weir.assert_running();
                let log = weir.stderr();
                address = log
                    .lines()
                    .find(|l| l.contains("weir is serving"))
                    .and_then(|l| l.split("address=").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned);
                address.is_some()
            },
        );
        Self {
            weir,
            base: format!("http://{}", address.expect("an address")),
            flows,
            data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// [`Daemon::start`] with integrations and actions folders, the
    /// workspace `secret` (tokens) and a key ring of one key (credentials).
    pub fn with_integrations(
        dir: &Path,
        integrations: &Path,
        actions: &Path,
        secret: &str,
    ) -> Self {
        Self::start(
            dir,
            "daemon",
            &[
                "--integrations",
                arg(integrations),
                "--actions",
                arg(actions),
            ],
            &[
                ("WEIR_WORKSPACE_SECRET", secret),
                ("WEIR_SECRET_KEYS", TEST_KEY_RING),
            ],
        )
    }
}

/// `WEIR_SECRET_KEYS` for tests: one key, `k1`, of 32 bytes 0x05.
pub const TEST_KEY_RING: &str = "k1:BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";
