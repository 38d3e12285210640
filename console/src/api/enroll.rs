//! Device enrollment: one-time expiring token + proof of the device's own key → device token.
//!
//! ```text
//! POST /api/v1/enroll   anyone holding an unused, unexpired enrollment token (no other
//!                       identity); trusts nothing else in the request: the key is taken only
//!                       with a proof that its holder signed the token with it
//! ```
//!
//! The token is used up, the device row written, its enrollment record signed by the console
//! (`rearview_evidence::record`, kind `enrollment`: device id and key, `enrolled_by` the person
//! who created the token; see [`crate::store::evidence`]) and the enrollment audited, in one
//! transaction: a device exists with its signed record or not at all.

use std::sync::Arc;

use crate::auth::new_token;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::devices::{NewDevice, TokenRefusal};
use crate::store::{now_ms, sha256_hex};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rand::RngCore;
use rearview_protocol::{enroll_proof_message, EnrollRequest, EnrollResponse};

pub async fn enroll(
    State(state): State<Arc<AppState>>,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let public_key = hex::decode(&req.public_key)
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| ApiError::bad_request("public_key must be 32 bytes of hex (Ed25519)"))?;
    let proof = hex::decode(&req.proof)
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or_else(|| ApiError::bad_request("proof must be a 64-byte Ed25519 signature in hex"))?;
    let hostname: String = req.hostname.chars().take(255).collect();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public_key)
        .verify(&enroll_proof_message(&req.token, &req.public_key), &proof)
        .map_err(|_| {
            ApiError::unauthorized("proof does not verify with public_key: sign the enrollment message with the key you enroll")
        })?;

    let mut id = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let device_id = format!("dev-{}", hex::encode(id));
    let device_token = new_token("rvd");
    let token_hash = sha256_hex(req.token.as_bytes());
    let now = now_ms();
    let record = {
        let device_id = device_id.clone();
        let token_sha256 = sha256_hex(device_token.as_bytes());
        move |tx: &crate::store::Tx<'_>| -> Result<(), ApiError> {
            // Consume the token and create the device in one transaction, so two devices racing
            // with the same token cannot both succeed, and a refused device keeps the token.
            if let Err(why) = tx.use_enrollment_token(&token_hash, &device_id, now)? {
                return Err(refused(why));
            }
            tx.insert_device(&NewDevice {
                id: &device_id,
                public_key: &req.public_key,
                token_sha256: &token_sha256,
                hostname: &hostname,
                enrolled_ms: now,
            })?;
            tx.insert_enrollment_record(&device_id, &req.public_key, now)?;
            tx.audit(
                &format!("device:{device_id}"),
                "device.enroll",
                &device_id,
                serde_json::json!({ "hostname": hostname, "public_key": req.public_key }),
            )?;
            Ok(())
        }
    };
    state.store.write(record).await?;
    Ok(Json(EnrollResponse {
        device_id,
        tenant_id: state.tenant.id.clone(),
        device_token,
        signing_public_key: state.tenant.signing_public_base64(),
        signing_key_id: state.tenant.signing_key_id(),
        sealing_public_key: state.tenant.sealing_public_hex.clone(),
    }))
}

fn refused(why: TokenRefusal) -> ApiError {
    match why {
        TokenRefusal::Unknown => ApiError::unauthorized("unknown enrollment token"),
        TokenRefusal::Used => ApiError::new(
            StatusCode::GONE,
            "enrollment token was already used; ask an admin for a new one",
        ),
        TokenRefusal::Expired => ApiError::new(
            StatusCode::GONE,
            "enrollment token has expired; ask an admin for a new one",
        ),
    }
}
