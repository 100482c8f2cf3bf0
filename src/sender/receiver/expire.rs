//! Expiry: which of one receiver's groups can no longer arrive in time, and what becomes of
//! them (shed frames, a reset group, or a group sent late: rescue.rs).

use super::*;

impl<C: Streams> Receiver<C> {
    /// Sheds the cheap frames due to be shed (StreamOut::shed), if the receiver takes shed
    /// frames. Then resets every group whose oldest queued frame could no longer arrive
    /// by its deadline (written now, it arrives `ahead` later), or every group of a
    /// receiver too far behind (see MAX_BACKLOG and GONE_QUIET); the receiver skips them,
    /// and gets no more frames until the next IRAP.
    pub(super) fn expire(&mut self, now: Instant, ahead: Duration, keyframes_answered: bool) {
        if self.out_bytes < 2 * MAX_BACKLOG {
            self.behind_since = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(now);
        }
        let quiet = self.quiet(now);
        let give_up = self.behind_since.is_some_and(|t| now >= t + BEHIND_FOR)
            || self.out_bytes >= 4 * MAX_BACKLOG
            || (self.out_bytes >= MAX_BACKLOG && quiet);
        if give_up && !self.groups_out.is_empty() {
            // A second time with no group taken whole since, and still heard from (one
            // behind an outage resumes at the next IRAP): it gives no flow-control credit,
            // or as good as none, and would keep its place and up to 4 x MAX_BACKLOG here
            // for good.
            if self.dropped_behind && !quiet && !self.conn.closed_by_us() {
                self.close(
                    error_code::TOO_SLOW,
                    "queue dropped twice with no group taken whole in between: the receiver \
                     does not read, or far slower than the stream",
                );
            }
            self.dropped_behind = true;
        }
        // (stream, allowance) of each group rescued now.
        let mut rescued = Vec::new();
        for g in self.groups_out.iter_mut() {
            let mut older_group_cut = None;
            let cut = if self.group == Some(g.stream) {
                &mut self.group_cut
            } else {
                &mut older_group_cut
            };
            let shed = if self.takes_shed {
                g.shed(now, ahead, cut, &mut self.out_bytes)
            } else {
                0
            };
            if shed > 0 {
                self.frames_shed += shed;
                log::debug!(
                    "receiver {}: shed {shed} frames of group stream {} ({} so far)",
                    self.id,
                    g.stream,
                    self.frames_shed
                );
            }
            if !give_up && g.expires().is_none_or(|t| t > now + ahead) {
                continue;
            }
            let open = self.group == Some(g.stream);
            if !give_up && rescue::rescues(g, open, keyframes_answered) {
                g.allowance = rescue::lag(keyframes_answered);
                self.groups_late += 1;
                rescued.push((g.stream, g.allowance));
                log::debug!(
                    "receiver {}: group stream {} cannot be on time: sent late ({} so far)",
                    self.id,
                    g.stream,
                    self.groups_late
                );
                continue;
            }
            self.conn.reset(g.stream, error_code::GROUP_EXPIRED);
            self.out_bytes -= g.bytes();
            self.frames_dropped += g.clear();
            self.groups_expired += 1;
            // The sets may have been in what was dropped.
            self.has_parameter_sets = false;
            if self.group == Some(g.stream) {
                self.group = None;
            }
            log::debug!(
                "receiver {}: group stream {} expired ({} so far)",
                self.id,
                g.stream,
                self.groups_expired
            );
        }
        for (stream, allowance) in rescued {
            self.queue_command(&Command::LateGroup {
                stream,
                allowance: allowance.as_nanos() as u64,
            });
        }
    }
}
