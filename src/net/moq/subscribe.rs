//! quicnalusrc's subscribing side: waits for the broadcast to be announced, reads its hang
//! catalog, subscribes to the H.265 rendition and hands each access unit to the streaming
//! thread as the direct path does ([`Event`]s in an [`Inbox`]), so timestamps, DISCONT and
//! QuicNaluMeta come from the same code.
//!
//! What MoQ tells a receiver differs from our protocol: the first frame of each group is
//! the keyframe; a group that does not follow the last one, a group cut short, or a group
//! joined after its first frame is a gap; the only timestamp is the PTS (hang carries no
//! DTS), and there is no sender clock, so QuicNaluMeta's sender_time is 0.

use super::catalog::{self, Extension};
use super::session::{Connection, Dial, Step, Watch};
use crate::error::Error;
use crate::media::h265;
use crate::media::monotonic_ns;
use crate::net::events::{ConnectionEvent, OnConnection};
use crate::net::link::next_event;
use crate::net::link::{gated, Enter, Interrupted, Link, NetThread};
use crate::protocol::{FrameFlags, FrameHeader};
use crate::receiver::inbox::{Event, Inbox, ReceivedFrame, MAX_EVENT_BYTES};
use hang::catalog::Catalog;
use moq_net::{origin, track};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

pub struct SubscriberSettings {
    pub dial: Dial,
    /// The broadcast's name, below the URL's path.
    pub broadcast: String,
    /// Events the streaming thread may leave unread before reading stops.
    pub queue_len: usize,
    /// Largest access unit taken; a larger one is a protocol error.
    pub max_frame_size: u64,
    /// How far a group may fall behind the newest before it is skipped (the subscription's
    /// max_age, which the relay applies too): the element's latency.
    pub latency: Duration,
    /// Run first on the networking thread.
    pub enter: Enter,
    /// Told of connections. Called on the networking thread: it must not block.
    pub on_event: OnConnection,
}

/// Handle to a running subscriber; dropping it stops the thread and joins it.
pub struct Subscriber {
    net: NetThread<Inbox>,
}

impl Subscriber {
    pub fn start(settings: SubscriberSettings) -> Result<Subscriber, Error> {
        let mut endpoint = settings.dial.bind()?;
        let link = Arc::new(Link::new(Inbox::new(settings.queue_len)));
        let waker = endpoint.waker.clone();
        let on_event = gated(&link, settings.on_event);
        let thread_link = link.clone();
        let SubscriberSettings {
            dial,
            broadcast,
            max_frame_size,
            latency,
            enter,
            ..
        } = settings;
        let net = NetThread::spawn("quicnalu-moq-sub", enter, link, waker, move || {
            let mut watch = SubscribeWatch(thread_link.clone());
            let relay = dial.url.to_string();
            let connection = match Connection::open(&dial, &mut endpoint, &mut watch, &on_event) {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    thread_link.update(|s| s.failure = Some(e));
                    return;
                }
            };
            on_event(ConnectionEvent::Connected {
                peer: relay.clone(),
                resumed: false,
            });
            let (origin, mut origin_driver) = origin::Producer::new(cache_bounded());
            let client = moq_net::Client::new()
                .with_subscriber(origin.clone())
                .with_path(dial.url.path.clone());
            let task = receive(
                origin.consume(),
                broadcast,
                max_frame_size,
                latency,
                thread_link.clone(),
            );
            let ended = connection.run(client, &mut [&mut origin_driver], task, &mut watch);
            if let Err(e) = ended {
                on_event(ConnectionEvent::Disconnected {
                    peer: relay,
                    reason: e.to_string(),
                    reconnecting: false,
                });
                thread_link.update(|s| s.failure = Some(e));
            }
            thread_link.wait_shutdown();
        })?;
        Ok(Subscriber { net })
    }

    pub fn set_flushing(&self, flushing: bool) {
        self.net.set_flushing(flushing);
    }

    /// Waits for the next event. Events queued before a failure are delivered first.
    pub fn next(&self) -> Result<Event, Interrupted> {
        next_event(&self.net, |inbox| inbox)
    }
}

/// The subscriber's origin, whose cache holds about what the streaming thread's inbox
/// does (MAX_EVENT_BYTES) beyond the group being read: moq-net reads every group the relay
/// sends into it, and without a target keeps them until they age out. Past the target it
/// drops the oldest groups, never the live one; a group dropped before we read it reads as
/// cut short, and playback resumes at the next.
fn cache_bounded() -> origin::Config {
    let mut config = origin::Config::new(moq_net::Hop::random());
    let capacity = moq_net::cache::Config::default().with_capacity(MAX_EVENT_BYTES as u64);
    config.pool = moq_net::cache::Pool::new(capacity);
    config
}

struct SubscribeWatch(Arc<Link<Inbox>>);

impl Watch for SubscribeWatch {
    fn stopping(&mut self) -> bool {
        self.0.lock().shutdown
    }

    fn turn(&mut self, _wire: &mut super::quic::Wire) -> Step {
        Step::Wait(None)
    }
}

fn protocol(what: &str) -> impl Fn(moq_net::Error) -> Error + '_ {
    move |e| Error::Protocol(format!("{what}: {e}"))
}

/// The subscription, from the announcement to the end of the track.
async fn receive(
    origin: origin::Consumer,
    name: String,
    max_frame_size: u64,
    max_age: Duration,
    link: Arc<Link<Inbox>>,
) -> Result<(), Error> {
    let broadcast = origin
        .routed_broadcast(name.as_str())
        .await
        .map_err(protocol(&format!("broadcast '{name}'")))?;
    let catalog_track = broadcast
        .track(Catalog::DEFAULT_NAME)
        .map_err(protocol("catalog"))?
        .subscribe(Catalog::default_subscription())
        .await
        .map_err(protocol("catalog"))?;
    let mut catalogs = hang::catalog::Consumer::<Extension>::new(catalog_track);
    let described = Unpanicked(Box::pin(catalogs.next()))
        .await?
        .map_err(|e| Error::Protocol(format!("the broadcast's catalog: {e}")))?
        .ok_or_else(|| Error::Protocol(format!("broadcast '{name}' ended before its catalog")))?;
    let chosen = catalog::choose(&described).map_err(|e| Error::Protocol(e.to_string()))?;
    push(&link, Event::Connected).await;
    push(&link, Event::Caps(chosen.caps)).await;
    let mut video = broadcast
        .track(chosen.track.as_str())
        .map_err(protocol("video track"))?
        .subscribe(track::Subscription::default().with_max_age(max_age))
        .await
        .map_err(protocol("video track"))?;
    let mut next_group: Option<u64> = None;
    let mut seq = 0u64;
    let mut gap = false;
    loop {
        let Some(mut group) = video.recv_group().await.map_err(protocol("video track"))? else {
            push(&link, Event::Eos).await;
            return Ok(());
        };
        log::debug!("group {} from frame {}", group.sequence, group.index());
        if next_group.is_some_and(|n| group.sequence < n) {
            // Older than what was output already: too late to show.
            continue;
        }
        gap |= next_group.is_some_and(|n| group.sequence != n);
        next_group = Some(group.sequence + 1);
        if group.index() > 0 {
            // Joined after its keyframe: nothing in it decodes.
            gap = true;
            continue;
        }
        let mut first = true;
        loop {
            let mut next = match group.next_frame().await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                // Cut short (the relay dropped it): what follows starts at the next group.
                Err(e) => {
                    log::debug!("group {} cut short: {e}", group.sequence);
                    gap = true;
                    break;
                }
            };
            // Refused by its declared size, before its bytes are gathered (hang's
            // timestamp, a varint, comes before the access unit).
            if next.size > max_frame_size + 8 {
                return Err(Error::Protocol(format!(
                    "a frame of {} bytes exceeds max-frame-size ({max_frame_size})",
                    next.size
                )));
            }
            let payload = match next.read_all().await {
                Ok(payload) => payload,
                Err(e) => {
                    log::debug!("group {} cut short: {e}", group.sequence);
                    gap = true;
                    break;
                }
            };
            let hang::container::Frame { timestamp, payload } =
                hang::container::Frame::decode(payload)
                    .map_err(|e| Error::Protocol(format!("not a hang frame: {e}")))?;
            if payload.is_empty() {
                // moq-dev's moqsink ends each group with an empty frame: nothing to decode.
                continue;
            }
            if payload.len() as u64 > max_frame_size {
                return Err(Error::Protocol(format!(
                    "access unit of {} bytes exceeds max-frame-size ({max_frame_size})",
                    payload.len()
                )));
            }
            log::trace!(
                "group {} frame: {} bytes at {timestamp:?}",
                group.sequence,
                payload.len()
            );
            if first && !h265::inspect(&payload).is_ok_and(|au| au.irap) {
                // A long group split in two (publish.rs): the second goes on from the
                // first, so it decodes only right after it.
                if gap {
                    log::debug!("group {} continues a group missed", group.sequence);
                    break;
                }
                first = false;
            }
            let mut flags = FrameFlags::default();
            flags.set(FrameFlags::KEYFRAME, first);
            let pts = u64::try_from(timestamp.as_nanos()).ok();
            let header = FrameHeader {
                part: None,
                seq,
                flags,
                pts,
                dts: None,
                duration: None,
                send_time: 0,
                len: payload.len() as u64,
            };
            seq += 1;
            let frame = ReceivedFrame {
                header,
                data: payload.to_vec(),
                arrival: monotonic_ns(),
                gap: std::mem::take(&mut gap),
                late: false,
                catch_up_age: None,
            };
            push(&link, Event::Frame(frame)).await;
            first = false;
        }
    }
}

/// A future whose panic becomes an error. hang 0.21.19 parses a catalog with a codec
/// string such as `avc1.640޼0` by slicing it at byte offsets, and panics: what a relay or
/// a publisher sends must not bring the element down (found by fuzz/targets/moq_catalog).
struct Unpanicked<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for Unpanicked<F> {
    type Output = Result<F::Output, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(Error::Protocol(
                "the broadcast's catalog could not be read (its parser failed)".into(),
            ))),
        }
    }
}

/// Hands `event` to the streaming thread once its inbox has room (the streaming thread
/// wakes the loop when it takes from a full one).
async fn push(link: &Link<Inbox>, event: Event) {
    let mut event = Some(event);
    poll_fn(|_| {
        link.update(|s| match event.take() {
            Some(e) if !s.inner.has_room() => {
                event = Some(e);
                Poll::Pending
            }
            Some(e) => {
                s.inner.push(e);
                Poll::Ready(())
            }
            None => Poll::Ready(()),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes malloc has handed out and not had back, over every arena.
    fn heap_in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        info.uordblks + info.hblkhd
    }

    #[test]
    fn what_the_relay_sends_is_cached_up_to_the_inbox_bound() {
        // Groups arriving faster than they are read (a stalled downstream): as moq-net
        // writes them into the subscriber's origin.
        let (origin, _driver) = origin::Producer::new(cache_bounded());
        let broadcast = origin.publish("test", Default::default()).unwrap();
        let track = broadcast
            .create_track("video", hang::container::track_info(0))
            .unwrap();
        let _reader = broadcast.consume();
        let before = heap_in_use();
        let mut peak = 0;
        for g in 0..100u64 {
            let mut group = track.append_group().unwrap();
            for f in 0..10u64 {
                let ts = moq_net::Timestamp::from_micros((g * 10 + f) * 33_333).unwrap();
                group.write_frame(ts, vec![0u8; 100_000]).unwrap();
            }
            group.finish().unwrap();
            peak = peak.max(heap_in_use().saturating_sub(before));
        }
        eprintln!(
            "peak heap growth {} MB for 100 MB of groups",
            peak / 1_000_000
        );
        assert!(peak < 2 * MAX_EVENT_BYTES, "held {} MB", peak / 1_000_000);
    }

    #[test]
    fn a_catalog_that_panics_its_parser_is_an_error() {
        // fuzz/artifacts/moq_catalog/crash-avc1-not-ascii: a non-ASCII codec string.
        let json = r#"{"video":{"renditions":{"v":{"codec":"avc1.640\u07bc0","container":{"kind":"legacy"}}}}}"#;
        let parse = async { Catalog::<Extension>::from_str(json).map(|_| ()) };
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut guarded = Unpanicked(Box::pin(parse));
        let polled = std::future::Future::poll(std::pin::Pin::new(&mut guarded), &mut cx);
        let Poll::Ready(Err(e)) = polled else {
            panic!("expected the parser's panic as an error: {polled:?}");
        };
        assert!(e.to_string().contains("catalog could not be read"), "{e}");
    }
}
