//! The tenant's identity and keys, and the signing of what devices are told.
//!
//! # Key files
//!
//! ```text
//! DATA/keys/signing.pk8     Ed25519 private key, PKCS#8 v2 DER (rearview_config::SigningKey), 0600
//! DATA/keys/signing.pub     its public key, base64 (rearview_config::VerifyingKey), 0644
//! DATA/keys/sealing.key     X25519 private key, 32 raw bytes (rearview_capture TenantSecretKey), 0600
//! DATA/keys/sealing.pub     its public key, 64 hex digits (TenantPublicKey), 0644
//! ```
//!
//! `DATA/keys/` is 0700, and every mode above is exact whatever the umask.
//!
//! The sealing private key is read by `serve` for the browser player (`web::viewer`), which
//! opens segments in memory for an investigator's audited view, and by `clip export`, which
//! investigators run on the console host. Neither writes plaintext anywhere but where the
//! investigator asked.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rearview_capture::seal::{TenantPublicKey, TenantSecretKey};
use rearview_config::{
    AlertId, DeviceId, DeviceScope, IndicatorKind, PolicyPayload, Principal, SigningKey, TenantId,
    TriggerId, TriggerPayload, TriggerReason, UserScope,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::{ApiError, ConsoleError};
use crate::policy::TriggerRequest;

/// How long a signed bundle stays in force; the console re-signs daily (see `server`).
pub const BUNDLE_LIFETIME: time::Duration = time::Duration::days(30);

pub struct Tenant {
    pub id: String,
    signing: SigningKey,
    pub sealing_public_hex: String,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("id", &self.id).field("signing", &self.signing).finish()
    }
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), ConsoleError> {
    let mut f = crate::private::create_new_file(path)
        .map_err(|e| ConsoleError::Keys(format!("create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| ConsoleError::Keys(format!("write {}: {e}", path.display())))
}

fn write_public(path: &Path, text: &str) -> Result<(), ConsoleError> {
    let err = |e: std::io::Error| ConsoleError::Keys(format!("write {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(err)?;
    // Exactly 0644 whatever the umask (000 would leave it writable by anyone).
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|_| f.write_all(format!("{text}\n").as_bytes()))
        .map_err(err)
}

fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, ConsoleError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConsoleError::Keys(format!("{}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ConsoleError::Keys(format!(
            "{} is readable by others (mode {:o}); run 'chmod 600 {}'",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        )));
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| ConsoleError::Keys(format!("{}: {e}", path.display())))
}

impl Tenant {
    /// Creates the key files under `data/keys`; refuses if any exists.
    pub fn create(data: &Path, id: &str) -> Result<Tenant, ConsoleError> {
        TenantId::new(id).map_err(|e| ConsoleError::Config(format!("tenant id {id:?}: {e}")))?;
        let dir = data.join("keys");
        crate::private::create_dir(&dir)
            .map_err(|e| ConsoleError::Keys(format!("create {}: {e}", dir.display())))?;
        let signing = SigningKey::generate().map_err(|e| ConsoleError::Keys(e.to_string()))?;
        let sealing = TenantSecretKey::generate().map_err(|e| ConsoleError::Keys(e.to_string()))?;
        write_secret(&dir.join("signing.pk8"), signing.pkcs8_der())?;
        write_secret(&dir.join("sealing.key"), sealing.expose_secret_bytes())?;
        write_public(&dir.join("signing.pub"), &signing.verifying_key().to_base64())?;
        let sealing_public_hex = sealing.public_key().to_string();
        write_public(&dir.join("sealing.pub"), &sealing_public_hex)?;
        Ok(Tenant { id: id.to_owned(), signing, sealing_public_hex })
    }

    /// Loads the tenant's signing key and sealing public key.
    pub fn load(data: &Path, id: &str) -> Result<Tenant, ConsoleError> {
        let dir = data.join("keys");
        let der = read_secret(&dir.join("signing.pk8"))?;
        let signing = SigningKey::from_pkcs8(&der)
            .map_err(|e| ConsoleError::Keys(format!("signing.pk8: {e}")))?;
        let sealing = load_sealing_key(data)?;
        Ok(Tenant {
            id: id.to_owned(),
            signing,
            sealing_public_hex: sealing.public_key().to_string(),
        })
    }

    pub fn signing_public_base64(&self) -> String {
        self.signing.verifying_key().to_base64()
    }

    pub fn signing_key_id(&self) -> String {
        self.signing.key_id().to_string()
    }

    fn tenant_id(&self) -> Result<TenantId, ApiError> {
        TenantId::new(self.id.as_str())
            .map_err(|e| ApiError::from(ConsoleError::Config(format!("tenant id: {e}"))))
    }

    /// Signs the bundle of `version` with the users in scope (each already checked on its own,
    /// see `api::approvals::user_scope`) and the admin's settings.
    pub fn sign_policy(
        &self,
        version: u64,
        users: Vec<UserScope>,
        settings: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let now = OffsetDateTime::now_utc();
        let mut payload =
            PolicyPayload::new(self.tenant_id()?, version.max(1), now, now + BUNDLE_LIFETIME);
        payload.devices = DeviceScope::All;
        apply_settings(&mut payload, settings).map_err(ApiError::bad_request)?;
        payload.users = users;
        let env = rearview_config::sign_policy(&self.signing, &payload)
            .map_err(|e| ApiError::from(ConsoleError::Signing(e.to_string())))?;
        serde_json::to_value(&env).map_err(|e| ApiError::from(ConsoleError::Signing(e.to_string())))
    }

    /// Checks an admin's settings document by building (not signing) a bundle with it.
    pub fn validate_settings(&self, settings: &serde_json::Value) -> Result<(), ApiError> {
        let now = OffsetDateTime::now_utc();
        let mut payload = PolicyPayload::new(self.tenant_id()?, 1, now, now + BUNDLE_LIFETIME);
        apply_settings(&mut payload, settings).map_err(ApiError::bad_request)?;
        payload.validate().map_err(|e| ApiError::bad_request(format!("settings refused: {e}")))
    }

    /// Signs one trigger for one device.
    pub fn sign_trigger(
        &self,
        trigger_id: &str,
        alert_id: i64,
        device: &str,
        req: &TriggerRequest,
        expires_ms: i64,
    ) -> Result<serde_json::Value, ApiError> {
        let bad = |what: &str, e: String| ApiError::bad_request(format!("{what}: {e}"));
        let indicator = match &req.indicator {
            Some(kind) => {
                serde_json::from_value::<IndicatorKind>(serde_json::Value::String(kind.clone()))
                    .map_err(|e| bad("indicator", e.to_string()))?
            }
            None => IndicatorKind::Manual,
        };
        let payload = TriggerPayload {
            id: TriggerId::new(trigger_id).map_err(|e| bad("trigger id", e.to_string()))?,
            tenant: self.tenant_id()?,
            user: Principal::new(req.user.as_str()).map_err(|e| bad("user", e.to_string()))?,
            device: Some(DeviceId::new(device).map_err(|e| bad("device", e.to_string()))?),
            event_at: ms_to_time(req.event_time),
            before_secs: req.before,
            after_secs: req.after,
            reason: TriggerReason { indicator, object: req.reason.clone() },
            alert: AlertId::new(format!("alert-{alert_id}"))
                .map_err(|e| bad("alert", e.to_string()))?,
            issued_at: OffsetDateTime::now_utc(),
            expires_at: ms_to_time(expires_ms),
        };
        let env = rearview_config::sign_trigger(&self.signing, &payload)
            .map_err(|e| bad("trigger refused", e.to_string()))?;
        serde_json::to_value(&env).map_err(|e| ApiError::from(ConsoleError::Signing(e.to_string())))
    }
}

/// Reads the X25519 private key (for `init`'s check and `clip export`).
pub fn load_sealing_key(data: &Path) -> Result<TenantSecretKey, ConsoleError> {
    let bytes = read_secret(&data.join("keys").join("sealing.key"))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ConsoleError::Keys("sealing.key must be exactly 32 bytes".into()))?;
    Ok(TenantSecretKey::from_bytes(Zeroizing::new(arr)))
}

/// The tenant signing key (`signing.pk8`) as the signer of the console's evidence records
/// (enrollment and clip records, custody heads; see `rearview_evidence`): the same key that
/// signs policies and triggers, so devices and recipients know one console key.
pub fn load_record_signer(data: &Path) -> Result<rearview_evidence::Signer, ConsoleError> {
    let der = read_secret(&data.join("keys").join("signing.pk8"))?;
    rearview_evidence::Signer::from_pkcs8(&der)
        .map_err(|e| ConsoleError::Keys(format!("signing.pk8: {e}")))
}

/// The sealing public key as written at init.
pub fn load_sealing_public(data: &Path) -> Result<TenantPublicKey, ConsoleError> {
    let path = data.join("keys").join("sealing.pub");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConsoleError::Keys(format!("{}: {e}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|_| ConsoleError::Keys(format!("{} is not an X25519 public key", path.display())))
}

pub fn ms_to_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The admin-editable sections of a bundle: `capture`, `limits`, `window`, `indicators`, `notify`.
fn apply_settings(payload: &mut PolicyPayload, settings: &serde_json::Value) -> Result<(), String> {
    let obj = match settings {
        serde_json::Value::Null => return Ok(()),
        serde_json::Value::Object(o) => o,
        _ => return Err("settings must be a JSON object".into()),
    };
    for (k, v) in obj {
        let v = v.clone();
        let r = match k.as_str() {
            "capture" => serde_json::from_value(v).map(|x| payload.capture = x),
            "limits" => serde_json::from_value(v).map(|x| payload.limits = x),
            "window" => serde_json::from_value(v).map(|x| payload.window = x),
            "indicators" => serde_json::from_value(v).map(|x| payload.indicators = x),
            "notify" => serde_json::from_value(v).map(|x| payload.notify = x),
            other => {
                return Err(format!(
                    "unknown settings section {other:?}: use capture, limits, window, indicators, notify"
                ))
            }
        };
        r.map_err(|e| format!("settings.{k}: {e}"))?;
    }
    Ok(())
}
