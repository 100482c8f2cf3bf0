//! quicnalusink's publishing side: the stream as a hang broadcast, written by the
//! streaming thread into moq-net's in-memory model (which never blocks) and carried to the
//! relay by the networking thread, which reconnects when the relay goes away.
//!
//! Each IRAP starts a group, as the relay and every player expect; access units before the
//! first IRAP are dropped, as in the direct path.

use super::catalog::{self, Picture, VIDEO_TRACK};
use super::quic::Wire;
use super::session::{Connection, Dial, Step, Watch};
use crate::error::Error;
use crate::media::frame::Frame;
use crate::media::h265;
use crate::net::events::{ConnectionEvent, OnConnection};
use crate::net::link::{gated, Enter, Interrupted, Link, NetThread};
use crate::net::socket::RecvBatch;
use hang::catalog::Catalog;
use moq_net::bytes::Bytes;
use moq_net::{broadcast, group, origin, track, Timestamp};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// After a lost session, the first retry's delay; it doubles up to MAX_RETRY.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// After the end of stream, how long every group stream must have stayed acknowledged
/// before the session closes: moq-net writes the subscription's end (SUBSCRIBE_END, on the
/// relay's request stream, which is not counted) in the turns after the last group.
const SETTLE: Duration = Duration::from_millis(50);

pub struct PublisherSettings {
    pub dial: Dial,
    /// The broadcast's name, below the URL's path.
    pub broadcast: String,
    /// Run first on the networking thread.
    pub enter: Enter,
    /// Told of connections. Called on the networking thread: it must not block.
    pub on_event: OnConnection,
}

#[derive(Default)]
struct Shared {
    /// The relay subscribed to the media track (someone watches).
    subscribed: bool,
    /// End of stream: the tracks are finished; close once all of it is acknowledged.
    ending: bool,
    /// Everything was acknowledged by the relay after the end of stream.
    drained: bool,
}

/// The model's side of the broadcast, written by the streaming thread.
struct Media {
    video: track::Producer,
    catalog: track::Producer,
    group: Option<group::Producer>,
    /// The group before `group`, finished: the oldest a relay can still ask for. Older
    /// ones are aborted, which drops their frames from moq-net's cache: its own expiry
    /// runs only while a connection is polled, so with the relay away it would keep all.
    previous: Option<group::Producer>,
    /// Frames and bytes written to `group`, against moq-net's limits for one group.
    group_frames: usize,
    group_bytes: u64,
    /// The latest VPS, SPS and PPS, for groups whose IRAP comes without them.
    parameter_sets: Vec<u8>,
    /// The caps and picture to describe, and whether the catalog says so already.
    caps: Option<(String, Picture)>,
    described: bool,
}

pub struct Publisher {
    net: NetThread<Shared>,
    media: Mutex<Media>,
    // Kept so that the broadcast stays announced while the element runs.
    _broadcast: broadcast::Producer,
}

impl Publisher {
    pub fn start(settings: PublisherSettings) -> Result<Publisher, Error> {
        let mut endpoint = settings.dial.bind()?;
        let (origin, mut origin_driver) =
            origin::Producer::new(origin::Config::new(moq_net::Hop::random()));
        let bad =
            |e: moq_net::Error| Error::Setup(format!("broadcast '{}': {e}", settings.broadcast));
        let broadcast = origin
            .publish(settings.broadcast.as_str(), Default::default())
            .map_err(bad)?;
        let video = broadcast
            .create_track(
                VIDEO_TRACK,
                hang::container::track_info(hang::catalog::PRIORITY.video),
            )
            .map_err(bad)?;
        let catalog_track = broadcast
            .create_track(Catalog::DEFAULT_NAME, Catalog::default_track_info())
            .map_err(bad)?;
        let link = Arc::new(Link::new(Shared::default()));
        let waker = endpoint.waker.clone();
        let on_event = gated(&link, settings.on_event);
        let (dial, enter) = (settings.dial, settings.enter);
        let thread_link = link.clone();
        let demand = video.clone();
        let net = NetThread::spawn("quicnalu-moq-pub", enter, link, waker, move || {
            let mut watch = PublishWatch {
                link: thread_link.clone(),
                settled_since: None,
            };
            let relay = dial.url.to_string();
            let mut retry = FIRST_RETRY;
            let mut resumed = false;
            loop {
                let opened = Connection::open(&dial, &mut endpoint, &mut watch, &on_event);
                let connection = match opened {
                    Ok(Some(c)) => c,
                    Ok(None) => return,
                    // Before any session, and for a certificate, failing is the answer.
                    Err(e)
                        if !resumed || matches!(e, Error::Certificate(_) | Error::Tls { .. }) =>
                    {
                        thread_link.update(|s| s.failure = Some(e));
                        return;
                    }
                    Err(e) => {
                        log::debug!("relay not back yet: {e}");
                        if sleep(&mut endpoint, &mut watch, &mut retry) {
                            return;
                        }
                        continue;
                    }
                };
                on_event(ConnectionEvent::Connected {
                    peer: relay.clone(),
                    resumed,
                });
                resumed = true;
                retry = FIRST_RETRY;
                let client = moq_net::Client::new()
                    .with_publisher(&origin)
                    .with_path(dial.url.path.clone());
                let link = thread_link.clone();
                let demand = demand.clone();
                let task = async move {
                    demand
                        .used()
                        .await
                        .map_err(|e| Error::Lost(e.to_string()))?;
                    link.update(|s| s.inner.subscribed = true);
                    std::future::pending::<Result<(), Error>>().await
                };
                let ended = connection.run(client, &mut [&mut origin_driver], task, &mut watch);
                let finished = {
                    let shared = thread_link.lock();
                    shared.shutdown || shared.inner.drained
                };
                if finished {
                    thread_link.wait_shutdown();
                    return;
                }
                let reason = match ended {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                on_event(ConnectionEvent::Disconnected {
                    peer: relay.clone(),
                    reason,
                    reconnecting: true,
                });
                if sleep(&mut endpoint, &mut watch, &mut retry) {
                    return;
                }
            }
        })?;
        Ok(Publisher {
            net,
            media: Mutex::new(Media::new(video, catalog_track)),
            _broadcast: broadcast,
        })
    }

    pub fn set_flushing(&self, flushing: bool) {
        self.net.set_flushing(flushing);
    }

    /// The stream's caps; the catalog is written with the next IRAP's parameter sets.
    pub fn set_caps(&self, caps: String, picture: Picture) {
        let mut media = self.media.lock().unwrap();
        media.caps = Some((caps, picture));
        media.described = false;
    }

    /// Writes the catalog from the parameter sets in `au`, if it has them and the caps
    /// are not described yet. Called before waiting for a subscriber too: a subscriber
    /// reads the catalog before it subscribes to the media.
    pub fn describe(&self, au: &[u8]) -> Result<(), Error> {
        self.media.lock().unwrap().describe(au)
    }

    /// Waits until the relay subscribes to the stream: someone watches.
    pub fn wait_for_subscriber(&self) -> Result<(), Interrupted> {
        self.net
            .wait(None, |s| s.subscribed.then_some(()))
            .map(|_| ())
    }

    /// The networking thread's failure, if it failed.
    pub fn failure(&self) -> Option<Error> {
        self.net.lock().failure.clone()
    }

    /// Publishes one frame: an IRAP starts a group.
    pub fn send(&self, frame: &Frame<Bytes>) -> Result<(), Error> {
        let (au, pts) = (frame.data.clone(), frame.pts);
        let (irap, sets) = (frame.keyframe, frame.parameter_sets);
        self.media.lock().unwrap().send(au, pts, irap, sets)
    }

    /// Ends the broadcast and waits up to `timeout` until the relay has all of it.
    pub fn finish(&self, timeout: Duration) -> Result<bool, Interrupted> {
        {
            let mut media = self.media.lock().unwrap();
            if let Some(group) = media.group.take() {
                let _ = group.finish();
            }
            let _ = media.video.finish();
            let _ = media.catalog.finish();
        }
        self.net.update(|s| s.inner.ending = true);
        self.net.wake();
        let drained = self
            .net
            .wait(Some(Instant::now() + timeout), |s| s.drained.then_some(()))?;
        Ok(drained.is_some())
    }
}

/// Bytes a hang frame adds to its payload (the timestamp, a varint) at most.
const FRAME_OVERHEAD: u64 = 8;

impl Media {
    fn new(video: track::Producer, catalog: track::Producer) -> Self {
        Media {
            video,
            catalog,
            group: None,
            previous: None,
            group_frames: 0,
            group_bytes: 0,
            parameter_sets: Vec::new(),
            caps: None,
            described: false,
        }
    }

    /// See [`Publisher::send`].
    fn send(&mut self, au: Bytes, pts: Option<u64>, irap: bool, sets: bool) -> Result<(), Error> {
        if sets {
            self.parameter_sets = h265::merge_parameter_sets(&self.parameter_sets, &au);
        }
        let payload = if irap {
            self.describe(&au)?;
            self.next_group()?;
            group_start(&self.parameter_sets, au, sets)
        } else {
            au
        };
        if self.group.is_none() {
            return Ok(());
        }
        // Our share of a group: the payload and hang's timestamp before it.
        let cost = payload.len() as u64 + FRAME_OVERHEAD;
        if cost > group::MAX_CACHE_BYTES {
            log::warn!(
                "an access unit of {} bytes is more than a MoQ group may hold: not published",
                payload.len()
            );
            return Ok(());
        }
        if self.group_frames + 1 > group::MAX_GROUP_FRAMES
            || self.group_bytes + cost > group::MAX_CACHE_BYTES
        {
            // The group goes on in a new one, which starts without an IRAP: a subscriber
            // that joins there waits for the next (subscribe.rs reads it so).
            log::debug!("splitting a long group");
            self.next_group()?;
        }
        self.group_frames += 1;
        self.group_bytes += cost;
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        let frame = hang::container::Frame {
            timestamp: Timestamp::from_micros(pts.unwrap_or(0) / 1000)
                .map_err(|e| Error::Setup(e.to_string()))?,
            payload,
        };
        frame
            .write_to(group)
            .map_err(|e| Error::Protocol(format!("cannot publish an access unit: {e}")))
    }

    /// Ends the current group, if any, and starts the next.
    fn next_group(&mut self) -> Result<(), Error> {
        if let Some(group) = self.group.take() {
            group.finish().map_err(model)?;
            if let Some(older) = self.previous.replace(group) {
                let _ = older.abort(moq_net::Error::Old);
            }
        }
        self.group = Some(self.video.append_group().map_err(model)?);
        self.group_frames = 0;
        self.group_bytes = 0;
        Ok(())
    }

    fn describe(&mut self, au: &[u8]) -> Result<(), Error> {
        if self.described {
            return Ok(());
        }
        let (Some((caps, picture)), Some(ptl)) = (&self.caps, h265::profile_tier_level(au)) else {
            return Ok(());
        };
        let json =
            catalog::describe(caps, *picture, ptl).map_err(|e| Error::Setup(e.to_string()))?;
        let mut group = self.catalog.append_group().map_err(model)?;
        group
            .write_frame(Timestamp::ZERO, json.into_bytes())
            .map_err(model)?;
        group.finish().map_err(model)?;
        self.described = true;
        Ok(())
    }
}

/// A group's first access unit: every group must decode alone, as a subscriber may start
/// at any of them, so an IRAP without parameter sets (encoders send them once, by default)
/// gets the latest ones in front. One with its own is left as it is.
fn group_start(parameter_sets: &[u8], irap: Bytes, has_sets: bool) -> Bytes {
    if has_sets || parameter_sets.is_empty() {
        return irap;
    }
    let mut out = Vec::with_capacity(parameter_sets.len() + irap.len());
    out.extend_from_slice(parameter_sets);
    out.extend_from_slice(&irap);
    out.into()
}

fn model(e: moq_net::Error) -> Error {
    Error::Protocol(format!("cannot publish: {e}"))
}

/// Waits `retry` (or until the element stops: true), then doubles it.
fn sleep(
    endpoint: &mut crate::net::socket::Endpoint,
    watch: &mut PublishWatch,
    retry: &mut Duration,
) -> bool {
    let until = Instant::now() + *retry;
    *retry = (*retry * 2).min(MAX_RETRY);
    let mut events = mio::Events::with_capacity(8);
    let mut unread = false;
    while Instant::now() < until {
        if watch.stopping() {
            return true;
        }
        let _ = endpoint.wait(&mut events, [Some(until)], unread);
        // Stray datagrams from the last connection are not for anyone now; a batch at a
        // time, so that a flood cannot keep us from seeing the element stop.
        let mut buf = [0u8; 2048];
        let mut batch = RecvBatch::default();
        while batch.next(endpoint, &mut buf).is_some() {}
        unread = !batch.drained();
    }
    watch.stopping()
}

struct PublishWatch {
    link: Arc<Link<Shared>>,
    settled_since: Option<Instant>,
}

impl Watch for PublishWatch {
    fn stopping(&mut self) -> bool {
        self.link.lock().shutdown
    }

    fn turn(&mut self, wire: &mut Wire) -> Step {
        if !self.link.lock().inner.ending {
            return Step::Wait(None);
        }
        if !wire.all_sent() {
            self.settled_since = None;
            return Step::Wait(None);
        }
        let since = *self.settled_since.get_or_insert_with(Instant::now);
        if since.elapsed() < SETTLE {
            return Step::Wait(Some(since + SETTLE));
        }
        self.link.update(|s| s.inner.drained = true);
        Step::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_starts_with_parameter_sets() {
        let sets = [0, 0, 0, 1, 0x40, 1, 0xaa, 0, 0, 0, 1, 0x42, 1, 0xbb];
        let irap = Bytes::from_static(&[0, 0, 0, 1, 0x26, 1, 0xcc]);
        let started = group_start(&sets, irap.clone(), false);
        assert_eq!(&started[..sets.len()], &sets);
        assert_eq!(&started[sets.len()..], &irap[..]);
        // Its own sets, or none known yet: as it came.
        assert_eq!(group_start(&sets, irap.clone(), true), irap);
        assert_eq!(group_start(&[], irap.clone(), false), irap);
    }

    /// A Media on a broadcast of its own, with no network.
    fn media() -> (Media, origin::Producer, broadcast::Producer) {
        let (origin, _driver) = origin::Producer::new(origin::Config::new(moq_net::Hop::random()));
        let broadcast = origin.publish("test", Default::default()).unwrap();
        let video = broadcast
            .create_track(VIDEO_TRACK, hang::container::track_info(0))
            .unwrap();
        let catalog = broadcast
            .create_track(Catalog::DEFAULT_NAME, Catalog::default_track_info())
            .unwrap();
        (Media::new(video, catalog), origin, broadcast)
    }

    /// An IRAP (IDR_W_RADL) or a trailing picture, `len` bytes in all.
    fn au(irap: bool, len: usize) -> Bytes {
        let mut au = vec![0, 0, 0, 1, if irap { 19 << 1 } else { 1 << 1 }, 1];
        au.resize(len.max(au.len()), 0xaa);
        Bytes::from(au)
    }

    #[test]
    fn a_group_past_moq_nets_limits_is_split_and_never_an_error() {
        let (mut media, _origin, _broadcast) = media();
        media.send(au(true, 100), Some(0), true, false).unwrap();
        // An infinite GOP: 4.5 minutes at 30 fps is past 8,192 frames.
        for n in 1..=(group::MAX_GROUP_FRAMES as u64 + 100) {
            let sent = media.send(au(false, 50), Some(n * 33_333_333), false, false);
            assert!(sent.is_ok(), "frame {n}: {sent:?}");
        }
        assert_eq!(
            media.group_frames, 101,
            "the rest went on in a second group"
        );
        // Big frames: a group holds 32 MB.
        media.send(au(true, 100), Some(0), true, false).unwrap();
        for n in 0..40 {
            let sent = media.send(au(false, 1 << 20), None, false, false);
            assert!(sent.is_ok(), "frame {n}: {sent:?}");
        }
        assert!(media.group_bytes <= group::MAX_CACHE_BYTES);
        // One access unit larger than any group is left out, not an error.
        assert!(media.send(au(false, 33 << 20), None, false, false).is_ok());
    }

    /// Bytes malloc has handed out and not had back, over every arena.
    fn heap_in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        info.uordblks + info.hblkhd
    }

    #[test]
    fn with_no_relay_the_publisher_holds_two_groups_at_most() {
        // Nothing polls moq-net here, as when the relay is unreachable: a minute of a
        // 50 Mbit/s stream with a 2 s GOP is 30 groups of 12.5 MB.
        let (mut media, _origin, _broadcast) = media();
        let group = 12_500_000;
        let frame = 208_000;
        let before = heap_in_use();
        let mut peak = 0;
        for g in 0..30u64 {
            for f in 0..(group / frame) as u64 {
                let pts = Some((g * 60 + f) * 33_333_333);
                media.send(au(f == 0, frame), pts, f == 0, false).unwrap();
            }
            peak = peak.max(heap_in_use().saturating_sub(before));
        }
        eprintln!("peak heap growth {} MB over 30 groups", peak / 1_000_000);
        // The group being written, the one before it, and allocator slack.
        assert!(peak < 3 * group, "held {} MB", peak / 1_000_000);
    }
}
