//! Sets of u64 as sorted, disjoint, half-open ranges: packet numbers received, stream bytes
//! acknowledged, stream bytes to send again.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, x: u64) -> bool {
        self.0.iter().any(|&(s, e)| s <= x && x < e)
    }

    /// The lowest range.
    pub fn first(&self) -> Option<(u64, u64)> {
        self.0.first().copied()
    }

    /// The highest value in the set.
    pub fn max(&self) -> Option<u64> {
        self.0.last().map(|&(_, e)| e - 1)
    }

    /// Ranges, highest first (as an ACK frame lists them), inclusive ends.
    pub fn descending(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().rev().map(|&(s, e)| (s, e - 1))
    }

    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // Every range touching [s, e) merges into it.
        let first = self.0.partition_point(|&(_, re)| re < s);
        let mut last = first;
        while last < self.0.len() && self.0[last].0 <= e {
            s = s.min(self.0[last].0);
            e = e.max(self.0[last].1);
            last += 1;
        }
        self.0.splice(first..last, [(s, e)]);
    }

    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(s, e) in &self.0 {
            if e <= start || s >= end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start));
            }
            if e > end {
                out.push((end, e));
            }
        }
        self.0 = out;
    }

    /// Keeps only the `n` highest ranges.
    pub fn keep_last(&mut self, n: usize) {
        if self.0.len() > n {
            self.0.drain(..self.0.len() - n);
        }
    }

    /// The parts of [start, end) not in the set.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        for &(s, e) in &self.0 {
            if e <= at {
                continue;
            }
            if s >= end {
                break;
            }
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
        }
        if at < end {
            out.push((at, end));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_split_and_show_their_gaps() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 25);
        assert_eq!(r.0, [(10, 25), (30, 40)]);
        r.insert(5, 35);
        assert_eq!(r.0, [(5, 40)]);
        r.remove(10, 12);
        assert_eq!(r.0, [(5, 10), (12, 40)]);
        assert!(r.contains(12) && !r.contains(11) && !r.contains(40));
        assert_eq!(r.gaps(0, 50), [(0, 5), (10, 12), (40, 50)]);
        assert_eq!(r.gaps(13, 20), []);
        assert_eq!(r.descending().collect::<Vec<_>>(), [(12, 39), (5, 9)]);
        assert_eq!((r.first(), r.max()), (Some((5, 10)), Some(39)));
        r.keep_last(1);
        assert_eq!(r.0, [(12, 40)]);
        assert!(Ranges::default().is_empty() && !r.is_empty());
    }
}
