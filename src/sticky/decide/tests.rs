use super::*;
use crate::config::parse;

fn pool() -> Pool {
    let text =
        "[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n\
                [passive]\nconsecutive_failures = 1\nejection_time = \"1h\"\n";
    Pool::new(&parse(text, "t").unwrap(), None)
}

fn table(name: &str) -> Option<Found<'_>> {
    Some(Found { backend: name, source: Source::Table })
}

fn cookie(name: &str) -> Option<Found<'_>> {
    Some(Found { backend: name, source: Source::Cookie })
}

const MOVE: OnBackendDown = OnBackendDown::Reassign;
const REJECT: OnBackendDown = OnBackendDown::Reject;

fn down(p: &Pool, name: &str) {
    let b = p.get(name).unwrap();
    let check = b.check.clone();
    for _ in 0..check.unhealthy_threshold.get() {
        b.health.probe_result(name, &check, false);
    }
    assert!(!b.is_healthy());
}

#[test]
fn pinned_and_healthy_stays() {
    let p = pool();
    assert!(matches!(decide(table("a"), &p, MOVE), Decision::Pinned(b) if &*b.name == "a"));
}

#[test]
fn no_pin_is_a_new_session() {
    assert!(matches!(decide(None, &pool(), MOVE), Decision::New));
}

#[test]
fn pinned_and_draining_stays() {
    let p = pool();
    p.get("a").unwrap().set_state(AdminState::Drain);
    assert!(matches!(decide(table("a"), &p, MOVE), Decision::Pinned(_)));
}

#[test]
fn pinned_and_maint_moves_with_reason_maint() {
    let p = pool();
    p.get("a").unwrap().set_state(AdminState::Maint);
    assert!(matches!(decide(table("a"), &p, MOVE), Decision::Move { from, reason: Reassign::Maint } if &*from == "a"));
}

#[test]
fn pinned_and_down_reassigns() {
    let p = pool();
    down(&p, "a");
    assert!(matches!(decide(table("a"), &p, MOVE), Decision::Move { reason: Reassign::Down, .. }));
}

#[test]
fn pinned_and_down_rejects_when_configured() {
    let p = pool();
    down(&p, "a");
    assert!(matches!(decide(table("a"), &p, REJECT), Decision::Reject { from } if &*from == "a"));
}

#[test]
fn pinned_and_ejected_moves_with_reason_ejected() {
    let p = pool();
    let a = p.get("a").unwrap();
    let passive = crate::config::parse(
        "[[backend]]\nname = \"x\"\naddress = \"127.0.0.1:1\"\n[passive]\nconsecutive_failures = 1\n",
        "t",
    )
    .unwrap()
    .passive;
    a.health.record_failure("a", &passive);
    assert!(matches!(decide(table("a"), &p, MOVE), Decision::Move { reason: Reassign::Ejected, .. }));
}

#[test]
fn pinned_to_a_removed_backend_moves_with_reason_removed() {
    let p = pool();
    assert!(
        matches!(decide(table("gone"), &p, MOVE), Decision::Move { from, reason: Reassign::Removed } if &*from == "gone")
    );
}

#[test]
fn cookie_route_only_goes_to_the_named_backend() {
    let p = pool();
    assert!(matches!(decide(cookie("b"), &p, MOVE), Decision::Pinned(b) if &*b.name == "b"));
}

#[test]
fn cookie_route_to_a_down_backend_moves_the_session() {
    let p = pool();
    down(&p, "b");
    assert!(matches!(decide(cookie("b"), &p, MOVE), Decision::Move { from, reason: Reassign::Down } if &*from == "b"));
}

#[test]
fn cookie_route_too_old_is_not_fresh() {
    let day = 86_400_000;
    assert!(cookie_route_fresh(1_000, 1_000 + day - 1, day));
    assert!(!cookie_route_fresh(1_000, 1_000 + day, day));
    assert!(cookie_route_fresh(1_000 + 30_000, 1_000, day), "a little clock skew between instances");
    assert!(!cookie_route_fresh(1_000 + 3_600_000, 1_000, day), "not from the far future");
}

fn attempt() -> Attempt {
    Attempt { safe: true, replayable: true, resent: false, moves: 0, retries: 2, pinned: true, on_down: MOVE }
}

#[test]
fn refused_connection_moves_the_session() {
    assert_eq!(after_failure(Failure::Refused, attempt()), Next::Move);
    let new_session = Attempt { pinned: false, safe: false, ..attempt() };
    assert_eq!(after_failure(Failure::Refused, new_session), Next::Move, "any method: nothing was sent");
}

#[test]
fn refused_connection_rejects_a_pinned_session_when_configured() {
    assert_eq!(after_failure(Failure::Refused, Attempt { on_down: REJECT, ..attempt() }), Next::Reject);
    let new_session = Attempt { on_down: REJECT, pinned: false, ..attempt() };
    assert_eq!(after_failure(Failure::Refused, new_session), Next::Move);
}

#[test]
fn refused_connection_gives_up_after_the_retries() {
    assert_eq!(after_failure(Failure::Refused, Attempt { moves: 2, ..attempt() }), Next::GiveUp);
    assert_eq!(after_failure(Failure::Refused, Attempt { replayable: false, ..attempt() }), Next::GiveUp);
}

#[test]
fn after_send_failure_of_a_safe_request_retries_once_on_the_same_backend() {
    let sent = Failure::AfterConnect { sent: true };
    assert_eq!(after_failure(sent, attempt()), Next::SameBackend);
    assert_eq!(after_failure(sent, Attempt { resent: true, ..attempt() }), Next::GiveUp, "at most twice");
}

#[test]
fn after_send_failure_of_a_post_is_never_retried_nor_moved() {
    let sent = Failure::AfterConnect { sent: true };
    assert_eq!(after_failure(sent, Attempt { safe: false, ..attempt() }), Next::GiveUp);
    assert_eq!(after_failure(sent, Attempt { safe: false, pinned: false, ..attempt() }), Next::GiveUp);
}

#[test]
fn closed_before_the_request_was_written_retries_any_method_on_the_same_backend() {
    let unsent = Failure::AfterConnect { sent: false };
    assert_eq!(after_failure(unsent, Attempt { safe: false, ..attempt() }), Next::SameBackend);
    assert_eq!(after_failure(unsent, Attempt { safe: false, replayable: false, ..attempt() }), Next::GiveUp);
}

#[test]
fn timeout_gives_up() {
    assert_eq!(after_failure(Failure::Timeout, attempt()), Next::GiveUp);
}

fn routed_pool() -> Pool {
    let text = "[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nroute = \"node1\"\n\
                [[backend]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\nroute = \"node2\"\n";
    Pool::new(&parse(text, "t").unwrap(), None)
}

#[test]
fn servlet_route_suffix_names_the_backend_with_that_route() {
    let p = routed_pool();
    assert_eq!(servlet_route("6A3F9C.node2", &p).map(|b| &*b.name), Some("b"));
    assert_eq!(servlet_route("a.b.node1", &p).map(|b| &*b.name), Some("a"), "the text after the last dot");
    assert!(servlet_route("6A3F9C.node9", &p).is_none(), "unknown route");
    assert!(servlet_route("6A3F9C", &p).is_none() && servlet_route("6A3F9C.", &p).is_none());
}

#[test]
fn preferred_affinity_leaves_a_backend_over_the_bound_or_full() {
    let p = pool();
    let a = p.get("a").unwrap();
    assert!(!overloaded(a, p.bound()), "idle");
    let _held: Vec<_> = (0..4).map(|_| a.start_request()).collect();
    assert!(overloaded(a, p.bound()), "4 in flight, the other idle: over 1.25 x the mean");
    let b = p.get("b").unwrap();
    assert!(!overloaded(b, p.bound()));
}
