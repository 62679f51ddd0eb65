//! The router over the memory store, without sockets.

use super::decide::Failure;
use super::*;
use crate::config::parse;
use crate::session::Verified;
use crate::store::AffinityStore;
use http::header::SET_COOKIE;

struct World {
    snap: Snapshot,
    store: Store,
    metrics: Metrics,
}

fn world(extra: &str) -> World {
    let mut text = format!("[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n{extra}\n");
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        text.push_str(&format!("[[backend]]\nname = \"{name}\"\naddress = \"127.0.0.1:{}\"\n", 9001 + i));
    }
    let config = parse(&text, "t").unwrap();
    let metrics = Metrics::default();
    let store = Store::from_config(&config, std::sync::Arc::new(Metrics::default()));
    World { snap: Snapshot::new(config, None), store, metrics }
}

impl World {
    fn router(&self) -> Router<'_> {
        Router { snap: &self.snap, store: &self.store, metrics: &self.metrics }
    }

    /// The session a Set-Cookie value carries, as the next request would extract it.
    fn verify(&self, set_cookie: &HeaderValue) -> Verified {
        let text = set_cookie.to_str().unwrap();
        let value = text.split(';').next().unwrap().split_once('=').unwrap().1;
        self.snap.session.codec.as_ref().unwrap().verify(value).unwrap()
    }

    async fn pinned(&self, key: &str) -> Option<String> {
        self.store.get(key).await.map(|b| b.to_string())
    }
}

fn carrying(v: Verified) -> Extracted {
    Extracted { key: Some(v.id), route: v.route, ..Extracted::default() }
}

fn safe() -> RequestFacts {
    RequestFacts { safe: true, replayable: true }
}

#[tokio::test]
async fn new_insert_session_is_pinned_and_its_cookie_names_the_backend() {
    let w = world("");
    let plan = w.router().plan(Extracted::default()).await.unwrap();
    let cookie = w.router().learn(&plan, &HeaderMap::new()).await.expect("a new session gets a cookie");
    let v = w.verify(&cookie);
    assert_eq!(*v.route.as_ref().unwrap().backend, *plan.backend.name);
    assert_eq!(w.store.get(&v.id).await.unwrap(), plan.backend.name);
}

#[tokio::test]
async fn pinned_session_with_its_cookie_gets_no_new_cookie() {
    let w = world("");
    let first = w.router().plan(Extracted::default()).await.unwrap();
    let v = w.verify(&w.router().learn(&first, &HeaderMap::new()).await.unwrap());
    let again = w.router().plan(carrying(v)).await.unwrap();
    assert_eq!(again.backend.name, first.backend.name);
    assert!(w.router().learn(&again, &HeaderMap::new()).await.is_none());
}

#[tokio::test]
async fn cookie_route_restores_a_lost_pin() {
    let w = world("");
    let first = w.router().plan(Extracted::default()).await.unwrap();
    let v = w.verify(&w.router().learn(&first, &HeaderMap::new()).await.unwrap());
    w.store.unpin(&v.id).await;
    for _ in 0..5 {
        let plan = w.router().plan(carrying(v.clone())).await.unwrap();
        assert_eq!(plan.backend.name, first.backend.name, "the cookie's backend, not a balanced one");
        assert!(plan.previous.is_none());
    }
    assert_eq!(w.store.get(&v.id).await.unwrap(), first.backend.name, "pin restored");
}

#[tokio::test]
async fn table_pin_wins_over_the_cookie_and_a_new_cookie_follows() {
    let w = world("");
    let first = w.router().plan(Extracted::default()).await.unwrap();
    let v = w.verify(&w.router().learn(&first, &HeaderMap::new()).await.unwrap());
    let other = w.snap.pool.backends().iter().find(|b| b.name != first.backend.name).unwrap().clone();
    w.store.pin(&v.id, &other.name).await;
    let plan = w.router().plan(carrying(v)).await.unwrap();
    assert_eq!(plan.backend.name, other.name);
    let cookie = w.router().learn(&plan, &HeaderMap::new()).await.expect("the cookie named another backend");
    assert_eq!(*w.verify(&cookie).route.unwrap().backend, *other.name);
}

#[tokio::test]
async fn moved_session_names_its_previous_backend_and_its_new_cookie_routes_alone() {
    let w = world("");
    let first = w.router().plan(Extracted::default()).await.unwrap();
    let v = w.verify(&w.router().learn(&first, &HeaderMap::new()).await.unwrap());
    first.backend.set_state(crate::config::AdminState::Maint);
    let moved = w.router().plan(carrying(v.clone())).await.unwrap();
    assert_ne!(moved.backend.name, first.backend.name);
    assert_eq!(moved.previous.as_deref(), Some(&*first.backend.name));
    assert_eq!(w.metrics.reassignments(Reassign::Maint), 1);
    let cookie = w.router().learn(&moved, &HeaderMap::new()).await.expect("a moved session gets a new cookie");
    let v2 = w.verify(&cookie);
    assert_eq!(v2.id, v.id, "same session");
    assert_eq!(v2.route.as_ref().unwrap().created_ms, v.route.as_ref().unwrap().created_ms, "same creation time");
    w.store.unpin(&v.id).await;
    let alone = w.router().plan(carrying(v2)).await.unwrap();
    assert_eq!(alone.backend.name, moved.backend.name, "the new cookie alone routes to the new backend");
}

#[tokio::test]
async fn learn_mode_pins_only_ids_a_backend_issued() {
    let w = world("mode = \"learn\"\ncookie = \"JSESSIONID\"");
    let invented = Extracted { key: Some("made-up".into()), ..Extracted::default() };
    let plan = w.router().plan(invented).await.unwrap();
    assert!(w.store.get("made-up").await.is_none(), "an invented id creates no pin");
    let mut issued = HeaderMap::new();
    issued.insert(SET_COOKIE, HeaderValue::from_static("JSESSIONID=real; Path=/"));
    assert!(w.router().learn(&plan, &issued).await.is_none(), "learn mode sends no cookie of ours");
    assert_eq!(w.pinned("real").await.as_deref(), Some(&*plan.backend.name));
}

#[tokio::test]
async fn failure_after_send_keeps_the_backend_and_gives_up_after_one_resend() {
    let w = world("");
    let plan = w.router().plan(Extracted::default()).await.unwrap();
    let backend = plan.backend.name.clone();
    let failure = Failure::AfterConnect { sent: true };
    let again = w.router().replan(plan, failure, safe()).await.expect("a safe request is sent once more");
    assert_eq!(again.backend.name, backend);
    assert!(again.previous.is_none());
    let answer = w.router().replan(again, failure, safe()).await.unwrap_err();
    assert_eq!(answer, Answer::BadGateway);
    assert_eq!(w.metrics.reassignments(Reassign::ConnectFailed), 0, "nothing moved");
}

#[tokio::test]
async fn failure_after_send_of_a_post_is_answered_at_once() {
    let w = world("");
    let plan = w.router().plan(Extracted::default()).await.unwrap();
    let post = RequestFacts { safe: false, replayable: true };
    let answer = w.router().replan(plan, Failure::AfterConnect { sent: true }, post).await.unwrap_err();
    assert_eq!(answer, Answer::BadGateway);
}

#[tokio::test]
async fn refused_connection_moves_the_pin_with_reason_connect_failed() {
    let w = world("");
    let plan = w.router().plan(Extracted::default()).await.unwrap();
    let (key, from) = (plan.key.clone().unwrap(), plan.backend.name.clone());
    let moved = w.router().replan(plan, Failure::Refused, safe()).await.unwrap();
    assert_ne!(moved.backend.name, from);
    assert_eq!(moved.previous.as_deref(), Some(&*from));
    assert_eq!(w.pinned(&key).await.as_deref(), Some(&*moved.backend.name));
    assert_eq!(w.metrics.reassignments(Reassign::ConnectFailed), 1);
}

#[tokio::test]
async fn a_refusal_of_a_pinned_session_with_reject_is_503() {
    let w = world("on_backend_down = \"reject\"");
    let first = w.router().plan(Extracted::default()).await.unwrap();
    let v = w.verify(&w.router().learn(&first, &HeaderMap::new()).await.unwrap());
    let pinned = w.router().plan(carrying(v)).await.unwrap();
    let answer = w.router().replan(pinned, Failure::Refused, safe()).await.unwrap_err();
    assert_eq!(answer, Answer::NoBackend);
}
