//! S3 users and their access keys, kept in the data directory's embedded store
//! (`s3-users.redb`, mode 0600), managed with `sealstore s3 user add|list|remove`.
//!
//! The first start creates an `admin` user, prints its keys and also writes them, 0600, to
//! `s3-admin.json` so that scripts can read them. Every user may use every bucket: sealstore
//! has no S3 access policies (yet). Secrets sit in the store as they are, protected by file
//! permissions like the root key beside them: SigV4 needs the secret itself to check a
//! signature, so a hash would not do.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sealstore_meta::{Durability, Engine, Location, Namespace, Table, ALL};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// File holding the first admin key pair, for scripts.
pub(crate) const ADMIN_KEYS_FILE: &str = "s3-admin.json";
/// The user store's file in the data directory.
pub(crate) const USERS_FILE: &str = "s3-users.redb";
/// Name of the user created on first start.
pub(crate) const ADMIN_USER: &str = "admin";

/// access key id → JSON [`S3User`].
const USERS: Table = Table::str_to_bytes("s3_users");

/// The S3 users' namespace of the metadata store.
pub(crate) const NAMESPACE: Namespace = Namespace {
    name: "s3-users",
    file: USERS_FILE,
    tables: &[USERS],
    // SigV4 secrets: owner only.
    private: true,
};

/// Errors of the user store.
#[derive(Debug, Error)]
pub(crate) enum UserError {
    /// The metadata store failed, or cannot be reached now.
    #[error("S3 user store: {0}")]
    Metadata(#[from] sealstore_meta::Error),
    /// A stored user does not parse.
    #[error("S3 user store: {0}")]
    Record(#[from] serde_json::Error),
    /// Reading or writing a file failed.
    #[error("S3 user store: {0}")]
    Io(#[from] std::io::Error),
    /// A user of that name exists.
    #[error("an S3 user named '{0}' already exists")]
    NameTaken(String),
    /// No user has that name or access key.
    #[error("no S3 user has the name or access key '{0}'")]
    NotFound(String),
    /// The name breaks the rules.
    #[error("invalid S3 user name '{0}': use 1–64 letters, digits, '.', '_', '-' or '@'")]
    InvalidName(String),
    /// Removing the last user would lock every client out.
    #[error("'{0}' is the last S3 user; removing it would lock every client out (use --force to do it anyway)")]
    LastUser(String),
}

/// A user and its access key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct S3User {
    /// Name (unique).
    pub name: String,
    /// Access key id (public).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// When the user was created.
    pub created: DateTime<Utc>,
}

impl std::fmt::Debug for S3User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3User")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3User {
    /// The user's canonical id, as S3 names owners: 64 hex digits, derived from the name (so
    /// it is stable, and says nothing of the keys).
    pub(crate) fn canonical_id(&self) -> String {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("sealstore S3 user\0{}", self.name).as_bytes(),
        );
        data_encoding::HEXLOWER.encode(digest.as_ref())
    }

    /// The user without its secret, for listings.
    pub(crate) fn public_view(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "accessKeyId": self.access_key_id,
            "created": self.created,
        })
    }
}

fn random_text(alphabet: &[u8], len: usize) -> String {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).expect("system random source failed");
    // 256 is a multiple of neither alphabet; the bias of `% len` is below 1/256 per character
    // and irrelevant for 160+ bits of secret.
    bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

fn check_name(name: &str) -> Result<(), UserError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(UserError::InvalidName(name.to_owned()))
    }
}

/// The S3 users of a data directory.
#[derive(Debug)]
pub(crate) struct UserStore {
    engine: Arc<dyn Engine>,
}

/// Every user of a transaction's view.
fn all_users(txn: &dyn sealstore_meta::ReadTxn) -> Result<Vec<S3User>, UserError> {
    sealstore_meta::collect(txn, USERS, ALL)?
        .iter()
        .map(|(_, v)| Ok(serde_json::from_slice::<S3User>(v)?))
        .collect()
}

impl UserStore {
    /// Opens (creating) the store at `location`.
    pub(crate) fn open_at(location: &Location) -> Result<Self, UserError> {
        Ok(UserStore {
            engine: location.open(&NAMESPACE)?,
        })
    }

    /// Users, by name.
    pub(crate) fn list(&self) -> Result<Vec<S3User>, UserError> {
        let mut users = all_users(&*self.engine.read()?)?;
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    /// The user owning `access_key_id`.
    pub(crate) fn by_access_key(&self, access_key_id: &str) -> Result<Option<S3User>, UserError> {
        let v = self.engine.get_one(USERS, access_key_id.as_bytes())?;
        Ok(v.map(|v| serde_json::from_slice(&v)).transpose()?)
    }

    /// Creates a user with a fresh key pair.
    pub(crate) fn add(&self, name: &str) -> Result<S3User, UserError> {
        check_name(name)?;
        let user = S3User {
            name: name.to_owned(),
            access_key_id: format!("SS{}", random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 18)),
            secret_access_key: random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40),
            created: Utc::now(),
        };
        self.insert(&user)?;
        Ok(user)
    }

    fn insert(&self, user: &S3User) -> Result<(), UserError> {
        let txn = self.engine.write(Durability::Immediate)?;
        if all_users(&*txn)?.iter().any(|existing| existing.name == user.name) {
            return Err(UserError::NameTaken(user.name.clone()));
        }
        txn.insert(USERS, user.access_key_id.as_bytes(), &serde_json::to_vec(user)?)?;
        txn.commit()?;
        Ok(())
    }

    /// Removes the user with this name or access key; refuses to remove the last user
    /// unless `force`.
    pub(crate) fn remove(&self, name_or_key: &str, force: bool) -> Result<S3User, UserError> {
        let txn = self.engine.write(Durability::Immediate)?;
        let users = all_users(&*txn)?;
        let user = users
            .iter()
            .find(|u| u.name == name_or_key || u.access_key_id == name_or_key)
            .cloned()
            .ok_or_else(|| UserError::NotFound(name_or_key.to_owned()))?;
        if users.len() == 1 && !force {
            return Err(UserError::LastUser(user.name));
        }
        txn.remove(USERS, user.access_key_id.as_bytes())?;
        txn.commit()?;
        Ok(user)
    }

    /// On a data directory's first start, creates the `admin` user and writes its keys to
    /// `s3-admin.json` (0600); a directory from before the user store gets the user of its
    /// `s3-admin.json` instead. Returns the admin user when one was created or imported now.
    pub(crate) fn ensure_admin(&self, data_dir: &Path) -> Result<Option<S3User>, UserError> {
        if !self.list()?.is_empty() {
            return Ok(None);
        }
        let path = data_dir.join(ADMIN_KEYS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Legacy {
                    access_key_id: String,
                    secret_access_key: String,
                }
                let legacy: Legacy = serde_json::from_slice(&bytes)?;
                let user = S3User {
                    name: ADMIN_USER.into(),
                    access_key_id: legacy.access_key_id,
                    secret_access_key: legacy.secret_access_key,
                    created: Utc::now(),
                };
                self.insert(&user)?;
                Ok(Some(user))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let user = match self.add(ADMIN_USER) {
                    Ok(user) => user,
                    // Another server of the fleet made it meanwhile (its keys are in its
                    // data directory's s3-admin.json).
                    Err(UserError::NameTaken(_)) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?;
                let keys = serde_json::json!({
                    "accessKeyId": user.access_key_id,
                    "secretAccessKey": user.secret_access_key,
                });
                f.write_all(&serde_json::to_vec_pretty(&keys)?)?;
                f.sync_all()?;
                Ok(Some(user))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// SigV4 authentication against the user store: an unknown access key is
/// `InvalidAccessKeyId`, a wrong secret `SignatureDoesNotMatch` (s3s checks the signature).
/// Users added or removed while the server runs take effect at once.
#[derive(Debug)]
pub(crate) struct StoreAuth {
    users: Arc<UserStore>,
}

impl StoreAuth {
    /// Authenticates requests against `users`.
    pub(crate) fn new(users: Arc<UserStore>) -> Self {
        StoreAuth { users }
    }
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for StoreAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        match self.users.by_access_key(access_key) {
            Ok(Some(user)) => Ok(s3s::auth::SecretKey::from(user.secret_access_key.as_str())),
            Ok(None) => Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "the access key id does not exist in our records"
            )),
            Err(UserError::Metadata(e)) if e.is_unavailable() => {
                tracing::warn!(error = %e, "S3 user lookup: metadata store unavailable");
                Err(s3s::s3_error!(
                    ServiceUnavailable,
                    "the user store cannot be reached; retry later"
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "S3 user lookup failed");
                Err(s3s::s3_error!(
                    InternalError,
                    "the user store failed; see the server log"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_and_the_last_user_guard() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open_at(&Location::Dir(dir.path().to_owned())).unwrap();
        let admin = store.ensure_admin(dir.path()).unwrap().expect("created on first start");
        assert!(store.ensure_admin(dir.path()).unwrap().is_none());
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(ADMIN_KEYS_FILE)).unwrap()).unwrap();
        assert_eq!(written["accessKeyId"], admin.access_key_id.as_str());

        let alice = store.add("alice").unwrap();
        assert!(matches!(store.add("alice"), Err(UserError::NameTaken(_))));
        assert!(matches!(store.add("no spaces"), Err(UserError::InvalidName(_))));
        let names: Vec<_> = store.list().unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["admin", "alice"]);
        assert_eq!(
            store
                .by_access_key(&alice.access_key_id)
                .unwrap()
                .unwrap()
                .secret_access_key,
            alice.secret_access_key
        );
        store.remove(&alice.access_key_id, false).unwrap();
        assert!(store.by_access_key(&alice.access_key_id).unwrap().is_none());
        assert!(matches!(store.remove("admin", false), Err(UserError::LastUser(_))));
        store.remove("admin", true).unwrap();
        assert!(matches!(store.remove("admin", true), Err(UserError::NotFound(_))));
    }

    #[test]
    fn imports_the_keys_of_an_older_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(ADMIN_KEYS_FILE),
            r#"{"accessKeyId":"SSOLDKEY","secretAccessKey":"old-secret"}"#,
        )
        .unwrap();
        let store = UserStore::open_at(&Location::Dir(dir.path().to_owned())).unwrap();
        let user = store.ensure_admin(dir.path()).unwrap().unwrap();
        assert_eq!((user.name.as_str(), user.access_key_id.as_str()), ("admin", "SSOLDKEY"));
        assert_eq!(
            store.by_access_key("SSOLDKEY").unwrap().unwrap().secret_access_key,
            "old-secret"
        );
    }
}
