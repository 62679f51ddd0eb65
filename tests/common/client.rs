//! The client role: [`plain_client`] (no cookies), [`User`] (a cookie-keeping client, one per
//! simulated browser), [`Reply`] (a finished response) and cookie text helpers.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::cookie::CookieStore;
use serde_json::Value;

use super::time::secs;

/// A client without a cookie store (and without proxies from the environment).
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(secs(15)).build().expect("reqwest client")
}

/// One simulated browser: a client with its own cookie jar.
pub struct User {
    pub client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
}

impl Default for User {
    fn default() -> Self {
        Self::new()
    }
}

impl User {
    pub fn new() -> User {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(secs(15))
            .cookie_provider(jar.clone())
            .build()
            .expect("reqwest client");
        User { client, jar }
    }

    pub async fn get(&self, url: &str) -> Reply {
        get(&self.client, url).await
    }

    pub async fn try_get(&self, url: &str) -> Result<Reply, String> {
        try_get(&self.client, url).await
    }

    /// The value of cookie `name` this user would send to `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let u: reqwest::Url = url.parse().expect("url");
        let header = self.jar.cookies(&u)?;
        parse_cookie_header(header.to_str().ok()?).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Puts a cookie into the jar as if `url` had set it (`"a=1"`).
    pub fn add_cookie(&self, url: &str, cookie: &str) {
        let u: reqwest::Url = url.parse().expect("url");
        self.jar.add_cookie_str(cookie, &u);
    }
}

/// `"a=1; b=2"` -> `[("a","1"), ("b","2")]`.
pub fn parse_cookie_header(h: &str) -> Vec<(String, String)> {
    h.split(';')
        .filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `NAME=VALUE; attrs` -> VALUE.
pub fn cookie_value(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap_or("");
    first.split_once('=').map(|(_, v)| v.trim()).unwrap_or("").to_string()
}

/// Attributes of a Set-Cookie header: lower-cased name -> value (`None` for flags).
pub fn cookie_attrs(set_cookie: &str) -> BTreeMap<String, Option<String>> {
    set_cookie
        .split(';')
        .skip(1)
        .filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            Some(match p.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                None => (p.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

/// A finished response, body read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Result<Reply, String> {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| format!("reading body: {e}"))?;
        Ok(Reply { status, headers, body })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Which backend answered (the echo's `backend`), if it was one.
    pub fn backend(&self) -> Option<String> {
        self.json()["backend"].as_str().map(str::to_string)
    }

    /// A request header as the backend saw it (from the echo).
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name.to_ascii_lowercase()].as_str().map(str::to_string)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// All raw Set-Cookie headers.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    }

    /// The raw Set-Cookie header that sets `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|sc| sc.split_once('=').map(|(n, _)| n.trim() == name).unwrap_or(false))
    }

    /// One line for assertion messages.
    pub fn describe(&self) -> String {
        let t = self.text();
        let t: String = t.chars().take(160).collect();
        format!("{} {:?}", self.status, t)
    }
}

/// GET with a client; panics (with the URL) on a transport error.
pub async fn get(client: &reqwest::Client, url: &str) -> Reply {
    try_get(client, url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET with a client; transport errors as `Err(text)`.
pub async fn try_get(client: &reqwest::Client, url: &str) -> Result<Reply, String> {
    let resp = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    Reply::read(resp).await
}

/// GET with extra request headers; panics on a transport error.
pub async fn get_with(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut rb = client.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    Reply::read(resp).await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET `path` as `user` through `lb`: the backend that answered (asserting a 200).
pub async fn served_by(user: &User, lb: &super::Balancer, path: &str) -> String {
    let r = user.get(&lb.url(path)).await;
    assert_eq!(r.status, 200, "{path} through port {}: {}", lb.port, r.describe());
    r.backend().unwrap_or_else(|| panic!("no backend in {}", r.describe()))
}
