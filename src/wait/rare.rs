//! [`Rare`]: a future polled only after it woke its task — for the signals a busy
//! task selects on beside its work (the shutdown, a connection's eviction).
//!
//! `tokio::select!` polls every branch at each wake-up of the task. A client connection's task
//! wakes a few times per request (the client's bytes, the backend's answer), and each poll of a
//! waiting `Notify`/`watch` locks its waiter list: ~500 instructions per request for two signals
//! that fire once in a connection's life, if ever. Wrapped in [`Rare`], a signal is polled on
//! the first poll and then only after its own waker fired; the other polls cost an
//! [`AtomicWaker`] registration. It owns nothing else and imports nothing of the crate.

use atomic_waker::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// `inner`, polled only when it asked to be (see the module doc).
pub struct Rare<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker `inner` is polled with: it raises `flag` and wakes the task.
    waker: Waker,
}

/// Whether the inner future woke since it was last polled, and the task to wake when it does.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Rare<F> {
    pub fn new(inner: F) -> Rare<F> {
        // Woken at first, so that the first poll polls `inner` (which registers its waker).
        let flag = Arc::new(Flag { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        Rare { inner: Box::pin(inner), waker: Waker::from(flag.clone()), flag }
    }
}

impl<F: Future> Future for Rare<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the flag is read: a wake-up between the two is not lost.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.inner.as_mut().poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::Rare;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    /// Counts its polls; ready once `ready` is set, and wakes whoever polled it last then.
    struct Counted {
        polls: Arc<AtomicUsize>,
        ready: Arc<std::sync::Mutex<(bool, Option<Waker>)>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            let mut r = self.ready.lock().unwrap();
            if r.0 {
                return Poll::Ready(());
            }
            r.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn a_signal_that_did_not_wake_is_not_polled_again_and_one_that_woke_is() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(std::sync::Mutex::new((false, None::<Waker>)));
        let mut rare = pin!(Rare::new(Counted { polls: polls.clone(), ready: ready.clone() }));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(rare.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll reaches the signal");
        for _ in 0..10 {
            assert!(rare.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "wake-ups of the task for other work skip it");
        let waker = {
            let mut r = ready.lock().unwrap();
            r.0 = true;
            r.1.take().expect("the signal registered a waker")
        };
        waker.wake();
        assert!(rare.as_mut().poll(&mut cx).is_ready(), "after its own wake-up it is polled");
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_task_wakes_when_the_signal_fires() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let rare = Rare::new({
            let notify = notify.clone();
            async move { notify.notified().await }
        });
        let waiter = tokio::spawn(rare);
        tokio::task::yield_now().await;
        notify.notify_waiters();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken").expect("joined");
    }
}
