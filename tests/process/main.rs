//! Tests that read what the whole process holds: its memory (the backlog and hostile-peer
//! tests) and its threads (state_changes). They are alone in their process, so no other
//! test's allocations or threads count, and they take turns (`turn`).

#[path = "../common/mod.rs"]
mod common;

mod backlog;
mod hostile;
mod state_changes;

use std::sync::{Mutex, MutexGuard};

/// One test at a time; a failed test does not stop the next.
pub fn turn() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::init();
    turn
}

/// A field of /proc/self/status, in bytes.
pub fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    kb * 1024
}
