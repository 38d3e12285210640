//! `people`, `role_grants` and `enrollment_tokens`: who may sign in, with which roles, granted
//! and confirmed by whom; the one-time tokens devices enroll with (see [`crate::api::roles`] for
//! the rules, [`crate::auth`] for tokens).

use super::sql::{args, Row};
use super::Tx;
use crate::api::people::PersonView;
use crate::api::roles::{Grant, GrantState};
use crate::auth::{Person, Role};
use crate::error::ConsoleError;

const GRANTS: &str = "SELECT p.name, g.role, g.state, g.granted_by, g.granted_ms, g.confirmed_by,
    g.confirmed_ms FROM role_grants g JOIN people p ON p.id = g.person_id";

/// A row of [`GRANTS`]; `None` for a role or state this console does not know (it grants
/// nothing).
fn row_to_grant(r: &Row<'_>) -> Result<Option<Grant>, ConsoleError> {
    let role: String = r.get(1)?;
    let state: String = r.get(2)?;
    let state = match state.as_str() {
        "active" => GrantState::Active,
        "pending" => GrantState::Pending,
        _ => return Ok(None),
    };
    let Some(role) = Role::parse(&role) else { return Ok(None) };
    Ok(Some(Grant {
        person: r.get(0)?,
        role,
        state,
        granted_by: r.get(3)?,
        granted_ms: r.get(4)?,
        confirmed_by: r.get(5)?,
        confirmed_ms: r.get(6)?,
    }))
}

/// A new person as [`Tx::insert_person`] stores them.
pub struct NewPersonRow<'a> {
    pub name: &'a str,
    /// The name in canonical form.
    pub name_key: &'a str,
    pub token_sha256: &'a str,
    pub created_ms: i64,
}

impl Tx<'_> {
    /// The person whose token hashes to `hash`, with their effective (active) roles.
    pub fn person_by_token_hash(&self, hash: &str) -> Result<Option<Person>, ConsoleError> {
        let row: Option<(i64, String)> =
            self.opt("SELECT id, name FROM people WHERE token_sha256 = ?1", args![hash], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let Some((id, name)) = row else { return Ok(None) };
        let mut roles: Vec<Role> = self
            .rows(
                "SELECT role FROM role_grants WHERE person_id = ?1 AND state = 'active'",
                args![id],
                |r| r.get::<String>(0),
            )?
            .iter()
            .filter_map(|r| Role::parse(r))
            .collect();
        roles.sort();
        Ok(Some(Person { id, name, roles }))
    }

    /// The stored name of a person named `name`, or `name_key` in canonical form.
    pub fn person_with_name(
        &self,
        name: &str,
        name_key: &str,
    ) -> Result<Option<String>, ConsoleError> {
        self.opt(
            "SELECT name FROM people WHERE name_key = ?1 OR name = ?2 ORDER BY id",
            args![name_key, name],
            |r| r.get(0),
        )
    }

    /// Stores a new person; their id.
    pub fn insert_person(&self, p: &NewPersonRow<'_>) -> Result<i64, ConsoleError> {
        self.one(
            "INSERT INTO people (name, name_key, token_sha256, created_ms) VALUES (?1, ?2, ?3, ?4)
             RETURNING id",
            args![p.name, p.name_key, p.token_sha256, p.created_ms],
            |r| r.get(0),
        )
    }

    /// The name of person `id`, if there is one.
    pub fn person_name(&self, id: i64) -> Result<Option<String>, ConsoleError> {
        self.opt("SELECT name FROM people WHERE id = ?1", args![id], |r| r.get(0))
    }

    /// Everybody, in creation order, with every grant and the roles in force.
    pub fn people(&self) -> Result<Vec<PersonView>, ConsoleError> {
        let rows =
            self.rows("SELECT id, name, created_ms FROM people ORDER BY id", args![], |r| {
                Ok(PersonView {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    roles: String::new(),
                    created_ms: r.get(2)?,
                    grants: Vec::new(),
                })
            })?;
        rows.into_iter()
            .map(|mut p| {
                p.grants = self.grants_of(p.id)?;
                let active: Vec<Role> = p
                    .grants
                    .iter()
                    .filter(|g| g.state == GrantState::Active)
                    .map(|g| g.role)
                    .collect();
                p.roles = Role::join(&active);
                Ok(p)
            })
            .collect()
    }

    /// Every grant of `person_id`, by role.
    pub fn grants_of(&self, person_id: i64) -> Result<Vec<Grant>, ConsoleError> {
        let sql = format!("{GRANTS} WHERE g.person_id = ?1 ORDER BY g.role");
        let rows = self.rows(&sql, args![person_id], row_to_grant)?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// The grant of `role` to `person_id`, pending or active.
    pub fn grant_of(&self, person_id: i64, role: Role) -> Result<Option<Grant>, ConsoleError> {
        let sql = format!("{GRANTS} WHERE g.person_id = ?1 AND g.role = ?2");
        Ok(self.opt(&sql, args![person_id, role.as_str()], row_to_grant)?.flatten())
    }

    /// Stores `grant` of `person_id`; false when the person holds or waits for that role
    /// already (nothing is changed then).
    pub fn insert_grant(&self, person_id: i64, grant: &Grant) -> Result<bool, ConsoleError> {
        let inserted = self.exec(
            "INSERT INTO role_grants (person_id, role, granted_by, granted_ms, state, confirmed_by, confirmed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (person_id, role) DO NOTHING",
            args![
                person_id,
                grant.role.as_str(),
                grant.granted_by,
                grant.granted_ms,
                grant.state.as_str(),
                grant.confirmed_by,
                grant.confirmed_ms
            ],
        )?;
        Ok(inserted == 1)
    }

    /// Makes the pending approver grant of `person_id` active, confirmed by `by` at `now`;
    /// false when there was no pending one (it changed meanwhile).
    pub fn confirm_approver(
        &self,
        person_id: i64,
        by: &str,
        now: i64,
    ) -> Result<bool, ConsoleError> {
        let changed = self.exec(
            "UPDATE role_grants SET state = 'active', confirmed_by = ?1, confirmed_ms = ?2
             WHERE person_id = ?3 AND role = 'approver' AND state = 'pending'",
            args![by, now, person_id],
        )?;
        Ok(changed == 1)
    }

    /// Stores a new enrollment token (its hash).
    pub fn insert_enrollment_token(
        &self,
        token_sha256: &str,
        created_by: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO enrollment_tokens (token_sha256, created_by, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            args![token_sha256, created_by, created_ms, expires_ms],
        )?;
        Ok(())
    }
}
