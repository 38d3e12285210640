//! `rearview-console`: the reference server of Rearview — onboarding, policies, approvals,
//! triggers, clip ingest and review — and the command line that drives it.
//!
//! Everything lives in one data directory: `console.db` (SQLite), `blobs/` (sealed segments
//! exactly as uploaded, see [`blobs`]; or a bucket) and `keys/` (see [`tenant`]). The server opens segments
//! only for the browser player ([`web::viewer`], in memory, for an audited view); `clip
//! export` does on the console host, with the tenant's private key.
//!
//! # Layout
//!
//! * [`server`]: `init` (tenant, keys, the first admin and the first approver: two people) and
//!   [`Server::start`] (HTTP/HTTPS, the policy ticker), returning a [`ServerHandle`] with the
//!   bound address and shutdown.
//! * [`api`]: the routes; one module per idea — [`api::people`] (people, enrollment tokens,
//!   audit), [`api::roles`] (role grants and their confirmation by a second person),
//!   [`api::enroll`], [`api::approvals`] (requests, who may decide them, records the signer
//!   leaves out), [`api::stream`] (push), [`api::ingest`] (manifests checked against approvals
//!   and triggers, segments streamed to disk), [`api::clips`] (clip review), [`api::devices`]
//!   (health, activity/indicators), [`api::page`] (how every list is paged).
//! * [`policy`]: the signed bundle, triggers and indicator rules.
//! * [`blobs`]: where sealed segments live, a directory or an S3-compatible bucket, and how
//!   one is published whole or not at all.
//! * [`store`]: the database, and all of the console's SQL, one module per
//!   subject; handlers pass it closures it runs on the blocking pool, one transaction each (a
//!   change and its audit line commit together). [`error`]: what fails, and which HTTP answer
//!   and retry advice each failure gets.
//! * [`auth`]: tokens and roles; [`push`]: the hub that wakes device streams; [`tenant`]: keys and signing; [`private`]: the modes of everything
//!   the console writes (0700/0600 whatever the umask).
//! * [`web`]: the console in a browser — sign-in and sessions, the clip list, the player, the
//!   audit log — on the same roles and store as the API.
//! * [`client`]: the admin HTTP client the CLI uses; [`cli`]: the subcommands;
//!   [`export`]: opening a clip into PNG frames and JSON Lines events, and the evidence
//!   package `rearview-verify` checks (the signed records and custody log it carries are
//!   written by [`store::evidence`]).
//!
//! The wire types, and the protocol they make, are in `rearview_protocol` (which documents every
//! message); the device side is `rearview_uploader`. The console depends on the first only.
//!
//! # Logs
//!
//! Values that come from outside the console (names and kinds devices send, error texts that
//! may quote them) are logged as `?value` fields: Debug formatting escapes newlines and control
//! characters, so nobody can forge a log line through a name.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod cli;
pub mod client;
pub mod error;
pub mod export;
pub mod policy;
pub mod private;
pub mod push;
pub mod replicas;
pub mod retention;
pub mod server;
pub mod state;
pub mod store;
pub mod tenant;
pub mod web;

pub use api::ingest::IngestLimits;
pub use error::ConsoleError;
pub use server::{
    init, init_on, init_with_approver, Backends, InitOutput, Server, ServerConfig, ServerHandle,
};
pub use store::Database;
