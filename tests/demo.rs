//! `stickylb demo --mode KIND` (the real binary): each session kind visibly sticks.

mod common;

use common::*;

/// Start `stickylb demo --mode kind` on free ports; the process is killed on drop.
struct Demo {
    child: std::process::Child,
    port: u16,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start attempts: a port from `free_port` can be handed to one of the demo's own backends
/// (bound on port 0) before the demo listens on it; the demo then exits, and runs again on
/// other ports.
const ATTEMPTS: usize = 3;

async fn demo(kind: &str) -> Demo {
    for attempt in 1..=ATTEMPTS {
        let (port, admin) = (free_port(), free_port());
        let child = std::process::Command::new(bin())
            .args([
                "demo",
                "--mode",
                kind,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("demo starts");
        let mut d = Demo { child, port };
        let dl = Deadline::after(secs(10));
        loop {
            if port_open(port).await {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                assert!(attempt < ATTEMPTS, "demo {kind} exited ({status}) at each of {ATTEMPTS} starts");
                break;
            }
            assert!(!dl.expired(), "demo {kind} never listened");
            sleep_ms(50).await;
        }
    }
    unreachable!("the last attempt returns or panics")
}

fn hit(text: &str) -> (String, u64) {
    // "backend demo2: hit 3 of this session" / <demo:hit backend="demo2" hit="3" .../>
    let backend = text
        .match_indices("demo")
        .find_map(|(i, _)| text[i + 4..].chars().next().filter(char::is_ascii_digit).map(|d| format!("demo{d}")))
        .unwrap_or_default();
    let n = text
        .split("hit")
        .filter_map(|p| p.trim_start_matches(['=', '"', ' ']).split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .next()
        .unwrap_or(0);
    (backend, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_mode_shows_a_session_that_sticks() {
    for kind in ["insert", "servlet", "preferred"] {
        let d = demo(kind).await;
        let u = User::new();
        let mut first = None;
        for i in 1..=4 {
            let r = u.get(&format!("http://127.0.0.1:{}/", d.port)).await;
            let (backend, n) = hit(&r.text());
            assert_eq!(n, i, "{kind}: the hit counter goes on: {}", r.text());
            assert_eq!(first.get_or_insert(backend.clone()), &backend, "{kind}");
        }
        if kind == "servlet" {
            let id = u.cookie(&format!("http://127.0.0.1:{}/", d.port), "JSESSIONID").unwrap();
            assert!(id.contains(".node"), "a jvmRoute in the id: {id}");
        }
    }
    let d = demo("soap").await;
    let c = plain_client();
    let url = format!("http://127.0.0.1:{}/services/Demo", d.port);
    let env = |h: &str| {
        format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>{h}</s:Header><s:Body><x/></s:Body></s:Envelope>"#
        )
    };
    let r = c.post(&url).header("content-type", "text/xml").body(env("")).send().await.unwrap().text().await.unwrap();
    let group =
        r.split("ServiceGroupId").nth(1).unwrap().split('>').nth(1).unwrap().split('<').next().unwrap().to_string();
    let (backend, _) = hit(&r);
    assert!(backend.starts_with("demo"), "{r}");
    for i in 2..=4 {
        let h =
            format!(r#"<a:ServiceGroupId xmlns:a="http://ws.apache.org/namespaces/axis2">{group}</a:ServiceGroupId>"#);
        let r =
            c.post(&url).header("content-type", "text/xml").body(env(&h)).send().await.unwrap().text().await.unwrap();
        assert_eq!(hit(&r), (backend.clone(), i), "soap: {r}");
    }
}
