//! The upstream choice on virtual time: events in, effects out, no sleeping.

use super::*;

const Q: Duration = Duration::from_secs(60);

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

#[test]
fn the_first_upstream_that_answers_is_used() {
    let t0 = Instant::now();
    let mut u = Upstreams::new(3, Q);
    assert_eq!(u.start(t0), [Effect::Connect(0)]);
    assert!(u.connecting());
    assert_eq!(u.connect_failed(0, t0), [Effect::Connect(1)]);
    assert_eq!(u.connected(1), Use::Replace);
    assert_eq!(u.active(), Some(1));
    assert!(!u.connecting());
}

#[test]
fn when_every_upstream_fails_all_are_tried_again_after_a_pause() {
    let t0 = Instant::now();
    let mut u = Upstreams::new(2, Q);
    u.start(t0);
    assert_eq!(u.connect_failed(0, t0), [Effect::Connect(1)]);
    assert_eq!(u.connect_failed(1, t0), [Effect::RetryAfter(RETRY_AFTER)]);
    assert!(!u.connecting());
    assert_eq!(u.retry(at(t0, 1)), [Effect::Connect(0)]);
    // A retry while something is under way does nothing.
    assert_eq!(u.retry(at(t0, 1)), []);
}

#[test]
fn a_lost_link_moves_on_to_the_next_upstream_wrapping_around() {
    let t0 = Instant::now();
    let mut u = Upstreams::new(3, Q);
    u.start(t0);
    u.connected(0);
    assert_eq!(u.link_down(1, t0), [], "not the link in use");
    assert_eq!(u.link_down(0, t0), [Effect::DropLink, Effect::Connect(1)]);
    assert_eq!(u.active(), None);
    u.connected(2);
    assert_eq!(u.link_down(2, t0), [Effect::DropLink, Effect::Connect(0)], "wraps around");
}

#[test]
fn fail_over_on_refused_content_then_fail_back_once_the_quarantine_ends() {
    let t0 = Instant::now();
    let mut u = Upstreams::new(2, Q);
    u.start(t0);
    u.connected(0);
    // A transient failure changes nothing.
    assert_eq!(u.sync_failed(0, false, t0), []);
    assert_eq!(u.active(), Some(0));
    // Refused content: leave it at once for the next.
    assert_eq!(u.sync_failed(0, true, at(t0, 5)), [Effect::DropLink, Effect::Connect(1)]);
    assert_eq!(u.connected(1), Use::Replace);
    assert!(!u.usable(0, at(t0, 64)) && u.usable(0, at(t0, 65)));
    // No fail-back while it is quarantined.
    for s in [6, 30, 64] {
        assert_eq!(u.tick(at(t0, s)), [], "at {s} s");
    }
    // Then the preferred upstream is tried again, and replaces the link when it answers.
    assert_eq!(u.tick(at(t0, 65)), [Effect::Connect(0)]);
    assert_eq!(u.tick(at(t0, 66)), [], "one attempt at a time");
    assert_eq!(u.connected(0), Use::Replace);
    assert_eq!(u.active(), Some(0));
}

#[test]
fn a_fail_back_attempt_that_fails_keeps_the_link_and_is_tried_at_the_next_tick() {
    let t0 = Instant::now();
    let mut u = Upstreams::new(2, Q);
    u.start(t0);
    u.connect_failed(0, t0);
    u.connected(1);
    assert_eq!(u.tick(at(t0, 1)), [Effect::Connect(0)]);
    assert_eq!(u.connect_failed(0, at(t0, 1)), [], "the link to 1 stays");
    assert_eq!(u.active(), Some(1));
    assert_eq!(u.tick(at(t0, 2)), [Effect::Connect(0)]);
}

#[test]
fn a_connection_to_a_less_preferred_upstream_than_the_one_in_use_is_closed() {
    let t0 = Instant::now();
    let mut u = Upstreams::new(3, Q);
    u.start(t0);
    u.connected(1);
    assert_eq!(u.connected(2), Use::Close);
    assert_eq!(u.connected(1), Use::Close, "the same one again");
    assert_eq!(u.active(), Some(1));
}

#[test]
fn with_one_upstream_a_refusal_keeps_the_link_and_no_upstream_means_nothing_to_do() {
    let t0 = Instant::now();
    let mut u = Upstreams::new(1, Q);
    u.start(t0);
    u.connected(0);
    assert_eq!(u.sync_failed(0, true, t0), [], "nowhere else to go");
    assert_eq!(u.active(), Some(0));
    let mut none = Upstreams::new(0, Q);
    assert_eq!(none.start(t0), []);
    assert_eq!(none.tick(t0), []);
    assert_eq!(none.retry(t0), []);
}

#[test]
fn a_quarantined_upstream_is_skipped_when_moving_on() {
    let t0 = Instant::now();
    let mut u = Upstreams::new(3, Q);
    u.start(t0);
    u.connected(0);
    // 1 is quarantined (it served refused content earlier, while it was in use).
    u.connect_failed(0, t0);
    u.sync_failed(1, true, t0);
    assert_eq!(u.link_down(0, at(t0, 1)), [Effect::DropLink, Effect::Connect(2)], "1 is skipped");
    u.connected(2);
    // With everything quarantined, the next one is used all the same.
    u.sync_failed(0, true, at(t0, 2));
    assert_eq!(u.sync_failed(2, true, at(t0, 2)), [Effect::DropLink, Effect::Connect(0)]);
}
