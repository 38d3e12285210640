//! Device enrollment: one-time expiring token + proof of the device's own key → device token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rand::RngCore;
use rearview_protocol::{enroll_proof_message, EnrollRequest, EnrollResponse};
use rusqlite::{params, OptionalExtension};

use crate::auth::new_token;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{now_ms, sha256_hex};

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
    {
        let mut conn = state.store.conn();
        let tx = conn.transaction()?;
        // Consume the token and create the device in one transaction, so two devices racing
        // with the same token cannot both succeed.
        let consumed = tx.execute(
            "UPDATE enrollment_tokens SET used_ms = ?1, device_id = ?2
             WHERE token_sha256 = ?3 AND used_ms IS NULL AND expires_ms > ?1",
            params![now, device_id, token_hash],
        )?;
        if consumed != 1 {
            let row: Option<(i64, Option<i64>)> = tx
                .query_row(
                    "SELECT expires_ms, used_ms FROM enrollment_tokens WHERE token_sha256 = ?1",
                    [&token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            return Err(match row {
                None => ApiError::unauthorized("unknown enrollment token"),
                Some((_, Some(_))) => ApiError::new(
                    StatusCode::GONE,
                    "enrollment token was already used; ask an admin for a new one",
                ),
                Some(_) => ApiError::new(
                    StatusCode::GONE,
                    "enrollment token has expired; ask an admin for a new one",
                ),
            });
        }
        tx.execute(
            "INSERT INTO devices (id, public_key, token_sha256, hostname, enrolled_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![device_id, req.public_key, sha256_hex(device_token.as_bytes()), hostname, now],
        )?;
        tx.commit()?;
    }
    state.store.audit(
        &format!("device:{device_id}"),
        "device.enroll",
        &device_id,
        serde_json::json!({ "hostname": hostname, "public_key": req.public_key }),
    )?;
    Ok(Json(EnrollResponse {
        device_id,
        tenant_id: state.tenant.id.clone(),
        device_token,
        signing_public_key: state.tenant.signing_public_base64(),
        signing_key_id: state.tenant.signing_key_id(),
        sealing_public_key: state.tenant.sealing_public_hex.clone(),
    }))
}
