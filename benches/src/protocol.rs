//! `protocol`: the console under a fleet, on loopback.
//!
//! 1. Starts `rearview-console` as a child process (built with `cargo build --release -p
//!    rearview-console` first if it is not next to this binary), so its peak RSS is its own.
//! 2. Enrolls `--devices` devices (each with its own Ed25519 key and token) and has every one
//!    hold the push stream (server-sent events) open, as agents do.
//! 3. **trigger_latency**: issues one trigger per device (`--concurrency` admins in parallel) and
//!    measures, per trigger, from just before `POST /api/v1/triggers` to the moment the trigger
//!    event is read from that device's stream. Signing, storing, pushing and the HTTP round trip
//!    are all inside. Each device acknowledges its trigger, as devices do.
//! 4. **ingest**: `--upload-devices` devices upload clips of 1 MiB segments in parallel
//!    (manifest, then the segments), `--ingest-mib` MiB in total; MB/s = 10^6 bytes per second of
//!    sealed bytes accepted (hashed, fsynced, recorded).
//! 5. **console_rss**: each replica's `VmHWM` (peak resident set) from `/proc` at the end
//!    (`mb_per_replica`), and what the streams cost apart from ingest: `VmRSS` before any
//!    device enrolled (`idle_mb_per_replica`), `VmHWM` once every stream is open and every
//!    trigger pushed (`streams_peak_mb_per_replica`), and the difference per stream held
//!    (`kb_per_stream`).
//!
//! `--backend postgres` puts the metadata in a database of a private PostgreSQL cluster (the
//! test kit's), `--blobs s3` the segments in a bucket of a `moto_server` process (the test
//! kit's), and `--replicas N` serves the tenant from N console processes on those (each with
//! its own copy of the data directory: the keys and `backends.json`). Device `k` enrolls with
//! and streams from replica `k mod N`, and its trigger is issued on replica `k+1 mod N`, so with
//! two or more replicas every trigger crosses from one replica to another. The fleet is this
//! process; each replica is its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;
use rearview_console::client::AdminClient;
use rearview_evidence::keys::Signer;
use rearview_protocol::{
    enroll_proof_message, CaptureMode, ClipManifest, EnrollRequest, ManifestSegment, TriggerMessage,
};
use rearview_testkit::chain::{DeviceChains, SegmentSpan};
use rearview_testkit::console::{InitTokens, ServedConsole};
use rearview_testkit::procfs::ProcStatus;
use rearview_uploader::client::{Client, ClientConfig};
use rearview_uploader::sse::SseParser;
use serde_json::{json, Value};
use tokio::sync::oneshot;

#[derive(Args, Debug)]
pub struct ProtocolArgs {
    /// Print the JSON result only.
    #[arg(long)]
    json: bool,
    /// Devices holding a push stream.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Triggers issued in parallel.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// MiB of segments to ingest.
    #[arg(long, default_value_t = 256)]
    ingest_mib: usize,
    /// Devices uploading in parallel.
    #[arg(long, default_value_t = 4)]
    upload_devices: usize,
    /// Metadata backend: `sqlite` or `postgres` (a private cluster started for the run).
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Blob backend: `files` or `s3` (a moto_server started for the run).
    #[arg(long, default_value = "files")]
    blobs: String,
    /// Console processes serving the tenant (more than one needs `--backend postgres`).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
}

/// Trigger arrivals. The console may push a trigger before the admin's POST returns its id, so
/// an arrival nobody waits for yet is parked in `early`.
#[derive(Default)]
struct Arrivals {
    waiters: HashMap<String, oneshot::Sender<Instant>>,
    early: HashMap<String, Instant>,
}

type Waiters = Arc<Mutex<Arrivals>>;

/// The console processes (killed on drop, before their data directories and the servers
/// they use go).
struct ConsoleChildren {
    served: Vec<ServedConsole>,
    _dir: tempfile::TempDir,
    _s3: Option<rearview_testkit::s3::S3Server>,
    _pg: Option<rearview_testkit::postgres::Postgres>,
}

/// Credentials the bench's S3 client signs with (moto takes any).
const S3_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "rearview-bench"),
    ("AWS_SECRET_ACCESS_KEY", "rearview-bench"),
    ("AWS_REGION", "us-east-1"),
];

fn console_binary() -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    let bin = here.with_file_name("rearview-console");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = if here.to_string_lossy().contains("/release/") {
            "--release"
        } else {
            "--profile=dev"
        };
        let status =
            Command::new(cargo).args(["build", profile, "-p", "rearview-console"]).status()?;
        if !status.success() || !bin.exists() {
            bail!("could not build rearview-console next to {}", here.display());
        }
    }
    Ok(bin)
}

/// More file descriptors: every device stream is one socket on each side.
#[allow(unsafe_code)] // see the SAFETY comment inside
fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read only the struct we pass, which lives on our stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        let target = want.min(lim.rlim_max);
        if lim.rlim_cur < target {
            lim.rlim_cur = target;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
        Ok(lim.rlim_cur)
    }
}

/// The console replicas, serving a tenant `init` made in a temp directory (the test kit's
/// launcher) on the backends `args` names, and the tokens `init` printed.
fn start_console(args: &ProtocolArgs) -> anyhow::Result<(ConsoleChildren, InitTokens)> {
    let bin = console_binary()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut init_args: Vec<String> = Vec::new();
    let pg = match args.backend.as_str() {
        "sqlite" if args.replicas > 1 => {
            bail!("--replicas {} needs --backend postgres", args.replicas)
        }
        "sqlite" => None,
        "postgres" => {
            let pg = rearview_testkit::postgres::Postgres::start()?;
            init_args.extend(["--database".into(), pg.create_database()]);
            Some(pg)
        }
        other => bail!("--backend {other:?}: give sqlite or postgres"),
    };
    let s3 = match args.blobs.as_str() {
        "files" => None,
        "s3" => {
            let s3 = rearview_testkit::s3::S3Server::start()?;
            s3.create_bucket("rearview-bench");
            let location =
                format!("s3://rearview-bench/bench?endpoint={}&region=us-east-1", s3.endpoint());
            init_args.extend(["--blobs".into(), location]);
            Some(s3)
        }
        other => bail!("--blobs {other:?}: give files or s3"),
    };
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let tokens = rearview_testkit::console::init_with(&bin, &data, &init_args, &S3_ENV)?;
    let env: Vec<(&str, &str)> = [("RUST_LOG", "warn")].into_iter().chain(S3_ENV).collect();
    let mut served = Vec::new();
    for r in 0..args.replicas.max(1) {
        let replica_data = if r == 0 {
            data.clone()
        } else {
            rearview_testkit::console::replica_data_dir(&data, r)?
        };
        served.push(ServedConsole::start(&bin, &replica_data, &env)?);
    }
    Ok((ConsoleChildren { served, _dir: dir, _s3: s3, _pg: pg }, tokens))
}

/// A simulated device: its client (with its token), its id, and the chains its enrolled key
/// signs, so its manifests carry the entries the console verifies.
#[derive(Clone)]
struct BenchDevice {
    client: Client,
    id: String,
    chains: Arc<Mutex<DeviceChains>>,
}

/// Enrolls a device through `base`, the fleet's client for its replica: every device's client
/// is a clone of it with its own token, so they share one connection pool (a device's stream is
/// its one socket, and enrolling leaves no idle connection per device behind).
async fn enroll(base: &Client, admin: &AdminClient) -> anyhow::Result<BenchDevice> {
    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await?;
    let token = t["token"].as_str().context("no token")?;
    let (key, _der) = Signer::generate().map_err(|_| anyhow::anyhow!("rng"))?;
    let public_key = hex::encode(key.public_key().as_bytes());
    // The proof is a plain Ed25519 signature of the message (no domain before it).
    let proof = hex::encode(key.sign("", &enroll_proof_message(token, &public_key)));
    let r = base
        .enroll(&EnrollRequest { token: token.into(), public_key, proof, hostname: "bench".into() })
        .await?;
    let chains = Arc::new(Mutex::new(DeviceChains::new(key, &r.tenant_id, &r.device_id)));
    Ok(BenchDevice { client: base.with_token(r.device_token), id: r.device_id, chains })
}

/// Puts the entries that cover `manifest`'s segments into it (signed by the device key), one
/// millisecond apart from the manifest's start, as a device records them.
fn sign_chain(chains: &Mutex<DeviceChains>, manifest: &mut ClipManifest) {
    let t = manifest.start_ms.millis();
    let spans: Vec<SegmentSpan> = (0i64..)
        .zip(&manifest.segments)
        .map(|(k, s)| SegmentSpan { sha256: s.sha256.clone(), start_ms: t + k, end_ms: t + k + 1 })
        .collect();
    let mut chains = chains.lock().unwrap_or_else(|p| p.into_inner());
    let covered = chains.cover(&manifest.clip_id, &manifest.user, &spans);
    manifest.chain = covered.chain;
    manifest.absent = covered.absent;
}

/// Holds one device's stream; reports each trigger's arrival to its waiter, and acknowledges
/// the trigger.
async fn hold_stream(
    client: Client,
    waiters: Waiters,
    ready: oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let resp = client.open_stream().await?;
    let mut ready = Some(ready);
    let mut body = resp.bytes_stream();
    let mut parser = SseParser::default();
    while let Some(chunk) = body.next().await {
        let now = Instant::now();
        for ev in parser.feed(&chunk?).map_err(anyhow::Error::msg)? {
            match ev.event.as_str() {
                "policy" => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                "trigger" => {
                    let m: TriggerMessage = serde_json::from_str(&ev.data)?;
                    // Acknowledged, as a device does once its clip is recorded.
                    let (acker, id) = (client.clone(), m.trigger_id.clone());
                    tokio::spawn(async move { acker.ack_trigger(&id).await });
                    let mut a = waiters.lock().unwrap_or_else(|p| p.into_inner());
                    match a.waiters.remove(&m.trigger_id) {
                        Some(w) => {
                            let _ = w.send(now);
                        }
                        None => {
                            a.early.insert(m.trigger_id, now);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `key` (`VmRSS` now, `VmHWM` the peak) of process `pid`, MiB.
fn rss_mb(pid: u32, key: &str) -> anyhow::Result<f64> {
    let kib =
        ProcStatus::read(pid)?.kib(key).with_context(|| format!("no {key} in /proc/PID/status"))?;
    Ok(kib as f64 / 1024.0)
}

pub fn run(args: ProtocolArgs) -> anyhow::Result<()> {
    let nofile = raise_nofile(args.devices as u64 * 4 + 1024)?;
    // One socket a device (its stream), and the shared pools' few.
    if (nofile as usize) < args.devices + 512 {
        bail!(
            "RLIMIT_NOFILE is {nofile}: too low for {} devices; raise the hard limit",
            args.devices
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: ProtocolArgs) -> anyhow::Result<()> {
    let log = |msg: String| {
        if !args.json {
            eprintln!("{msg}");
        }
    };
    let (console, tokens) = start_console(&args)?;
    let urls: Vec<String> = console.served.iter().map(|s| s.url.clone()).collect();
    let url = urls[0].clone();
    let admin = AdminClient::new(&url, &tokens.admin_token, None)?;
    let admins: Vec<AdminClient> = urls
        .iter()
        .map(|u| AdminClient::new(u, &tokens.admin_token, None))
        .collect::<Result<_, _>>()?;
    let bases: Vec<Client> =
        urls.iter().map(|u| Client::new(&ClientConfig::new(u), None)).collect::<Result<_, _>>()?;
    let approver = AdminClient::new(&url, &tokens.approver_token, None)?;
    let _: Value =
        admin.put("/api/v1/policy/settings", &json!({"capture": {"enabled": true}})).await?;
    let req: Value = admin
        .post(
            "/api/v1/approvals",
            // All activities: the ingest part uploads untriggered clips, which the console
            // takes only under an all-activities approval.
            &json!({"user": "bench-user", "mode": "all-activities", "justification": "bench"}),
        )
        .await?;
    let _: Value =
        approver.post(&format!("/api/v1/approvals/{}/approve", req["id"]), &json!({})).await?;

    let replica_rss = |key: &'static str| -> anyhow::Result<Vec<f64>> {
        console.served.iter().map(|s| rss_mb(s.child.id(), key).map(round)).collect()
    };
    let idle = replica_rss("VmRSS")?;
    log(format!("enrolling {} devices", args.devices));
    let waiters: Waiters = Arc::default();
    let mut devices = Vec::with_capacity(args.devices);
    let mut readies = Vec::with_capacity(args.devices);
    for chunk in (0..args.devices).collect::<Vec<_>>().chunks(50) {
        // Device k enrolls with (and so streams from) replica k mod N.
        let enrolled = futures_util::future::try_join_all(
            chunk.iter().map(|k| enroll(&bases[k % urls.len()], &admins[k % urls.len()])),
        )
        .await?;
        for device in enrolled {
            let (tx, rx) = oneshot::channel();
            readies.push(rx);
            tokio::spawn(hold_stream(device.client.clone(), waiters.clone(), tx));
            devices.push(device);
        }
    }
    for r in readies {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .context("a stream did not open")??;
    }
    log(format!("{} streams open; issuing one trigger per device", args.devices));

    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..args.concurrency).map(|_| {
        let (admins, ids, next, waiters, latencies) =
            (admins.clone(), ids.clone(), next.clone(), waiters.clone(), latencies.clone());
        async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(device) = ids.get(i) else { return anyhow::Ok(()) };
                // Issued on the replica after the device's: with two or more, every trigger
                // crosses replicas.
                let admin = &admins[(i + 1) % admins.len()];
                let start = Instant::now();
                let issued: Value = admin
                    .post(
                        "/api/v1/triggers",
                        &json!({"user": "bench-user", "event_time": rearview_uploader::now_ms(), "before": 10,
                                "after": 10, "reason": "bench", "device": device}),
                    )
                    .await?;
                let trigger_id = issued["trigger_ids"][0].as_str().context("trigger id")?.to_owned();
                let (tx, rx) = oneshot::channel();
                let early = {
                    let mut a = waiters.lock().unwrap_or_else(|p| p.into_inner());
                    let early = a.early.remove(&trigger_id);
                    if early.is_none() {
                        a.waiters.insert(trigger_id.clone(), tx);
                    }
                    early
                };
                let arrived = if let Some(t) = early {
                    t
                } else {
                    match tokio::time::timeout(Duration::from_secs(30), rx).await {
                        Ok(Ok(t)) => t,
                        _ => bail!("trigger {trigger_id} did not reach device {device} within 30 s"),
                    }
                };
                latencies.lock().unwrap_or_else(|p| p.into_inner()).push((arrived - start).as_secs_f64() * 1000.0);
            }
        }
    });
    futures_util::future::try_join_all(workers).await?;
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    // Streams held and every trigger pushed, before any segment: what the streams cost.
    let with_streams = replica_rss("VmHWM")?;
    let streams_per_replica = args.devices as f64 / console.served.len() as f64;
    let kb_per_stream: Vec<f64> = with_streams
        .iter()
        .zip(&idle)
        .map(|(s, i)| round((s - i) * 1024.0 / streams_per_replica))
        .collect();

    log(format!("ingesting {} MiB from {} devices", args.ingest_mib, args.upload_devices));
    let per_device = args.ingest_mib.div_ceil(args.upload_devices);
    let uploaders: Vec<BenchDevice> = devices.iter().take(args.upload_devices).cloned().collect();
    let start = Instant::now();
    let bytes = futures_util::future::try_join_all(uploaders.into_iter().enumerate().map(
        |(n, BenchDevice { client, id, chains })| async move {
            let mut sent = 0u64;
            for c in 0..per_device.div_ceil(16) {
                let segs: Vec<Vec<u8>> = (0..16.min(per_device - c * 16))
                    .map(|s| {
                        let mut b = vec![0u8; 1024 * 1024];
                        rand::Rng::fill(&mut rand::thread_rng(), &mut b[..]);
                        b[0] = s as u8;
                        b
                    })
                    .collect();
                // Recorded now (the console refuses clips from before the approval).
                let t = rearview_uploader::now_ms();
                let mut manifest = ClipManifest {
                    clip_id: format!("bench-{n}-{c}"),
                    trigger_id: None,
                    mode: CaptureMode::AllActivities,
                    user: "bench-user".into(),
                    device_id: id.clone(),
                    start_ms: t.into(),
                    end_ms: (t + 1).into(),
                    segments: segs
                        .iter()
                        .map(|b| ManifestSegment {
                            sha256: hex::encode(
                                ring::digest::digest(&ring::digest::SHA256, b).as_ref(),
                            ),
                            size: b.len() as u64,
                            start_ms: t.into(),
                            end_ms: (t + 1).into(),
                        })
                        .collect(),
                    missing: vec![],
                    open: false,
                    chain: Vec::new(),
                    absent: Vec::new(),
                };
                sign_chain(&chains, &mut manifest);
                let status = client.put_manifest(&manifest).await?;
                for (seg, b) in manifest.segments.iter().zip(segs) {
                    if status.missing.contains(&seg.sha256) {
                        sent += b.len() as u64;
                        client.put_segment(&seg.sha256, b).await?;
                    }
                }
                if !client.clip_status(&manifest.clip_id).await?.complete {
                    bail!("clip {} incomplete after upload", manifest.clip_id);
                }
            }
            anyhow::Ok(sent)
        },
    ))
    .await?
    .into_iter()
    .sum::<u64>();
    let mb_per_s = bytes as f64 / 1e6 / start.elapsed().as_secs_f64();
    let rss = replica_rss("VmHWM")?;
    let result = json!({
        "bench": "protocol",
        "devices": args.devices,
        "backend": args.backend,
        "blobs": args.blobs,
        "replicas": console.served.len(),
        "results": [
            {"name": "trigger_latency", "p50_ms": round(percentile(&lat, 50.0)), "p99_ms": round(percentile(&lat, 99.0)),
             "max_ms": round(lat.last().copied().unwrap_or(f64::NAN)), "triggers": lat.len()},
            {"name": "ingest", "mb_per_s": round(mb_per_s), "bytes": bytes, "upload_devices": args.upload_devices},
            {"name": "console_rss", "mb_per_replica": rss,
             "mb": round(rss.iter().copied().fold(0.0, f64::max)),
             "idle_mb_per_replica": idle, "streams_peak_mb_per_replica": with_streams,
             "kb_per_stream": kb_per_stream},
        ]
    });
    println!("{result}");
    drop(console);
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
