//! One tenancy across regions (spec: `docs/REPLICATION.md`, "One tenancy across regions").
//!
//! - A region is the home of its own tenancy until it joins another region's: it asks that
//!   region (the *home*) over the signed replication channel, the home records it as a member
//!   and answers the tenancy's whole IAM state, which the member adopts (tenancy id, users
//!   and their API keys, groups, policies, compartments, console passwords; the same OCIDs).
//! - From then on IAM is changed in the home region only ([`super::iam_outbox`] refuses it
//!   elsewhere). Every IAM change in the home moves its IAM revision; the IAM shipper sends
//!   each member that has not acknowledged the latest revision the whole IAM state, until it
//!   does. A member applies a state only when it is newer than the one it holds.

use crate::audit;
use crate::context::Context;
use crate::error::{KmsError, Result};
use crate::iam::{ADMINISTRATORS_GROUP, ADMIN_POLICY};
use crate::ids::Ocid;
use crate::model::audit::{AuditSubject, Principal};
use crate::model::replication::Region;
use crate::model::tenancy::{IamState, TenancyInfo, TenancyMember};
use crate::store::{ReadTxn, WriteTxn, META_TENANCY, META_TENANCY_HOME};

/// Tenancy membership and IAM shipping over a [`Context`].
pub(crate) struct Tenancy<'a> {
    ctx: &'a Context,
}

impl<'a> Tenancy<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Tenancy { ctx }
    }

    /// This region's tenancy, its home region and (on the home) its members.
    pub(crate) fn info(&self) -> Result<TenancyInfo> {
        let txn = self.ctx.read()?;
        let home = txn.tenancy_home()?;
        Ok(TenancyInfo {
            tenancy_id: self.ctx.tenancy_id(),
            region: self.ctx.region().to_owned(),
            home_region: home.clone().unwrap_or_else(|| self.ctx.region().to_owned()),
            iam_revision: txn.iam_revision()?,
            members: if home.is_some() {
                Vec::new()
            } else {
                txn.tenancy_members()?
            },
        })
    }

    /// The tenancy's whole IAM state, as this region holds it.
    pub(crate) fn iam_state(&self) -> Result<IamState> {
        let txn = self.ctx.read()?;
        iam_state_in(&txn, self.ctx.region(), self.ctx.tenancy_id())
    }

    /// In the home region: records `region` (a registered peer whose signature the caller
    /// checked) as a member of this tenancy and answers the IAM state it adopts. Asked again,
    /// it answers again (the member may not have received the first answer).
    pub(crate) fn admit_member(&self, region: &str) -> Result<IamState> {
        let principal = Principal::new(format!("region/{region}"));
        self.ctx.mutate(
            &principal,
            "AdmitTenancyMember",
            AuditSubject::default(),
            |txn, now, _| {
                if let Some(home) = txn.tenancy_home()? {
                    return Err(KmsError::IncorrectState(format!(
                        "region {} is a member of tenancy {}, whose home region is {home}: join {home}",
                        self.ctx.region(),
                        self.ctx.tenancy_id()
                    )));
                }
                txn.region(region)?
                    .ok_or_else(|| KmsError::not_found("region", region))?;
                let revision = txn.iam_revision()?;
                let member = match txn.tenancy_member(region)? {
                    Some(m) => TenancyMember {
                        acknowledged_revision: revision,
                        pending_since: None,
                        ..m
                    },
                    None => TenancyMember {
                        region: region.to_owned(),
                        time_joined: now,
                        acknowledged_revision: revision,
                        pending_since: None,
                        time_last_shipped: None,
                    },
                };
                txn.put_tenancy_member(&member)?;
                Ok(())
            },
        )?;
        // Read after the commit: an IAM change made meanwhile is in this state, or queued
        // for the member (it is one now).
        self.iam_state()
    }

    /// In a member-to-be: adopts the tenancy whose home region `home` (a registered peer)
    /// answered `state`. Refused when this region has IAM of its own (users, groups or
    /// policies besides the defaults, compartments) or is the home of members; its vaults and
    /// keys, all in its root compartment then, move into the adopted tenancy's root
    /// compartment. Joining the same home again re-applies its state.
    pub(crate) fn join(&self, principal: &Principal, home: &str, state: IamState) -> Result<TenancyInfo> {
        if state.from_region != home {
            return Err(KmsError::InvalidParameter(format!(
                "the tenancy state comes from {}, not {home}",
                state.from_region
            )));
        }
        if home == self.ctx.region() {
            return Err(KmsError::InvalidParameter(format!("region {home} is this region")));
        }
        let tenancy = state.tenancy_id.clone();
        self.ctx
            .mutate(principal, "JoinTenancy", AuditSubject::default(), |txn, _, _| {
                let old = self.ctx.tenancy_id();
                if self.joinable(txn, home, Some(&tenancy))? {
                    rehome(txn, &old, &tenancy)?;
                }
                replace_iam(txn, &state)?;
                txn.set_meta(META_TENANCY, tenancy.as_str().as_bytes())?;
                txn.set_meta(META_TENANCY_HOME, home.as_bytes())?;
                txn.set_iam_revision(state.revision)?;
                Ok(())
            })?;
        self.ctx.set_tenancy_id(tenancy);
        self.info()
    }

    /// Whether this region may join the tenancy of `home`, checked before asking the home
    /// (which records a member when asked): the same checks as [`Tenancy::join`].
    pub(crate) fn check_join(&self, home: &str) -> Result<()> {
        if home == self.ctx.region() {
            return Err(KmsError::InvalidParameter(format!("region {home} is this region")));
        }
        // Only reads; dropped without a commit.
        let txn = self.ctx.write()?;
        self.joinable(&txn, home, None).map(|_| ())
    }

    /// Refuses a join of `home`'s tenancy (`tenancy`, when known) that this region cannot
    /// make; whether it is a first join (rather than the same home again).
    fn joinable(&self, txn: &WriteTxn, home: &str, tenancy: Option<&Ocid>) -> Result<bool> {
        txn.region(home)?.ok_or_else(|| {
            KmsError::InvalidParameter(format!("region {home} is not registered (sealstore kms region add)"))
        })?;
        let old = self.ctx.tenancy_id();
        match txn.tenancy_home()? {
            Some(current) if current == home && tenancy.is_none_or(|t| *t == old) => Ok(false),
            Some(current) => Err(KmsError::IncorrectState(format!(
                "region {} is a member of tenancy {old}, whose home region is {current}",
                self.ctx.region()
            ))),
            None => {
                refuse_own_iam(txn, self.ctx.region(), &old)?;
                Ok(true)
            }
        }
    }

    /// In a member: applies the IAM state its home region `from` (a registered peer whose
    /// signature the caller checked) shipped. An older or equal revision than the one held
    /// is acknowledged and ignored.
    pub(crate) fn apply_iam(&self, from: &str, state: IamState) -> Result<()> {
        if state.from_region != from {
            return Err(KmsError::InvalidParameter(format!(
                "the IAM state says it comes from {}, but {from} signed it",
                state.from_region
            )));
        }
        let now = self.ctx.now();
        let txn = self.ctx.write()?;
        if txn.tenancy_home()?.as_deref() != Some(from) || state.tenancy_id != self.ctx.tenancy_id() {
            return Err(KmsError::IncorrectState(format!(
                "region {} is not a member of tenancy {} (home {from}): run `sealstore kms region join-tenancy {from}` there",
                self.ctx.region(),
                state.tenancy_id
            )));
        }
        if state.revision <= txn.iam_revision()? {
            return Ok(());
        }
        replace_iam(&txn, &state)?;
        txn.set_iam_revision(state.revision)?;
        audit::append(
            &txn,
            now,
            &Principal::new(format!("region/{from}")),
            "ApplyIamReplication",
            &AuditSubject::default(),
            Ok(()),
        )?;
        txn.commit()?;
        self.ctx.invalidate_iam_view();
        Ok(())
    }

    /// In the home region: the members that have not acknowledged the latest IAM revision,
    /// with their registration (members no longer registered are left out).
    pub(crate) fn pending_members(&self) -> Result<Vec<(Region, TenancyMember)>> {
        let txn = self.ctx.read()?;
        let revision = txn.iam_revision()?;
        let mut out = Vec::new();
        for member in txn.tenancy_members()? {
            if member.acknowledged_revision < revision {
                if let Some(region) = txn.region(&member.region)? {
                    out.push((region, member));
                }
            }
        }
        Ok(out)
    }

    /// In the home region: `region` acknowledged IAM revision `revision`.
    pub(crate) fn iam_shipped(&self, region: &str, revision: u64) -> Result<()> {
        let now = self.ctx.now();
        let txn = self.ctx.write()?;
        let Some(mut member) = txn.tenancy_member(region)? else {
            return Ok(());
        };
        member.acknowledged_revision = member.acknowledged_revision.max(revision);
        member.time_last_shipped = Some(now);
        if member.acknowledged_revision >= txn.iam_revision()? {
            member.pending_since = None;
        }
        txn.put_tenancy_member(&member)?;
        audit::append(
            &txn,
            now,
            &Principal::new(format!("replication/{region}")),
            "ShipIamReplication",
            &AuditSubject::default(),
            Ok(()),
        )?;
        txn.commit()
    }
}

fn iam_state_in(txn: &ReadTxn, region: &str, tenancy: Ocid) -> Result<IamState> {
    let users = txn.users()?;
    let mut console_passwords = Vec::new();
    for user in &users {
        if let Some(phc) = txn.console_password(&user.id)? {
            console_passwords.push((user.id.clone(), phc));
        }
    }
    Ok(IamState {
        from_region: region.to_owned(),
        tenancy_id: tenancy,
        revision: txn.iam_revision()?,
        compartments: txn.compartments()?,
        users,
        groups: txn.groups()?,
        policies: txn.policies()?,
        console_passwords,
    })
}

/// Refuses to join while this region has IAM of its own, which the adopted tenancy's would
/// replace: users, compartments, groups or policies besides the defaults, and members.
fn refuse_own_iam(txn: &WriteTxn, region: &str, tenancy: &Ocid) -> Result<()> {
    let mut own = Vec::new();
    let users = txn.users()?;
    if !users.is_empty() {
        own.push(format!("{} user(s)", users.len()));
    }
    let groups = txn
        .groups()?
        .into_iter()
        .filter(|g| g.name != ADMINISTRATORS_GROUP || !g.members.is_empty())
        .count();
    if groups > 0 {
        own.push(format!("{groups} group(s)"));
    }
    let policies = txn.policies()?.into_iter().filter(|p| p.name != ADMIN_POLICY).count();
    if policies > 0 {
        own.push(format!("{policies} policy(ies)"));
    }
    let compartments = txn.compartments()?.into_iter().filter(|c| c.id != *tenancy).count();
    if compartments > 0 {
        own.push(format!("{compartments} compartment(s)"));
    }
    let members = txn.tenancy_members()?;
    if !members.is_empty() {
        own.push(format!(
            "member region(s) {}",
            members.iter().map(|m| m.region.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if own.is_empty() {
        return Ok(());
    }
    Err(KmsError::IncorrectState(format!(
        "region {region} has IAM of its own ({}), which joining another tenancy would drop: join from a fresh data directory, or remove them first",
        own.join(", ")
    )))
}

/// Moves the vaults, keys and versions of the root compartment `from` into `to`.
fn rehome(txn: &WriteTxn, from: &Ocid, to: &Ocid) -> Result<()> {
    for mut vault in txn.vaults()? {
        if vault.compartment_id == *from {
            vault.compartment_id = to.clone();
            txn.put_vault(&vault)?;
        }
    }
    for mut key in txn.keys()? {
        for mut version in txn.key_versions(&key.id)? {
            if version.compartment_id == *from {
                version.compartment_id = to.clone();
                txn.put_key_version(&version)?;
            }
        }
        if key.compartment_id == *from {
            key.compartment_id = to.clone();
            txn.put_key(&key)?;
        }
    }
    Ok(())
}

/// Replaces this region's IAM records (compartments included) by `state`'s.
fn replace_iam(txn: &WriteTxn, state: &IamState) -> Result<()> {
    use crate::store::schema::{IAM_GROUPS, IAM_POLICIES, IAM_USERS};
    for user in txn.users()? {
        txn.set_console_password(&user.id, None)?;
        if !state.users.iter().any(|u| u.id == user.id) {
            txn.delete_iam_record(IAM_USERS, &user.id)?;
        }
    }
    for group in txn.groups()? {
        if !state.groups.iter().any(|g| g.id == group.id) {
            txn.delete_iam_record(IAM_GROUPS, &group.id)?;
        }
    }
    for policy in txn.policies()? {
        if !state.policies.iter().any(|p| p.id == policy.id) {
            txn.delete_iam_record(IAM_POLICIES, &policy.id)?;
        }
    }
    for compartment in txn.compartments()? {
        if !state.compartments.iter().any(|c| c.id == compartment.id) {
            txn.delete_compartment(&compartment.id)?;
        }
    }
    for compartment in &state.compartments {
        txn.put_compartment(compartment)?;
    }
    for user in &state.users {
        txn.put_user(user)?;
    }
    for group in &state.groups {
        txn.put_group(group)?;
    }
    for policy in &state.policies {
        txn.put_policy(policy)?;
    }
    for (user, phc) in &state.console_passwords {
        txn.set_console_password(user, Some(phc))?;
    }
    Ok(())
}
