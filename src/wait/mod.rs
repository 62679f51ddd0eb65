//! Cheap waiting on the request path: [`rare::Rare`] polls a signal a busy task selects on
//! (the shutdown, an eviction) only after that signal woke it; [`sleeps::Sleeps`] keeps a
//! connection's timers registered between requests instead of a new timer per request.
//!
//! It owns those two mechanisms and nothing else; it imports nothing of the crate.

pub mod rare;
pub mod sleeps;

pub use rare::Rare;
pub use sleeps::{ConnTimer, Sleeps};
