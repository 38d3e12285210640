//! The Rearview agent: the daemon `rearviewd` and the local diagnostic CLI `rearview`.
//!
//! The daemon decides *whether* and *whom* to record — only users with an approval in force in
//! a verified policy — and the recorder core (`rearview_capture`) records. It finds graphical
//! sessions, runs a capture worker as each approved session's user, seals what the workers
//! send into the ring, answers triggers with clips, and explains itself over a local socket.
//!
//! # Layout
//!
//! * [`daemon`]: the event loop, which only dispatches; one module per job behind it —
//!   starting, sessions and workers, segment intake, admin requests, reports, indicators —
//!   plus gating ([`daemon::gate`]) and the `doctor` checks. Its evidence store, a thread of
//!   its own, owns the ring and the clips being collected ([`daemon::clips`]: stored in the
//!   spool database): parsing, sealing, fsyncs and SQLite never run on the loop.
//! * [`admin`]: the local admin socket (peer-credential check, JSON line protocol, client).
//! * [`status`]: what `status`, `buffer`, `clips` and `doctor` answer (shared with the CLI).
//! * [`sessions`]: graphical sessions from logind over D-Bus, or a fixed display from config.
//! * [`worker`]: the capture worker process (privileges dropped to the session user) and the
//!   framed protocol it speaks back to the daemon.
//! * [`cpu`]: the agent's CPU use, workers included, and the throttle that follows it.
//! * [`indicators`]: file copies to removable media and watched folders (inotify).
//! * [`notice`]: the desktop notification telling a user that capture started.
//! * [`service`]: systemd integration (`sd_notify`) and logging setup.
//! * [`cli`]: the `rearview` command's subcommands and how they print.

pub mod admin;
pub mod cli;
pub mod cpu;
pub mod daemon;
pub mod indicators;
pub mod notice;
pub mod service;
pub mod sessions;
pub mod status;
pub mod worker;
