//! SOAP-level sessions (issue 13): real envelopes on the wire, to backends that behave like
//! Axis2 (a ServiceGroupId handed out in the response's `ReplyTo / ReferenceParameters`) and
//! that Synapse clients address with their own `ClientID`.

mod common;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const S11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const S12: &str = "http://www.w3.org/2003/05/soap-envelope";
const AXIS2: &str = "http://ws.apache.org/namespaces/axis2";
const SYNAPSE: &str = "http://ws.apache.org/ns/synapse";
const WSA: &str = "http://www.w3.org/2005/08/addressing";

/// An Axis2-like SOAP backend: a request without a ServiceGroupId gets a new one in its
/// response's ReplyTo; every answer names the backend and the SHA-256 of the request body.
struct SoapBackend {
    name: String,
    port: u16,
}

impl SoapBackend {
    async fn start(name: &str) -> SoapBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (n, r) = (name.to_string(), Arc::new(AtomicUsize::new(0)));
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (n, r) = (n.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let (n, r) = (n.clone(), r.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(&n, &r, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
        SoapBackend { name: name.into(), port }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn answer(
    name: &str,
    requests: &AtomicUsize,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<bytes::Bytes>> {
    if req.uri().path() == "/health" {
        return hyper::Response::new(Full::new("ok".into()));
    }
    let n = requests.fetch_add(1, Ordering::SeqCst);
    let soap12 = req.headers().get("content-type").is_some_and(|v| v.to_str().unwrap_or("").contains("soap+xml"));
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let text = String::from_utf8_lossy(&body).to_string();
    let (ns, ct) = if soap12 { (S12, "application/soap+xml") } else { (S11, "text/xml; charset=utf-8") };
    let header = if text.contains("ServiceGroupId") || !text.contains("Envelope") {
        String::new()
    } else {
        format!(
            r#"<wsa:ReplyTo xmlns:wsa="{WSA}"><wsa:Address>{WSA}/anonymous</wsa:Address><wsa:ReferenceParameters><axis2:ServiceGroupId xmlns:axis2="{AXIS2}">urn:uuid:{name}-{n}</axis2:ServiceGroupId></wsa:ReferenceParameters></wsa:ReplyTo>"#
        )
    };
    let sha = sha256_hex(&body);
    let out = format!(
        r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="{ns}"><soapenv:Header>{header}</soapenv:Header><soapenv:Body><r backend="{name}" sha="{sha}" len="{}"/></soapenv:Body></soapenv:Envelope>"#,
        body.len()
    );
    let mut resp = hyper::Response::new(Full::new(out.into()));
    resp.headers_mut().insert("content-type", ct.parse().unwrap());
    resp.headers_mut().insert("x-backend", name.parse().unwrap());
    resp
}

fn attr(text: &str, name: &str) -> String {
    let start = text.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name} in {text}")) + name.len() + 2;
    text[start..].split('"').next().unwrap().to_string()
}

fn issued(text: &str) -> Option<String> {
    let start = text.find("urn:uuid:")?;
    Some(text[start..].split('<').next()?.to_string())
}

/// An envelope with `header` inside its Header, in SOAP 1.1 or 1.2 with prefix `p`.
fn envelope(soap12: bool, p: &str, header: &str, body: &str) -> (String, &'static str) {
    let (ns, ct) = if soap12 { (S12, "application/soap+xml; charset=utf-8") } else { (S11, "text/xml; charset=utf-8") };
    (
        format!(
            r#"<{p}:Envelope xmlns:{p}="{ns}"><{p}:Header>{header}</{p}:Header><{p}:Body>{body}</{p}:Body></{p}:Envelope>"#
        ),
        ct,
    )
}

async fn post(c: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>, ct: &str) -> (u16, String, String) {
    let r = c.post(url).header("content-type", ct).body(body).send().await.expect("answered");
    let status = r.status().as_u16();
    let backend = r.headers().get("x-backend").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, backend, r.text().await.unwrap())
}

async fn soap_backends() -> Vec<SoapBackend> {
    vec![SoapBackend::start("s1").await, SoapBackend::start("s2").await, SoapBackend::start("s3").await]
}

fn soap_balancer(bs: &[SoapBackend]) -> BalancerBuilder {
    let mut b = balancer(&[]).set("session.mode", "soap").set("balance.algorithm", "round_robin");
    for be in bs {
        b = b.backend_at(&be.name, &be.address());
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axis2_service_group_sessions_stay_on_the_backend_that_issued_them() {
    let bs = soap_backends().await;
    let lb = soap_balancer(&bs).start().await;
    let c = plain_client();
    let prefixes = ["soapenv", "env", "s", "SOAP-ENV"];
    for i in 0..20 {
        let soap12 = i % 2 == 1;
        let p = prefixes[i % prefixes.len()];
        let (first, ct) = envelope(soap12, p, "", "<m:login xmlns:m=\"urn:app\"/>");
        let (status, home, text) = post(&c, &lb.url("/axis2/services/Echo"), first, ct).await;
        assert_eq!(status, 200);
        let id = issued(&text).expect("the backend handed out a ServiceGroupId in ReplyTo");
        assert!(id.starts_with(&format!("urn:uuid:{home}-")));
        for k in 0..4 {
            // The id comes back as a SOAP header, under another prefix each time.
            let q = ["axis2", "a", "sg", "ns1"][k];
            let h = format!(r#"<{q}:ServiceGroupId xmlns:{q}="{AXIS2}">{id}</{q}:ServiceGroupId>"#);
            let (next, ct) = envelope(soap12, p, &h, &format!("<m:call xmlns:m=\"urn:app\">{k}</m:call>"));
            let (status, backend, _) = post(&c, &lb.url("/axis2/services/Echo"), next, ct).await;
            assert_eq!((status, backend.as_str()), (200, home.as_str()), "session {i}, request {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_client_sessions_pin_on_their_first_request() {
    let bs = soap_backends().await;
    let lb = soap_balancer(&bs).start().await;
    let c = plain_client();
    for i in 0..20 {
        let h = format!(r#"<syn:ClientID xmlns:syn="{SYNAPSE}">client-{i}-{}</syn:ClientID>"#, std::process::id());
        let mut home = None;
        for k in 0..5 {
            let (env, ct) = envelope(i % 2 == 0, "soap", &h, &format!("<m:op xmlns:m=\"urn:app\">{k}</m:op>"));
            let (status, backend, _) = post(&c, &lb.url("/services/Op"), env, ct).await;
            assert_eq!(status, 200);
            assert_eq!(home.get_or_insert(backend.clone()), &backend, "client {i}, request {k}");
        }
    }
    assert!(lb.total_sessions().await >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_arrive_whole_and_anything_not_a_session_is_just_served() {
    let bs = soap_backends().await;
    let lb = soap_balancer(&bs).set("session.soap_max_bytes", 4096).start().await;
    let c = plain_client();
    // A 200 KB envelope with a ClientID: byte-identical at the backend, and pinned.
    let filler = "x".repeat(200 * 1024);
    let h = format!(r#"<syn:ClientID xmlns:syn="{SYNAPSE}">big-{}</syn:ClientID>"#, std::process::id());
    let (env, ct) = envelope(false, "soap", &h, &format!("<m:big xmlns:m=\"urn:app\">{filler}</m:big>"));
    let (status, backend, text) = post(&c, &lb.url("/big"), env.clone(), ct).await;
    assert_eq!(status, 200);
    assert_eq!(attr(&text, "sha"), sha256_hex(env.as_bytes()), "the envelope arrived byte for byte");
    assert_eq!(attr(&text, "len"), env.len().to_string());
    for _ in 0..3 {
        assert_eq!(post(&c, &lb.url("/big"), env.clone(), ct).await.1, backend, "and its session holds");
    }
    // Not XML, not SOAP, cut short: the backend answers, nothing breaks.
    for (body, ct) in [
        ("{\"json\": 1}".to_string(), "application/json"),
        ("<not-soap/>".to_string(), "text/xml"),
        (env[..env.len() / 2].to_string(), "text/xml"),
        ("<soap:Envelope xmlns:soap=\"".to_string(), "text/xml"),
    ] {
        let (status, _, text) = post(&c, &lb.url("/other"), body.clone(), ct).await;
        assert_eq!(status, 200, "{ct}: {text}");
        assert_eq!(attr(&text, "sha"), sha256_hex(body.as_bytes()));
    }
    // A Header that ends beyond soap_max_bytes: served, without a session.
    let late = format!(
        r#"<w:Pad xmlns:w="urn:pad">{}</w:Pad><syn:ClientID xmlns:syn="{SYNAPSE}">late-{}</syn:ClientID>"#,
        "p".repeat(8192),
        std::process::id()
    );
    let (env, ct) = envelope(false, "soap", &late, "<m:x xmlns:m=\"urn:app\"/>");
    let (status, _, _) = post(&c, &lb.url("/late"), env, ct).await;
    assert_eq!(status, 200);
    assert_eq!(lb.session(&format!("late-{}", std::process::id())).await, None, "no pin for a key beyond the limit");
}
