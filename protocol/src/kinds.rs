//! The fixed sets of values the wire carries as strings, as enums from the moment they are
//! parsed. Each serializes to exactly the string it replaces, so the wire bytes are unchanged.
//!
//! ```text
//! type            field                      values                                 unknown value
//! CaptureMode     ClipManifest.mode          specific-activities | all-activities   refused
//! ActivityKind    ActivityEvent.kind         an IndicatorKind (snake_case) | any    kept, as Other
//! HealthState     HealthReport.state         capturing | idle |                     kept, as Other
//!                                            paused: cpu limit | any
//! ClipState       a device's clip, locally   collecting | pending | sent |          refused
//!                                            refused | lost
//! ```
//!
//! Why the difference: a manifest's mode decides which approval the console checks the clip
//! against, so a value neither side knows is an error, not a guess. Activity kinds and health
//! states come from devices that may be newer than the console: the console stores and shows a
//! kind or state it does not know (a kind without a rule issues no trigger), so they keep the
//! text in `Other` rather than refusing the batch or the report. Clip states never leave the
//! device; they are here so the spool and the agent share one set.

use serde::{Deserialize, Serialize};

pub use rearview_config::{CaptureMode, IndicatorKind};

/// The wire name of a capture mode (`specific-activities`, `all-activities`).
pub fn capture_mode_name(mode: CaptureMode) -> &'static str {
    match mode {
        CaptureMode::SpecificActivities => "specific-activities",
        CaptureMode::AllActivities => "all-activities",
    }
}

/// The wire name of an indicator kind (`removable_media_copy`, …).
pub fn indicator_kind_name(kind: IndicatorKind) -> &'static str {
    match kind {
        IndicatorKind::RemovableMediaCopy => "removable_media_copy",
        IndicatorKind::WatchedFolderCopy => "watched_folder_copy",
        IndicatorKind::CloudUpload => "cloud_upload",
        IndicatorKind::Print => "print",
        IndicatorKind::Manual => "manual",
    }
}

const INDICATOR_KINDS: [IndicatorKind; 5] = [
    IndicatorKind::RemovableMediaCopy,
    IndicatorKind::WatchedFolderCopy,
    IndicatorKind::CloudUpload,
    IndicatorKind::Print,
    IndicatorKind::Manual,
];

/// What an activity event reports: an indicator this build knows, or one it does not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ActivityKind {
    Indicator(IndicatorKind),
    /// A kind this build does not know (a newer device's), as sent.
    Other(String),
}

impl ActivityKind {
    /// The name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ActivityKind::Indicator(kind) => indicator_kind_name(*kind),
            ActivityKind::Other(text) => text,
        }
    }
}

impl From<IndicatorKind> for ActivityKind {
    fn from(kind: IndicatorKind) -> ActivityKind {
        ActivityKind::Indicator(kind)
    }
}

impl From<String> for ActivityKind {
    fn from(text: String) -> ActivityKind {
        match INDICATOR_KINDS.into_iter().find(|k| indicator_kind_name(*k) == text) {
            Some(kind) => ActivityKind::Indicator(kind),
            None => ActivityKind::Other(text),
        }
    }
}

impl From<ActivityKind> for String {
    fn from(kind: ActivityKind) -> String {
        match kind {
            ActivityKind::Other(text) => text,
            known => known.as_str().to_owned(),
        }
    }
}

impl std::fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a device says it is doing, in its health report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum HealthState {
    /// At least one approved session is being recorded.
    Capturing,
    /// Running, recording nobody.
    #[default]
    Idle,
    /// Capture paused: the agent is over its CPU limit.
    PausedCpuLimit,
    /// A state this build does not know (a newer device's), as sent.
    Other(String),
}

impl HealthState {
    /// The name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            HealthState::Capturing => "capturing",
            HealthState::Idle => "idle",
            HealthState::PausedCpuLimit => "paused: cpu limit",
            HealthState::Other(text) => text,
        }
    }
}

impl From<String> for HealthState {
    fn from(text: String) -> HealthState {
        match text.as_str() {
            "capturing" => HealthState::Capturing,
            "idle" => HealthState::Idle,
            "paused: cpu limit" => HealthState::PausedCpuLimit,
            _ => HealthState::Other(text),
        }
    }
}

impl From<HealthState> for String {
    fn from(state: HealthState) -> String {
        match state {
            HealthState::Other(text) => text,
            known => known.as_str().to_owned(),
        }
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a device's clip stands, from the first segment collected to the console's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipState {
    /// Its window is still running; segments are being gathered.
    Collecting,
    /// Spooled, not yet taken whole by the console.
    Pending,
    /// The console holds the closed clip and every segment it names.
    Sent,
    /// The console refused it (409, with a reason); set aside, never sent again.
    Refused,
    /// Dropped on the device (e.g. the offline cache overwrote it), with the loss reported.
    Lost,
}

impl ClipState {
    /// Every state, in the order a clip goes through them.
    pub const ALL: [ClipState; 5] = [
        ClipState::Collecting,
        ClipState::Pending,
        ClipState::Sent,
        ClipState::Refused,
        ClipState::Lost,
    ];

    /// The state a name stands for, if it is one.
    pub fn parse(name: &str) -> Option<ClipState> {
        ClipState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The name on the wire and in the spool.
    pub fn as_str(self) -> &'static str {
        match self {
            ClipState::Collecting => "collecting",
            ClipState::Pending => "pending",
            ClipState::Sent => "sent",
            ClipState::Refused => "refused",
            ClipState::Lost => "lost",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn capture_modes_are_the_strings_they_replace_and_others_are_refused() {
        for (mode, old) in [
            (CaptureMode::SpecificActivities, "specific-activities"),
            (CaptureMode::AllActivities, "all-activities"),
        ] {
            assert_eq!(json(&mode), format!("\"{old}\""));
            assert_eq!(capture_mode_name(mode), old);
            assert_eq!(serde_json::from_str::<CaptureMode>(&json(&old)).unwrap(), mode);
        }
        let err = serde_json::from_str::<CaptureMode>("\"everything\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant `everything`"), "{err}");
    }

    #[test]
    fn activity_kinds_are_the_strings_they_replace_and_unknown_ones_are_kept() {
        for kind in INDICATOR_KINDS {
            let old = indicator_kind_name(kind);
            // The name agrees with the policy's own serde name for the kind.
            assert_eq!(json(&kind), format!("\"{old}\""));
            assert_eq!(json(&ActivityKind::from(kind)), format!("\"{old}\""));
            let back: ActivityKind = serde_json::from_str(&json(&old)).unwrap();
            assert_eq!(back, ActivityKind::Indicator(kind));
        }
        let newer: ActivityKind = serde_json::from_str("\"usb_tethering\"").unwrap();
        assert_eq!(newer, ActivityKind::Other("usb_tethering".into()));
        assert_eq!(json(&newer), "\"usb_tethering\"");
        assert!(serde_json::from_str::<ActivityKind>("7").is_err());
    }

    #[test]
    fn health_states_are_the_strings_they_replace_and_unknown_ones_are_kept() {
        for (state, old) in [
            (HealthState::Capturing, "capturing"),
            (HealthState::Idle, "idle"),
            (HealthState::PausedCpuLimit, "paused: cpu limit"),
        ] {
            assert_eq!(json(&state), format!("\"{old}\""));
            assert_eq!(serde_json::from_str::<HealthState>(&json(&old)).unwrap(), state);
        }
        let newer: HealthState = serde_json::from_str("\"paused: on battery\"").unwrap();
        assert_eq!(newer, HealthState::Other("paused: on battery".into()));
        assert_eq!(json(&newer), "\"paused: on battery\"");
    }

    #[test]
    fn clip_states_are_the_strings_they_replace_and_others_are_refused() {
        use ClipState::*;
        for state in [Collecting, Pending, Sent, Refused, Lost] {
            assert_eq!(json(&state), format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<ClipState>(&json(&state)).unwrap(), state);
        }
        let err = serde_json::from_str::<ClipState>("\"done\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant `done`"), "{err}");
    }
}
