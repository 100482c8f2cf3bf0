//! Why an impairment spec, or a value in it, does not parse.
//!
//! Each error's message is the whole sentence (a spec error's includes its value error's),
//! so none has a `source`: printing one is enough.

use std::fmt;

/// Why one value does not parse: a duration (`20ms`), a probability (`1%`, `0.01`) or a
/// number with an optional unit (`3M`, `64k`). Each case holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// No number before the unit of a duration.
    NotADuration(String),
    /// A number without a duration's unit (s, ms or us), or with another.
    DurationUnit(String),
    /// Too long for a `Duration`.
    DurationOutOfRange(String),
    /// Neither a fraction nor a percentage.
    NotAProbability(String),
    /// A probability below 0 or above 1.
    ProbabilityOutOfRange(String),
    /// No number before the unit of a rate or a size.
    NotANumber(String),
    /// A rate's or a size's unit other than k, K, M or G.
    UnknownUnit(String),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::NotADuration(text) => write!(f, "'{text}' is not a duration"),
            ValueError::DurationUnit(text) => write!(f, "'{text}': use s, ms or us"),
            ValueError::DurationOutOfRange(text) => write!(f, "'{text}' is out of range"),
            ValueError::NotAProbability(text) => write!(f, "'{text}' is not a probability"),
            ValueError::ProbabilityOutOfRange(text) => {
                write!(f, "'{text}' is not between 0 and 1")
            }
            ValueError::NotANumber(text) => write!(f, "'{text}' is not a number"),
            ValueError::UnknownUnit(text) => write!(f, "'{text}': unknown unit"),
        }
    }
}

impl std::error::Error for ValueError {}

/// Why an impairment spec does not parse. Each case holds the `key=value` item at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// A setting's value does not parse.
    Value { item: String, error: ValueError },
    /// `burst` without exactly four values, `p:r:loss_good:loss_bad`.
    BurstShape { item: String },
    /// A key the spec does not have.
    UnknownSetting { item: String },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Value { item, error } => write!(f, "'{item}': {error}"),
            SpecError::BurstShape { item } => {
                write!(f, "'{item}': burst is p:r:loss_good:loss_bad")
            }
            SpecError::UnknownSetting { item } => write!(f, "'{item}': unknown setting"),
        }
    }
}

impl std::error::Error for SpecError {}
