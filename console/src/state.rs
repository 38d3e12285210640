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
}
