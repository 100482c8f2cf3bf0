//! When a receiver connects again after losing its connection: each connection's outcome
//! in, the next attempt (when, and how long it has to answer) or the final failure out.
//! The first connection is never retried: a receiver pointed at the wrong place fails.

use crate::error::Error;
use crate::policy::ending::{gave_up, Outcome};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// First reconnect attempt's time to answer; each later one gets twice as long.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// What to do when an established connection is lost (idle timeout, sender stopped).
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    pub enabled: bool,
    /// Attempts are made at once, then each gets twice as long as the last to answer, up
    /// to this.
    pub max_delay: Duration,
    /// Give up (and fail) after this long without a connection; None: never.
    pub give_up: Option<Duration>,
}

/// What follows a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Connect again once `after` has passed (None: at once); the attempt has `window`
    /// to answer.
    Retry {
        after: Option<Instant>,
        window: Duration,
    },
    /// Listening (knock.rs): wait for the sender to call again, until `until` (None:
    /// for ever), then connect to it; at `until`, [`Backoff::expired`] says why we fail.
    AwaitCaller { until: Option<Instant> },
    /// The element fails with this message.
    Fail(Error),
    /// Nothing more will happen: wait for the element to stop.
    Stop,
}

/// The reconnect policy of one receiver, across its connections.
pub struct Backoff {
    peer: SocketAddr,
    reconnect: Reconnect,
    /// The sender calls us: it decides when to try again; we only wait.
    listening: bool,
    /// Since when we have been without a connection, and why we lost it.
    lost: Option<(Instant, Error)>,
    /// The next attempt's time to answer.
    window: Duration,
}

impl Backoff {
    pub fn new(peer: SocketAddr, reconnect: Reconnect) -> Self {
        Backoff {
            peer,
            reconnect,
            listening: false,
            lost: None,
            window: FIRST_RETRY,
        }
    }

    /// The connection attempted at `started`, established at `established` (if it was),
    /// ended with `outcome`, as of `now`.
    pub fn next(
        &mut self,
        outcome: Outcome,
        now: Instant,
        started: Instant,
        established: Option<Instant>,
    ) -> Next {
        let reconnect = self.reconnect;
        if self.listening {
            return self.listen(outcome, now);
        }
        match outcome {
            Outcome::Shutdown | Outcome::Ended => Next::Stop,
            Outcome::Fatal(why) => Next::Fail(why),
            Outcome::Lost(why) => {
                // A connection that ends as soon as it starts is no better than no answer:
                // keep backing off, and keep counting towards reconnect-timeout.
                let lasted = established
                    .is_some_and(|t| now.saturating_duration_since(t) >= reconnect.max_delay);
                if !reconnect.enabled {
                    Next::Fail(why)
                } else if lasted || self.lost.is_none() {
                    self.lost = Some((now, why));
                    self.window = FIRST_RETRY;
                    Next::Retry {
                        after: None,
                        window: self.window,
                    }
                } else {
                    self.back_off(started)
                }
            }
            Outcome::Unanswered(why) => match &self.lost {
                None => Next::Fail(why),
                Some((since, first)) => match reconnect.give_up {
                    Some(limit) if now.saturating_duration_since(*since) >= limit => {
                        Next::Fail(gave_up(first, self.peer, limit))
                    }
                    _ => self.back_off(started),
                },
            },
        }
    }

    /// A listening receiver whose caller `peer` knocked, and which was answered as `outcome`
    /// says. A knock that led to no connection (the caller went, or it was spoofed) is not
    /// a failure: the next one may.
    pub fn listening(peer: SocketAddr, reconnect: Reconnect) -> Self {
        Backoff {
            listening: true,
            ..Backoff::new(peer, reconnect)
        }
    }

    /// The caller that knocked last.
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }

    fn listen(&mut self, outcome: Outcome, now: Instant) -> Next {
        let give_up = self.reconnect.give_up;
        match outcome {
            Outcome::Shutdown | Outcome::Ended => Next::Stop,
            Outcome::Fatal(why) if why.is_local() => Next::Fail(why),
            Outcome::Lost(why) if !self.reconnect.enabled => Next::Fail(why),
            Outcome::Lost(why) => {
                self.lost = Some((now, why));
                Next::AwaitCaller {
                    until: give_up.map(|limit| now + limit),
                }
            }
            // Whoever knocked (a stray, or a caller that refused us): anyone may knock, so
            // nothing they do fails the listener.
            Outcome::Unanswered(_) | Outcome::Fatal(_) => Next::AwaitCaller {
                until: give_up
                    .zip(self.lost.as_ref())
                    .map(|(l, (since, _))| *since + l),
            },
        }
    }

    /// Why we fail when no caller came by [`Next::AwaitCaller`]'s `until`.
    pub fn expired(&self) -> Error {
        match (&self.lost, self.reconnect.give_up) {
            (Some((_, first)), Some(limit)) => gave_up(first, self.peer, limit),
            _ => Error::Timeout(format!("{} did not call again", self.peer)),
        }
    }

    /// Waits out the attempt's window (a peer that refuses at once is not hammered), then
    /// doubles it, up to max_delay.
    fn back_off(&mut self, started: Instant) -> Next {
        let after = Some(started + self.window);
        self.window = (self.window * 2).min(self.reconnect.max_delay.max(FIRST_RETRY));
        Next::Retry {
            after,
            window: self.window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "127.0.0.1:5000";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(max_delay: u64, give_up: Option<u64>) -> Backoff {
        let reconnect = Reconnect {
            enabled: true,
            max_delay: ms(max_delay),
            give_up: give_up.map(ms),
        };
        Backoff::new(PEER.parse().unwrap(), reconnect)
    }

    fn no_answer() -> Outcome {
        Outcome::Unanswered(Error::Timeout("no QUIC answer".into()))
    }

    /// Attempts that go unanswered from `t` on, each timing out after its window: the
    /// windows given, until the policy stops retrying.
    fn unanswered(b: &mut Backoff, mut t: Instant, mut window: Duration, n: usize) -> Vec<u64> {
        let mut windows = Vec::new();
        for _ in 0..n {
            match b.next(no_answer(), t + window, t, None) {
                Next::Retry { after, window: w } => {
                    assert_eq!(after, Some(t + window));
                    windows.push(w.as_millis() as u64);
                    t += window;
                    window = w;
                }
                _ => break,
            }
        }
        windows
    }

    #[test]
    fn attempts_double_their_window_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut b = policy(1000, None);
        // Lost after an hour: the first attempt is made at once.
        let t = t0 + ms(3_600_000);
        let lost = b.next(Outcome::Lost(Error::Lost("gone".into())), t, t0, Some(t0));
        let window = ms(100);
        assert_eq!(
            lost,
            Next::Retry {
                after: None,
                window
            }
        );
        let windows = unanswered(&mut b, t, window, 7);
        assert_eq!(windows, [200, 400, 800, 1000, 1000, 1000, 1000]);
        // A peer that refuses at once is not hammered: the next attempt waits out the window.
        let t = t + ms(60_000);
        let refused = b.next(
            Outcome::Unanswered(Error::ServerFull("full".into())),
            t + ms(3),
            t,
            None,
        );
        let (after, window) = (Some(t + ms(1000)), ms(1000));
        assert_eq!(refused, Next::Retry { after, window });
    }

    #[test]
    fn a_connection_that_lasted_starts_the_schedule_again() {
        let t0 = Instant::now();
        let lost = |why: &str| Outcome::Lost(Error::Lost(why.into()));
        let mut b = policy(1000, Some(5_000));
        // Connected at t0, lost at t.
        let t = t0 + ms(10_000);
        b.next(lost("first"), t, t0, Some(t0));
        assert_eq!(unanswered(&mut b, t, ms(100), 3), [200, 400, 800]);
        // Connected again 1.5 s after the loss, and lost at once: backing off goes on.
        let c = t + ms(1500);
        let brief = b.next(lost("brief"), c + ms(50), c, Some(c));
        let (after, window) = (Some(c + ms(800)), ms(1000));
        assert_eq!(brief, Next::Retry { after, window });
        // The time without a connection still counts from the first loss.
        let Next::Fail(why) = b.next(no_answer(), t + ms(5000), t + ms(4000), None) else {
            panic!("did not give up");
        };
        assert!(
            why.to_string().starts_with("lost the connection (first)"),
            "{why}"
        );
        // A connection that lasted max_delay: back to the first window, counting from the
        // new loss.
        let mut b = policy(1000, Some(5_000));
        b.next(lost("first"), t, t0, Some(t0));
        assert_eq!(unanswered(&mut b, t, ms(100), 3), [200, 400, 800]);
        let c = t + ms(2000);
        let again = b.next(lost("second"), c + ms(1000), c, Some(c));
        let window = ms(100);
        assert_eq!(
            again,
            Next::Retry {
                after: None,
                window
            }
        );
        let u = t + ms(5000);
        assert!(matches!(
            b.next(no_answer(), u, u - ms(100), None),
            Next::Retry { .. }
        ));
    }

    #[test]
    fn gives_up_after_reconnect_timeout() {
        let t0 = Instant::now();
        let mut b = policy(200, Some(500));
        let t = t0 + ms(1000);
        b.next(
            Outcome::Lost(Error::Lost("sender stopped".into())),
            t,
            t0,
            Some(t0),
        );
        assert_eq!(unanswered(&mut b, t, ms(100), 10), [200, 200]);
        let Next::Fail(why) = b.next(no_answer(), t + ms(500), t + ms(300), None) else {
            panic!("did not give up");
        };
        assert_eq!(
            why,
            Error::Timeout(
                "lost the connection (sender stopped) and 127.0.0.1:5000 did not answer \
                 again within 500 ms"
                    .into()
            )
        );
    }

    #[test]
    fn a_listener_waits_for_its_caller_until_reconnect_timeout() {
        let reconnect = Reconnect {
            enabled: true,
            max_delay: ms(2000),
            give_up: Some(ms(5000)),
        };
        let mut b = Backoff::listening(PEER.parse().unwrap(), reconnect);
        let t0 = Instant::now();
        let lost = || Outcome::Lost(Error::Lost("gone".into()));
        let unanswered = || Outcome::Unanswered(Error::Timeout("no answer".into()));
        // A knock that leads nowhere, before any connection: wait for the next, for ever.
        assert_eq!(
            b.next(unanswered(), t0, t0, None),
            Next::AwaitCaller { until: None }
        );
        let at = t0 + ms(100);
        assert_eq!(
            b.next(lost(), at, t0, Some(t0)),
            Next::AwaitCaller {
                until: Some(at + ms(5000))
            }
        );
        assert_eq!(
            b.next(unanswered(), at + ms(300), at, None),
            Next::AwaitCaller {
                until: Some(at + ms(5000))
            },
            "reconnect-timeout counts from the loss"
        );
        assert!(b
            .expired()
            .to_string()
            .contains("did not answer again within 5000 ms"));
        let mut once = Backoff::listening(
            PEER.parse().unwrap(),
            Reconnect {
                enabled: false,
                ..reconnect
            },
        );
        assert!(matches!(once.next(lost(), at, t0, Some(t0)), Next::Fail(_)));
    }

    #[test]
    fn the_first_connection_is_never_retried() {
        let t0 = Instant::now();
        let fail = |e: Error| Next::Fail(e);
        let mut b = policy(1000, None);
        assert_eq!(
            b.next(no_answer(), t0, t0, None),
            fail(Error::Timeout("no QUIC answer".into()))
        );
        let tls = Error::Tls {
            alert: 48,
            message: "TLS".into(),
        };
        let fatal = Outcome::Fatal(tls.clone());
        assert_eq!(b.next(fatal, t0, t0, None), fail(tls));
        assert_eq!(b.next(Outcome::Ended, t0, t0, Some(t0)), Next::Stop);
        assert_eq!(b.next(Outcome::Shutdown, t0, t0, None), Next::Stop);
        // Reconnecting disabled: a lost connection fails too.
        let reconnect = Reconnect {
            enabled: false,
            max_delay: ms(1000),
            give_up: None,
        };
        let mut b = Backoff::new(PEER.parse().unwrap(), reconnect);
        let lost = Outcome::Lost(Error::Lost("gone".into()));
        assert_eq!(
            b.next(lost, t0 + ms(5000), t0, Some(t0)),
            fail(Error::Lost("gone".into()))
        );
    }
}
