//! Who may do what on the admin API. Tokens are random 256-bit secrets shown once at creation
//! (`eft_<hex>`); the store keeps only their sha256, so a leaked database leaks no token. Roles
//! are ordered: a **viewer** reads; an **operator** also manages bundles and rollouts; an
//! **admin** also manages tokens and enrollment.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Records, Store, StoreError, Table};

/// Token prefix (lets secret scanners recognize an edgefleet token).
pub const TOKEN_PREFIX: &str = "eft_";

pub use edge_protocol::rest::{Action, Role};

/// A stored token (the secret itself is never stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A name for humans (who or what holds it).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Creation time, unix seconds.
    pub created: u64,
}

/// sha256 of a token, hex: the store key.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token; returns the secret (shown once) and its record.
pub fn create_token<S: Store + ?Sized>(
    records: &Records<S>,
    name: &str,
    role: Role,
    now: u64,
) -> Result<(String, TokenRecord), StoreError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let record = TokenRecord {
        name: name.to_string(),
        role,
        created: now,
    };
    records.put(Table::Tokens, &token_hash(&token), &record)?;
    Ok((token, record))
}

/// The record of a presented token, if it is one.
pub fn authenticate<S: Store + ?Sized>(
    records: &Records<S>,
    token: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() != TOKEN_PREFIX.len() + 64 {
        return Ok(None);
    }
    records.get(Table::Tokens, &token_hash(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;
    use std::sync::Arc;

    #[test]
    fn roles_are_ordered() {
        use Action::*;
        let table = [
            (Role::Viewer, [true, false, false]),
            (Role::Operator, [true, true, false]),
            (Role::Admin, [true, true, true]),
        ];
        for (role, allowed) in table {
            for (action, want) in [Read, Operate, Administer].into_iter().zip(allowed) {
                assert_eq!(role.allows(action), want, "{role:?} {action:?}");
            }
        }
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().unwrap_err().contains("viewer"));
    }

    #[test]
    fn tokens_are_stored_hashed_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(Arc::new(
            RedbStore::open(&dir.path().join("s.redb")).unwrap(),
        ));
        let (token, record) = create_token(&records, "ci", Role::Operator, 5).unwrap();
        assert!(token.starts_with("eft_") && token.len() == 68);
        assert_eq!(authenticate(&records, &token).unwrap(), Some(record));
        assert!(
            records
                .store()
                .get(Table::Tokens, &token)
                .unwrap()
                .is_none(),
            "not stored in clear"
        );
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(authenticate(&records, &wrong).unwrap(), None);
        assert_eq!(authenticate(&records, "").unwrap(), None);
        assert_eq!(authenticate(&records, &token[..20]).unwrap(), None);
    }
}
