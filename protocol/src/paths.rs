//! Every device endpoint's path, in one place: the console's router mounts these templates and
//! the uploader's client builds its URLs with the functions beside them, so neither side spells
//! a path of its own (what each endpoint takes and answers is in the crate docs).
//!
//! A template names its parameters in braces (`{clip_id}`), the syntax the console's router
//! (axum 0.8) matches; the function of the same name fills them in.

/// `POST`: [`crate::EnrollRequest`] → [`crate::EnrollResponse`].
pub const ENROLL: &str = "/api/v1/enroll";
/// `GET`: the newest signed [`crate::PolicyMessage`].
pub const POLICY: &str = "/api/v1/device/policy";
/// `GET`: the push stream (server-sent events).
pub const STREAM: &str = "/api/v1/device/stream";
/// `POST`: stop re-sending trigger `{id}`; see [`trigger_ack`].
pub const TRIGGER_ACK: &str = "/api/v1/device/triggers/{id}/ack";
/// `PUT` a [`crate::ClipManifest`], `GET` its [`crate::ClipStatus`]; see [`clip`].
pub const CLIP: &str = "/api/v1/device/clips/{clip_id}";
/// `PUT` the raw sealed bytes of segment `{sha256}`; see [`segment`].
pub const SEGMENT: &str = "/api/v1/device/segments/{sha256}";
/// `POST`: a [`crate::HealthReport`].
pub const HEALTH: &str = "/api/v1/device/health";
/// `POST`: an [`crate::ActivityBatch`] → [`crate::ActivityAck`].
pub const ACTIVITY: &str = "/api/v1/device/activity";

/// [`TRIGGER_ACK`] for `trigger_id`.
pub fn trigger_ack(trigger_id: &str) -> String {
    TRIGGER_ACK.replace("{id}", trigger_id)
}

/// [`CLIP`] for `clip_id`.
pub fn clip(clip_id: &str) -> String {
    CLIP.replace("{clip_id}", clip_id)
}

/// [`SEGMENT`] for `sha256`.
pub fn segment(sha256: &str) -> String {
    SEGMENT.replace("{sha256}", sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths devices in the field already call: a change here breaks every one of them.
    #[test]
    fn the_paths_are_the_ones_devices_call() {
        assert_eq!(ENROLL, "/api/v1/enroll");
        assert_eq!(POLICY, "/api/v1/device/policy");
        assert_eq!(STREAM, "/api/v1/device/stream");
        assert_eq!(HEALTH, "/api/v1/device/health");
        assert_eq!(ACTIVITY, "/api/v1/device/activity");
        assert_eq!(trigger_ack("t-1"), "/api/v1/device/triggers/t-1/ack");
        assert_eq!(clip("c-1"), "/api/v1/device/clips/c-1");
        assert_eq!(segment("ab12"), "/api/v1/device/segments/ab12");
    }
}
