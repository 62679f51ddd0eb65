//! A connection's timers, kept registered between requests.
//!
//! Each request had two timers: hyper's header-read timer (armed while it waits for a head)
//! and the request deadline around the attempt. Each was a new `tokio::time::Sleep`, put into
//! the runtime's timer wheel on its first poll and taken out when dropped: ~1,200
//! instructions per request. A [`Sleeps`] per connection keeps a finished sleep instead; the
//! next one resets it. Moving a registered sleep to a later deadline (the usual case: the
//! next request's deadline is later than the last one's) only stores the new deadline — the
//! wheel moves the entry when its old time comes. A kept sleep that fires unused wakes its
//! connection once, for nothing. The server's own HTTP/1.1 path (`server::h1`) keeps its head
//! timer in its loop instead (no lock per request); its request deadlines come from here.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Sleeps kept for reuse: as many as ran at once on the connection (HTTP/2 streams), at most
/// this many.
const KEPT: usize = 8;

/// One connection's spare sleeps.
#[derive(Default)]
pub struct Sleeps {
    spare: Mutex<Vec<Pin<Box<Sleep>>>>,
}

impl Sleeps {
    pub fn new() -> Arc<Sleeps> {
        Arc::default()
    }

    /// A sleep until `deadline` (a spare one reset, else a new one); it comes back on drop.
    ///
    /// Only a spare whose deadline is not later is taken (the latest such): moving a deadline
    /// on is cheap, moving it back takes the sleep out of the wheel and puts it in again. So
    /// the header timer and the longer request deadline each keep a sleep of their own
    /// instead of swapping one back and forth.
    pub fn until(self: &Arc<Self>, deadline: Instant) -> Reused {
        let deadline_at = tokio::time::Instant::from_std(deadline);
        let spare = {
            let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            let closest = (spare.iter().enumerate())
                .filter(|(_, s)| s.deadline() <= deadline_at)
                .max_by_key(|(_, s)| s.deadline())
                .map(|(i, _)| i);
            closest.map(|i| spare.swap_remove(i))
        };
        let sleep = match spare {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline_at);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline_at)),
        };
        Reused { sleep: Some(sleep), home: self.clone() }
    }

    /// Spare sleeps kept now.
    pub fn spare(&self) -> usize {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A sleep of a connection's [`Sleeps`], given back when dropped.
pub struct Reused {
    sleep: Option<Pin<Box<Sleep>>>,
    home: Arc<Sleeps>,
}

impl Reused {
    #[cfg(test)]
    fn deadline(&self) -> Option<Instant> {
        self.sleep.as_ref().map(|s| s.deadline().into_std())
    }

    fn reset(&mut self, deadline: Instant) {
        if let Some(sleep) = &mut self.sleep {
            sleep.as_mut().reset(deadline.into());
        }
    }
}

impl Future for Reused {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Reused {
    fn drop(&mut self) {
        if let Some(sleep) = self.sleep.take() {
            let mut spare = self.home.spare.lock().unwrap_or_else(|e| e.into_inner());
            if spare.len() < KEPT {
                spare.push(sleep);
            }
        }
    }
}

impl hyper::rt::Sleep for Reused {}

/// hyper's timer for one connection (its header-read timeout), on the connection's [`Sleeps`].
#[derive(Clone)]
pub struct ConnTimer(pub Arc<Sleeps>);

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.0.until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.0.until(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Reused>() {
            Some(reused) => reused.get_mut().reset(deadline),
            None => *sleep = self.sleep_until(deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ConnTimer, Sleeps};
    use hyper::rt::Timer;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::{Duration, Instant};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A sleep of `sleeps` ending `after` from now, registered (polled once) and given back.
    async fn keep_one(sleeps: &Arc<Sleeps>, after: Duration) {
        let mut sleep = sleeps.until(Instant::now() + after);
        assert!(poll_once(&mut sleep).await.is_pending());
    }

    /// Sleep on `sleeps` for `span`: it must not end before.
    async fn sleep_full(sleeps: &Arc<Sleeps>, span: Duration) {
        let started = Instant::now();
        sleeps.until(started + span).await;
        assert!(started.elapsed() >= span, "ended after {:?} of {span:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_reused_sleep_waits_for_its_new_deadline_not_the_old_one() {
        let sleeps = Sleeps::new();
        keep_one(&sleeps, ms(30)).await;
        assert_eq!(sleeps.spare(), 1);
        // Reused for a later deadline: it must not end at the old one.
        sleep_full(&sleeps, ms(150)).await;
        // Reused for an earlier one than it holds: it ends then, not at the later one.
        let started = Instant::now();
        tokio::time::timeout(ms(2000), sleeps.until(started + ms(20))).await.expect("ended early enough");
    }

    #[tokio::test]
    async fn a_spare_is_taken_only_for_a_deadline_not_earlier_than_its_own_the_closest_one() {
        let sleeps = Sleeps::new();
        let now = Instant::now();
        drop(sleeps.until(now + ms(60_000))); // a request deadline, given back
        let header = sleeps.until(now + ms(30_000));
        assert_eq!(sleeps.spare(), 1, "an earlier deadline gets a sleep of its own");
        drop(header);
        // The next request's deadline takes the request's sleep, not the header's...
        let request = sleeps.until(now + ms(60_001));
        assert_eq!(request.deadline(), Some(now + ms(60_001)));
        // ...which is left for the next header timer: no third sleep is made.
        let header = sleeps.until(now + ms(30_001));
        assert_eq!(sleeps.spare(), 0, "the header timer found no spare of its own");
        drop((header, request));
        assert_eq!(sleeps.spare(), 2);
    }

    #[tokio::test]
    async fn a_sleep_that_fired_unused_still_serves_the_next_deadline() {
        let sleeps = Sleeps::new();
        keep_one(&sleeps, ms(10)).await;
        tokio::time::sleep(ms(50)).await; // it fires while kept
        sleep_full(&sleeps, ms(80)).await;
    }

    #[tokio::test]
    async fn sleeps_running_at_once_are_separate_and_all_come_back() {
        let sleeps = Sleeps::new();
        let timer = ConnTimer(sleeps.clone());
        let started = Instant::now();
        let (a, b) = (timer.sleep(ms(20)), timer.sleep_until(started + ms(60)));
        a.await;
        assert!(started.elapsed() < ms(60), "the shorter one ended first");
        b.await;
        assert!(started.elapsed() >= ms(60));
        assert_eq!(sleeps.spare(), 2);
    }

    #[tokio::test]
    async fn hypers_reset_moves_the_deadline_of_the_same_sleep() {
        let sleeps = Sleeps::new();
        let timer = ConnTimer(sleeps.clone());
        let started = Instant::now();
        let mut sleep = timer.sleep_until(started + ms(10));
        timer.reset(&mut sleep, started + ms(100));
        sleep.await;
        assert!(started.elapsed() >= ms(100), "ended after {:?}", started.elapsed());
        assert_eq!(sleeps.spare(), 1, "no second sleep was made");
    }

    /// Poll a future once (to register its timer).
    async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
    }
}
