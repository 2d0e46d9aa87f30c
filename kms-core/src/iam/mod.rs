//! Identity and access: users with API signing keys, groups, compartments and policies, and
//! the decision "may this user do that here" ([`IamView::allows`]).
//!
//! Records live in the KMS store and every change is one audited transaction, like every
//! other management change. Requests are checked against an in-memory [`IamView`] built from
//! the store and rebuilt after each IAM change, so authorizing a crypto call costs no
//! database read.

pub mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditSubject, Principal};
use crate::error::{KmsError, Result};
use crate::ids::{Ocid, ResourceType};
use crate::model::{Compartment, CompartmentState};
use crate::service::Kms;
use crate::store::schema::{IAM_GROUPS, IAM_POLICIES, IAM_USERS};
use crate::store::WriteTxn;
use crate::time::Timestamp;

pub use policy::{ResourceKind, Statement, Target, Verb};

/// The group created with every tenancy, granted everything (as OCI's own).
pub const ADMINISTRATORS_GROUP: &str = "Administrators";
/// The policy that grants [`ADMINISTRATORS_GROUP`] everything.
pub const ADMIN_POLICY: &str = "Tenant Admin Policy";

/// An API user: someone who signs requests to the KMS API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// `ocid1.user.…` (the middle part of a request's `keyId`).
    pub id: Ocid,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Public keys the user signs with.
    pub api_keys: Vec<ApiKey>,
    /// When it was created.
    pub time_created: Timestamp,
}

/// An RSA public key a user signs requests with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// MD5 of the DER SubjectPublicKeyInfo, colon-separated lower-case hex (OCI's form; the
    /// last part of a request's `keyId`).
    pub fingerprint: String,
    /// The key as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub key_value: String,
    /// When it was added.
    pub time_created: Timestamp,
}

/// A named set of users that policies grant to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// `ocid1.group.…`
    pub id: Ocid,
    /// Unique name, as policies spell it.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Member user ids.
    pub members: Vec<Ocid>,
    /// When it was created.
    pub time_created: Timestamp,
}

/// Named policy statements (all attached to the tenancy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// `ocid1.policy.…`
    pub id: Ocid,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Statements, as written (each parses with [`Statement::parse`]).
    pub statements: Vec<String>,
    /// When it was created.
    pub time_created: Timestamp,
}

/// A public key in PEM form, checked to be an RSA key usable for request signatures.
#[derive(Debug, Clone)]
pub struct PublicKeyPem {
    pem: String,
    der: Vec<u8>,
}

impl PublicKeyPem {
    /// Parses `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo, RSA 2048–8192 bits).
    pub fn parse(pem: &str) -> Result<PublicKeyPem> {
        let bad = |why: &str| KmsError::InvalidParameter(format!("API public key: {why}"));
        let body = pem
            .trim()
            .strip_prefix("-----BEGIN PUBLIC KEY-----")
            .and_then(|rest| rest.split("-----END PUBLIC KEY-----").next())
            .ok_or_else(|| bad("expected PEM text starting with -----BEGIN PUBLIC KEY----- (openssl rsa -pubout)"))?;
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(&format!("the PEM body is not base64: {e}")))?;
        ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &der)
            .map_err(|e| bad(&format!("not an RSA public key of 2048–8192 bits ({e})")))?;
        Ok(PublicKeyPem {
            pem: pem.trim().to_owned() + "\n",
            der,
        })
    }

    /// OCI's fingerprint: MD5 of the DER SubjectPublicKeyInfo as `aa:bb:…`.
    pub fn fingerprint(&self) -> String {
        Md5::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// What to create with [`Kms::create_user`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateUser {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// An API public key (PEM) to register right away.
    pub public_key_pem: Option<String>,
    /// Groups (by name) to put the user in.
    #[serde(default)]
    pub groups: Vec<String>,
}

fn check_iam_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(KmsError::InvalidParameter(format!(
            "{kind} name '{name}' must be 1–100 characters of letters, digits, '-', '_', '.', '@'"
        )))
    }
}

fn find_by_name<'a, T>(items: &'a [T], name: &str, name_of: impl Fn(&T) -> &str) -> Option<&'a T> {
    items.iter().find(|i| name_of(i) == name)
}

impl Kms {
    fn iam_change<T>(
        &self,
        principal: &Principal,
        operation: &str,
        change: impl FnOnce(&WriteTxn, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let out = self.mutate(principal, operation, AuditSubject::default(), |txn, now, _| {
            change(txn, now)
        });
        // Rebuilt on next use, from the committed state.
        self.invalidate_iam_view();
        out
    }

    /// Creates the Administrators group and its tenancy-wide policy if they are missing.
    pub fn ensure_iam_defaults(&self, principal: &Principal) -> Result<()> {
        let txn = self.read()?;
        let have_group = txn.groups()?.iter().any(|g| g.name == ADMINISTRATORS_GROUP);
        let have_policy = txn.policies()?.iter().any(|p| p.name == ADMIN_POLICY);
        drop(txn);
        if have_group && have_policy {
            return Ok(());
        }
        self.iam_change(principal, "CreateIamDefaults", |txn, now| {
            if !txn.groups()?.iter().any(|g| g.name == ADMINISTRATORS_GROUP) {
                txn.put_group(&Group {
                    id: Ocid::generate(ResourceType::Group, self.region()),
                    name: ADMINISTRATORS_GROUP.into(),
                    description: "Manages everything in the tenancy".into(),
                    members: Vec::new(),
                    time_created: now,
                })?;
            }
            if !txn.policies()?.iter().any(|p| p.name == ADMIN_POLICY) {
                txn.put_policy(&Policy {
                    id: Ocid::generate(ResourceType::Policy, self.region()),
                    name: ADMIN_POLICY.into(),
                    description: "Administrators manage all resources".into(),
                    statements: vec![format!(
                        "Allow group {ADMINISTRATORS_GROUP} to manage all-resources in tenancy"
                    )],
                    time_created: now,
                })?;
            }
            Ok(())
        })
    }

    /// Creates an API user, optionally with a first public key and group memberships.
    pub fn create_user(&self, principal: &Principal, req: CreateUser) -> Result<User> {
        check_iam_name("user", &req.name)?;
        let key = req.public_key_pem.as_deref().map(PublicKeyPem::parse).transpose()?;
        self.iam_change(principal, "CreateUser", |txn, now| {
            if find_by_name(&txn.users()?, &req.name, |u| &u.name).is_some() {
                return Err(KmsError::IncorrectState(format!(
                    "a user named '{}' exists already",
                    req.name
                )));
            }
            let user = User {
                id: Ocid::generate(ResourceType::User, self.region()),
                name: req.name.clone(),
                description: req.description.clone(),
                api_keys: key
                    .iter()
                    .map(|k| ApiKey {
                        fingerprint: k.fingerprint(),
                        key_value: k.pem.clone(),
                        time_created: now,
                    })
                    .collect(),
                time_created: now,
            };
            let groups = txn.groups()?;
            for name in &req.groups {
                let mut group = find_by_name(&groups, name, |g| &g.name)
                    .cloned()
                    .ok_or_else(|| KmsError::not_found("group", name.as_str()))?;
                group.members.push(user.id.clone());
                txn.put_group(&group)?;
            }
            txn.put_user(&user)?;
            Ok(user)
        })
    }

    /// Adds an API public key to a user (up to three, as OCI).
    pub fn add_api_key(&self, principal: &Principal, user_name: &str, pem: &str) -> Result<ApiKey> {
        let key = PublicKeyPem::parse(pem)?;
        self.iam_change(principal, "UploadApiKey", |txn, now| {
            let mut user = find_by_name(&txn.users()?, user_name, |u| &u.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("user", user_name))?;
            let fingerprint = key.fingerprint();
            if user.api_keys.iter().any(|k| k.fingerprint == fingerprint) {
                return Err(KmsError::IncorrectState(format!(
                    "user '{user_name}' has key {fingerprint} already"
                )));
            }
            if user.api_keys.len() >= 3 {
                return Err(KmsError::IncorrectState(format!(
                    "user '{user_name}' has three API keys already; remove one first"
                )));
            }
            let api_key = ApiKey {
                fingerprint,
                key_value: key.pem.clone(),
                time_created: now,
            };
            user.api_keys.push(api_key.clone());
            txn.put_user(&user)?;
            Ok(api_key)
        })
    }

    /// Deletes a user (and its group memberships); its signatures stop working at once.
    pub fn delete_user(&self, principal: &Principal, user_name: &str) -> Result<User> {
        self.iam_change(principal, "DeleteUser", |txn, _| {
            let user = find_by_name(&txn.users()?, user_name, |u| &u.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("user", user_name))?;
            for mut group in txn.groups()? {
                if group.members.contains(&user.id) {
                    group.members.retain(|m| m != &user.id);
                    txn.put_group(&group)?;
                }
            }
            txn.delete_iam_record(IAM_USERS, &user.id)?;
            txn.set_console_password(&user.id, None)?;
            Ok(user)
        })
    }

    /// Sets the console password of a user, as an Argon2id PHC hash made by the caller (the
    /// password itself never reaches the KMS), or removes it (`None`): the user can then no
    /// longer sign in to the console.
    pub fn set_console_password(&self, principal: &Principal, user_name: &str, phc: Option<&str>) -> Result<User> {
        if phc.is_some_and(|p| !p.starts_with("$argon2id$")) {
            return Err(KmsError::InvalidParameter(
                "a console password is stored as an Argon2id hash".into(),
            ));
        }
        self.iam_change(principal, "SetConsolePassword", |txn, _| {
            let user = find_by_name(&txn.users()?, user_name, |u| &u.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("user", user_name))?;
            txn.set_console_password(&user.id, phc)?;
            Ok(user)
        })
    }

    /// A user's console password hash, if set.
    pub fn console_password(&self, user: &Ocid) -> Result<Option<String>> {
        self.read()?.console_password(user)
    }

    /// Every user, oldest first.
    pub fn list_users(&self) -> Result<Vec<User>> {
        self.read()?.users()
    }

    /// Creates a group.
    pub fn create_group(&self, principal: &Principal, name: &str, description: &str) -> Result<Group> {
        check_iam_name("group", name)?;
        self.iam_change(principal, "CreateGroup", |txn, now| {
            if find_by_name(&txn.groups()?, name, |g| &g.name).is_some() {
                return Err(KmsError::IncorrectState(format!(
                    "a group named '{name}' exists already"
                )));
            }
            let group = Group {
                id: Ocid::generate(ResourceType::Group, self.region()),
                name: name.into(),
                description: description.into(),
                members: Vec::new(),
                time_created: now,
            };
            txn.put_group(&group)?;
            Ok(group)
        })
    }

    /// Adds a user to a group (by names).
    pub fn add_user_to_group(&self, principal: &Principal, group_name: &str, user_name: &str) -> Result<Group> {
        self.iam_change(principal, "AddUserToGroup", |txn, _| {
            let user = find_by_name(&txn.users()?, user_name, |u| &u.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("user", user_name))?;
            let mut group = find_by_name(&txn.groups()?, group_name, |g| &g.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("group", group_name))?;
            if !group.members.contains(&user.id) {
                group.members.push(user.id);
                txn.put_group(&group)?;
            }
            Ok(group)
        })
    }

    /// Deletes a group (its policies' statements then match nobody).
    pub fn delete_group(&self, principal: &Principal, name: &str) -> Result<Group> {
        self.iam_change(principal, "DeleteGroup", |txn, _| {
            let group = find_by_name(&txn.groups()?, name, |g| &g.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("group", name))?;
            txn.delete_iam_record(IAM_GROUPS, &group.id)?;
            Ok(group)
        })
    }

    /// Every group, oldest first.
    pub fn list_groups(&self) -> Result<Vec<Group>> {
        self.read()?.groups()
    }

    /// Creates a policy; every statement must parse and name existing compartments.
    pub fn create_policy(
        &self,
        principal: &Principal,
        name: &str,
        description: &str,
        statements: Vec<String>,
    ) -> Result<Policy> {
        check_iam_name("policy", name)?;
        if statements.is_empty() {
            return Err(KmsError::InvalidParameter(
                "a policy needs at least one statement".into(),
            ));
        }
        let parsed = statements
            .iter()
            .map(|s| Statement::parse(s))
            .collect::<Result<Vec<_>>>()?;
        self.iam_change(principal, "CreatePolicy", |txn, now| {
            if find_by_name(&txn.policies()?, name, |p| &p.name).is_some() {
                return Err(KmsError::IncorrectState(format!(
                    "a policy named '{name}' exists already"
                )));
            }
            let compartments = txn.compartments()?;
            for statement in &parsed {
                if let policy::Scope::Compartment(c) = &statement.scope {
                    if resolve_compartment(&compartments, c).is_none() {
                        return Err(KmsError::not_found("compartment", c.as_str()));
                    }
                }
            }
            let policy = Policy {
                id: Ocid::generate(ResourceType::Policy, self.region()),
                name: name.into(),
                description: description.into(),
                statements,
                time_created: now,
            };
            txn.put_policy(&policy)?;
            Ok(policy)
        })
    }

    /// Deletes a policy.
    pub fn delete_policy(&self, principal: &Principal, name: &str) -> Result<Policy> {
        self.iam_change(principal, "DeletePolicy", |txn, _| {
            let policy = find_by_name(&txn.policies()?, name, |p| &p.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("policy", name))?;
            txn.delete_iam_record(IAM_POLICIES, &policy.id)?;
            Ok(policy)
        })
    }

    /// Every policy, oldest first.
    pub fn list_policies(&self) -> Result<Vec<Policy>> {
        self.read()?.policies()
    }

    /// Creates a compartment below `parent` (a name or id; the tenancy when absent). Names
    /// are unique among siblings.
    pub fn create_compartment(
        &self,
        principal: &Principal,
        name: &str,
        description: &str,
        parent: Option<&str>,
    ) -> Result<Compartment> {
        check_iam_name("compartment", name)?;
        self.iam_change(principal, "CreateCompartment", |txn, now| {
            let compartments = txn.compartments()?;
            let parent = match parent {
                None => self.tenancy_id().clone(),
                Some(p) => resolve_compartment(&compartments, p)
                    .ok_or_else(|| KmsError::not_found("compartment", p))?
                    .id
                    .clone(),
            };
            if compartments
                .iter()
                .any(|c| c.compartment_id == parent && c.name == name && c.id != *self.tenancy_id())
            {
                return Err(KmsError::IncorrectState(format!(
                    "compartment '{name}' exists already under {parent}"
                )));
            }
            let compartment = Compartment {
                id: Ocid::generate(ResourceType::Compartment, self.region()),
                compartment_id: parent,
                name: name.into(),
                description: description.into(),
                lifecycle_state: CompartmentState::Active,
                time_created: now,
            };
            txn.put_compartment(&compartment)?;
            Ok(compartment)
        })
    }

    /// Builds the current [`IamView`] from the store.
    pub(crate) fn build_iam_view(&self) -> Result<IamView> {
        let txn = self.read()?;
        let compartments = txn.compartments()?;
        let groups = txn.groups()?;
        let mut users = HashMap::new();
        for user in txn.users()? {
            let mut keys = HashMap::new();
            for k in &user.api_keys {
                // Stored keys were validated when added; one that no longer parses is skipped.
                if let Ok(pem) = PublicKeyPem::parse(&k.key_value) {
                    if let Ok(parsed) = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &pem.der) {
                        keys.insert(k.fingerprint.clone(), Arc::new(parsed));
                    }
                }
            }
            let member_of = groups
                .iter()
                .filter(|g| g.members.contains(&user.id))
                .map(|g| g.name.clone())
                .collect();
            users.insert(
                user.id.clone(),
                ViewUser {
                    name: user.name.clone(),
                    keys,
                    groups: member_of,
                },
            );
        }
        let mut statements = Vec::new();
        for policy in txn.policies()? {
            for text in &policy.statements {
                let Ok(statement) = Statement::parse(text) else {
                    tracing::warn!(policy = %policy.name, statement = %text, "skipping a policy statement that no longer parses");
                    continue;
                };
                let scope = match &statement.scope {
                    policy::Scope::Tenancy => None,
                    policy::Scope::Compartment(c) => match resolve_compartment(&compartments, c) {
                        Some(found) => Some(found.id.clone()),
                        // A compartment that is gone grants nothing.
                        None => continue,
                    },
                };
                statements.push((statement, scope));
            }
        }
        Ok(IamView {
            tenancy: self.tenancy_id().clone(),
            parents: compartments
                .iter()
                .map(|c| (c.id.clone(), c.compartment_id.clone()))
                .collect(),
            users,
            statements,
        })
    }
}

/// Finds a compartment by id or by name (the first with that name).
fn resolve_compartment<'a>(compartments: &'a [Compartment], name_or_id: &str) -> Option<&'a Compartment> {
    compartments
        .iter()
        .filter(|c| c.lifecycle_state == CompartmentState::Active)
        .find(|c| c.id.as_str() == name_or_id || c.name == name_or_id)
}

#[derive(Debug)]
struct ViewUser {
    name: String,
    keys: HashMap<String, Arc<ParsedPublicKey>>,
    groups: HashSet<String>,
}

/// A snapshot of users, keys, groups, policies and the compartment tree, for checking
/// requests without touching the store.
#[derive(Debug)]
pub struct IamView {
    tenancy: Ocid,
    /// Compartment → parent (the tenancy is its own parent).
    parents: HashMap<Ocid, Ocid>,
    users: HashMap<Ocid, ViewUser>,
    /// Statements with their scope resolved to a compartment id (`None` = tenancy).
    statements: Vec<(Statement, Option<Ocid>)>,
}

/// A user whose request signature key is known.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// The user's name.
    pub user_name: String,
    /// The public key to verify the signature with.
    pub public_key: Arc<ParsedPublicKey>,
}

impl IamView {
    /// The public key registered as `fingerprint` for `user`, if both exist.
    pub fn signing_key(&self, user: &Ocid, fingerprint: &str) -> Option<SigningKey> {
        let u = self.users.get(user)?;
        Some(SigningKey {
            user_name: u.name.clone(),
            public_key: u.keys.get(fingerprint)?.clone(),
        })
    }

    /// Whether `compartment` is `ancestor` or lies below it.
    pub fn is_within(&self, compartment: &Ocid, ancestor: &Ocid) -> bool {
        let mut current = compartment;
        // Bounded: a cycle in a corrupted tree must not hang a request.
        for _ in 0..64 {
            if current == ancestor {
                return true;
            }
            match self.parents.get(current) {
                Some(parent) if parent != current => current = parent,
                _ => return false,
            }
        }
        false
    }

    /// Whether `user` may `verb` a resource of `kind` in `compartment` (with `target` for
    /// `where` clauses).
    pub fn allows(&self, user: &Ocid, verb: Verb, kind: ResourceKind, compartment: &Ocid, target: Target<'_>) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        self.statements.iter().any(|(statement, scope)| {
            let subject_matches = match &statement.subject {
                policy::Subject::AnyUser => true,
                policy::Subject::Groups(groups) => groups.iter().any(|g| u.groups.contains(g)),
            };
            let in_scope = match scope {
                None => self.is_within(compartment, &self.tenancy),
                Some(c) => self.is_within(compartment, c),
            };
            subject_matches && in_scope && statement.grants(verb, kind, target)
        })
    }
}
