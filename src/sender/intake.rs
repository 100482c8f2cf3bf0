//! What the sink's streaming thread lets into the stream, one access unit at a time:
//! nothing before the stream's first IRAP, since no receiver could decode it; after that
//! every access unit, numbered (an untimestamped one is paced as that frame, see
//! [`super::untimed`]), with what dropping it would cost in a stream of as many temporal
//! sub-layers as the last SPS said.

use crate::media::h265::{AuInfo, DropCost};

/// The sub-layers assumed before any SPS says: H.265's most.
const MAX_SUB_LAYERS: u8 = 7;

/// The stream's start and count, from the element's start to its stop (a flush does not
/// reset it: the stream goes on).
#[derive(Debug, Default)]
pub struct Intake {
    /// The first IRAP came: receivers can decode from here on.
    started: bool,
    /// Access units let in so far.
    admitted: u64,
    /// Temporal sub-layers, from the last SPS; None before one.
    sub_layers: Option<u8>,
}

/// An access unit let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// How many were let in before it, from 0 at the first IRAP.
    pub number: u64,
    /// What losing it costs the pictures after it.
    pub drop_cost: DropCost,
}

impl Intake {
    /// Lets the access unit `info` describes in, or, before the first IRAP, not (None: drop
    /// it).
    pub fn admit(&mut self, info: &AuInfo) -> Option<Admitted> {
        if !self.started && !info.irap {
            return None;
        }
        self.started = true;
        let number = self.admitted;
        self.admitted += 1;
        self.sub_layers = info.sub_layers.or(self.sub_layers);
        let drop_cost = info.drop_cost(self.sub_layers.unwrap_or(MAX_SUB_LAYERS));
        Some(Admitted { number, drop_cost })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irap() -> AuInfo {
        AuInfo {
            irap: true,
            vcl: true,
            ..AuInfo::default()
        }
    }

    /// A non-reference picture (TRAIL_N and the like) on sub-layer `temporal_id`.
    fn non_reference(temporal_id: u8) -> AuInfo {
        AuInfo {
            vcl: true,
            temporal_id,
            sub_layer_non_reference: true,
            ..AuInfo::default()
        }
    }

    #[test]
    fn nothing_goes_before_the_first_irap() {
        let mut intake = Intake::default();
        assert_eq!(intake.admit(&non_reference(0)), None);
        // Parameter sets alone do not start the stream either.
        let sps = AuInfo {
            parameter_sets: true,
            sub_layers: Some(1),
            ..AuInfo::default()
        };
        assert_eq!(intake.admit(&sps), None);
        let first = intake.admit(&irap()).expect("an IRAP starts the stream");
        assert_eq!(first.number, 0);
        // From then on everything goes, numbered in order.
        assert_eq!(intake.admit(&non_reference(0)).map(|a| a.number), Some(1));
        assert_eq!(intake.admit(&irap()).map(|a| a.number), Some(2));
    }

    #[test]
    fn what_was_dropped_counts_for_nothing() {
        let mut intake = Intake::default();
        for _ in 0..5 {
            assert_eq!(intake.admit(&non_reference(0)), None);
        }
        // Nor does a dropped SPS's word on the sub-layers.
        let sps = AuInfo {
            parameter_sets: true,
            sub_layers: Some(2),
            ..AuInfo::default()
        };
        assert_eq!(intake.admit(&sps), None);
        assert_eq!(intake.admit(&irap()).map(|a| a.number), Some(0));
        assert_eq!(
            intake.admit(&non_reference(1)).unwrap().drop_cost,
            DropCost::Layers { from: 2 }
        );
    }

    #[test]
    fn the_drop_cost_follows_the_last_sps() {
        let mut intake = Intake::default();
        // Before any SPS, 7 sub-layers: a non-reference picture on layer 1 holds up 2-6.
        intake.admit(&irap()).unwrap();
        assert_eq!(
            intake.admit(&non_reference(1)).unwrap().drop_cost,
            DropCost::Layers { from: 2 }
        );
        // An SPS says 2: layer 1 is the top, and such a picture stands alone.
        let with_sps = AuInfo {
            sub_layers: Some(2),
            ..irap()
        };
        assert_eq!(intake.admit(&with_sps).unwrap().drop_cost, DropCost::Group);
        assert_eq!(
            intake.admit(&non_reference(1)).unwrap().drop_cost,
            DropCost::Alone
        );
        // An access unit without an SPS keeps what the last one said.
        intake.admit(&irap()).unwrap();
        assert_eq!(
            intake.admit(&non_reference(1)).unwrap().drop_cost,
            DropCost::Alone
        );
    }
}
