//! What devices are told: the signed policy bundle (approvals in force + capture settings) and
//! signed triggers, and the console-side indicator rules that turn activity into triggers.
//!
//! The bundle is one document for the whole tenant (`devices: "all"`), signed once per version
//! and kept in `meta` (`policy_bundle`), so every device gets the very same bytes for a version
//! and a restart does not re-sign a version with other content. Its version is one counter for
//! the tenant, raised on every change (approval decided, revoked or expired, settings edited,
//! daily refresh before the bundle's own expiry), so versions only rise on every device.
//! Triggers are signed per device (the device id is inside the signature).
//!
//! The console never signs what a device must refuse: [`TriggerContext::check`] refuses (400,
//! with the reason) windows over the policy's `window` bounds, events ahead of the clock or older
//! than the devices' ring, events outside the user's approval and trigger objects devices would
//! not accept; indicator rules over the bounds are refused when set, and settings that would put
//! the rules in force over new bounds are refused too. An alert, its triggers and their audit
//! line are written in one transaction, so a refused trigger leaves no alert behind.
//! Principal names are compared with [`same_principal`] everywhere here and in ingest.

use std::sync::Arc;

use axum::extract::Query;
use axum::extract::State;
use axum::Json;
use rearview_config::{
    CaptureSettings, IndicatorKind, Principal, WindowBounds, MAX_EVENT_AHEAD, MAX_TEXT_LEN,
};
use rearview_protocol::{PolicyMessage, TriggerMessage};
use serde::{Deserialize, Serialize};

use crate::api::approvals::{self, Approval};
use crate::api::page::{Page, PageQuery};
use crate::auth::{Person, Role};
use crate::error::ApiError;
use crate::push::Push;
use crate::state::AppState;
use crate::store::triggers::{NewAlert, TriggerRow};
use crate::store::{now_ms, Tx};

/// A console-side rule: activity of this kind from an approved user issues a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorRule {
    /// Activity kind, e.g. `file_copied_to_removable_media`.
    pub kind: String,
    pub before_secs: u32,
    pub after_secs: u32,
}

/// Until an admin sets rules: copies to removable media open a 5-minute-before / 1-minute-after
/// clip, the product's usual window.
pub fn default_rules() -> Vec<IndicatorRule> {
    vec![IndicatorRule { kind: "removable_media_copy".into(), before_secs: 300, after_secs: 60 }]
}

pub fn rules(tx: &Tx<'_>) -> Result<Vec<IndicatorRule>, ApiError> {
    match tx.meta_get("indicator_rules")? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| ApiError::from(crate::error::ConsoleError::corrupt("indicator_rules", e))),
        None => Ok(default_rules()),
    }
}

/// Whether two principal names name the same account: the one matching rule for approvals,
/// triggers, indicators and clips (`rearview_config::Principal` equality, on trimmed names).
pub fn same_principal(a: &str, b: &str) -> bool {
    match (Principal::new(a.trim()), Principal::new(b.trim())) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The approval in force now for `user` (the one the signed bundle names), if any.
pub fn approval_of<'a>(in_force: &'a [Approval], user: &str) -> Option<&'a Approval> {
    in_force.iter().find(|a| same_principal(&a.user, user))
}

/// The parts of the admin's capture settings that bound what devices accept, so the console
/// refuses up front what an agent would refuse later (and never signs it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Bounds {
    /// Segment length (one segment is the slack allowed around a window) and ring retention
    /// (how old an event may be and still have recording around it).
    #[serde(default)]
    pub capture: CaptureSettings,
    /// Longest window before and after an event.
    #[serde(default)]
    pub window: WindowBounds,
    /// Rules devices apply by themselves while offline (they open clips without a trigger).
    #[serde(default)]
    pub indicators: Vec<rearview_config::IndicatorRule>,
}

impl Bounds {
    /// From a settings document as `PUT /api/v1/policy/settings` keeps it (validated there).
    pub fn of(settings: &serde_json::Value) -> Result<Bounds, ApiError> {
        if settings.is_null() {
            return Ok(Bounds::default());
        }
        serde_json::from_value(settings.clone())
            .map_err(|e| ApiError::from(crate::error::ConsoleError::corrupt("capture_settings", e)))
    }

    /// One segment, in ms: how far a clip's segments may reach beyond its window (the ring cuts
    /// whole segments) and how far device and console clocks may disagree about an instant.
    pub fn segment_ms(&self) -> i64 {
        i64::from(self.capture.segment_secs) * 1000
    }

    /// Why a window of `before`/`after` seconds is one devices refuse, if it is; `names` are
    /// the caller's names of the two fields.
    fn window_refusal(&self, before: u32, after: u32, names: [&str; 2]) -> Option<String> {
        let w = &self.window;
        let [b, a] = names;
        if before == 0 && after == 0 {
            Some(format!("the window is empty: {b} and {a} are both 0"))
        } else if before > w.max_before_secs {
            Some(format!(
                "{b} is {before} s, over the policy's window.max_before_secs ({} s)",
                w.max_before_secs
            ))
        } else if after > w.max_after_secs {
            Some(format!(
                "{a} is {after} s, over the policy's window.max_after_secs ({} s)",
                w.max_after_secs
            ))
        } else {
            None
        }
    }
}

/// The policy's bounds as they are now.
pub fn bounds(tx: &Tx<'_>) -> Result<Bounds, ApiError> {
    Bounds::of(&capture_settings(tx)?)
}

/// Checks indicator rules against `bounds`: each names a known kind once, with a window the
/// devices would accept. The refusal names the rule.
fn check_rules(rules: &[IndicatorRule], bounds: &Bounds) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for r in rules {
        if serde_json::from_value::<IndicatorKind>(serde_json::Value::String(r.kind.clone()))
            .is_err()
        {
            return Err(format!(
                "rule {:?}: unknown indicator kind; use removable_media_copy, watched_folder_copy, \
                 cloud_upload, print or manual",
                r.kind
            ));
        }
        if !seen.insert(r.kind.as_str()) {
            return Err(format!("rule {}: appears more than once", r.kind));
        }
        if let Some(why) = bounds.window_refusal(r.before_secs, r.after_secs, RULE_FIELDS) {
            return Err(format!("rule {}: {why}", r.kind));
        }
    }
    Ok(())
}

/// The current signed bundle (the same for every device): from the cache when it holds the
/// current version, else as stored, else signed now (and stored, in one transaction with the
/// records [`approvals::bundle_users`] leaves out and their audit lines).
pub async fn bundle_for(state: &Arc<AppState>) -> Result<PolicyMessage, ApiError> {
    let version = state.store.read(|tx| tx.policy_version()).await?;
    {
        let cache = state.policy_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cache.as_ref().filter(|m| m.version == version) {
            return Ok(m.clone());
        }
    }
    let signer = state.clone();
    let message = state.store.write(move |tx| stored_or_signed(tx, &signer)).await?;
    let mut cache = state.policy_cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.as_ref().is_none_or(|m| m.version < message.version) {
        *cache = Some(message.clone());
    }
    Ok(message)
}

/// The bundle of the version `tx` sees: as stored, or signed now and stored.
pub(crate) fn stored_or_signed(tx: &Tx<'_>, state: &AppState) -> Result<PolicyMessage, ApiError> {
    let version = tx.policy_version()?;
    let stored: Option<PolicyMessage> =
        tx.meta_get("policy_bundle")?.and_then(|json| serde_json::from_str(&json).ok());
    if let Some(m) = stored.filter(|m| m.version == version) {
        return Ok(m);
    }
    // A record the rules refuse is left out (and flagged), never allowed to hold up the
    // bundle: revocations and other users' approvals must still reach devices.
    let users = approvals::bundle_users(tx)?;
    let settings = capture_settings(tx)?;
    let signed = state.tenant.sign_policy(version, users, &settings)?;
    let m = PolicyMessage { version, signed };
    let json = serde_json::to_string(&m).map_err(|e| ApiError::bad_request(e.to_string()))?;
    tx.meta_set("policy_bundle", &json)?;
    tx.meta_set("policy_signed_ms", &now_ms().to_string())?;
    Ok(m)
}

fn capture_settings(tx: &Tx<'_>) -> Result<serde_json::Value, ApiError> {
    match tx.meta_get("capture_settings")? {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            ApiError::from(crate::error::ConsoleError::corrupt("capture_settings", e))
        }),
        None => Ok(serde_json::json!({})),
    }
}

/// `POST /api/v1/triggers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Principal name of the user whose activity to capture.
    pub user: String,
    /// When the activity happened, Unix ms.
    pub event_time: i64,
    /// Seconds before `event_time` to include.
    pub before: u32,
    /// Seconds after `event_time` to include.
    pub after: u32,
    /// Why, in words.
    pub reason: String,
    /// Only this device; default: the devices where the user was seen, else every device.
    #[serde(default)]
    pub device: Option<String>,
    /// Indicator kind behind it (`removable_media_copy`, …); default `manual`.
    #[serde(default)]
    pub indicator: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    pub alert_id: i64,
    pub trigger_ids: Vec<String>,
    pub devices: Vec<String>,
}

const RULE_FIELDS: [&str; 2] = ["before_secs", "after_secs"];
const TRIGGER_FIELDS: [&str; 2] = ["before", "after"];

/// What a trigger is checked against, read once (a batch of indicators checks many triggers
/// against the same): the policy's bounds and the approvals in force.
pub struct TriggerContext {
    pub bounds: Bounds,
    pub in_force: Vec<Approval>,
    pub now: i64,
}

/// A checked trigger, written (alert, triggers, audit) in the caller's transaction; the pushes
/// to send once that transaction is committed.
pub struct Written {
    pub issued: Issued,
    pub pushes: Vec<TriggerPush>,
}

/// A signed trigger for one device, to push once it is committed.
pub struct TriggerPush {
    pub device_id: String,
    pub message: TriggerMessage,
}

impl TriggerContext {
    pub fn load(tx: &Tx<'_>) -> Result<TriggerContext, ApiError> {
        Ok(TriggerContext {
            bounds: bounds(tx)?,
            in_force: approvals::in_force(tx)?,
            now: now_ms(),
        })
    }

    /// Refuses (400, or 409 without an approval in force) every trigger a device would refuse:
    ///
    /// * a reason a device would refuse as the trigger's object (empty, over
    ///   `MAX_TEXT_LEN` bytes, control characters);
    /// * no approval in force for the user now, or none at `event_time` (devices check both);
    /// * an empty window, or one over the policy's `window.max_before_secs`/`max_after_secs`;
    /// * `event_time` more than `MAX_EVENT_AHEAD` (5 min) ahead of the console's clock, or so old
    ///   that the whole window ended before the oldest recording a device keeps
    ///   (`capture.ring_retention_secs` ago).
    pub fn check(&self, req: &TriggerRequest) -> Result<(), ApiError> {
        if req.reason.trim().is_empty() {
            return Err(ApiError::bad_request("a reason is required"));
        }
        if req.reason.len() > MAX_TEXT_LEN || req.reason.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "reason must be at most {MAX_TEXT_LEN} bytes without control characters: \
                 devices refuse any other trigger object"
            )));
        }
        let Some(approval) = approval_of(&self.in_force, &req.user) else {
            return Err(ApiError::conflict(format!(
                "user {:?} has no capture approval in force: an admin must request one and an approver approve it",
                req.user
            )));
        };
        if let Some(why) = self.bounds.window_refusal(req.before, req.after, TRIGGER_FIELDS) {
            return Err(ApiError::bad_request(format!("{why}: devices refuse such a trigger")));
        }
        let ahead = MAX_EVENT_AHEAD.whole_milliseconds() as i64;
        if req.event_time > self.now.saturating_add(ahead) {
            return Err(ApiError::bad_request(format!(
                "event_time {} is more than {} s ahead of the console's clock ({}): devices refuse \
                 events in the future",
                req.event_time,
                ahead / 1000,
                self.now
            )));
        }
        let retention_ms = i64::from(self.bounds.capture.ring_retention_secs) * 1000;
        let window_end = req.event_time.saturating_add(i64::from(req.after) * 1000);
        if window_end < self.now.saturating_sub(retention_ms) {
            return Err(ApiError::bad_request(format!(
                "event_time {} is too old: its window ends before the oldest recording devices keep \
                 (capture.ring_retention_secs = {} s)",
                req.event_time, self.bounds.capture.ring_retention_secs
            )));
        }
        let took_effect = approval.decided_ms.unwrap_or(i64::MAX);
        if req.event_time < took_effect || req.event_time >= approval.expires_ms {
            return Err(ApiError::bad_request(format!(
                "event_time {} is outside {:?}'s approval {} (in force from {took_effect} until {}): \
                 devices refuse a trigger for an event its approval does not cover",
                req.event_time, req.user, approval.id, approval.expires_ms
            )));
        }
        Ok(())
    }

    /// Opens the alert and signs and stores one trigger per target device, with its audit line,
    /// all in `tx` (the caller's transaction): a trigger refused while signing leaves no
    /// alert behind.
    pub fn write(
        &self,
        tx: &Tx<'_>,
        tenant: &crate::tenant::Tenant,
        actor: &str,
        req: &TriggerRequest,
    ) -> Result<Written, ApiError> {
        self.check(req)?;
        let devices = target_devices(tx, req)?;
        if devices.is_empty() {
            return Err(ApiError::conflict("no enrolled device to send the trigger to"));
        }
        let now = self.now;
        // Valid until well after the window closes, so a device that was briefly offline still
        // acts on it; never forever, so an old trigger cannot be replayed later.
        let window_end = req.event_time.saturating_add(i64::from(req.after) * 1000);
        let expires_ms = window_end.max(now) + 15 * 60 * 1000;
        let source = if actor.starts_with("rule:") { actor } else { "manual" };
        let alert_id = tx.insert_alert(&NewAlert {
            user: &req.user,
            reason: &req.reason,
            source,
            created_by: actor,
            created_ms: now,
        })?;
        let mut trigger_ids = Vec::new();
        let mut pushes = Vec::new();
        for device in &devices {
            let trigger_id = format!("trg-{}", hex::encode(rand::random::<[u8; 12]>()));
            let signed = tenant.sign_trigger(&trigger_id, alert_id, device, req, expires_ms)?;
            tx.insert_trigger(&TriggerRow {
                id: &trigger_id,
                alert_id,
                device_id: device,
                user: &req.user,
                event_time_ms: req.event_time,
                before_secs: req.before,
                after_secs: req.after,
                reason: &req.reason,
                issued_ms: now,
                expires_ms,
                signed_json: &signed.to_string(),
            })?;
            trigger_ids.push(trigger_id.clone());
            pushes.push(TriggerPush {
                device_id: device.clone(),
                message: TriggerMessage { trigger_id, signed },
            });
        }
        tx.audit(
            actor,
            "trigger.issue",
            &format!("alert:{alert_id}"),
            serde_json::json!({ "user": req.user, "event_time": req.event_time, "before": req.before,
                                "after": req.after, "reason": req.reason, "triggers": trigger_ids }),
        )?;
        Ok(Written { issued: Issued { alert_id, trigger_ids, devices }, pushes })
    }
}

/// Tells the target devices about triggers whose transaction is committed.
pub fn push_triggers(state: &AppState, pushes: Vec<TriggerPush>) {
    for p in pushes {
        state.hub.send(&p.device_id, Push::Trigger(p.message));
    }
}

/// Checks, signs and stores one trigger per target device and opens the alert, in one
/// transaction; then pushes.
pub async fn issue_trigger(
    state: &Arc<AppState>,
    actor: String,
    req: TriggerRequest,
) -> Result<Issued, ApiError> {
    let signer = state.clone();
    let written = state
        .store
        .write(move |tx| TriggerContext::load(tx)?.write(tx, &signer.tenant, &actor, &req))
        .await?;
    push_triggers(state, written.pushes);
    Ok(written.issued)
}

fn target_devices(tx: &Tx<'_>, req: &TriggerRequest) -> Result<Vec<String>, ApiError> {
    if let Some(d) = &req.device {
        return if tx.device_exists(d)? {
            Ok(vec![d.clone()])
        } else {
            Err(ApiError::not_found(format!("no device {d}")))
        };
    }
    let all = tx.device_users()?;
    let seen: Vec<String> = all
        .iter()
        .filter(|d| d.users.iter().any(|u| same_principal(u, &req.user)))
        .map(|d| d.id.clone())
        .collect();
    Ok(if seen.is_empty() { all.into_iter().map(|d| d.id).collect() } else { seen })
}

/// Triggers for `device_id` that it has not acknowledged and that have not expired.
pub async fn pending_triggers(
    state: &AppState,
    device_id: &str,
) -> Result<Vec<TriggerMessage>, ApiError> {
    let device_id = device_id.to_owned();
    Ok(state.store.read(move |tx| tx.pending_triggers(&device_id, now_ms())).await?)
}

// ---- HTTP handlers ----

pub async fn post_trigger(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(req): Json<TriggerRequest>,
) -> Result<Json<Issued>, ApiError> {
    person.require(&[Role::Admin])?;
    issue_trigger(&state, person.actor(), req).await.map(Json)
}

pub async fn get_settings(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<serde_json::Value>, ApiError> {
    person.require(&[Role::Admin, Role::Approver, Role::Investigator])?;
    state.store.read(capture_settings).await.map(Json)
}

pub async fn put_settings(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(settings): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    person.require(&[Role::Admin])?;
    state.tenant.validate_settings(&settings)?;
    let new_bounds = Bounds::of(&settings)?;
    let stored = settings.clone();
    state
        .store
        .write(move |tx| {
            // Rules over the new bounds would issue only triggers every device refuses.
            check_rules(&rules(tx)?, &new_bounds).map_err(|why| {
                ApiError::bad_request(format!(
                    "settings refused: {why}; change the rules first (PUT /api/v1/rules)"
                ))
            })?;
            tx.meta_set("capture_settings", &stored.to_string())?;
            tx.audit(&person.actor(), "policy.settings", "policy", stored)?;
            Ok::<_, ApiError>(tx.bump_policy_version()?)
        })
        .await?;
    state.hub.policy_changed();
    Ok(Json(settings))
}

pub async fn get_rules(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<Vec<IndicatorRule>>, ApiError> {
    person.require(&[Role::Admin, Role::Approver, Role::Investigator])?;
    state.store.read(rules).await.map(Json)
}

pub async fn put_rules(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(rules): Json<Vec<IndicatorRule>>,
) -> Result<Json<Vec<IndicatorRule>>, ApiError> {
    person.require(&[Role::Admin])?;
    let json = serde_json::to_string(&rules).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let audited = serde_json::json!(rules);
    state
        .store
        .write(move |tx| {
            check_rules(&rules, &bounds(tx)?).map_err(ApiError::bad_request)?;
            tx.meta_set("indicator_rules", &json)?;
            tx.audit(&person.actor(), "policy.rules", "rules", audited)?;
            Ok::<_, ApiError>(rules)
        })
        .await
        .map(Json)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AlertView {
    pub id: i64,
    pub user: String,
    pub reason: String,
    pub source: String,
    pub created_by: String,
    pub created_ms: i64,
    /// Clips attached to this alert (through its triggers).
    pub clips: Vec<String>,
}

/// `GET /api/v1/alerts`: oldest first, in pages (see [`crate::api::page`]).
pub async fn list_alerts(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(q): Query<PageQuery>,
) -> Result<Page<AlertView>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let page = q.parse()?;
    let alerts = state.store.read(move |tx| tx.alerts_page(page)).await?;
    Ok(Page::from_rows(alerts, page))
}
