//! Retention, legal holds and deletion (what each does: [`crate::store::retention`]; the daily
//! job: [`crate::retention`]).
//!
//! ```text
//! GET  /api/v1/retention/settings              admin, investigator
//! PUT  /api/v1/retention/settings              admin           {days, bulk_delete}; audited
//! POST /api/v1/retention/run                   admin           runs the job now; its summary
//! GET  /api/v1/holds?all=true                  admin, investigator   active holds (all: and
//!                                                                    the released ones)
//! POST /api/v1/holds                           admin, investigator   {clip | user, reason}
//! POST /api/v1/holds/{id}/release              admin, investigator   {reason}
//! POST /api/v1/clips/{id}/delete               investigator    {reason}: one clip
//! POST /api/v1/users/{user}/clips/delete       admin, when the tenant's bulk_delete allows it
//!                                                              {reason}: every clip of the
//!                                                              user no hold covers
//! ```
//!
//! Every call trusts only the person's token (roles from the console's own grants) and checks
//! its body: a reason is required (at most 500 characters), a clip under a hold is refused
//! (409, naming the hold). Each change is one transaction with its audit line and custody
//! entries; the blobs of deleted clips are removed right after (a blob store that fails leaves
//! them queued for the daily job).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::{new_token, Person, Role};
use crate::error::ApiError;
use crate::retention::{remove_queued_blobs, RunSummary};
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::retention::{DeleteCause, Deleted, Hold, HoldScope, RetentionSettings};

/// `GET /api/v1/retention/settings` (admin, investigator).
pub async fn get_settings(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<RetentionSettings>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    Ok(Json(state.store.read(|tx| tx.retention_settings()).await?))
}

/// `PUT /api/v1/retention/settings` (admin); audited (`retention.settings`).
pub async fn put_settings(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(settings): Json<RetentionSettings>,
) -> Result<Json<RetentionSettings>, ApiError> {
    person.require(&[Role::Admin])?;
    let actor = person.actor();
    let saved = state.store.write(move |tx| tx.set_retention_settings(settings, &actor)).await?;
    Ok(Json(saved))
}

/// `POST /api/v1/retention/run` (admin): the job, now; audited as the job's own run, and who
/// asked for it (`retention.run.requested`).
pub async fn run(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<RunSummary>, ApiError> {
    person.require(&[Role::Admin])?;
    let actor = person.actor();
    state
        .store
        .write(move |tx| {
            tx.audit(&actor, "retention.run.requested", "tenant", serde_json::json!({}))
        })
        .await?;
    Ok(Json(crate::retention::run_now(&state.store, now_ms()).await?))
}

#[derive(Debug, Default, Deserialize)]
pub struct HoldsQuery {
    #[serde(default)]
    pub all: Option<String>,
}

/// `GET /api/v1/holds` (admin, investigator).
pub async fn list_holds(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(q): Query<HoldsQuery>,
) -> Result<Json<Vec<Hold>>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let all = match q.all.as_deref().map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("all must be true or false, not {other:?}")))
        }
    };
    Ok(Json(state.store.read(move |tx| tx.holds(!all)).await?))
}

/// A new hold: on a clip or on a user, with a reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    #[serde(default)]
    pub clip: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    pub reason: String,
}

impl NewHold {
    pub fn scope(&self) -> Result<(HoldScope, String), ApiError> {
        match (&self.clip, &self.user) {
            (Some(clip), None) => Ok((HoldScope::Clip, clip.clone())),
            (None, Some(user)) => Ok((HoldScope::User, user.clone())),
            _ => Err(ApiError::bad_request("a legal hold names either a clip or a user")),
        }
    }
}

/// `POST /api/v1/holds` (admin, investigator); audited (`hold.place`).
pub async fn place_hold(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(body): Json<NewHold>,
) -> Result<Json<Hold>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let (scope, target) = body.scope()?;
    let (actor, id) = (person.actor(), new_token("hold"));
    let hold = state
        .store
        .write(move |tx| tx.place_hold(&id, scope, &target, &body.reason, &actor, now_ms()))
        .await?;
    Ok(Json(hold))
}

/// A reason, for releasing a hold or deleting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub reason: String,
}

/// `POST /api/v1/holds/{id}/release` (admin, investigator); audited (`hold.release`).
pub async fn release_hold(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
    Json(body): Json<Reason>,
) -> Result<Json<Hold>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let actor = person.actor();
    let hold =
        state.store.write(move |tx| tx.release_hold(&id, &body.reason, &actor, now_ms())).await?;
    Ok(Json(hold))
}

/// `POST /api/v1/clips/{id}/delete` (investigator); audited (`clip.delete`).
pub async fn delete_clip(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
    Json(body): Json<Reason>,
) -> Result<Json<Deleted>, ApiError> {
    Ok(Json(delete_one(&state, &person, &id, &body.reason).await?))
}

/// Deletes one clip as `person` (an investigator), then removes its blobs; shared with the
/// web page's form.
pub async fn delete_one(
    state: &Arc<AppState>,
    person: &Person,
    id: &str,
    reason: &str,
) -> Result<Deleted, ApiError> {
    person.require(&[Role::Investigator])?;
    let why = crate::store::retention::reason(reason, "deleting a clip")?;
    let (actor, clip) = (person.actor(), id.to_owned());
    let deleted = state
        .store
        .write(move |tx| tx.delete_clip(&clip, DeleteCause::Person, &why, &actor, now_ms()))
        .await?;
    remove_blobs(state).await;
    Ok(deleted)
}

/// What a bulk deletion did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkDeleted {
    pub user: String,
    pub deleted: Vec<String>,
    /// Clips kept because a hold covers them.
    pub held: Vec<String>,
}

/// `POST /api/v1/users/{user}/clips/delete` (admin, when the tenant allows bulk deletion);
/// audited (`clip.delete` per clip, `user.clips.delete` for the whole).
pub async fn delete_user_clips(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(user): Path<String>,
    Json(body): Json<Reason>,
) -> Result<Json<BulkDeleted>, ApiError> {
    Ok(Json(delete_all_of(&state, &person, &user, &body.reason).await?))
}

/// Deletes every clip of `user` no hold covers, as `person` (an admin, when the tenant
/// allows it); shared with the web page's form.
pub async fn delete_all_of(
    state: &Arc<AppState>,
    person: &Person,
    user: &str,
    reason: &str,
) -> Result<BulkDeleted, ApiError> {
    person.require(&[Role::Admin])?;
    let why = crate::store::retention::reason(reason, "deleting a user's clips")?;
    let (actor, name) = (person.actor(), user.to_owned());
    let done = state
        .store
        .write(move |tx| {
            if !tx.retention_settings()?.bulk_delete {
                return Err(ApiError::forbidden(
                    "this tenant does not allow deleting a user's clips at once (retention \
                     setting bulk_delete)",
                ));
            }
            let now = now_ms();
            let (mut deleted, mut held) = (Vec::new(), Vec::new());
            for id in tx.clips_of_user(&name)? {
                // A hold refuses that clip alone; the rest are deleted.
                match tx.savepoint(|tx| tx.delete_clip(&id, DeleteCause::Bulk, &why, &actor, now)) {
                    Ok(_) => deleted.push(id),
                    Err(crate::error::ConsoleError::Conflict { .. }) => held.push(id),
                    Err(e) => return Err(e.into()),
                }
            }
            tx.audit(
                &actor,
                "user.clips.delete",
                &format!("user:{name}"),
                serde_json::json!({ "reason": why, "deleted": deleted.len(), "held": held }),
            )?;
            Ok::<_, ApiError>(BulkDeleted { user: name, deleted, held })
        })
        .await?;
    remove_blobs(state).await;
    Ok(done)
}

/// Removes the blobs deletions queued; a failure leaves them queued for the daily job.
async fn remove_blobs(state: &Arc<AppState>) {
    if let Err(e) = remove_queued_blobs(&state.store).await {
        tracing::warn!(error = ?e.to_string(), "blobs of deleted clips not removed yet; the retention job tries again");
    }
}
