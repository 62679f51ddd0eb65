//! The command line: [`run_cli`] runs `stickylb ARGS` (e.g. `check`) to completion; [`bin`] is
//! the binary under test, also started by [`BalancerBuilder::start_binary`](super::BalancerBuilder::start_binary).

use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::time::{ms, Deadline};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stickylb")
}

/// The outcome of one `stickylb` command line run.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when killed by a signal (or killed by us after the timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `stickylb ARGS` to completion (killed after `timeout`).
pub fn run_cli(args: &[&str], timeout: Duration) -> CliOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn stickylb");
    let dl = Deadline::after(timeout);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if dl.expired() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(ms(10));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let mut stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n(killed: still running after {timeout:?})"));
    }
    CliOutput { code: status.and_then(|s| s.code()), stdout, stderr }
}
