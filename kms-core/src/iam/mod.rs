//! Identity and access: users with API signing keys, groups, compartments and policies, and
//! the decision "may this user do that here" ([`IamView::allows`]).
//!
//! Records live in the KMS store and every change is one audited transaction, like every
//! other management change. Requests are checked against an in-memory [`IamView`] built from
//! the store and rebuilt after each IAM change, so authorizing a crypto call costs no
//! database read.

pub(crate) mod policy;
mod public_key;
pub(crate) mod view;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{KmsError, Result};
use crate::ids::{Ocid, ResourceType};
use crate::model::audit::{AuditSubject, Principal};
use crate::model::{Compartment, CompartmentState};
use crate::replication::iam_outbox;
use crate::store::schema::{IAM_GROUPS, IAM_POLICIES, IAM_USERS};
use crate::store::WriteTxn;
use crate::time::Timestamp;
use view::resolve_compartment;

pub(crate) use crate::model::iam::{ApiKey, Group, Policy, User};
pub use policy::{ResourceKind, Statement, Target, Verb};
pub(crate) use public_key::PublicKeyPem;
pub use view::{IamView, SigningKey};

/// The group created with every tenancy, granted everything (as OCI's own).
pub(crate) const ADMINISTRATORS_GROUP: &str = "Administrators";
/// The policy that grants [`ADMINISTRATORS_GROUP`] everything.
pub(crate) const ADMIN_POLICY: &str = "Tenant Admin Policy";

/// What to create with [`Kms::create_user`](crate::Kms::create_user).
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

/// IAM changes over a [`Context`]: each one audited transaction, then a fresh [`IamView`].
pub(crate) struct Iam<'a> {
    ctx: &'a Context,
}

impl<'a> Iam<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Iam { ctx }
    }

    fn iam_change<T>(
        &self,
        principal: &Principal,
        operation: &str,
        resource: String,
        change: impl FnOnce(&WriteTxn, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let subject = AuditSubject {
            resource: Some(resource),
            ..Default::default()
        };
        // IAM is changed in the tenancy's home region only; there, the change is queued for
        // every member region in its own transaction.
        let mut queued = false;
        let out = self.ctx.mutate(principal, operation, subject, |txn, now, _| {
            iam_outbox::refuse_if_member(txn, self.ctx.region())?;
            let value = change(txn, now)?;
            queued = iam_outbox::queue(txn, now)?;
            Ok(value)
        });
        // Rebuilt on next use, from the committed state.
        self.ctx.invalidate_iam_view();
        if queued && out.is_ok() {
            self.ctx.replication_signal().notify();
        }
        out
    }

    /// Creates the Administrators group and its tenancy-wide policy if they are missing. A
    /// member region has the home region's (replicated), and makes none.
    pub(crate) fn ensure_iam_defaults(&self, principal: &Principal) -> Result<()> {
        let txn = self.ctx.read()?;
        if txn.tenancy_home()?.is_some() {
            return Ok(());
        }
        let have_group = txn.groups()?.iter().any(|g| g.name == ADMINISTRATORS_GROUP);
        let have_policy = txn.policies()?.iter().any(|p| p.name == ADMIN_POLICY);
        drop(txn);
        if have_group && have_policy {
            return Ok(());
        }
        self.iam_change(
            principal,
            "CreateIamDefaults",
            format!("group {ADMINISTRATORS_GROUP}"),
            |txn, now| {
                if !txn.groups()?.iter().any(|g| g.name == ADMINISTRATORS_GROUP) {
                    txn.put_group(&Group {
                        id: Ocid::generate(ResourceType::Group, self.ctx.region()),
                        name: ADMINISTRATORS_GROUP.into(),
                        description: "Manages everything in the tenancy".into(),
                        members: Vec::new(),
                        time_created: now,
                    })?;
                }
                if !txn.policies()?.iter().any(|p| p.name == ADMIN_POLICY) {
                    txn.put_policy(&Policy {
                        id: Ocid::generate(ResourceType::Policy, self.ctx.region()),
                        name: ADMIN_POLICY.into(),
                        description: "Administrators manage all resources".into(),
                        statements: vec![format!(
                            "Allow group {ADMINISTRATORS_GROUP} to manage all-resources in tenancy"
                        )],
                        time_created: now,
                    })?;
                }
                Ok(())
            },
        )
    }

    /// Creates an API user, optionally with a first public key and group memberships.
    pub(crate) fn create_user(&self, principal: &Principal, req: CreateUser) -> Result<User> {
        check_iam_name("user", &req.name)?;
        let key = req.public_key_pem.as_deref().map(PublicKeyPem::parse).transpose()?;
        self.iam_change(principal, "CreateUser", format!("user {}", req.name), |txn, now| {
            if find_by_name(&txn.users()?, &req.name, |u| &u.name).is_some() {
                return Err(KmsError::IncorrectState(format!(
                    "a user named '{}' exists already",
                    req.name
                )));
            }
            let user = User {
                id: Ocid::generate(ResourceType::User, self.ctx.region()),
                name: req.name.clone(),
                description: req.description.clone(),
                api_keys: key
                    .iter()
                    .map(|k| ApiKey {
                        fingerprint: k.fingerprint(),
                        key_value: k.pem().to_owned(),
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
    pub(crate) fn add_api_key(&self, principal: &Principal, user_name: &str, pem: &str) -> Result<ApiKey> {
        let key = PublicKeyPem::parse(pem)?;
        self.iam_change(principal, "UploadApiKey", format!("user {user_name}"), |txn, now| {
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
                key_value: key.pem().to_owned(),
                time_created: now,
            };
            user.api_keys.push(api_key.clone());
            txn.put_user(&user)?;
            Ok(api_key)
        })
    }

    /// Deletes a user (and its group memberships); its signatures stop working at once.
    pub(crate) fn delete_user(&self, principal: &Principal, user_name: &str) -> Result<User> {
        self.iam_change(principal, "DeleteUser", format!("user {user_name}"), |txn, _| {
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
    pub(crate) fn set_console_password(
        &self,
        principal: &Principal,
        user_name: &str,
        phc: Option<&str>,
    ) -> Result<User> {
        if phc.is_some_and(|p| !p.starts_with("$argon2id$")) {
            return Err(KmsError::InvalidParameter(
                "a console password is stored as an Argon2id hash".into(),
            ));
        }
        self.iam_change(
            principal,
            "SetConsolePassword",
            format!("user {user_name}"),
            |txn, _| {
                let user = find_by_name(&txn.users()?, user_name, |u| &u.name)
                    .cloned()
                    .ok_or_else(|| KmsError::not_found("user", user_name))?;
                txn.set_console_password(&user.id, phc)?;
                Ok(user)
            },
        )
    }

    /// A user's console password hash, if set.
    pub(crate) fn console_password(&self, user: &Ocid) -> Result<Option<String>> {
        self.ctx.read()?.console_password(user)
    }

    /// Every user, oldest first.
    pub(crate) fn list_users(&self) -> Result<Vec<User>> {
        self.ctx.read()?.users()
    }

    /// Creates a group.
    pub(crate) fn create_group(&self, principal: &Principal, name: &str, description: &str) -> Result<Group> {
        check_iam_name("group", name)?;
        self.iam_change(principal, "CreateGroup", format!("group {name}"), |txn, now| {
            if find_by_name(&txn.groups()?, name, |g| &g.name).is_some() {
                return Err(KmsError::IncorrectState(format!(
                    "a group named '{name}' exists already"
                )));
            }
            let group = Group {
                id: Ocid::generate(ResourceType::Group, self.ctx.region()),
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
    pub(crate) fn add_user_to_group(&self, principal: &Principal, group_name: &str, user_name: &str) -> Result<Group> {
        self.iam_change(
            principal,
            "AddUserToGroup",
            format!("group {group_name}, user {user_name}"),
            |txn, _| {
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
            },
        )
    }

    /// Deletes a group (its policies' statements then match nobody).
    pub(crate) fn delete_group(&self, principal: &Principal, name: &str) -> Result<Group> {
        self.iam_change(principal, "DeleteGroup", format!("group {name}"), |txn, _| {
            let group = find_by_name(&txn.groups()?, name, |g| &g.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("group", name))?;
            txn.delete_iam_record(IAM_GROUPS, &group.id)?;
            Ok(group)
        })
    }

    /// Every group, oldest first.
    pub(crate) fn list_groups(&self) -> Result<Vec<Group>> {
        self.ctx.read()?.groups()
    }

    /// Creates a policy; every statement must parse and name existing compartments.
    pub(crate) fn create_policy(
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
        self.iam_change(principal, "CreatePolicy", format!("policy {name}"), |txn, now| {
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
                id: Ocid::generate(ResourceType::Policy, self.ctx.region()),
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
    pub(crate) fn delete_policy(&self, principal: &Principal, name: &str) -> Result<Policy> {
        self.iam_change(principal, "DeletePolicy", format!("policy {name}"), |txn, _| {
            let policy = find_by_name(&txn.policies()?, name, |p| &p.name)
                .cloned()
                .ok_or_else(|| KmsError::not_found("policy", name))?;
            txn.delete_iam_record(IAM_POLICIES, &policy.id)?;
            Ok(policy)
        })
    }

    /// Every policy, oldest first.
    pub(crate) fn list_policies(&self) -> Result<Vec<Policy>> {
        self.ctx.read()?.policies()
    }

    /// Creates a compartment below `parent` (a name or id; the tenancy when absent). Names
    /// are unique among siblings.
    pub(crate) fn create_compartment(
        &self,
        principal: &Principal,
        name: &str,
        description: &str,
        parent: Option<&str>,
    ) -> Result<Compartment> {
        check_iam_name("compartment", name)?;
        self.iam_change(
            principal,
            "CreateCompartment",
            format!("compartment {name}"),
            |txn, now| {
                let compartments = txn.compartments()?;
                let tenancy = self.ctx.tenancy_id();
                let parent = match parent {
                    None => tenancy.clone(),
                    Some(p) => resolve_compartment(&compartments, p)
                        .ok_or_else(|| KmsError::not_found("compartment", p))?
                        .id
                        .clone(),
                };
                if compartments
                    .iter()
                    .any(|c| c.compartment_id == parent && c.name == name && c.id != tenancy)
                {
                    return Err(KmsError::IncorrectState(format!(
                        "compartment '{name}' exists already under {parent}"
                    )));
                }
                let compartment = Compartment {
                    id: Ocid::generate(ResourceType::Compartment, self.ctx.region()),
                    compartment_id: parent,
                    name: name.into(),
                    description: description.into(),
                    lifecycle_state: CompartmentState::Active,
                    time_created: now,
                };
                txn.put_compartment(&compartment)?;
                Ok(compartment)
            },
        )
    }
}
