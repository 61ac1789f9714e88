//! The run's event log: `(simulated ms, event)` lines, hashed for determinism checks.

use std::cell::RefCell;
use std::rc::Rc;

/// A shared, append-only event log.
#[derive(Clone, Default)]
pub struct Trace {
    lines: Rc<RefCell<Vec<String>>>,
}

impl Trace {
    /// Records one event at simulated time `at_ms`.
    pub fn event(&self, at_ms: u128, event: impl AsRef<str>) {
        self.lines
            .borrow_mut()
            .push(format!("{at_ms:>8} {}", event.as_ref()));
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.borrow().clone()
    }

    /// FNV-1a over every line.
    pub fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for line in self.lines.borrow().iter() {
            for b in line.bytes().chain(std::iter::once(b'\n')) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
}
