//! [`Uploader`]: what the agent daemon holds — enrollment, verified policy and triggers from
//! the push stream, the spool and the send loop, and a status snapshot.
//!
//! # State directory
//!
//! ```text
//! STATE/identity.json   device id, tenant id, device token, device key (PKCS#8 hex), tenant
//!                       signing key and sealing key; mode 0600 (it authenticates the device)
//! STATE/trust.json      rearview_config's persisted trust state (anti-rollback, anti-replay)
//! STATE/spool/          the spool (see [`crate::spool`])
//! ```
//!
//! # Tasks ([`Uploader::start`])
//!
//! * **stream**: holds `GET /api/v1/device/stream`; every policy and trigger is verified by
//!   [`rearview_config::TrustStore`] before anything else sees it; accepted ones go to every
//!   [`Uploader::subscribe`]r as [`Command`]s. A trigger is marked seen and acknowledged to
//!   the console only after a subscriber has recorded its clip ([`TriggerDelivery`]); an
//!   acknowledgement the console could not take (unreachable, 5xx) is sent again by the send
//!   task until it is (the stream may stay up through a console's outage, so no resend of the
//!   trigger would bring it).
//!   A stream that ends, fails or stays silent past 45 s (the console pings every 15 s) is
//!   reopened after an exponential backoff with jitter.
//! * **send**: takes pending clips oldest first: manifest, then only the segments the console
//!   says it lacks, then the clip status; marks the clip sent when the console says complete.
//!   An open clip (window still running) is sent as far as it goes and stays pending; the
//!   agent's next extension of it wakes the loop.
//!   A failure waits a backoff and the pass is tried again; only the console's refusal of the
//!   clip itself (400, 409, 413, 422) sets the clip aside as `refused`. An answer cut short or
//!   garbled, or a refusal of the device (401, 403), keeps every clip. So does a failure of the
//!   device's own disk or database (full, I/O error, locked): that clip waits for the next
//!   pass, the others go on, and status warns until a pass runs clean. A segment the console
//!   lacks whose spool file is *gone* becomes a missing range of the clip ("lost on the
//!   device"), the revised manifest is sent, and the rest of the clip uploads and completes.
//!   Daily upload limits are checked before every segment.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rearview_config::time::OffsetDateTime;
use rearview_config::{
    DataDir, DeviceId, Limits, PolicyRejected, SignedEnvelope, TenantId, TriggerRejected,
    TrustAnchor, TrustStore, VerifiedPolicy, VerifiedTrigger, VerifyingKey,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use zeroize::Zeroizing;

use crate::backoff::Backoff;
use crate::client::{Client, ClientConfig};
use crate::error::UploadError;
use crate::spool::{CacheRule, Enqueued, SegmentBytes, Spool, SpoolStats};
use crate::sse::SseParser;
use rearview_protocol::chain::Signer;
use rearview_protocol::{
    enroll_proof_message, Absence, ActivityAck, ActivityBatch, ActivityEvent, CaptureMode,
    ChainEntry, ClipManifest, ClipState, EnrollRequest, HealthReport, ManifestSegment,
    MissingRange, PolicyMessage, TriggerMessage, MAX_SEGMENT_BYTES,
};

/// Where the uploader keeps its state and how it reaches the console.
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// Console base URL, e.g. `https://console.example:8443`.
    pub server: String,
    /// Extra CA (PEM) to trust, for a console with a private certificate.
    pub ca_cert: Option<PathBuf>,
    /// Directory for identity, trust state and spool (created, mode 0700).
    pub state_dir: PathBuf,
    /// First and longest wait between retries.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Timeout of one ordinary request (a hanging console counts as unreachable after it).
    pub request_timeout: Duration,
    /// The device's own ceiling on the offline cache (agent `[spool] max_bytes`): the cache
    /// is the policy's size or this, whichever is smaller.
    pub spool_max_bytes: u64,
}

impl UploaderConfig {
    pub fn new(server: impl Into<String>, state_dir: impl Into<PathBuf>) -> UploaderConfig {
        UploaderConfig {
            server: server.into(),
            ca_cert: None,
            state_dir: state_dir.into(),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            spool_max_bytes: u64::MAX,
        }
    }
}

/// What the device learned at enrollment. Persisted in `identity.json` (0600).
#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    pub server: String,
    pub device_id: String,
    pub tenant_id: String,
    device_token: String,
    device_key_pkcs8_hex: String,
    pub signing_public_key: String,
    pub signing_key_id: String,
    /// The tenant's X25519 key that segments are sealed to (hex).
    pub sealing_public_key: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("server", &self.server)
            .field("device_id", &self.device_id)
            .field("tenant_id", &self.tenant_id)
            .field("signing_key_id", &self.signing_key_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.device_token.zeroize();
        self.device_key_pkcs8_hex.zeroize();
    }
}

/// Something the console told the device, after verification.
#[derive(Debug, Clone)]
pub enum Command {
    Policy(VerifiedPolicy),
    /// A verified trigger, not yet marked seen nor acknowledged: whoever records its clip says
    /// so with [`TriggerDelivery::recorded`] (see [`Uploader::accept_trigger`]).
    Trigger(Arc<TriggerDelivery>),
}

/// A verified trigger on its way to whoever records its clip, and the answer the uploader waits
/// for before it marks the trigger seen and acknowledges it.
///
/// Every subscriber gets the same delivery; the first answer counts. When every copy is dropped
/// unanswered, the trigger counts as not recorded.
pub struct TriggerDelivery {
    trigger: VerifiedTrigger,
    answer: Mutex<Option<tokio::sync::oneshot::Sender<Result<(), String>>>>,
}

impl TriggerDelivery {
    /// The trigger.
    pub fn trigger(&self) -> &VerifiedTrigger {
        &self.trigger
    }

    /// The clip for this trigger is durably recorded (or was already): the uploader may now
    /// mark the trigger seen and acknowledge it.
    pub fn recorded(&self) {
        self.answer(Ok(()));
    }

    /// The clip could not be recorded (`why` names the cause): the trigger stays unseen and
    /// unacknowledged, and the console sends it again.
    pub fn not_recorded(&self, why: String) {
        self.answer(Err(why));
    }

    fn answer(&self, result: Result<(), String>) {
        if let Some(tx) = lock(&self.answer).take() {
            let _ = tx.send(result);
        }
    }
}

impl std::ops::Deref for TriggerDelivery {
    type Target = VerifiedTrigger;
    fn deref(&self) -> &VerifiedTrigger {
        &self.trigger
    }
}

impl std::fmt::Debug for TriggerDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TriggerDelivery").field(&self.trigger.payload().id).finish()
    }
}

/// A verified trigger whose clip is recorded and whose id is marked seen.
#[derive(Debug)]
pub struct TriggerAccepted {
    /// The signed trigger id.
    pub id: String,
    /// The console's acknowledgement; on an error it sends the trigger again until it gets
    /// one (a replay, acknowledged again).
    pub acknowledged: Result<(), UploadError>,
}

/// How long [`Uploader::accept_trigger`] waits for the clip to be recorded. The daemon answers
/// from its loop in milliseconds; this only bounds a subscriber that never answers, after which
/// the console's next resend tries again.
const RECORD_TIMEOUT: Duration = Duration::from_secs(120);

/// A segment to put in a clip.
#[derive(Debug, Clone)]
pub struct NewSegment {
    /// Time range the segment covers, Unix ms.
    pub start_ms: i64,
    pub end_ms: i64,
    /// The sealed bytes.
    pub bytes: SegmentBytes,
}

/// A clip to send: everything of the manifest but what the uploader fills in itself (device id,
/// segment hashes and sizes).
#[derive(Debug, Clone)]
pub struct NewClip {
    pub clip_id: String,
    pub trigger_id: Option<String>,
    /// Which approval the clip is taken under (and whether it needs a trigger).
    pub mode: CaptureMode,
    pub user: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub missing: Vec<MissingRange>,
    /// The window is still running: more segments follow (see [`ClipManifest`]). Enqueue the
    /// same clip id again to add them, and once more with `open: false` to close it.
    pub open: bool,
    /// The device-signed chain entries that cover the clip's segments (each segment's entry,
    /// the gap entries between them, and the entries of segments it lacks), in chain order;
    /// an extension may give only the new ones (the spool keeps those it has).
    pub chain: Vec<ChainEntry>,
    /// Signed notes for the chain entries whose segments the clip lacks.
    pub absent: Vec<Absence>,
}

/// A snapshot for `rearview status` and the health report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub enrolled: bool,
    pub device_id: Option<String>,
    pub policy_version: Option<u64>,
    pub server_reachable: bool,
    pub stream_connected: bool,
    /// Clip being sent now.
    pub uploading: Option<String>,
    pub spool: SpoolStats,
    pub refused_clips: u64,
    /// Bytes uploaded today (UTC) per user.
    pub bytes_today: HashMap<String, u64>,
    pub upload_limit_per_user_per_day: u64,
    pub offline_cache_bytes: u64,
    /// Users at or above 90 % (warn) or 100 % (stopped for the day) of their daily limit, and
    /// the spool above its warning fill.
    pub warnings: Vec<String>,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Live {
    server_reachable: bool,
    stream_connected: bool,
    uploading: Option<String>,
    last_error: Option<String>,
    /// The device's own disk or database failing the send loop (cleared by a pass without).
    local_error: Option<String>,
    policy_version: Option<u64>,
}

/// The device side of the protocol. Share it as `Arc<Uploader>`.
pub struct Uploader {
    config: UploaderConfig,
    client: Mutex<Client>,
    identity: Mutex<Option<Identity>>,
    trust: Mutex<Option<TrustStore>>,
    spool: Spool,
    limits: Mutex<Limits>,
    live: Mutex<Live>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Command>>>,
    wake: Notify,
    /// Triggers recorded and seen whose acknowledgement the console could not take (it was
    /// unreachable or answered 5xx): the send loop tells it again. The stream may well stay up
    /// meanwhile (a console whose database is down still holds it), so no resend would come.
    unacked: Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("state_dir", &self.config.state_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> UploadError {
    UploadError::Spool(format!("{}: {e}", path.display()))
}

/// Today's date (UTC), the key of daily upload use.
pub fn utc_day() -> String {
    OffsetDateTime::now_utc().date().to_string()
}

impl Uploader {
    /// Opens the state directory: identity (if enrolled), trust state, spool.
    pub fn open(config: UploaderConfig) -> Result<Arc<Uploader>, UploadError> {
        let dir = &config.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let layout = DataDir::new(dir);
        let spool = Spool::open(&layout.spool_dir())?;
        let identity = load_identity(&layout.identity())?;
        let client_config = ClientConfig {
            ca_cert: config.ca_cert.clone(),
            request_timeout: config.request_timeout,
            ..ClientConfig::new(config.server.clone())
        };
        let mut client = Client::new(&client_config, None)?;
        let mut trust = None;
        if let Some(id) = &identity {
            client = client.with_token(id.device_token.clone());
            trust = Some(open_trust(dir, id)?);
        }
        let limits = trust
            .as_ref()
            .and_then(|t: &TrustStore| t.latest_policy().map(|p| p.payload().limits.clone()))
            .unwrap_or_default();
        let policy_version = trust.as_ref().and_then(|t| t.last_policy_version());
        Ok(Arc::new(Uploader {
            config,
            client: Mutex::new(client),
            identity: Mutex::new(identity),
            trust: Mutex::new(trust),
            spool,
            limits: Mutex::new(limits),
            live: Mutex::new(Live { policy_version, ..Live::default() }),
            subscribers: Mutex::new(Vec::new()),
            wake: Notify::new(),
            unacked: Mutex::default(),
        }))
    }

    fn client(&self) -> Client {
        lock(&self.client).clone()
    }

    /// The console's clock as its `Date` header gives it, through this device's client
    /// (see [`Client::server_date`]); for `rearview doctor`'s clock-skew check.
    pub async fn console_clock(
        &self,
        deadline: Duration,
    ) -> Result<Option<OffsetDateTime>, UploadError> {
        self.client().server_date(deadline).await
    }

    pub fn identity(&self) -> Option<Identity> {
        lock(&self.identity).clone()
    }

    /// The device's enrolled Ed25519 key as a signer; None until enrolled. It signs the
    /// device's chain entries and absence notes (see [`crate::spool::chain`]); the console
    /// verifies them with the key this device enrolled.
    pub fn chain_signer(&self) -> Option<Signer> {
        let identity = lock(&self.identity);
        let id = identity.as_ref()?;
        let der = Zeroizing::new(hex::decode(&id.device_key_pkcs8_hex).ok()?);
        match Signer::from_pkcs8(&der) {
            Ok(signer) => Some(signer),
            Err(e) => {
                tracing::error!(error = %e, "the stored device key does not load; nothing can be signed");
                None
            }
        }
    }

    pub fn is_enrolled(&self) -> bool {
        lock(&self.identity).is_some()
    }

    /// Enrolls with a one-time token: generates the device key, proves it, stores the identity.
    pub async fn enroll(&self, token: &str, hostname: &str) -> Result<Identity, UploadError> {
        if self.is_enrolled() {
            return Err(UploadError::Config(
                "this device is already enrolled; remove the state directory to re-enroll".into(),
            ));
        }
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| {
            UploadError::Config("could not generate the device key (system RNG)".into())
        })?;
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| UploadError::Config("generated device key unusable".into()))?;
        use ring::signature::KeyPair;
        let public_key = hex::encode(pair.public_key().as_ref());
        let proof = hex::encode(pair.sign(&enroll_proof_message(token, &public_key)).as_ref());
        let resp = self
            .client()
            .enroll(&EnrollRequest {
                token: token.to_owned(),
                public_key,
                proof,
                hostname: hostname.to_owned(),
            })
            .await?;
        let identity = Identity {
            server: self.config.server.clone(),
            device_id: resp.device_id,
            tenant_id: resp.tenant_id,
            device_token: resp.device_token,
            device_key_pkcs8_hex: hex::encode(&*pkcs8),
            signing_public_key: resp.signing_public_key,
            signing_key_id: resp.signing_key_id,
            sealing_public_key: resp.sealing_public_key,
        };
        let trust = open_trust(&self.config.state_dir, &identity)?;
        save_identity(&DataDir::new(&self.config.state_dir).identity(), &identity)?;
        *lock(&self.client) = self.client().with_token(identity.device_token.clone());
        *lock(&self.trust) = Some(trust);
        *lock(&self.identity) = Some(identity.clone());
        Ok(identity)
    }

    /// A channel that receives every verified policy and trigger from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.subscribers).push(tx);
        rx
    }

    /// Sends `command` to every subscriber; returns how many got it.
    fn deliver(&self, command: Command) -> usize {
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|tx| tx.send(command.clone()).is_ok());
        subscribers.len()
    }

    /// The policy in force now, if any (`None`: record nobody).
    pub fn policy(&self) -> Option<VerifiedPolicy> {
        lock(&self.trust)
            .as_ref()
            .and_then(|t| t.policy_in_force(OffsetDateTime::now_utc()).cloned())
    }

    /// Fetches the current policy once (without the stream) and applies it.
    pub async fn sync_policy(&self) -> Result<Option<VerifiedPolicy>, UploadError> {
        self.require_enrolled()?;
        let message = self.client().policy().await?;
        self.accept_policy(&message)
    }

    fn require_enrolled(&self) -> Result<(), UploadError> {
        if self.is_enrolled() {
            Ok(())
        } else {
            Err(UploadError::NotEnrolled)
        }
    }

    /// Verifies and records a policy; returns it when it is new (and tells subscribers).
    pub fn accept_policy(
        &self,
        message: &PolicyMessage,
    ) -> Result<Option<VerifiedPolicy>, UploadError> {
        self.accept_policy_envelope(&envelope(&message.signed)?)
    }

    /// [`Uploader::accept_policy`] for an envelope already parsed (the admin socket's path):
    /// parsed once, verified once; every version named afterwards is the verified one
    /// (`PolicyMessage::version` is an unauthenticated label and is never read).
    pub fn accept_policy_envelope(
        &self,
        envelope: &SignedEnvelope,
    ) -> Result<Option<VerifiedPolicy>, UploadError> {
        let mut trust = lock(&self.trust);
        let trust = trust.as_mut().ok_or(UploadError::NotEnrolled)?;
        let before = trust.last_policy_version();
        match trust.accept_policy(envelope, OffsetDateTime::now_utc()) {
            Ok(p) => {
                *lock(&self.limits) = p.payload().limits.clone();
                lock(&self.live).policy_version = Some(p.version());
                if before == Some(p.version()) {
                    return Ok(None);
                }
                tracing::info!(version = p.version(), "policy accepted");
                self.deliver(Command::Policy(p.clone()));
                self.wake.notify_one();
                Ok(Some(p))
            }
            Err(PolicyRejected::VersionNotAbove { .. }) => Ok(None),
            Err(e) => {
                Err(UploadError::Rejected { what: "policy".into(), reason: Box::new(e.into()) })
            }
        }
    }

    /// Verifies a trigger, hands it to the subscribers, and once one of them says its clip is
    /// recorded, marks it seen (trust state) and acknowledges it to the console — in that
    /// order, so a crash anywhere loses no accepted trigger: before "seen" the console sends it
    /// again (and the recorder finds the clip it already holds for that id), after it the
    /// resend is a replay that is only acknowledged. A refused trigger is neither delivered nor
    /// acknowledged.
    pub async fn accept_trigger(&self, message: &TriggerMessage) -> Result<(), UploadError> {
        self.accept_trigger_envelope(&envelope(&message.signed)?).await?.acknowledged
    }

    /// [`Uploader::accept_trigger`] for an envelope already parsed (the admin socket's path).
    /// The id acknowledged and logged is always the signed one, never
    /// `TriggerMessage::trigger_id` (an unauthenticated label). `Ok` means recorded and seen;
    /// whether the console heard of it is [`TriggerAccepted::acknowledged`].
    pub async fn accept_trigger_envelope(
        &self,
        envelope: &SignedEnvelope,
    ) -> Result<TriggerAccepted, UploadError> {
        let verdict = {
            let trust = lock(&self.trust);
            let trust = trust.as_ref().ok_or(UploadError::NotEnrolled)?;
            trust.verify_trigger(envelope, OffsetDateTime::now_utc())
        };
        match verdict {
            Ok(t) => {
                let id = t.payload().id.to_string();
                tracing::info!(trigger = %id, "trigger verified");
                self.record(t.clone()).await?;
                let seen = {
                    let mut trust = lock(&self.trust);
                    let trust = trust.as_mut().ok_or(UploadError::NotEnrolled)?;
                    trust.mark_trigger_seen(&t, OffsetDateTime::now_utc())
                };
                seen.map_err(|e| UploadError::NotRecorded {
                    trigger: id.clone(),
                    reason: e.to_string(),
                })?;
                crate::fault::point("trigger:after-seen");
                tracing::info!(trigger = %id, "trigger accepted");
                let acknowledged = self.acknowledge(&id).await;
                Ok(TriggerAccepted { id, acknowledged })
            }
            // Seen before (a resend after a reconnect): the ack got lost, send it again.
            Err(TriggerRejected::Replay { id }) => {
                let id = id.to_string();
                let acknowledged = self.acknowledge(&id).await;
                Ok(TriggerAccepted { id, acknowledged })
            }
            Err(e) => {
                Err(UploadError::Rejected { what: "trigger".into(), reason: Box::new(e.into()) })
            }
        }
    }

    /// Acknowledges trigger `id` (recorded and seen) to the console; when that may work later,
    /// the send loop tries again until it does (see `unacked`).
    async fn acknowledge(&self, id: &str) -> Result<(), UploadError> {
        let result = self.client().ack_trigger(id).await;
        match &result {
            Ok(()) => {
                lock(&self.unacked).remove(id);
            }
            Err(e) if e.is_retryable() => {
                lock(&self.unacked).insert(id.to_owned());
                self.wake.notify_one();
            }
            Err(_) => {}
        }
        result
    }

    /// Tells the console of the triggers whose acknowledgement it could not take before; a
    /// refusal (it no longer holds the trigger) ends the attempt. The first error that may pass
    /// later, if any.
    async fn acknowledge_again(&self) -> Option<UploadError> {
        let ids: Vec<String> = lock(&self.unacked).iter().cloned().collect();
        for id in ids {
            match self.client().ack_trigger(&id).await {
                Ok(()) => {
                    tracing::info!(trigger = %id, "trigger acknowledged again");
                    lock(&self.unacked).remove(&id);
                }
                Err(e) if e.is_retryable() => return Some(e),
                Err(e) => {
                    tracing::warn!(trigger = %id, error = %e, "console refused the acknowledgement");
                    lock(&self.unacked).remove(&id);
                }
            }
        }
        None
    }

    /// Hands `trigger` to the subscribers and waits until one says its clip is recorded.
    async fn record(&self, trigger: VerifiedTrigger) -> Result<(), UploadError> {
        let id = trigger.payload().id.to_string();
        let not_recorded =
            |reason: String| UploadError::NotRecorded { trigger: id.clone(), reason };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let delivery = Arc::new(TriggerDelivery { trigger, answer: Mutex::new(Some(tx)) });
        if self.deliver(Command::Trigger(delivery)) == 0 {
            return Err(not_recorded("nothing on this device records clips".into()));
        }
        match tokio::time::timeout(RECORD_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(not_recorded(why)),
            Ok(Err(_)) => Err(not_recorded("dropped before its clip was recorded".into())),
            Err(_) => Err(not_recorded(format!(
                "its clip was not recorded within {} s",
                RECORD_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Puts a clip in the spool, or extends an open one already there (see [`Spool::enqueue`]);
    /// the send loop delivers it. Hashes are computed here, so the manifest always names the
    /// bytes that will be sent.
    pub fn enqueue_clip(
        &self,
        clip: NewClip,
        segments: Vec<NewSegment>,
    ) -> Result<Enqueued, UploadError> {
        let device_id =
            self.identity().map(|i| i.device_id.clone()).ok_or(UploadError::NotEnrolled)?;
        let mut named = Vec::with_capacity(segments.len());
        let mut manifest_segments = Vec::with_capacity(segments.len());
        for s in segments {
            let bytes = s.bytes.read()?;
            if bytes.is_empty() || bytes.len() > MAX_SEGMENT_BYTES {
                return Err(UploadError::TooLarge(format!(
                    "a segment of {} bytes (1..={MAX_SEGMENT_BYTES})",
                    bytes.len()
                )));
            }
            let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
            manifest_segments.push(ManifestSegment {
                sha256: sha.clone(),
                size: bytes.len() as u64,
                start_ms: s.start_ms.into(),
                end_ms: s.end_ms.into(),
            });
            drop(bytes);
            named.push((sha, s.bytes));
        }
        let manifest = ClipManifest {
            clip_id: clip.clip_id,
            trigger_id: clip.trigger_id,
            mode: clip.mode,
            user: clip.user,
            device_id,
            start_ms: clip.start_ms.into(),
            end_ms: clip.end_ms.into(),
            segments: manifest_segments,
            missing: clip.missing,
            open: clip.open,
            chain: clip.chain,
            absent: clip.absent,
        };
        let cache =
            CacheRule::effective(&lock(&self.limits).offline_cache, self.config.spool_max_bytes);
        let result = self.spool.enqueue(&manifest, &named, cache)?;
        self.wake.notify_one();
        Ok(result)
    }

    /// Sends a health report (the agent's state; spool and limits are added here).
    pub async fn report_health(&self, mut report: HealthReport) -> Result<(), UploadError> {
        self.require_enrolled()?;
        let status = self.status()?;
        if let serde_json::Value::Object(map) = &mut report.details {
            map.insert("uploader".into(), serde_json::to_value(&status).unwrap_or_default());
        } else if report.details.is_null() {
            report.details = serde_json::json!({ "uploader": status });
        }
        self.client().health(&report).await
    }

    /// Reports indicators (activity events); the console's rules may answer with triggers,
    /// which then arrive on the stream.
    pub async fn report_activity(
        &self,
        events: Vec<ActivityEvent>,
    ) -> Result<ActivityAck, UploadError> {
        self.require_enrolled()?;
        self.client().activity(&ActivityBatch { events }).await
    }

    /// The spool, for the daemon's clip records ([`crate::spool::clip_records`]), which live
    /// in its database beside the clips they become.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Where a clip handed to [`Uploader::enqueue_clip`] is: `pending`, `sent`, `refused` or
    /// `lost` (see [`Spool::clip_state`]).
    pub fn clip_state(&self, clip_id: &str) -> Result<Option<ClipState>, UploadError> {
        self.spool.clip_state(clip_id)
    }

    pub fn status(&self) -> Result<Status, UploadError> {
        let spool = self.spool.stats()?;
        let bytes_today = self.spool.usage(&utc_day())?;
        let limits = lock(&self.limits).clone();
        let live = lock(&self.live);
        let mut warnings = Vec::new();
        let limit = limits.upload_bytes_per_user_per_day;
        for (user, used) in &bytes_today {
            if *used >= limit {
                warnings.push(format!("{user}: daily upload limit reached ({used} of {limit} bytes); the rest waits in the spool until tomorrow"));
            } else if *used * 100 >= limit * 90 {
                warnings.push(format!("{user}: {used} of {limit} bytes uploaded today (≥ 90 %)"));
            }
        }
        let cache =
            CacheRule::effective(&limits.offline_cache, self.config.spool_max_bytes).max_bytes;
        if spool.spooled_bytes * 100 >= cache * u64::from(limits.offline_cache.warn_percent) {
            warnings.push(format!("offline cache {} of {cache} bytes full", spool.spooled_bytes));
        }
        if let Some(w) = &live.local_error {
            warnings.push(w.clone());
        }
        if spool.lost_files > 0 {
            warnings.push(format!(
                "{} spooled segment files were lost on this device before upload; their clips name them as missing",
                spool.lost_files
            ));
        }
        if spool.lost_clips > 0 {
            warnings.push(format!(
                "offline cache overflowed: {} clips ({} segments, {} bytes) dropped, oldest first",
                spool.lost_clips, spool.lost_segments, spool.lost_bytes
            ));
        }
        Ok(Status {
            enrolled: self.is_enrolled(),
            device_id: self.identity().map(|i| i.device_id.clone()),
            policy_version: live.policy_version,
            server_reachable: live.server_reachable,
            stream_connected: live.stream_connected,
            uploading: live.uploading.clone(),
            refused_clips: self.spool.refused_count()?,
            spool,
            bytes_today,
            upload_limit_per_user_per_day: limit,
            offline_cache_bytes: cache,
            warnings,
            last_error: live.last_error.clone(),
        })
    }

    fn note_error(&self, e: &UploadError) {
        let mut live = lock(&self.live);
        if e.is_unreachable() {
            live.server_reachable = false;
        }
        live.last_error = Some(e.to_string());
    }

    fn note_ok(&self) {
        lock(&self.live).server_reachable = true;
    }

    /// Starts the stream and send tasks. They run until [`Running::stop`] (or the runtime ends).
    pub fn start(self: &Arc<Self>) -> Result<Running, UploadError> {
        self.require_enrolled()?;
        let stream = tokio::spawn(self.clone().stream_loop());
        let send = tokio::spawn(self.clone().send_loop());
        Ok(Running { tasks: vec![stream, send] })
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.config.backoff_base, self.config.backoff_max)
    }

    async fn stream_loop(self: Arc<Self>) {
        let mut backoff = self.backoff();
        loop {
            match self.stream_once(&mut backoff).await {
                Ok(()) => tracing::info!("push stream ended; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, "push stream failed; reconnecting");
                    self.note_error(&e);
                }
            }
            lock(&self.live).stream_connected = false;
            backoff.wait().await;
        }
    }

    async fn stream_once(&self, backoff: &mut Backoff) -> Result<(), UploadError> {
        let resp = self.client().open_stream().await?;
        self.note_ok();
        lock(&self.live).stream_connected = true;
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(Duration::from_secs(45), body.next()).await {
                Err(_) => {
                    return Err(UploadError::Unavailable("push stream silent for 45 s".into()))
                }
                Ok(None) => return Ok(()),
                Ok(Some(chunk)) => chunk?,
            };
            let events = parser.feed(&chunk).map_err(UploadError::Protocol)?;
            for event in events {
                // The stream works: the next failure starts again from a short wait.
                backoff.reset();
                let result = match event.event.as_str() {
                    "policy" => match serde_json::from_str::<PolicyMessage>(&event.data) {
                        Ok(m) => self.accept_policy(&m).map(|_| ()),
                        Err(e) => Err(UploadError::Protocol(format!("policy event: {e}"))),
                    },
                    "trigger" => match serde_json::from_str::<TriggerMessage>(&event.data) {
                        Ok(m) => self.accept_trigger(&m).await,
                        Err(e) => Err(UploadError::Protocol(format!("trigger event: {e}"))),
                    },
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "push event refused");
                    self.note_error(&e);
                }
            }
        }
    }

    async fn send_loop(self: Arc<Self>) {
        let mut backoff = self.backoff();
        loop {
            match self.send_pending().await {
                Ok(()) => {
                    backoff.reset();
                    // Wait for new work, but look again now and then: a new day lifts limits.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), self.wake.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upload failed; will retry");
                    self.note_error(&e);
                    backoff.wait().await;
                }
            }
        }
    }

    /// One pass over the spool: sends every pending clip the limits allow. Stops at the first
    /// failure of the console or the network (it is likely down for all of them). A failure
    /// of the device's own disk or database keeps that clip for the next pass and goes on
    /// with the others; the pass then ends with that error, so the loop waits a backoff and
    /// status shows it. Only the console's refusal of a clip itself sets that clip aside.
    pub async fn send_pending(&self) -> Result<(), UploadError> {
        let mut local = None;
        for clip in self.spool.pending()? {
            let clip_id = clip.manifest.clip_id.clone();
            lock(&self.live).uploading = Some(clip_id.clone());
            let result = match self.send_clip(clip.manifest).await {
                Ok(Sent::Complete) => self.spool.mark_sent(&clip_id).map(|()| Sent::Complete),
                other => other,
            };
            lock(&self.live).uploading = None;
            match result {
                Ok(Sent::Complete) => {
                    self.note_ok();
                    tracing::info!(clip = %clip_id, "clip complete on the console");
                }
                Ok(Sent::Open | Sent::OverLimit) => {}
                Err(e) if e.sets_clip_aside() => {
                    tracing::warn!(clip = %clip_id, error = %e, "console refused the clip; set aside");
                    self.note_error(&e);
                    self.spool.mark_refused(&clip_id, &e.to_string())?;
                }
                Err(e) if e.is_local() => {
                    tracing::warn!(clip = %clip_id, error = %e, "spool failed on this device; the clip is kept and tried again");
                    local.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        let unacked = self.acknowledge_again().await;
        match local {
            Some(e) => {
                lock(&self.live).local_error = Some(local_warning(&e));
                Err(e)
            }
            None => {
                lock(&self.live).local_error = None;
                unacked.map_or(Ok(()), Err)
            }
        }
    }

    /// Sends one clip as far as it goes. Segments the console lacks whose spool file is gone
    /// are named missing first (see [`Spool::settle_lost`]) and the revised manifest sent.
    async fn send_clip(&self, mut manifest: ClipManifest) -> Result<Sent, UploadError> {
        let client = self.client();
        let mut status = client.put_manifest(&manifest).await?;
        self.note_ok();
        let signer = self.chain_signer();
        if let Some(revised) =
            self.spool.settle_lost(&manifest.clip_id, &status.missing, signer.as_ref())?
        {
            manifest = revised;
            status = client.put_manifest(&manifest).await?;
        }
        let limit = lock(&self.limits).upload_bytes_per_user_per_day;
        for sha in &status.missing {
            let size =
                manifest.segments.iter().find(|s| &s.sha256 == sha).map(|s| s.size).unwrap_or(0);
            let day = utc_day();
            let used = self.spool.usage(&day)?.get(&manifest.user).copied().unwrap_or(0);
            if used + size > limit {
                tracing::warn!(user = %manifest.user, used, limit, "daily upload limit reached; clip stays spooled");
                return Ok(Sent::OverLimit);
            }
            // A file that vanished since `settle_lost` looked fails here as a local error and is
            // settled on the next pass.
            let bytes = self.spool.read_segment(sha)?;
            client.put_segment(sha, bytes).await?;
            self.spool.mark_segment_sent(sha)?;
            self.spool.add_usage(&day, &manifest.user, size)?;
        }
        let status = if status.missing.is_empty() {
            status
        } else {
            client.clip_status(&manifest.clip_id).await?
        };
        if status.complete {
            Ok(Sent::Complete)
        } else if manifest.open && status.missing.is_empty() {
            Ok(Sent::Open)
        } else {
            Err(UploadError::Protocol(format!(
                "console still misses {} segments of clip {} after upload",
                status.missing.len(),
                manifest.clip_id
            )))
        }
    }
}

/// What status says while the device's own storage fails.
fn local_warning(e: &UploadError) -> String {
    if e.is_disk_full() {
        format!("the spool's disk is full ({e}); clips wait in the spool until there is room")
    } else {
        format!("the spool failed on this device ({e}); clips are kept and tried again")
    }
}

/// How far [`Uploader::send_clip`] got.
enum Sent {
    /// The console has the whole clip.
    Complete,
    /// The console has every segment named so far; the window is still running.
    Open,
    /// Stopped by the daily upload limit; the rest stays spooled.
    OverLimit,
}

/// The running tasks of an [`Uploader`].
pub struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops the tasks. Safe at any point: an interrupted upload resumes from the spool.
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn envelope(signed: &serde_json::Value) -> Result<SignedEnvelope, UploadError> {
    let bytes = serde_json::to_vec(signed).map_err(|e| UploadError::Protocol(e.to_string()))?;
    SignedEnvelope::from_json(&bytes)
        .map_err(|e| UploadError::Rejected { what: "envelope".into(), reason: Box::new(e.into()) })
}

fn open_trust(dir: &Path, id: &Identity) -> Result<TrustStore, UploadError> {
    let bad = |what: &str, e: String| UploadError::Config(format!("identity {what}: {e}"));
    let anchor = TrustAnchor {
        tenant: TenantId::new(id.tenant_id.as_str()).map_err(|e| bad("tenant", e.to_string()))?,
        device: DeviceId::new(id.device_id.as_str()).map_err(|e| bad("device", e.to_string()))?,
        keys: vec![VerifyingKey::from_base64(&id.signing_public_key)
            .map_err(|e| bad("signing key", e.to_string()))?],
    };
    TrustStore::open(anchor, DataDir::new(dir).trust_state())
        .map_err(|e| UploadError::Spool(e.to_string()))
}

fn load_identity(path: &Path) -> Result<Option<Identity>, UploadError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                state_err(
                    path,
                    format!(
                        "unreadable ({e}); restore it or remove the state directory and re-enroll"
                    ),
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(path, e)),
    }
}

fn save_identity(path: &Path, id: &Identity) -> Result<(), UploadError> {
    use std::io::Write;
    let json = Zeroizing::new(serde_json::to_vec_pretty(id).map_err(|e| state_err(path, e))?);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| state_err(&tmp, e))?;
    f.write_all(&json).and_then(|_| f.sync_all()).map_err(|e| state_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| state_err(path, e))
}
