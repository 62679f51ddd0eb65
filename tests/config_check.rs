//! Issue 12 (config part): `stickylb check`, startup and reload reject hostile or inconsistent
//! files with `FILE:LINE:COL`, every problem of a file at once, type errors included.
//!
//! Self-contained: the real binary and raw HTTP over std sockets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Variables of the test runner's environment that would change what the binary does.
const OVERRIDES: &[&str] = &["STICKYLB_SECRET", "STICKYLB_PREVIOUS_SECRETS", "STICKYLB_CONFIG", "RUST_LOG"];

fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stickylb"));
    for name in OVERRIDES {
        cmd.env_remove(name);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// `stickylb COMMAND --config PATH`: exit code and stderr.
fn run(command_name: &str, path: &Path) -> (Option<i32>, String) {
    let out = command().args([command_name, "--config", path.to_str().unwrap()]).output().expect("run stickylb");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `error: ` lines of stderr, without that prefix and the file name.
fn problems(stderr: &str, path: &Path) -> Vec<String> {
    let prefix = format!("error: {}:", path.display());
    stderr
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap_or_else(|| panic!("not {prefix}...: {l}")).to_owned())
        .collect()
}

#[track_caller]
fn assert_problems(got: &[String], want: &[&str]) {
    assert_eq!(got.len(), want.len(), "got {got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "want {w:?}, got {g:?} in {got:#?}");
    }
}

const MANY_PROBLEMS: &str = "\
[server]
listen = \"127.0.0.1:18080\"
threads = 2000
max_connections = \"lots\"
request_timout = \"5s\"

[admin]
listen = \"0.0.0.0:18080\"

[log]
level = \"verbose\"
format = \"xml\"

[[backend]]
name = \"app1\"
address = \"0.0.0.0:8080\"

[[backend]]
name = \"app2\"
address = \"127.0.0.1:0\"
weight = \"heavy\"
";

#[test]
fn check_and_startup_report_every_problem_of_a_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.toml");
    std::fs::write(&path, MANY_PROBLEMS).unwrap();
    let want = [
        "3:11: server.threads must be at most 1024",
        "4:19: invalid type: string \"lots\", expected usize",
        "5:1: unknown field `request_timout`",
        "8:10: admin.listen 0.0.0.0:18080 overlaps server.listen 127.0.0.1:18080",
        "11:9: unknown log level \"verbose\"",
        "12:10: unknown variant `xml`",
        "16:11: invalid backend address \"0.0.0.0:8080\"",
        "20:11: invalid backend address \"127.0.0.1:0\": port 0",
        "21:10: invalid type: string \"heavy\"",
    ];
    for command_name in ["check", "run"] {
        let (code, stderr) = run(command_name, &path);
        assert_eq!(code, Some(2), "{command_name}: {stderr}");
        assert_problems(&problems(&stderr, &path), &want);
    }
}

#[test]
fn a_file_that_is_not_utf8_is_reported_at_its_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    let mut bytes = b"[server]\nlisten = \"127.0.0.1:18080\"\n# caf".to_vec();
    bytes.extend_from_slice(b"\xe9 cr\xe8me\nthreads = \"x\"\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n");
    std::fs::write(&path, bytes).unwrap();
    let (code, stderr) = run("check", &path);
    assert_eq!(code, Some(2), "{stderr}");
    assert_problems(
        &problems(&stderr, &path),
        &["3:6: the file is not UTF-8 (byte 0xe9 here)", "4:11: invalid type: string \"x\""],
    );
}

#[test]
fn a_clean_file_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    let text = "[server]\nlisten = [\"127.0.0.1:18080\", \"[::1]:18080\"]\nthreads = 1024\n[admin]\nlisten = \"127.0.0.1:18081\"\n\
                [log]\nlevel = \"info,stickylb=debug\"\n[[backend]]\nname = \"a\"\naddress = \"app.internal:8080\"\n";
    std::fs::write(&path, text).unwrap();
    let out = command().args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config ok");
}

// ------------------------------------------------------------------------------------- reload

struct Instance {
    child: Child,
    port: u16,
    admin: u16,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn instance_config(port: u16, admin: u16) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\n[health]\nenabled = false\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n[log]\nlevel = \"warn\"\n\
         [[backend]]\nname = \"app1\"\naddress = \"127.0.0.1:1\"\n"
    )
}

fn start() -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let path = dir.path().join("stickylb.toml");
    std::fs::write(&path, instance_config(port, admin)).unwrap();
    let child = command()
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut instance = Instance { child, port, admin, path, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(TcpStream::connect(("127.0.0.1", port)).is_ok() && TcpStream::connect(("127.0.0.1", admin)).is_ok()) {
        assert!(instance.child.try_wait().unwrap().is_none(), "stickylb exited at startup");
        assert!(Instant::now() < deadline, "stickylb did not listen within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    instance
}

/// `METHOD PATH` on the admin API: status and body.
fn admin(instance: &Instance, method: &str, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", instance.admin)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let host = format!("127.0.0.1:{}", instance.admin);
    write!(conn, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), body.to_owned())
}

#[test]
fn reload_rejects_a_file_with_every_problem_listed_and_keeps_serving() {
    let instance = start();
    let mut text = instance_config(instance.port, instance.admin);
    // An admin listener on the client port, and a type error that used to hide it.
    text = text.replace(
        &format!("listen = \"127.0.0.1:{}\"\n[log]", instance.admin),
        &format!("listen = \"0.0.0.0:{}\"\n[log]", instance.port),
    );
    text = text.replace("threads = 1\n", "threads = \"one\"\n");
    std::fs::write(&instance.path, &text).unwrap();

    let (status, body) = admin(&instance, "POST", "/api/reload");
    assert_eq!(status, 400, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let errors: Vec<String> =
        json["errors"].as_array().expect("errors").iter().map(|e| e.as_str().unwrap_or("").to_owned()).collect();
    let file = instance.path.display().to_string();
    assert!(errors.iter().any(|e| e.starts_with(&format!("{file}:3:11: invalid type: string \"one\""))), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with(&format!("{file}:7:10: admin.listen 0.0.0.0:"))), "{errors:#?}");
    assert_eq!(admin(&instance, "GET", "/healthz").0, 200, "the running config stopped serving");
}
