//! Wire time: instants as Unix milliseconds, the one unit every `*_ms` field of the protocol
//! carries, and the one clock both ends read it from.
//!
//! On the wire a [`UnixMillis`] is a bare JSON integer (`#[serde(transparent)]`), so the bytes
//! are those of the `i64` it wraps.

use serde::{Deserialize, Serialize};

/// An instant, milliseconds since the Unix epoch (UTC); negative before 1970.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The wall clock now. A clock before 1970 reads as the epoch, one past `i64::MAX` ms
    /// (in 292 million years) as the largest instant.
    pub fn now() -> UnixMillis {
        let since =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        UnixMillis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// The number of milliseconds, as the wire carries it.
    pub fn millis(self) -> i64 {
        self.0
    }
}

impl From<i64> for UnixMillis {
    fn from(ms: i64) -> UnixMillis {
        UnixMillis(ms)
    }
}

impl From<UnixMillis> for i64 {
    fn from(t: UnixMillis) -> i64 {
        t.0
    }
}

impl std::fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_is_a_bare_integer_on_the_wire() {
        assert_eq!(serde_json::to_string(&UnixMillis(1_700_000_000_123)).unwrap(), "1700000000123");
        let back: UnixMillis = serde_json::from_str("-5").unwrap();
        assert_eq!(back, UnixMillis(-5));
        let err = serde_json::from_str::<UnixMillis>("\"5\"").unwrap_err();
        assert!(err.to_string().contains("expected i64"), "{err}");
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        assert!(UnixMillis::now() > UnixMillis(1_764_000_000_000));
    }
}
