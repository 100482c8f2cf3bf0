//! The little H.265 knowledge the transport needs: Annex B NAL splitting, NAL headers, IRAP
//! and parameter-set detection, access-unit boundaries (ITU-T H.265, 7.3.1.2 and 7.4.2.4.4).

use std::fmt;

/// NAL unit types we care about (Table 7-1).
pub mod nal_type {
    pub const BLA_W_LP: u8 = 16;
    pub const RSV_IRAP_23: u8 = 23;
    pub const VPS: u8 = 32;
    pub const SPS: u8 = 33;
    pub const PPS: u8 = 34;
    pub const AUD: u8 = 35;
    pub const PREFIX_SEI: u8 = 39;
}

/// The two-byte NAL unit header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalHeader {
    pub nal_type: u8,
    pub layer_id: u8,
    pub temporal_id: u8,
}

/// Why bytes are not an H.265 NAL unit header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadNalHeader {
    /// Fewer than the header's two bytes.
    TooShort(usize),
    ForbiddenBit,
    /// nuh_temporal_id_plus1 is 0.
    NoTemporalId,
    /// A reserved VCL type (10..=15, 22..=31).
    Reserved(u8),
}

impl fmt::Display for BadNalHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadNalHeader::TooShort(len) => write!(f, "NAL unit of {len} bytes is too short"),
            BadNalHeader::ForbiddenBit => f.write_str("NAL unit has forbidden_zero_bit set"),
            BadNalHeader::NoTemporalId => f.write_str("NAL unit has nuh_temporal_id_plus1 = 0"),
            BadNalHeader::Reserved(t) => write!(f, "NAL unit type {t} is reserved"),
        }
    }
}

impl std::error::Error for BadNalHeader {}

impl NalHeader {
    /// Parses and checks a header: forbidden bit clear, TemporalId present, and no reserved
    /// VCL type (which is what non-H.265 bytes behind a stray start code usually look like).
    pub fn parse(nal: &[u8]) -> Result<NalHeader, BadNalHeader> {
        let [b0, b1, ..] = *nal else {
            return Err(BadNalHeader::TooShort(nal.len()));
        };
        if b0 & 0x80 != 0 {
            return Err(BadNalHeader::ForbiddenBit);
        }
        let header = NalHeader {
            nal_type: (b0 >> 1) & 0x3f,
            layer_id: ((b0 & 1) << 5) | (b1 >> 3),
            temporal_id: (b1 & 7).wrapping_sub(1),
        };
        if b1 & 7 == 0 {
            return Err(BadNalHeader::NoTemporalId);
        }
        if matches!(header.nal_type, 10..=15 | 22..=31) {
            return Err(BadNalHeader::Reserved(header.nal_type));
        }
        Ok(header)
    }

    pub fn is_vcl(&self) -> bool {
        self.nal_type < 32
    }

    /// Intra random access point: decoding can start here.
    pub fn is_irap(&self) -> bool {
        (nal_type::BLA_W_LP..=nal_type::RSV_IRAP_23).contains(&self.nal_type)
    }

    pub fn is_parameter_set(&self) -> bool {
        matches!(self.nal_type, nal_type::VPS | nal_type::SPS | nal_type::PPS)
    }
}

/// Iterates over the NAL units of an Annex B byte-stream, without start codes.
pub struct NalUnits<'a> {
    rest: &'a [u8],
}

/// Splits `data` at start codes. Bytes before the first start code are skipped.
pub fn nal_units(data: &[u8]) -> NalUnits<'_> {
    let rest = match find_start_code(data) {
        Some((_, end)) => &data[end..],
        None => &[],
    };
    NalUnits { rest }
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (nal, rest) = match find_start_code(self.rest) {
            Some((start, end)) => (&self.rest[..start], &self.rest[end..]),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        // trailing_zero_8bits belong to the byte-stream, not to the NAL unit.
        let len = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        Some(&nal[..len])
    }
}

/// Finds the first `00 00 01`; returns where it starts and where the NAL unit begins.
/// Looks for the rare 01 byte with memchr first: this scan covers every byte the sink
/// sends, and a byte-by-byte window compare cost as much as the whole QUIC send path.
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    memchr::memchr_iter(1, data)
        .find(|&i| i >= 2 && data[i - 2] == 0 && data[i - 1] == 0)
        .map(|i| (i - 2, i + 1))
}

/// The general profile, tier and level of a sequence (7.3.3): what codec strings name
/// (`hev1.1.6.L93.B0`, ISO/IEC 14496-15, E.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileTierLevel {
    pub profile_space: u8,
    pub high_tier: bool,
    pub profile_idc: u8,
    /// general_profile_compatibility_flags, as the bitstream orders them.
    pub compatibility: [u8; 4],
    /// The 48 bits after them (progressive_source_flag onwards).
    pub constraints: [u8; 6],
    pub level_idc: u8,
}

/// The profile, tier and level of the first SPS in `au`, if it has one.
pub fn profile_tier_level(au: &[u8]) -> Option<ProfileTierLevel> {
    let sps = nal_units(au)
        .find(|nal| NalHeader::parse(nal).is_ok_and(|h| h.nal_type == nal_type::SPS))?;
    // The RBSP: emulation prevention bytes (00 00 03) removed from what we read.
    let mut rbsp = Vec::with_capacity(16);
    let mut zeros = 0;
    for &b in &sps[2..] {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
        if rbsp.len() == 13 {
            break;
        }
    }
    // sps_video_parameter_set_id, sps_max_sub_layers_minus1 and the nesting flag fill the
    // first byte; profile_tier_level(1, ...) follows, byte-aligned.
    let p: [u8; 13] = rbsp.try_into().ok()?;
    Some(ProfileTierLevel {
        profile_space: p[1] >> 6,
        high_tier: p[1] & 0x20 != 0,
        profile_idc: p[1] & 0x1f,
        compatibility: [p[2], p[3], p[4], p[5]],
        constraints: [p[6], p[7], p[8], p[9], p[10], p[11]],
        level_idc: p[12],
    })
}

/// Whether the access unit's picture is RASL (random access skipped leading, types 8 and
/// 9): it references pictures from before its IRAP, so it cannot be decoded when decoding
/// starts at that IRAP.
pub fn is_rasl(au: &[u8]) -> bool {
    nal_units(au)
        .filter_map(|nal| NalHeader::parse(nal).ok())
        .find(NalHeader::is_vcl)
        .is_some_and(|h| matches!(h.nal_type, 8 | 9))
}

/// What the transport needs to know about one access unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuInfo {
    /// Holds an IRAP picture: a group of pictures starts here.
    pub irap: bool,
    /// Carries VPS, SPS or PPS.
    pub parameter_sets: bool,
    pub nal_units: usize,
    /// TemporalId of the picture: pictures reference only pictures of their own sub-layer
    /// and below.
    pub temporal_id: u8,
    /// A sub-layer non-reference picture (types TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N): no
    /// later picture of its own sub-layer references it, only higher sub-layers may.
    pub sub_layer_non_reference: bool,
    /// From an SPS in this access unit: the stream's number of temporal sub-layers.
    pub sub_layers: Option<u8>,
    /// Holds a picture's slice segment.
    pub vcl: bool,
    /// Its first NAL unit can only begin an access unit (see [`begins_access_unit`]).
    pub begins: bool,
}

/// What dropping an access unit costs the pictures after it in its group, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCost {
    /// No picture references it: a non-reference picture of the highest sub-layer.
    Alone,
    /// Only pictures of sub-layer `from` and above may reference it: they must go with it,
    /// for the rest of the group.
    Layers { from: u8 },
    /// Base-layer pictures reference it (and IRAPs start the group, parameter sets serve
    /// all that follows): only the group's whole tail can go.
    Group,
}

impl AuInfo {
    /// Adds what the NAL units after this one's hold (`next`), as if inspected together.
    pub fn merge(&mut self, next: &AuInfo) {
        self.irap |= next.irap;
        self.parameter_sets |= next.parameter_sets;
        self.nal_units += next.nal_units;
        if next.vcl {
            self.vcl = true;
            self.temporal_id = next.temporal_id;
            self.sub_layer_non_reference = next.sub_layer_non_reference;
        }
        self.sub_layers = next.sub_layers.or(self.sub_layers);
    }

    /// The cost of dropping this access unit in a stream of `sub_layers` temporal
    /// sub-layers (ITU-T H.265, 8.1.2: a sub-bitstream without the top layers decodes).
    pub fn drop_cost(&self, sub_layers: u8) -> DropCost {
        let top = sub_layers.saturating_sub(1);
        // Parameter sets are needed by everything after them.
        let from = match (
            self.irap || self.parameter_sets,
            self.sub_layer_non_reference,
        ) {
            (true, _) => return DropCost::Group,
            (false, true) if self.temporal_id >= top => return DropCost::Alone,
            (false, true) => self.temporal_id + 1,
            (false, false) => self.temporal_id,
        };
        if from == 0 {
            DropCost::Group
        } else {
            DropCost::Layers { from }
        }
    }
}

/// Why a buffer is not an access unit of Annex B H.265.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAnnexB {
    /// No start code first; its first bytes (up to 8), which say what it is instead.
    NoStartCode(Vec<u8>),
    /// A NAL unit whose header is not H.265's.
    Nal(BadNalHeader),
    /// Start codes and nothing between them.
    Empty,
}

impl fmt::Display for NotAnnexB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAnnexB::NoStartCode(head) => {
                let head: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
                write!(
                    f,
                    "buffer does not start with an Annex B start code (first bytes {})",
                    head.join(" ")
                )
            }
            NotAnnexB::Nal(e) => write!(f, "{e}"),
            NotAnnexB::Empty => f.write_str("buffer holds no NAL unit"),
        }
    }
}

impl std::error::Error for NotAnnexB {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NotAnnexB::Nal(e) => Some(e),
            _ => None,
        }
    }
}

/// Checks that `au` is Annex B H.265 (starts with a start code, every NAL header valid) and
/// says whether it is a random access point.
pub fn inspect(au: &[u8]) -> Result<AuInfo, NotAnnexB> {
    if !(au.starts_with(&[0, 0, 1]) || au.starts_with(&[0, 0, 0, 1])) {
        return Err(NotAnnexB::NoStartCode(au.iter().take(8).copied().collect()));
    }
    let mut info = AuInfo::default();
    for nal in nal_units(au) {
        let header = NalHeader::parse(nal).map_err(NotAnnexB::Nal)?;
        if info.nal_units == 0 {
            info.begins = begins_access_unit(nal);
        }
        info.irap |= header.is_irap();
        info.parameter_sets |= header.is_parameter_set();
        info.nal_units += 1;
        if header.is_vcl() {
            info.vcl = true;
            info.temporal_id = header.temporal_id;
            info.sub_layer_non_reference = header.nal_type <= 14 && header.nal_type % 2 == 0;
        }
        if header.nal_type == nal_type::SPS {
            // sps_video_parameter_set_id (4 bits), sps_max_sub_layers_minus1 (3 bits): the
            // first payload byte, which emulation prevention never touches.
            if let Some(b) = nal.get(2) {
                info.sub_layers = Some(((b >> 1) & 7) + 1);
            }
        }
    }
    if info.nal_units == 0 {
        return Err(NotAnnexB::Empty);
    }
    Ok(info)
}

/// Whether `nal` (one NAL unit, no start code) can only be the first NAL of a new access unit
/// once the current one holds a picture: AUD, parameter sets, prefix SEI, reserved types
/// 41..=44 and 48..=55, or the first slice segment of a picture.
pub fn begins_access_unit(nal: &[u8]) -> bool {
    let Ok(header) = NalHeader::parse(nal) else {
        return false;
    };
    match header.nal_type {
        t if t < 32 => nal.get(2).is_some_and(|b| b & 0x80 != 0),
        nal_type::VPS..=nal_type::AUD | nal_type::PREFIX_SEI | 41..=44 | 48..=55 => true,
        _ => false,
    }
}

/// The parameter sets a decoder starting at a later IRAP needs: those of `au` (VPS, SPS,
/// PPS), and of `old` for each type `au` lacks, each behind a 4-byte start code.
pub fn merge_parameter_sets(old: &[u8], au: &[u8]) -> Vec<u8> {
    let sets_of =
        |data| nal_units(data).filter_map(|n| NalHeader::parse(n).ok().map(|h| (h.nal_type, n)));
    let mut out = Vec::new();
    for kind in [nal_type::VPS, nal_type::SPS, nal_type::PPS] {
        let mut fresh = sets_of(au).filter(|(t, _)| *t == kind).peekable();
        let chosen: Vec<&[u8]> = if fresh.peek().is_some() {
            fresh.map(|(_, n)| n).collect()
        } else {
            sets_of(old)
                .filter(|(t, _)| *t == kind)
                .map(|(_, n)| n)
                .collect()
        };
        for nal in chosen {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_mixed_start_codes() {
        let data = [0, 0, 0, 1, 0x40, 0x01, 9, 0, 0, 1, 0x42, 0x01, 8, 0, 0];
        let nals: Vec<_> = nal_units(&data).collect();
        assert_eq!(nals, vec![&[0x40, 0x01, 9][..], &[0x42, 0x01, 8][..]]);
    }

    #[test]
    fn start_codes_at_the_edges() {
        assert_eq!(find_start_code(&[0, 0, 1]), Some((0, 3)));
        assert_eq!(find_start_code(&[1, 0, 1, 0, 0, 1]), Some((3, 6)));
        assert_eq!(find_start_code(&[0, 1, 0, 0, 2, 1]), None);
    }

    #[test]
    fn inspects_an_idr_with_parameter_sets() {
        let au = [0, 0, 0, 1, 0x40, 0x01, 1, 0, 0, 1, 0x26, 0x01, 0xaf];
        let info = inspect(&au).unwrap();
        assert!(info.irap && info.parameter_sets);
        assert_eq!(info.nal_units, 2);
        assert!(begins_access_unit(&[0x26, 0x01, 0xaf]));
        assert!(!begins_access_unit(&[0x26, 0x01, 0x2f]));
    }

    #[test]
    fn drop_cost_follows_sub_layers() {
        // SPS with sps_max_sub_layers_minus1 = 1 (first payload byte 0x02).
        let sps = [0, 0, 1, 0x42, 0x01, 0x02];
        assert_eq!(inspect(&sps).unwrap().sub_layers, Some(2));
        let pic = |nal_type: u8, tid: u8| {
            inspect(&[0, 0, 1, nal_type << 1, tid + 1, 0x80])
                .unwrap()
                .drop_cost(2)
        };
        let layers = |from| DropCost::Layers { from };
        assert_eq!(pic(2, 1), DropCost::Alone); // TSA_N on the top layer
        assert_eq!(pic(0, 0), layers(1)); // TRAIL_N below the top: layer 1 may use it
        assert_eq!(pic(1, 1), layers(1)); // TRAIL_R on layer 1
        assert_eq!(pic(1, 0), DropCost::Group); // TRAIL_R on the base layer
        assert_eq!(pic(19, 0), DropCost::Group); // IDR
                                                 // A non-reference picture carrying parameter sets.
        let with_pps = inspect(&[0, 0, 1, 0x44, 0x01, 0xc1, 0, 0, 1, 0x00, 0x01, 0x80]).unwrap();
        assert_eq!(with_pps.drop_cost(1), DropCost::Group);
        // A single-layer stream: every non-reference picture stands alone.
        let trail_n = inspect(&[0, 0, 1, 0x00, 0x01, 0x80]).unwrap();
        assert_eq!(trail_n.drop_cost(1), DropCost::Alone);
    }

    #[test]
    fn merges_parameter_sets_by_type() {
        // VPS, SPS, then an IDR slice.
        let au = [
            0, 0, 1, 0x40, 0x01, 1, 0, 0, 1, 0x42, 0x01, 2, 0, 0, 1, 0x26, 0x01, 0xaf,
        ];
        let sets = merge_parameter_sets(&[], &au);
        assert_eq!(sets, [0, 0, 0, 1, 0x40, 0x01, 1, 0, 0, 0, 1, 0x42, 0x01, 2]);
        assert_eq!(
            merge_parameter_sets(&sets, &[0, 0, 1, 0x26, 0x01, 0xaf]),
            sets
        );
        // A new SPS replaces the old one and keeps the VPS; a PPS is added.
        let update = [0, 0, 1, 0x42, 0x01, 3, 0, 0, 1, 0x44, 0x01, 4];
        let merged = [
            0, 0, 0, 1, 0x40, 0x01, 1, 0, 0, 0, 1, 0x42, 0x01, 3, 0, 0, 0, 1, 0x44, 0x01, 4,
        ];
        assert_eq!(merge_parameter_sets(&sets, &update), merged);
    }

    #[test]
    fn finds_rasl_pictures() {
        // A prefix SEI, then a RASL_N slice (type 8); then a TRAIL_R slice (type 1).
        assert!(is_rasl(&[
            0, 0, 1, 0x4e, 0x01, 5, 0, 0, 1, 0x10, 0x01, 0x80
        ]));
        assert!(!is_rasl(&[0, 0, 1, 0x02, 0x01, 0x80]));
    }

    #[test]
    fn refuses_length_prefixed_and_reserved() {
        let err = inspect(&[0, 0, 0, 0x18, 0x40, 0x01]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "buffer does not start with an Annex B start code (first bytes 00 00 00 18 40 01)"
        );
        // A length prefix 0x00000117 looks like a start code followed by reserved type 11.
        let err = inspect(&[0, 0, 1, 0x17, 0x02, 0x01]).unwrap_err();
        assert_eq!(err, NotAnnexB::Nal(BadNalHeader::Reserved(11)));
        assert_eq!(err.to_string(), "NAL unit type 11 is reserved");
        assert_eq!(inspect(&[0, 0, 1]), Err(NotAnnexB::Empty));
    }
}
