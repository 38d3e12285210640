//! `passwords`, `web_sessions`, `clip_views` and `oidc_logins`: what the browser side of the
//! console keeps (see [`crate::web`] for the rules each is used under).
//!
//! ```text
//! passwords     one row per person who may sign in with a password: the argon2id hash (PHC
//!               string; salt and parameters inside), when it was set, the failed attempts in a
//!               row and until when sign-in is refused after too many
//! web_sessions  one row per signed-in browser, by the SHA-256 of its cookie (the cookie alone
//!               signs in; a copy of the table signs in nobody), with the CSRF token its forms
//!               carry, how it signed in, when it was last used and when it ends
//! clip_views    one row per opened player: a random id the page's frame fetches carry, bound
//!               to the session, the person and the clip; audited when made
//! oidc_logins   one row per sign-in sent to the OpenID provider and not yet back: the SHA-256
//!               of its `state`, the PKCE verifier and nonce, where to go after; kept in the
//!               database so the callback may land on any replica
//! ```

use super::sql::args;
use super::Tx;
use crate::auth::Person;
use crate::error::ConsoleError;

/// A person's stored password and its attempt counters.
#[derive(Debug, Clone)]
pub struct PasswordRow {
    pub person_id: i64,
    pub hash: String,
    pub failures: i64,
    pub locked_until_ms: i64,
}

/// A live browser session as a request sees it.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub person: Person,
    pub csrf: String,
    pub via: String,
    pub last_ms: i64,
    pub expires_ms: i64,
}

/// A sign-in waiting at the OpenID provider.
#[derive(Debug, Clone)]
pub struct OidcLoginRow {
    pub verifier: String,
    pub nonce: String,
    pub next_path: String,
    pub created_ms: i64,
}

impl Tx<'_> {
    /// The id of the person named `name` (as stored, or in canonical form).
    pub fn person_id_by_name(&self, name: &str) -> Result<Option<i64>, ConsoleError> {
        let key = rearview_config::canonical_name(name);
        self.opt(
            "SELECT id FROM people WHERE name = ?1 OR name_key = ?2 ORDER BY id",
            args![name, key.as_str()],
            |r| r.get(0),
        )
    }

    /// The person `id` with their active roles.
    pub fn person_by_id(&self, id: i64) -> Result<Option<Person>, ConsoleError> {
        let hash: Option<String> =
            self.opt("SELECT token_sha256 FROM people WHERE id = ?1", args![id], |r| r.get(0))?;
        match hash {
            Some(hash) => self.person_by_token_hash(&hash),
            None => Ok(None),
        }
    }

    pub fn password_of(&self, person_id: i64) -> Result<Option<PasswordRow>, ConsoleError> {
        self.opt(
            "SELECT person_id, hash, failures, locked_until_ms FROM passwords WHERE person_id = ?1",
            args![person_id],
            |r| {
                Ok(PasswordRow {
                    person_id: r.get(0)?,
                    hash: r.get(1)?,
                    failures: r.get(2)?,
                    locked_until_ms: r.get(3)?,
                })
            },
        )
    }

    /// Sets (or replaces) `person_id`'s password hash, clearing the attempt counters.
    pub fn set_password(&self, person_id: i64, hash: &str, now: i64) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO passwords (person_id, hash, set_ms, failures, locked_until_ms)
             VALUES (?1, ?2, ?3, 0, 0)
             ON CONFLICT (person_id) DO UPDATE SET hash = excluded.hash, set_ms = excluded.set_ms,
                 failures = 0, locked_until_ms = 0",
            args![person_id, hash, now],
        )?;
        Ok(())
    }

    /// Records a failed attempt: the failures in a row, and the lock (0: none).
    pub fn password_failed(
        &self,
        person_id: i64,
        failures: i64,
        locked_until_ms: i64,
    ) -> Result<(), ConsoleError> {
        self.exec(
            "UPDATE passwords SET failures = ?1, locked_until_ms = ?2 WHERE person_id = ?3",
            args![failures, locked_until_ms, person_id],
        )?;
        Ok(())
    }

    /// A signed-in browser: its session, by the SHA-256 of the cookie.
    pub fn insert_session(
        &self,
        id_sha256: &str,
        person_id: i64,
        csrf: &str,
        via: &str,
        now: i64,
        expires_ms: i64,
    ) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO web_sessions (id_sha256, person_id, csrf, via, created_ms, last_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
            args![id_sha256, person_id, csrf, via, now, expires_ms],
        )?;
        Ok(())
    }

    /// The session whose cookie hashes to `id_sha256`, with its person's roles as they are
    /// now; `None` when there is none (signed out, never made). Expiry is the caller's to judge.
    pub fn session(&self, id_sha256: &str) -> Result<Option<SessionRow>, ConsoleError> {
        let row: Option<(i64, String, String, i64, i64)> = self.opt(
            "SELECT person_id, csrf, via, last_ms, expires_ms FROM web_sessions WHERE id_sha256 = ?1",
            args![id_sha256],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
        let Some((person_id, csrf, via, last_ms, expires_ms)) = row else { return Ok(None) };
        let Some(person) = self.person_by_id(person_id)? else { return Ok(None) };
        Ok(Some(SessionRow { person, csrf, via, last_ms, expires_ms }))
    }

    pub fn touch_session(&self, id_sha256: &str, now: i64) -> Result<(), ConsoleError> {
        self.exec(
            "UPDATE web_sessions SET last_ms = ?1 WHERE id_sha256 = ?2",
            args![now, id_sha256],
        )?;
        Ok(())
    }

    /// Ends a session (sign-out, expiry); true when there was one.
    pub fn delete_session(&self, id_sha256: &str) -> Result<bool, ConsoleError> {
        self.exec("DELETE FROM clip_views WHERE session_sha256 = ?1", args![id_sha256])?;
        Ok(self.exec("DELETE FROM web_sessions WHERE id_sha256 = ?1", args![id_sha256])? == 1)
    }

    /// Ends every session of `person_id` (their password changed); how many.
    pub fn end_sessions_of(&self, person_id: i64) -> Result<u64, ConsoleError> {
        self.exec(
            "DELETE FROM clip_views WHERE session_sha256 IN
                 (SELECT id_sha256 FROM web_sessions WHERE person_id = ?1)",
            args![person_id],
        )?;
        self.exec("DELETE FROM web_sessions WHERE person_id = ?1", args![person_id])
    }

    /// Removes sessions, views and pending OIDC sign-ins past their end; how many rows went.
    pub fn sweep_web(&self, now: i64, oidc_before_ms: i64) -> Result<u64, ConsoleError> {
        let views = self.exec("DELETE FROM clip_views WHERE expires_ms <= ?1", args![now])?;
        let sessions = self.exec("DELETE FROM web_sessions WHERE expires_ms <= ?1", args![now])?;
        let logins =
            self.exec("DELETE FROM oidc_logins WHERE created_ms <= ?1", args![oidc_before_ms])?;
        Ok(views + sessions + logins)
    }

    pub fn insert_clip_view(
        &self,
        id: &str,
        session_sha256: &str,
        person_id: i64,
        clip_id: &str,
        now: i64,
        expires_ms: i64,
    ) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO clip_views (id, session_sha256, person_id, clip_id, opened_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![id, session_sha256, person_id, clip_id, now, expires_ms],
        )?;
        Ok(())
    }

    /// The clip that view `id` of session `session_sha256` opened, while it lasts.
    pub fn clip_of_view(
        &self,
        id: &str,
        session_sha256: &str,
        now: i64,
    ) -> Result<Option<String>, ConsoleError> {
        self.opt(
            "SELECT clip_id FROM clip_views WHERE id = ?1 AND session_sha256 = ?2 AND expires_ms > ?3",
            args![id, session_sha256, now],
            |r| r.get(0),
        )
    }

    pub fn insert_oidc_login(
        &self,
        state_sha256: &str,
        row: &OidcLoginRow,
    ) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO oidc_logins (state_sha256, verifier, nonce, next_path, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            args![
                state_sha256,
                row.verifier.as_str(),
                row.nonce.as_str(),
                row.next_path.as_str(),
                row.created_ms
            ],
        )?;
        Ok(())
    }

    /// Takes (reads and removes) the pending sign-in of `state_sha256`: a `state` is good once.
    pub fn take_oidc_login(
        &self,
        state_sha256: &str,
    ) -> Result<Option<OidcLoginRow>, ConsoleError> {
        let row = self.opt(
            "SELECT verifier, nonce, next_path, created_ms FROM oidc_logins WHERE state_sha256 = ?1",
            args![state_sha256],
            |r| {
                Ok(OidcLoginRow {
                    verifier: r.get(0)?,
                    nonce: r.get(1)?,
                    next_path: r.get(2)?,
                    created_ms: r.get(3)?,
                })
            },
        )?;
        if row.is_some() {
            self.exec("DELETE FROM oidc_logins WHERE state_sha256 = ?1", args![state_sha256])?;
        }
        Ok(row)
    }
}
