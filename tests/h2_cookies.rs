//! Cookie fields across protocols (issue 18). An HTTP/2 client may split its cookie into
//! several `cookie` fields (RFC 9113 8.2.3): an HTTP/1.1 backend gets them as one `Cookie`
//! header joined with "; ", and the session they carry keeps its backend, over h2c and over
//! HTTPS. Several `Cookie` lines from an HTTP/1.1 client are joined the same way. The other
//! way, every `Set-Cookie` field of a backend reaches an HTTP/2 client as its own field.

mod common;

use common::*;

/// How the HTTP/2 client reaches the balancer.
#[derive(Clone, Copy, Debug)]
enum Transport {
    H2c,
    Https,
}

const BOTH: [Transport; 2] = [Transport::H2c, Transport::Https];

/// A balancer serving `transport` (with its certificate for HTTPS).
struct Front {
    lb: Balancer,
    cert: Option<TestCert>,
    _dir: tempfile::TempDir,
}

impl Front {
    async fn start(builder: BalancerBuilder, transport: Transport) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let (builder, cert) = match transport {
            Transport::H2c => (builder, None),
            Transport::Https => {
                let cert = make_cert(dir.path(), "server");
                (with_tls(builder, &cert), Some(cert))
            }
        };
        Front { lb: builder.start().await, cert, _dir: dir }
    }

    async fn connect(&self) -> H2Conn {
        match &self.cert {
            None => H2Conn::h2c(self.lb.addr()).await,
            Some(cert) => H2Conn::tls(self.lb.addr(), cert).await,
        }
    }
}

/// The one `Cookie` field backend `name` saw on its last request.
fn cookie_seen(bs: &[TestBackend], name: &str) -> String {
    let b = bs.iter().find(|b| b.name() == name).unwrap_or_else(|| panic!("no backend {name}"));
    let fields = b.last_seen().expect("a request").fields("cookie");
    assert_eq!(fields.len(), 1, "{name} got {} Cookie fields: {fields:?}", fields.len());
    fields[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_cookie_fields_arrive_as_one_and_keep_a_learned_session() {
    for transport in BOTH {
        let bs = three().await;
        let builder = learn_jsessionid(&refs(&bs));
        let front = Front::start(builder, transport).await;
        let mut conn = front.connect().await;
        let login = conn.get("/login", &[]).await;
        assert_eq!(login.status, 200, "{transport:?}: {}", login.describe());
        let owner = login.backend().expect("backend");
        let sid = cookie_value(&login.set_cookie("JSESSIONID").expect("the backend's JSESSIONID"));

        let session = format!("JSESSIONID={sid}");
        for i in 0..6 {
            // Round robin would move a request whose session was not found.
            let fields = [("cookie", "theme=dark"), ("cookie", session.as_str()), ("cookie", "lang=en")];
            let r = conn.get(&format!("/app/{i}"), &fields).await;
            assert_eq!(r.status, 200, "{transport:?}: {}", r.describe());
            assert_eq!(r.backend().as_deref(), Some(owner.as_str()), "{transport:?}: request {i} left {owner}");
            assert_eq!(cookie_seen(&bs, &owner), format!("theme=dark; {session}; lang=en"), "{transport:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_cookie_fields_with_ours_second_keep_an_inserted_session() {
    for (transport, strip) in BOTH.into_iter().flat_map(|t| [(t, true), (t, false)]) {
        let bs = three().await;
        let builder = balancer(&refs(&bs)).set("balance.algorithm", "round_robin").set("session.strip_cookie", strip);
        let front = Front::start(builder, transport).await;
        let mut conn = front.connect().await;
        let first = conn.get("/first", &[]).await;
        assert_eq!(first.status, 200, "{transport:?}: {}", first.describe());
        let owner = first.backend().expect("backend");
        let ours = format!("{COOKIE}={}", cookie_value(&first.set_cookie(COOKIE).expect("our cookie")));

        let want = if strip { "theme=dark; lang=en".to_string() } else { format!("theme=dark; {ours}; lang=en") };
        for i in 0..6 {
            let fields = [("cookie", "theme=dark"), ("cookie", ours.as_str()), ("cookie", "lang=en")];
            let r = conn.get(&format!("/app/{i}"), &fields).await;
            let what = format!("{transport:?}, strip_cookie = {strip}, request {i}");
            assert_eq!(r.status, 200, "{what}: {}", r.describe());
            assert_eq!(r.backend().as_deref(), Some(owner.as_str()), "{what} left {owner}");
            assert_eq!(r.set_cookie(COOKIE), None, "{what}: a known session got a new cookie");
            assert_eq!(cookie_seen(&bs, &owner), want, "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_cookie_lines_from_an_http1_client_arrive_as_one() {
    let bs = three().await;
    let lb = learn_jsessionid(&refs(&bs)).start().await;
    let login = get(&plain_client(), &lb.url("/login")).await;
    let owner = login.backend().expect("backend");
    let sid = cookie_value(&login.set_cookie("JSESSIONID").expect("the backend's JSESSIONID"));

    let mut conn = RawConn::connect(lb.addr()).await;
    for i in 0..3 {
        let head = format!("GET /h1/{i} HTTP/1.1\r\nHost: t\r\nCookie: theme=dark\r\nCookie: JSESSIONID={sid}\r\n\r\n");
        conn.send(head.as_bytes()).await;
        let r = conn.response().await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["backend"].as_str(), Some(owner.as_str()), "request {i} left {owner}");
        assert_eq!(cookie_seen(&bs, &owner), format!("theme=dark; JSESSIONID={sid}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_set_cookie_of_a_backend_reaches_an_h2_client_as_its_own_field() {
    for transport in BOTH {
        let b = TestBackend::start("app1").await;
        let front = Front::start(balancer(&[&b]), transport).await;
        let mut conn = front.connect().await;
        let r = conn.get("/set-cookies", &[]).await;
        assert_eq!(r.status, 200, "{transport:?}: {}", r.describe());
        let fields = r.set_cookies();
        assert_eq!(fields.len(), 4, "{transport:?}: the backend's three and ours: {fields:?}");
        assert_eq!(fields[..3], THREE_SET_COOKIES, "{transport:?}");
        assert!(fields[3].starts_with(&format!("{COOKIE}=")), "{transport:?}: {fields:?}");
    }
}
