//! The balancer as the real `stickylb` binary: for the tests whose subject is the process
//! itself (signals, its log, its exit status). Killed (SIGKILL) and reaped on drop.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::balancer::{Balancer, Engine};
use super::cli::bin;
use super::config::BalancerBuilder;
use super::net::{free_port, port_open};
use super::time::{secs, sleep_ms, Deadline};

impl BalancerBuilder {
    /// Writes the config, starts `stickylb --config FILE` and waits (<= 10 s) until both the
    /// listen and the admin port accept connections. Only for tests that need the process:
    /// [`start`](BalancerBuilder::start) runs the same balancer in-process, faster.
    pub async fn start_binary(self) -> Balancer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let admin_port = free_port();
        let config_path = dir.path().join("stickylb.toml");
        fs::write(&config_path, self.render(port, admin_port)).expect("write config");
        let log_path = dir.path().join("stickylb.log");
        let log = File::create(&log_path).expect("create log");
        let log2 = log.try_clone().expect("clone log");
        let child = Command::new(bin())
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .expect("spawn stickylb");
        let mut process = Process { child, log_path, exit: None };
        let config = || fs::read_to_string(&config_path).unwrap_or_default();
        let dl = Deadline::after(secs(10));
        loop {
            if let Some(st) = process.child.try_wait().expect("try_wait") {
                process.exit = Some(st);
                panic!(
                    "stickylb exited during startup with {st}\n--- config ---\n{}\n--- output tail ---\n{}",
                    config(),
                    process.log_tail(40)
                );
            }
            if port_open(port).await && port_open(admin_port).await {
                break;
            }
            if dl.expired() {
                panic!(
                    "stickylb did not listen on {port} (admin {admin_port}) within 10 s\n--- config ---\n{}\n--- output tail ---\n{}",
                    config(),
                    process.log_tail(40)
                );
            }
            sleep_ms(20).await;
        }
        Balancer::new(port, admin_port, config_path, Engine::Binary(process), dir)
    }
}

/// A `stickylb` child process with its output in a file.
pub(super) struct Process {
    child: Child,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Process {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines of the process's stdout+stderr.
    pub(super) fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub(super) fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    pub(super) async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let dl = Deadline::after(timeout);
        loop {
            if let Some(st) = self.exit {
                return Some(st);
            }
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(st);
                return Some(st);
            }
            if dl.expired() {
                return None;
            }
            sleep_ms(20).await;
        }
    }

    pub(super) fn is_running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (unless it exited already) and reap; idempotent.
    pub(super) fn kill(&mut self) {
        if self.exit.is_none() {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            self.exit = self.child.wait().ok();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
