//! The hand-over between a streaming thread and its networking thread: one mutex-protected
//! state and a condvar. Waits on the streaming side end on `flushing` (unlock) or `shutdown`;
//! the mutex is never held across a wait that the network decides.

use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// Why a wait on the network ended without its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// `unlock()`: the element is flushing or changing state.
    Flushing,
    /// The networking side failed; the message says why.
    Failed(String),
}

/// Shared state `S` plus the flags every link has.
pub struct Link<S> {
    state: Mutex<Shared<S>>,
    cond: Condvar,
}

pub struct Shared<S> {
    pub flushing: bool,
    pub shutdown: bool,
    pub failure: Option<String>,
    pub inner: S,
}

impl<S> Link<S> {
    pub fn new(inner: S) -> Self {
        Link {
            state: Mutex::new(Shared {
                flushing: false,
                shutdown: false,
                failure: None,
                inner,
            }),
            cond: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Shared<S>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut Shared<S>) -> R) -> R {
        let r = f(&mut self.lock());
        self.cond.notify_all();
        r
    }

    /// For a networking thread with nothing left to do: waits until the element stops.
    pub fn wait_shutdown(&self) {
        let mut guard = self.lock();
        while !guard.shutdown {
            guard = self.cond.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until `ready` returns `Some`, the link is flushed or failed, or `deadline` passes
    /// (then `Ok(None)`).
    pub fn wait<R>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut S) -> Option<R>,
    ) -> Result<Option<R>, Interrupted> {
        let mut guard = self.lock();
        loop {
            if guard.flushing || guard.shutdown {
                return Err(Interrupted::Flushing);
            }
            if let Some(r) = ready(&mut guard.inner) {
                return Ok(Some(r));
            }
            if let Some(failure) = &guard.failure {
                return Err(Interrupted::Failed(failure.clone()));
            }
            guard = match deadline {
                None => self.cond.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return Ok(None);
                    };
                    self.cond
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The streaming side's handle on a networking thread: the link plus the waker that
/// interrupts its poll. Dropping it asks the thread to shut down and joins it.
pub struct NetThread<S> {
    link: Arc<Link<S>>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

impl<S> NetThread<S> {
    /// Starts `body` on a thread called `name`; it must watch `link` for shutdown.
    pub fn spawn(
        name: &str,
        link: Arc<Link<S>>,
        waker: Arc<mio::Waker>,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<Self, String> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|e| format!("cannot start networking thread: {e}"))?;
        Ok(NetThread {
            link,
            waker,
            thread: Some(thread),
        })
    }

    /// Interrupts the thread's poll so it looks at the link.
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    pub fn set_flushing(&self, flushing: bool) {
        self.link.update(|s| s.flushing = flushing);
    }
}

impl<S> Deref for NetThread<S> {
    type Target = Link<S>;

    fn deref(&self) -> &Link<S> {
        &self.link
    }
}

impl<S> Drop for NetThread<S> {
    fn drop(&mut self) {
        self.link.update(|s| s.shutdown = true);
        self.wake();
        if let Some(thread) = self.thread.take() {
            // The last handle can go on the thread itself (an element stopped while a signal
            // handler on it held one): it ends on its own once it sees shutdown.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn flushing_ends_a_wait_and_clears() {
        let link = Arc::new(Link::new(0u32));
        let waiter = {
            let link = link.clone();
            std::thread::spawn(move || link.wait(None, |n| (*n > 0).then_some(*n)))
        };
        link.update(|s| s.flushing = true);
        assert_eq!(waiter.join().unwrap(), Err(Interrupted::Flushing));
        link.update(|s| {
            s.flushing = false;
            s.inner = 3;
        });
        assert_eq!(link.wait(None, |n| (*n > 0).then_some(*n)), Ok(Some(3)));
    }
}
