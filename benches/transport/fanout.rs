//! The fan-out scenario: one sender serving N receivers at once, and a receiver that joins a
//! running stream mid-group.

use crate::roles::{Job, Live};
use crate::{
    child_error, num, read_line, read_records, spawn, PairResult, Transport, Workdir, BUDGET_MS,
};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// One sender, its receivers, and perhaps a late joiner.
pub struct Fanout {
    pub transport: Transport,
    /// One per receiver there from the start. CPU is measured per process: see below.
    pub receivers: Vec<PairResult>,
    /// The late joiner, and when its pipeline started (CLOCK_MONOTONIC ns).
    pub joiner: Option<(PairResult, u64)>,
    /// CPU seconds of the sender and of the process holding every receiver but the joiner.
    pub cpu_send: f64,
    pub cpu_recv: f64,
    /// Length of the stream, s.
    pub seconds: f64,
    /// Frames from one IRAP to the next, of a live sender.
    pub key_int: Option<u32>,
}

impl Fanout {
    /// Every receiver got every frame within the budget.
    pub fn all_on_time(&self) -> bool {
        !self.receivers.is_empty() && self.receivers.iter().all(|r| r.sent > 0 && r.clean())
    }

    /// The lowest share (%) of frames that any receiver got decodable and within the budget.
    pub fn worst_on_time(&self) -> f64 {
        self.receivers
            .iter()
            .map(|r| r.on_time_after(0))
            .fold(f64::NAN, f64::min)
    }

    /// A latency percentile over every frame of every receiver, ms.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut l: Vec<u64> = self
            .receivers
            .iter()
            .flat_map(|r| r.frames.iter().map(|f| f.1))
            .collect();
        if l.is_empty() {
            return f64::NAN;
        }
        l.sort_unstable();
        l[((l.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
    }

    /// Frames missing and frames late, summed over the receivers.
    pub fn lost_late(&self) -> (u64, u64) {
        let budget = u64::from(BUDGET_MS) * 1_000_000;
        self.receivers.iter().fold((0, 0), |(lost, late), r| {
            (
                lost + r.sent.saturating_sub(r.frames.len() as u64),
                late + r.late(budget),
            )
        })
    }

    pub fn error(&self) -> Option<&str> {
        self.receivers
            .iter()
            .chain(self.joiner.as_ref().map(|j| &j.0))
            .find_map(|r| r.error.as_deref())
    }
}

/// What the late joiner saw, from its pipeline's start.
pub struct Join {
    /// The frame being sent when it started, and how far into its group that was.
    pub at_seq: Option<u64>,
    pub into_group: Option<u64>,
    /// The first frame it could decode: ms after the start, its seq, ms between the
    /// start and when that frame was sent (negative: sent before the joiner started).
    pub first: Option<(f64, u64, f64)>,
    /// The first frame it could decode that was also within the budget: ms after start.
    pub first_live_ms: Option<f64>,
    /// Frames that arrived before the first decodable one.
    pub wasted: usize,
}

pub fn join(f: &Fanout) -> Option<Join> {
    let (j, start) = f.joiner.as_ref()?;
    // The receiver there from the start tells what was being sent at the join: (seq, sent
    // ns, IRAP) in sequence order.
    let mut base: Vec<(u64, u64, bool)> = f
        .receivers
        .first()
        .map(|r| {
            r.frames
                .iter()
                .zip(&r.arrivals)
                .map(|(fr, a)| (fr.0, a.saturating_sub(fr.1), fr.2.is_none()))
                .collect()
        })
        .unwrap_or_default();
    base.sort_unstable();
    let at_seq = base.iter().rfind(|x| x.1 <= *start).map(|x| x.0);
    let irap = at_seq.and_then(|s| base.iter().rfind(|x| x.2 && x.0 <= s).map(|x| x.0));
    let budget = u64::from(BUDGET_MS) * 1_000_000;
    let mask = j.decodable_mask();
    let first = mask.iter().position(|&ok| ok);
    let ms = |a: u64| (a as f64 - *start as f64) / 1e6;
    Some(Join {
        at_seq,
        into_group: at_seq.zip(irap).map(|(s, i)| s - i),
        first: first.map(|i| {
            let (fr, a) = (j.frames[i], j.arrivals[i]);
            (ms(a), fr.0, ms(a.saturating_sub(fr.1)))
        }),
        first_live_ms: (0..mask.len())
            .find(|&i| mask[i] && j.frames[i].1 <= budget)
            .map(|i| ms(j.arrivals[i])),
        wasted: first.unwrap_or(j.frames.len()),
    })
}

/// A sender of `content` (or a `live` encoder) to `receivers` receivers for `frames` frames
/// at 30 fps; with `join_at`, one more receiver (its own process) starts that long after GO.
pub fn run(
    work: &Workdir,
    t: Transport,
    receivers: u32,
    frames: u64,
    content: &Path,
    live: Option<Live>,
    join_at: Option<Duration>,
) -> Fanout {
    let records = |what: &str| {
        work.dir
            .join(format!("fanout-{}-{what}.records", t.name()))
            .to_string_lossy()
            .into_owned()
    };
    let mut job = Job {
        transport: t,
        port: 0,
        content: content.to_string_lossy().into_owned(),
        frames,
        fps: 30.0,
        srt_latency_ms: t.srt_latency(BUDGET_MS),
        src_latency_ms: None,
        cert: work.cert.clone(),
        key: work.key.clone(),
        records: records(&match join_at {
            Some(_) => "joined".into(),
            None => receivers.to_string(),
        }),
        live,
        receivers,
        routes: String::new(),
    };
    if !t.is_quicnalu() {
        job.port = crate::free_udp_port();
    }
    let start = Duration::from_secs(30);
    let mut send = spawn("send", &job);
    let port = read_line(&send, "PORT", start);
    job.port = port.first().and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut recv = spawn("recv", &job);
    read_line(&recv, "READY", start);
    std::thread::sleep(Duration::from_millis(300));
    let _ = writeln!(send.stdin, "GO");
    let go = Instant::now();
    let mut joiner = join_at.map(|at| {
        std::thread::sleep((go + at).saturating_duration_since(Instant::now()));
        let job = Job {
            receivers: 1,
            records: records("joiner"),
            ..job.clone()
        };
        let p = spawn("recv", &job);
        let ready = read_line(&p, "READY", start);
        let started = num(&ready, 0).unwrap_or(0.0) as u64;
        (p, job.records, started)
    });
    let run = Duration::from_secs_f64(frames as f64 / 30.0) + Duration::from_secs(90);
    let sent = read_line(&send, "SENT", run);
    std::thread::sleep(Duration::from_millis(u64::from(BUDGET_MS) + 300));
    let _ = writeln!(recv.stdin, "STOP");
    let got = read_line(&recv, "RECV", Duration::from_secs(30));
    let joined = joiner.as_mut().map(|(p, _, _)| {
        let _ = writeln!(p.stdin, "STOP");
        read_line(p, "RECV", Duration::from_secs(30))
    });
    for p in [
        Some(&mut send),
        Some(&mut recv),
        joiner.as_mut().map(|j| &mut j.0),
    ]
    .into_iter()
    .flatten()
    {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    let error = child_error(&[("sender", &sent, 2), ("receivers", &got, 3)]);
    let n = num(&sent, 0).unwrap_or(0.0) as u64;
    // CPU is per process, so it is kept on the Fanout, not on each receiver.
    let stream_ns = (frames as f64 / 30.0 * 1e9) as u64;
    let result = |(frames, arrivals, sizes), error| PairResult {
        transport: t,
        sent: n,
        frames,
        arrivals,
        sizes,
        bytes: 0,
        cpu_send: f64::NAN,
        cpu_recv: f64::NAN,
        error,
        link_back: None,
        cap_changes: Vec::new(),
        go: None,
        stream_ns,
    };
    let mut per = read_records(Path::new(&job.records));
    // A receiver that got nothing has no records.
    per.resize_with(receivers as usize, Default::default);
    Fanout {
        transport: t,
        receivers: per.into_iter().map(|r| result(r, error.clone())).collect(),
        joiner: joiner.zip(joined).map(|((_, path, started), got)| {
            let r = read_records(Path::new(&path)).into_iter().next();
            let error = child_error(&[("joiner", &got, 3)]);
            (result(r.unwrap_or_default(), error), started)
        }),
        cpu_send: num(&sent, 1).unwrap_or(f64::NAN),
        cpu_recv: num(&got, 2).unwrap_or(f64::NAN),
        seconds: frames as f64 / 30.0,
        key_int: live.map(|l| l.key_int),
    }
}
