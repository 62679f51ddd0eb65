//! Time: short duration helpers and [`Deadline`], which bounds every wait in these tests.

use std::time::{Duration, Instant};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub async fn sleep_ms(n: u64) {
    tokio::time::sleep(ms(n)).await
}

/// A point in time after which a bounded loop gives up.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Self {
        Deadline(Instant::now() + d)
    }
    pub fn expired(&self) -> bool {
        Instant::now() >= self.0
    }
}
