//! Pseudonyms: how review shows the people recorded.
//!
//! ```text
//! pseudonym(user) = "user-" + hex(HMAC-SHA256(K, lowercase(user)))[..12]
//! K               32 random bytes, made once per tenant (meta `pseudonym_key`, hex), shared by
//!                 every replica through the database
//! ```
//!
//! Stable (the same person is the same pseudonym on every page, in every clip, on every
//! replica), per tenant (two tenants' pseudonyms of one name differ), and not reversible
//! without K: a list of candidate names cannot be hashed to find who is who unless one holds
//! the database. User names compare case-insensitively everywhere in the console, so they are
//! lowercased first. 48 bits: two people of a fleet of 100 000 share a pseudonym with odds
//! about 1 in 56 000.
//!
//! A real name is shown only to a person whose role the tenant's review settings allow to
//! reveal names, one clip at a time, after they ask; each reveal is audited (`user.reveal`).

use ring::hmac;

use crate::error::ConsoleError;
use crate::store::Tx;

const META_KEY: &str = "pseudonym_key";

/// The tenant's pseudonym key, loaded once at start.
pub struct Pseudonyms {
    key: hmac::Key,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms { key: <hidden> }")
    }
}

impl Pseudonyms {
    /// The tenant's key, made in this transaction when there is none yet (a write).
    pub fn load_or_create(tx: &Tx<'_>) -> Result<Pseudonyms, ConsoleError> {
        let hex_key = match tx.meta_get(META_KEY)? {
            Some(k) => k,
            None => {
                let made = crate::auth::new_token("k");
                let k = made.trim_start_matches("k_").to_owned();
                tx.meta_set(META_KEY, &k)?;
                k
            }
        };
        let bytes = hex::decode(hex_key.trim())
            .map_err(|e| ConsoleError::corrupt("meta pseudonym_key", e))?;
        if bytes.len() != 32 {
            return Err(ConsoleError::corrupt("meta pseudonym_key", "not 32 bytes"));
        }
        Ok(Pseudonyms { key: hmac::Key::new(hmac::HMAC_SHA256, &bytes) })
    }

    /// The pseudonym of `user`.
    pub fn of(&self, user: &str) -> String {
        let tag = hmac::sign(&self.key, user.to_lowercase().as_bytes());
        format!("user-{}", &hex::encode(tag.as_ref())[..12])
    }

    #[cfg(test)]
    fn with_key(bytes: &[u8]) -> Pseudonyms {
        Pseudonyms { key: hmac::Key::new(hmac::HMAC_SHA256, bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_case_blind_and_keyed() {
        let a = Pseudonyms::with_key(&[1; 32]);
        let b = Pseudonyms::with_key(&[2; 32]);
        assert_eq!(a.of("Alice"), a.of("alice"));
        assert_ne!(a.of("alice"), a.of("bob"));
        assert_ne!(a.of("alice"), b.of("alice"), "another tenant, another pseudonym");
        let p = a.of("alice");
        assert!(p.starts_with("user-") && p.len() == 17 && !p.contains("alice"), "{p}");
    }
}
