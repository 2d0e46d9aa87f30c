//! [`IamView`]: a snapshot of users, keys, groups, policies and the compartment tree, built
//! from the store, that decides "may this user do that here" without touching the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

use super::policy::{self, ResourceKind, Statement, Target, Verb};
use super::public_key::PublicKeyPem;
use crate::error::Result;
use crate::ids::Ocid;
use crate::model::{Compartment, CompartmentState};
use crate::store::ReadTxn;

/// Finds a compartment by id or by name (the first with that name).
pub(crate) fn resolve_compartment<'a>(compartments: &'a [Compartment], name_or_id: &str) -> Option<&'a Compartment> {
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
    /// Builds the view from the store as `txn` sees it.
    pub(crate) fn load(txn: &ReadTxn, tenancy: &Ocid) -> Result<IamView> {
        let compartments = txn.compartments()?;
        let groups = txn.groups()?;
        let mut users = HashMap::new();
        for user in txn.users()? {
            let mut keys = HashMap::new();
            for k in &user.api_keys {
                // Stored keys were validated when added; one that no longer parses is skipped.
                if let Ok(pem) = PublicKeyPem::parse(&k.key_value) {
                    if let Ok(parsed) = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pem.der()) {
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
            tenancy: tenancy.clone(),
            parents: compartments
                .iter()
                .map(|c| (c.id.clone(), c.compartment_id.clone()))
                .collect(),
            users,
            statements,
        })
    }

    /// The public key registered as `fingerprint` for `user`, if both exist.
    pub fn signing_key(&self, user: &Ocid, fingerprint: &str) -> Option<SigningKey> {
        let u = self.users.get(user)?;
        Some(SigningKey {
            user_name: u.name.clone(),
            public_key: u.keys.get(fingerprint)?.clone(),
        })
    }

    /// The name of `user`, if it exists.
    pub fn user_name(&self, user: &Ocid) -> Option<&str> {
        self.users.get(user).map(|u| u.name.as_str())
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
