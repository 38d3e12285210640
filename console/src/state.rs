//! What every request handler shares.

use std::sync::Mutex;

use rearview_protocol::PolicyMessage;

use crate::api::ingest::IngestState;
use crate::push::Hub;
use crate::store::Store;
use crate::tenant::Tenant;

pub struct AppState {
    pub store: Store,
    pub tenant: Tenant,
    pub hub: Hub,
    /// The signed bundle of the current version (signing once serves every device).
    pub policy_cache: Mutex<Option<PolicyMessage>>,
    /// How often a push stream pings: below the idle timeout, so quiet streams stay open.
    pub stream_ping: std::time::Duration,
    /// Ingest limits and the uploads in flight.
    pub ingest: IngestState,
    /// This process's id among the replicas of the tenant (what leases name).
    pub replica_id: String,
    /// What the browser side needs (see [`crate::web`]).
    pub web: WebState,
    /// Whether this process runs the retention job now (see [`crate::retention`]).
    pub retention: crate::retention::Running,
}

/// The browser side's share of the state.
pub struct WebState {
    /// Cookies are `Secure` (served over HTTPS, by us or a proxy in front).
    pub secure_cookies: bool,
    /// Bounds the argon2 hashes computed at once (see `web::session`).
    pub hashing: tokio::sync::Semaphore,
    pub pseudonyms: crate::web::pseudonym::Pseudonyms,
    /// Opens segments for the player.
    pub viewer: crate::web::viewer::Viewer,
    /// The console's record key, that the integrity badge checks signatures with.
    pub record_key: rearview_evidence::PublicKey,
    /// Single sign-on, when configured.
    pub oidc: Option<crate::web::oidc::Oidc>,
}
