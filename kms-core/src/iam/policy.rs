//! Policy statements in the subset of OCI's policy language that key management needs:
//!
//! ```text
//! Allow group <name>[, <name>…] to <verb> <resource> in <scope> [where <condition> [and …]]
//! Allow any-user to <verb> <resource> in <scope> [where …]
//!
//! verb      inspect | read | use | manage        (each includes the ones before it)
//! resource  vaults | keys | key-family | compartments | audit-events | all-resources
//! scope     tenancy | compartment <name or id>    (a compartment includes its children)
//! condition target.key.id = '<key id>' | target.vault.id = '<vault id>'
//! ```
//!
//! Keywords are case-insensitive; group and compartment names are matched as written.
//! Statements are parsed when a policy is created, so a typo is an error then, not a silent
//! denial later.

use std::fmt;

use crate::error::{KmsError, Result};

/// What a caller wants to do, from least to most powerful; a grant of one verb includes
/// every verb before it (OCI's verb semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    /// List resources.
    Inspect,
    /// Get a resource's details.
    Read,
    /// Use a key for cryptography (encrypt, decrypt, generate data keys).
    Use,
    /// Create, change, rotate, enable/disable, schedule deletion.
    Manage,
}

impl Verb {
    fn parse(word: &str) -> Option<Verb> {
        match word.to_ascii_lowercase().as_str() {
            "inspect" => Some(Verb::Inspect),
            "read" => Some(Verb::Read),
            "use" => Some(Verb::Use),
            "manage" => Some(Verb::Manage),
            _ => None,
        }
    }
}

/// The kind of resource a call touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// Vaults.
    Vaults,
    /// Master keys and their versions.
    Keys,
    /// Compartments (listing and reading them).
    Compartments,
    /// The audit log (OCI's `audit-events`): `read` pages through it and verifies its chain.
    AuditEvents,
}

impl ResourceKind {
    /// The name policies use (`vaults`, `keys`, `compartments`, `audit-events`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Vaults => "vaults",
            ResourceKind::Keys => "keys",
            ResourceKind::Compartments => "compartments",
            ResourceKind::AuditEvents => "audit-events",
        }
    }
}

/// The resource types a statement can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResourceSet {
    Vaults,
    Keys,
    KeyFamily,
    Compartments,
    AuditEvents,
    AllResources,
}

impl ResourceSet {
    fn parse(word: &str) -> Option<ResourceSet> {
        match word.to_ascii_lowercase().as_str() {
            "vaults" => Some(ResourceSet::Vaults),
            "keys" => Some(ResourceSet::Keys),
            "key-family" => Some(ResourceSet::KeyFamily),
            "compartments" => Some(ResourceSet::Compartments),
            "audit-events" => Some(ResourceSet::AuditEvents),
            "all-resources" => Some(ResourceSet::AllResources),
            _ => None,
        }
    }

    fn covers(self, kind: ResourceKind) -> bool {
        match self {
            ResourceSet::AllResources => true,
            ResourceSet::KeyFamily => matches!(kind, ResourceKind::Vaults | ResourceKind::Keys),
            ResourceSet::Vaults => kind == ResourceKind::Vaults,
            ResourceSet::Keys => kind == ResourceKind::Keys,
            ResourceSet::Compartments => kind == ResourceKind::Compartments,
            ResourceSet::AuditEvents => kind == ResourceKind::AuditEvents,
        }
    }
}

/// Who a statement grants to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Members of any of these groups (by name).
    Groups(Vec<String>),
    /// Every authenticated user.
    AnyUser,
}

/// Where a statement applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every compartment.
    Tenancy,
    /// This compartment (a name or an id) and everything below it.
    Compartment(String),
}

/// A `where` clause term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Only this key (and its versions).
    KeyId(String),
    /// Only this vault (and the keys in it).
    VaultId(String),
}

/// One parsed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Who.
    pub subject: Subject,
    /// The most powerful verb granted.
    pub verb: Verb,
    resources: ResourceSet,
    /// Where.
    pub scope: Scope,
    /// All must hold.
    pub conditions: Vec<Condition>,
}

/// What a call is about, for matching `where` clauses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    /// The vault concerned (a vault call, or the vault of a key).
    pub vault_id: Option<&'a str>,
    /// The key concerned.
    pub key_id: Option<&'a str>,
}

impl Statement {
    /// Parses one statement.
    pub(crate) fn parse(text: &str) -> Result<Statement> {
        let bad = |why: &str| KmsError::InvalidParameter(format!("policy statement '{text}': {why}"));
        let mut words = Tokens::new(text);
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("allow")) {
            return Err(bad("must start with 'Allow'"));
        }
        let subject = match words.next() {
            Some(w) if w.eq_ignore_ascii_case("any-user") => Subject::AnyUser,
            Some(w) if w.eq_ignore_ascii_case("group") => {
                let mut groups = Vec::new();
                loop {
                    let name = words.next().ok_or_else(|| bad("a group name is missing"))?;
                    let (name, more) = match name.strip_suffix(',') {
                        Some(n) => (n, true),
                        None => (name, false),
                    };
                    if name.is_empty() {
                        return Err(bad("empty group name"));
                    }
                    groups.push(name.to_owned());
                    if !more {
                        break;
                    }
                }
                Subject::Groups(groups)
            }
            _ => return Err(bad("expected 'group <name>' or 'any-user' after 'Allow'")),
        };
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("to")) {
            return Err(bad("expected 'to' after the group"));
        }
        let verb = words
            .next()
            .and_then(Verb::parse)
            .ok_or_else(|| bad("the verb must be inspect, read, use or manage"))?;
        let resources = words.next().and_then(ResourceSet::parse).ok_or_else(|| {
            bad("the resource must be vaults, keys, key-family, compartments, audit-events or all-resources")
        })?;
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("in")) {
            return Err(bad("expected 'in tenancy' or 'in compartment <name>'"));
        }
        let scope = match words.next() {
            Some(w) if w.eq_ignore_ascii_case("tenancy") => Scope::Tenancy,
            Some(w) if w.eq_ignore_ascii_case("compartment") => Scope::Compartment(
                words
                    .next()
                    .ok_or_else(|| bad("a compartment name is missing"))?
                    .to_owned(),
            ),
            _ => return Err(bad("expected 'in tenancy' or 'in compartment <name>'")),
        };
        let mut conditions = Vec::new();
        match words.next() {
            None => {}
            Some(w) if w.eq_ignore_ascii_case("where") => loop {
                let variable = words
                    .next()
                    .ok_or_else(|| bad("a condition is missing after 'where'"))?;
                if words.next() != Some("=") {
                    return Err(bad("conditions have the form target.key.id = 'ocid…'"));
                }
                let value = words
                    .next()
                    .and_then(|v| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .ok_or_else(|| bad("the value of a condition goes in single quotes"))?
                    .to_owned();
                conditions.push(match variable.to_ascii_lowercase().as_str() {
                    "target.key.id" => Condition::KeyId(value),
                    "target.vault.id" => Condition::VaultId(value),
                    _ => return Err(bad("only target.key.id and target.vault.id conditions are supported")),
                });
                match words.next() {
                    None => break,
                    Some(w) if w.eq_ignore_ascii_case("and") => continue,
                    Some(_) => return Err(bad("conditions are joined with 'and'")),
                }
            },
            Some(_) => return Err(bad("unexpected text after the scope (a 'where' clause?)")),
        }
        Ok(Statement {
            subject,
            verb,
            resources,
            scope,
            conditions,
        })
    }

    /// Whether this statement grants `verb` on `kind` for `target` — the scope is checked by
    /// the caller, which knows the compartment tree.
    pub(crate) fn grants(&self, verb: Verb, kind: ResourceKind, target: Target<'_>) -> bool {
        self.verb >= verb
            && self.resources.covers(kind)
            && self.conditions.iter().all(|c| match c {
                Condition::KeyId(id) => target.key_id == Some(id.as_str()),
                Condition::VaultId(id) => target.vault_id == Some(id.as_str()),
            })
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Inspect => "inspect",
            Verb::Read => "read",
            Verb::Use => "use",
            Verb::Manage => "manage",
        })
    }
}

/// Splits a statement into words, keeping a single-quoted value (which may hold spaces) whole
/// and `=` as a word of its own.
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens { rest: text.trim() }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.rest = self.rest.trim_start();
        if self.rest.is_empty() {
            return None;
        }
        let end = if self.rest.starts_with('\'') {
            self.rest[1..].find('\'').map(|i| i + 2).unwrap_or(self.rest.len())
        } else if self.rest.starts_with('=') {
            1
        } else {
            self.rest
                .find(|c: char| c.is_whitespace() || c == '=')
                .unwrap_or(self.rest.len())
        };
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_forms() {
        let s = Statement::parse("Allow group KeyAdmins to manage keys in tenancy").unwrap();
        assert_eq!(s.subject, Subject::Groups(vec!["KeyAdmins".into()]));
        assert_eq!((s.verb, s.scope.clone()), (Verb::Manage, Scope::Tenancy));

        let err = Statement::parse("allow group A to read secrets in tenancy").unwrap_err();
        assert!(err.to_string().contains("audit-events"), "{err}");
        let s = Statement::parse("allow group A, B to USE key-family in compartment apps").unwrap();
        assert_eq!(s.subject, Subject::Groups(vec!["A".into(), "B".into()]));
        assert_eq!(s.scope, Scope::Compartment("apps".into()));
        assert!(s.grants(Verb::Read, ResourceKind::Vaults, Target::default()));
        assert!(!s.grants(Verb::Manage, ResourceKind::Keys, Target::default()));
        assert!(!s.grants(Verb::Inspect, ResourceKind::Compartments, Target::default()));

        let s =
            Statement::parse("Allow any-user to use keys in tenancy where target.key.id='ocid1.key.oc1..a'").unwrap();
        assert_eq!(s.conditions, vec![Condition::KeyId("ocid1.key.oc1..a".into())]);
        let a = Target {
            key_id: Some("ocid1.key.oc1..a"),
            vault_id: None,
        };
        let b = Target {
            key_id: Some("ocid1.key.oc1..b"),
            vault_id: None,
        };
        assert!(s.grants(Verb::Use, ResourceKind::Keys, a));
        assert!(!s.grants(Verb::Use, ResourceKind::Keys, b));
    }

    #[test]
    fn verbs_include_the_weaker_ones() {
        let s = Statement::parse("Allow group G to read vaults in tenancy").unwrap();
        assert!(s.grants(Verb::Inspect, ResourceKind::Vaults, Target::default()));
        assert!(s.grants(Verb::Read, ResourceKind::Vaults, Target::default()));
        assert!(!s.grants(Verb::Use, ResourceKind::Vaults, Target::default()));
        assert!(!s.grants(Verb::Read, ResourceKind::Keys, Target::default()));
    }

    #[test]
    fn mistakes_are_reported() {
        for bad in [
            "",
            "Deny group G to read keys in tenancy",
            "Allow group G read keys in tenancy",
            "Allow group G to destroy keys in tenancy",
            "Allow group G to read buckets in tenancy",
            "Allow group G to read keys",
            "Allow group G to read keys in compartment",
            "Allow group G to read keys in tenancy where target.bucket.name = 'x'",
            "Allow group G to read keys in tenancy where target.key.id = x",
            "Allow group G to read keys in tenancy extra",
        ] {
            assert!(Statement::parse(bad).is_err(), "accepted: {bad}");
        }
    }
}
