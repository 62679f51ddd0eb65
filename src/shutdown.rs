//! Shutdown: one small type every long-lived task takes, so that nothing imports the server
//! just to learn that the process is stopping (mini-redis `src/shutdown.rs` is the model).
//!
//! [`Shutdown::new`] gives the [`Trigger`] (kept by whoever decides to stop: the signal
//! handler, a test) and the first [`Shutdown`] listener; listeners are cloned into every task.
//! It owns nothing else and must not import any other module of the crate.

use tokio::sync::watch;

/// Tells every [`Shutdown`] listener that the process is stopping. Dropping it stops them too,
/// so that no task outlives its owner.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    /// Start the shutdown (idempotent).
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Another listener of this trigger.
    pub fn listener(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

/// A listener: resolves [`wait`](Shutdown::wait) once the trigger fired (or was dropped).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A trigger and its first listener.
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    /// Whether the shutdown has started.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once the shutdown has started (at once if it already has).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_hears_the_trigger_once_fired() {
        let (trigger, mut first) = Shutdown::new();
        let mut second = trigger.listener();
        let mut third = first.clone();
        assert!(!first.is_stopping());
        trigger.stop();
        first.wait().await;
        second.wait().await;
        third.wait().await;
        assert!(third.is_stopping());
    }

    #[tokio::test]
    async fn a_dropped_trigger_stops_its_listeners() {
        let (trigger, mut listener) = Shutdown::new();
        drop(trigger);
        listener.wait().await;
        assert!(listener.is_stopping());
    }
}
