//! The hand-over between a streaming thread and its networking thread: one mutex-protected
//! state and a condvar. Waits on the streaming side end on `flushing` (unlock) or `shutdown`;
//! the mutex is never held across a wait that the network decides.
//!
//! The networking thread runs application code (signal handlers, bus sync handlers) only
//! through [`Link::callback`], so that stopping never waits on it: a handler may change the
//! element's state, which stop() holds the state lock for while it ends the thread.

use crate::error::Error;
use crate::receiver::inbox::{Event, Inbox};
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// What the element runs first on each networking thread it starts: the element layer
/// routes that thread's log records to itself there.
pub type Enter = Arc<dyn Fn() + Send + Sync>;

/// Why a wait on the network ended without its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// `unlock()`: the element is flushing or changing state.
    Flushing,
    /// The networking side failed.
    Failed(Error),
}

/// Shared state `S` plus the flags every link has.
pub struct Link<S> {
    state: Mutex<Shared<S>>,
    cond: Condvar,
}

pub struct Shared<S> {
    pub flushing: bool,
    pub shutdown: bool,
    pub failure: Option<Error>,
    pub inner: S,
    /// The networking thread is in application code (Link::callback).
    in_callback: bool,
}

impl<S> Link<S> {
    pub fn new(inner: S) -> Self {
        Link {
            state: Mutex::new(Shared {
                flushing: false,
                shutdown: false,
                failure: None,
                inner,
                in_callback: false,
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

    /// Runs application code `f` on the networking thread, or nothing (None) once the
    /// element is stopping: from then on the stopping thread joins this one, and a handler
    /// that waited for the element's state lock would wait for ever.
    pub fn callback<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        {
            let mut guard = self.lock();
            if guard.shutdown {
                return None;
            }
            guard.in_callback = true;
        }
        let r = f();
        self.update(|s| s.in_callback = false);
        Some(r)
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
    /// Starts `body` on a thread called `name`, after `enter`; `body` must watch `link`
    /// for shutdown.
    pub fn spawn(
        name: &str,
        enter: Enter,
        link: Arc<Link<S>>,
        waker: Arc<mio::Waker>,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<Self, Error> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                enter();
                body()
            })
            .map_err(|e| Error::System(format!("cannot start networking thread: {e}")))?;
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

    /// Waits for a thread that ends by itself, without shutting the link down (as
    /// dropping does): the link's other threads go on.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// The link, to read what the thread left there once it is stopped.
    pub fn link(&self) -> Arc<Link<S>> {
        self.link.clone()
    }
}

/// `f`, run through `link`'s [`Link::callback`]: skipped once the element is stopping.
pub fn gated<S: Send + 'static, A: 'static>(
    link: &Arc<Link<S>>,
    f: Box<dyn Fn(A) + Send>,
) -> Box<dyn Fn(A) + Send> {
    let link = link.clone();
    Box::new(move |a| {
        link.callback(|| f(a));
    })
}

impl<S> Deref for NetThread<S> {
    type Target = Link<S>;

    fn deref(&self) -> &Link<S> {
        &self.link
    }
}

impl<S> Drop for NetThread<S> {
    fn drop(&mut self) {
        // Joined already (it ended by itself): there is nothing to stop.
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Once shutdown is set the thread starts no callback, so unless it is in one now it
        // ends without running application code, and is joined. If it is in one, that may
        // wait for whoever stops the element (or be it: a handler that stopped it): the
        // thread is left to end on its own once the callback returns.
        let in_callback = self.link.update(|s| {
            s.shutdown = true;
            s.in_callback
        });
        self.wake();
        if !in_callback && thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

/// Waits on `net` for the next event of the inbox `inbox` finds in its state. Events
/// queued before a failure are delivered first. Taking from a full inbox wakes the
/// networking thread, which stopped reading when it filled.
pub fn next_event<S>(
    net: &NetThread<S>,
    inbox: impl Fn(&mut S) -> &mut Inbox,
) -> Result<Event, Interrupted> {
    let mut was_full = false;
    let event = net.wait(None, |s| {
        let (event, full) = inbox(s).pop();
        was_full = full;
        event
    })?;
    if was_full {
        net.wake();
    }
    event.ok_or(Interrupted::Flushing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn no_callback_starts_once_stopping() {
        let link = Link::new(());
        assert_eq!(link.callback(|| 1), Some(1));
        link.update(|s| s.shutdown = true);
        assert_eq!(link.callback(|| 2), None);
    }

    #[test]
    fn a_thread_in_a_callback_is_not_waited_for() {
        let link = Arc::new(Link::new(()));
        let waker_poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(waker_poll.registry(), mio::Token(0)).unwrap());
        let (entered, in_callback) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread_link = link.clone();
        let net = NetThread::spawn("test", Arc::new(|| {}), link.clone(), waker, move || {
            // A handler that waits for something only the stopping side would give it.
            thread_link.callback(|| {
                entered.send(()).unwrap();
                let _ = released.recv();
            });
        })
        .unwrap();
        in_callback.recv().unwrap();
        drop(net);
        // Dropping returned while the callback still runs; it ends once let go.
        assert!(link.lock().shutdown);
        release.send(()).unwrap();
    }

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
