//! Names that policies and triggers use to point at things: tenants, devices, people, triggers,
//! alerts.
//!
//! Each is a validated string newtype. They arrive from the network inside signed payloads and end
//! up in logs, file names and SQL, so every one is bounded in length and free of control
//! characters; identifiers (everything but [`Principal`]) are further restricted to
//! `[A-Za-z0-9._:@-]`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted. Long enough for UUIDs, UPNs and DNS names; short enough that a
/// hostile payload cannot bloat the persisted trust state through them.
pub const MAX_ID_LEN: usize = 128;

/// Longest principal name accepted (UPNs and `DOMAIN\user` forms fit easily).
pub const MAX_PRINCIPAL_LEN: usize = 256;

/// An identifier or principal that is empty, too long, or holds characters it may not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {shown:?}: {why}")]
pub struct IdError {
    /// Which kind of name it was ("tenant id", "principal", ...).
    pub what: &'static str,
    /// The offending value, truncated to 64 characters so the error stays printable.
    pub shown: String,
    /// The rule it breaks.
    pub why: &'static str,
}

fn check_id(what: &'static str, s: &str) -> Result<(), IdError> {
    let fail = |why| Err(IdError { what, shown: s.chars().take(64).collect(), why });
    if s.is_empty() {
        return fail("must not be empty");
    }
    if s.len() > MAX_ID_LEN {
        return fail("longer than 128 bytes");
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b)) {
        return fail("only ASCII letters, digits and . _ : @ - are allowed");
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id($what, &s)?;
                Ok(Self(s))
            }

            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// The organisation that owns a deployment. Every policy and trigger names its tenant, and an
    /// agent acts only on its own tenant's.
    TenantId,
    "tenant id"
);
id_type!(
    /// One onboarded device, as assigned by the console at enrollment.
    DeviceId,
    "device id"
);
id_type!(
    /// One trigger, unique per tenant; the agent remembers seen ids to refuse replays.
    TriggerId,
    "trigger id"
);
id_type!(
    /// The console alert a trigger (and so the clip it produces) belongs to.
    AlertId,
    "alert id"
);

/// A person: the user to capture, or the requester / approver of an approval.
///
/// Compared case-insensitively (ASCII), since directory services treat `Alice@corp` and
/// `alice@corp` as the same account: an approval by `Alice` of a request by `alice` is a
/// self-approval. The original spelling is kept for display.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal(String);

impl Principal {
    /// Validates and wraps `s`: 1..=256 bytes, no control characters, no leading or trailing
    /// whitespace.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let fail =
            |why| Err(IdError { what: "principal", shown: s.chars().take(64).collect(), why });
        if s.is_empty() {
            return fail("must not be empty");
        }
        if s.len() > MAX_PRINCIPAL_LEN {
            return fail("longer than 256 bytes");
        }
        if s.chars().any(char::is_control) {
            return fail("control characters are not allowed");
        }
        if s.trim() != s {
            return fail("leading or trailing whitespace is not allowed");
        }
        Ok(Self(s))
    }

    /// The name as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` and `other` name the same account (ASCII case-insensitive).
    pub fn same_as(&self, other: &Principal) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }

    /// Whether this principal is the local account `user` (e.g. `alice` matches `alice`,
    /// `alice@corp.example` and `CORP\alice`). Agents map session owners to policy users
    /// with this.
    pub fn matches_account(&self, user: &str) -> bool {
        if self.0.eq_ignore_ascii_case(user) {
            return true;
        }
        let local = self.0.split('@').next().unwrap_or(&self.0);
        let local = local.rsplit('\\').next().unwrap_or(local);
        local.eq_ignore_ascii_case(user)
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.same_as(other)
    }
}
impl Eq for Principal {}

impl std::hash::Hash for Principal {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl TryFrom<String> for Principal {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl std::str::FromStr for Principal {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_uuid_and_dns_like_names() {
        assert!(TenantId::new("contoso").is_ok());
        assert!(DeviceId::new("laptop-42.corp.example").is_ok());
        assert!(TriggerId::new("6f1c2a9e-5b1d-4c3e-9a77-0c7e1f0b2d11").is_ok());
    }

    #[test]
    fn ids_refuse_empty_long_and_odd_characters() {
        assert!(TenantId::new("").is_err());
        assert!(TenantId::new("a".repeat(129)).is_err());
        assert!(DeviceId::new("a/b").is_err());
        assert!(DeviceId::new("a b").is_err());
        assert!(TriggerId::new("x\n").is_err());
        let e = TenantId::new("bad id").unwrap_err();
        assert!(e.to_string().contains("tenant id"), "{e}");
    }

    #[test]
    fn ids_refuse_bad_values_when_deserialised() {
        assert!(serde_json::from_str::<TenantId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<TenantId>("\"not ok\"").is_err());
    }

    #[test]
    fn principals_compare_case_insensitively() {
        let a = Principal::new("Alice@corp.example").unwrap();
        let b = Principal::new("alice@CORP.example").unwrap();
        assert_eq!(a, b);
        assert!(a.same_as(&b));
        assert_ne!(a, Principal::new("bob@corp.example").unwrap());
    }

    #[test]
    fn principals_match_local_accounts() {
        assert!(Principal::new("alice@corp.example").unwrap().matches_account("alice"));
        assert!(Principal::new("CORP\\alice").unwrap().matches_account("alice"));
        assert!(Principal::new("alice").unwrap().matches_account("Alice"));
        assert!(!Principal::new("alice@corp.example").unwrap().matches_account("bob"));
        assert!(!Principal::new("malice").unwrap().matches_account("alice"));
    }

    #[test]
    fn principals_refuse_control_and_padding() {
        assert!(Principal::new("").is_err());
        assert!(Principal::new(" alice").is_err());
        assert!(Principal::new("al\u{7}ice").is_err());
        assert!(Principal::new("x".repeat(257)).is_err());
    }
}
