//! Names that policies and triggers use to point at things: tenants, devices, people, triggers,
//! alerts.
//!
//! Each is a validated string newtype. They arrive from the network inside signed payloads and end
//! up in logs, file names and SQL, so every one is bounded in length and free of control
//! characters; identifiers (everything but [`Principal`]) are further restricted to
//! `[A-Za-z0-9._:@-]`.
//!
//! # Principals
//!
//! One form and one matching rule, used alike by approvals, triggers, capture gating, segment
//! labels and clips (DESIGN.md, "Policy and trust"):
//!
//! * two principals are the same person when their [canonical forms](canonical_principal)
//!   (trimmed, ASCII-lowercased) are equal — nothing else (no stripping of domains);
//! * a principal names a *local account* per [`LocalAccounts::names`]: the login name itself,
//!   or `<login>@<domain>` only when the agent config sets `[identity] domain`.

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

/// The canonical form of a principal name: trimmed, ASCII letters lowercased. Two names are the
/// same person exactly when their canonical forms are equal; approvals, triggers, capture
/// gating, segment labels, clips and the console's separation-of-duties checks all compare
/// through this one function. (Non-ASCII letters are compared as written: directories differ
/// on how they fold them, and a false "same person" would be worse than a false "different".)
pub fn canonical_principal(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// A person: the user to capture, or the requester / approver of an approval.
///
/// Written as the directory knows them: a bare account (`alice`), a UPN (`alice@corp.example`)
/// or a down-level name (`CORP\alice`). Compared in [canonical form](canonical_principal), so
/// an approval by `Alice` of a request by `alice` is a self-approval; the original spelling is
/// kept for display and labels. Which *local account* a principal names is a separate rule,
/// [`LocalAccounts::names`].
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

    /// The [canonical form](canonical_principal) of the name.
    pub fn canonical(&self) -> String {
        canonical_principal(&self.0)
    }

    /// Whether `self` and `other` name the same person (equal canonical forms).
    pub fn same_as(&self, other: &Principal) -> bool {
        self.canonical() == other.canonical()
    }
}

/// How this device's local accounts are named as principals: the agent config's
/// `[identity] domain`. The one rule that maps a session owner (a login name) onto the
/// principals of policies and triggers, see [`LocalAccounts::names`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalAccounts {
    /// Canonical DNS domain whose UPNs are this device's accounts; `None`: only bare names.
    domain: Option<String>,
}

/// Longest DNS name.
const MAX_DOMAIN_LEN: usize = 253;

impl LocalAccounts {
    /// Local accounts are named only by their own login names.
    pub fn bare() -> LocalAccounts {
        LocalAccounts { domain: None }
    }

    /// Local accounts are also named `<login>@<domain>` (the directory's UPNs, where the
    /// device's logins are the directory's accounts). `domain` is a DNS name such as
    /// `corp.example`; it is kept in canonical (lowercase) form.
    pub fn with_domain(domain: &str) -> Result<LocalAccounts, IdError> {
        let fail =
            |why| Err(IdError { what: "domain", shown: domain.chars().take(64).collect(), why });
        if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
            return fail("must be a DNS name of 1..=253 bytes, like corp.example");
        }
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !domain.split('.').all(label_ok) {
            return fail("must be a DNS name like corp.example (letters, digits, - and dots)");
        }
        Ok(LocalAccounts { domain: Some(domain.to_ascii_lowercase()) })
    }

    /// The configured domain, canonical.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Whether `principal` names the local account `account` (a login name). It does when it
    /// is, in canonical form, that login name (`alice` is `alice`; an account that the system
    /// already names `alice@corp.example` or `CORP\alice`, as sssd or winbind may, is that
    /// name), or, only with a configured domain, that login name plus `@domain`.
    ///
    /// Nothing else maps: without a domain `alice@corp.example` is not the local `alice` (it
    /// may be someone at a partner), and a down-level `CORP\alice` never names a bare local
    /// `alice` (no setting maps NetBIOS domains; write the policy with the UPN instead).
    pub fn names(&self, principal: &Principal, account: &str) -> bool {
        let p = principal.canonical();
        let account = canonical_principal(account);
        if account.is_empty() {
            return false;
        }
        if p == account {
            return true;
        }
        match &self.domain {
            Some(domain) if !account.contains(['@', '\\']) => {
                p.strip_suffix(domain.as_str()).and_then(|l| l.strip_suffix('@'))
                    == Some(account.as_str())
            }
            _ => false,
        }
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

    fn p(s: &str) -> Principal {
        Principal::new(s).unwrap()
    }

    #[test]
    fn canonical_form_is_trimmed_and_ascii_lowercased() {
        assert_eq!(canonical_principal("  Alice@Corp.Example "), "alice@corp.example");
        assert_eq!(p("CORP\\Alice").canonical(), "corp\\alice");
        assert_eq!(p("Ärger").canonical(), "Ärger", "non-ASCII letters are kept as written");
    }

    #[test]
    fn without_a_domain_only_the_login_name_is_the_account() {
        let bare = LocalAccounts::bare();
        assert!(bare.names(&p("alice"), "alice"));
        assert!(bare.names(&p("ALICE"), "alice"));
        assert!(!bare.names(&p("alice@corp.example"), "alice"), "could be someone else");
        assert!(!bare.names(&p("root@partner.example"), "root"));
        assert!(!bare.names(&p("CORP\\alice"), "alice"));
        assert!(!bare.names(&p("malice"), "alice"));
        // Accounts the system itself names with a domain (sssd, winbind) are those names.
        assert!(bare.names(&p("Alice@Corp.Example"), "alice@corp.example"));
        assert!(bare.names(&p("corp\\alice"), "CORP\\alice"));
    }

    #[test]
    fn a_configured_domain_adds_exactly_its_upns() {
        let corp = LocalAccounts::with_domain("Corp.Example").unwrap();
        assert_eq!(corp.domain(), Some("corp.example"));
        assert!(corp.names(&p("alice"), "alice"));
        assert!(corp.names(&p("Alice@CORP.example"), "alice"));
        assert!(!corp.names(&p("alice@partner.example"), "alice"));
        assert!(!corp.names(&p("alice@sub.corp.example"), "alice"));
        assert!(!corp.names(&p("bob@corp.example"), "alice"));
        assert!(!corp.names(&p("@corp.example"), ""));
        assert!(!corp.names(&p("CORP\\alice"), "alice"));
        // A login that already carries a domain is not extended by another.
        assert!(!corp.names(&p("a@b@corp.example"), "a@b"));
    }

    #[test]
    fn domains_are_dns_names() {
        for bad in ["", ".", "corp..example", "-corp.example", "corp_x.example", "a b", "x@y"] {
            let e = LocalAccounts::with_domain(bad).unwrap_err();
            assert!(e.to_string().contains("domain"), "{bad}: {e}");
        }
        assert!(LocalAccounts::with_domain(&"a".repeat(64)).is_err());
        assert!(LocalAccounts::with_domain("xn--bcher-kva.example").is_ok());
    }

    #[test]
    fn principals_refuse_control_and_padding() {
        assert!(Principal::new("").is_err());
        assert!(Principal::new(" alice").is_err());
        assert!(Principal::new("al\u{7}ice").is_err());
        assert!(Principal::new("x".repeat(257)).is_err());
    }
}
