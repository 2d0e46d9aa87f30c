//! One tenancy across regions, over two (and three) data directories in one process: a
//! member adopts the home region's tenancy and IAM, refuses IAM changes naming the home,
//! applies the home's IAM states in order, and keeps its membership across a reopen. The
//! network between them (signatures, shipping) is the binary's, tested in
//! `tests/kms/test_replication.py`.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_core::iam::CreateUser;
use kms_core::replication::Region;
use kms_core::{Kms, KmsConfig, KmsError, Principal};
use tempfile::TempDir;

fn region(name: &str) -> (Kms, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::open(KmsConfig {
        region: Some(name.into()),
        ..common::kms_config(dir.path())
    })
    .unwrap();
    let me = Principal::local_admin();
    kms.ensure_defaults(&me).unwrap();
    kms.ensure_iam_defaults(&me).unwrap();
    (kms, dir)
}

/// `a` registers `b`.
fn register(a: &Kms, b: &Kms) {
    let (signing, wrapping) = b.replication_identity().unwrap().public_keys().unwrap();
    a.add_region(
        &Principal::local_admin(),
        Region {
            name: b.region().into(),
            endpoint: "http://127.0.0.1:1".into(),
            signing_key: B64.encode(signing),
            wrapping_key: B64.encode(wrapping),
            time_created: a.now(),
        },
    )
    .unwrap();
}

fn join(member: &Kms, home: &Kms) {
    register(member, home);
    register(home, member);
    member.check_join_tenancy(home.region()).unwrap();
    let state = home.admit_tenancy_member(member.region()).unwrap();
    member
        .join_tenancy(&Principal::local_admin(), home.region(), state)
        .unwrap();
}

fn names<T>(items: Vec<T>, name: impl Fn(&T) -> String) -> Vec<String> {
    items.iter().map(name).collect()
}

#[test]
fn a_member_adopts_the_home_tenancy_and_its_iam_with_the_same_ids() {
    let me = Principal::local_admin();
    let (r1, _d1) = region("r1");
    let (r2, d2) = region("r2");
    let alice = r1
        .create_user(
            &me,
            CreateUser {
                name: "alice".into(),
                groups: vec!["Administrators".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let default_vault = r2.ensure_defaults(&me).unwrap().vault;
    join(&r2, &r1);

    assert_eq!(r2.tenancy_id(), r1.tenancy_id());
    assert_eq!(r2.list_users().unwrap(), r1.list_users().unwrap());
    assert_eq!(r2.list_users().unwrap()[0].id, alice.id);
    assert_eq!(r2.list_groups().unwrap(), r1.list_groups().unwrap());
    assert_eq!(r2.list_compartments().unwrap(), r1.list_compartments().unwrap());
    // r2's own default vault moved into the adopted tenancy's root compartment.
    let vault = r2.get_vault(&default_vault.id).unwrap();
    assert_eq!(vault.compartment_id, r1.tenancy_id());
    let info = r2.tenancy_info().unwrap();
    assert_eq!((info.home_region.as_str(), info.tenancy_id), ("r1", r1.tenancy_id()));
    assert_eq!(r1.tenancy_info().unwrap().members[0].region, "r2");

    // The membership outlives a reopen.
    drop(r2);
    let r2 = Kms::open(common::kms_config(d2.path())).unwrap();
    assert_eq!(r2.tenancy_id(), r1.tenancy_id());
    assert_eq!(r2.tenancy_info().unwrap().home_region, "r1");
}

#[test]
fn a_member_refuses_iam_changes_naming_the_home_region() {
    let me = Principal::local_admin();
    let (r1, _d1) = region("r1");
    let (r2, _d2) = region("r2");
    join(&r2, &r1);
    let refusals = [
        r2.create_group(&me, "g", "").map(|_| ()),
        r2.create_user(
            &me,
            CreateUser {
                name: "bob".into(),
                ..Default::default()
            },
        )
        .map(|_| ()),
        r2.create_policy(&me, "p", "", vec!["Allow group g to read vaults in tenancy".into()])
            .map(|_| ()),
        r2.create_compartment(&me, "c", "", None).map(|_| ()),
        r2.delete_group(&me, "Administrators").map(|_| ()),
    ];
    for refusal in refusals {
        match refusal {
            Err(e @ KmsError::NotHomeRegion { .. }) => {
                assert!(e.to_string().contains("home region r1"), "{e}");
            }
            other => panic!("expected NotHomeRegion, got {other:?}"),
        }
    }
    assert_eq!(r2.list_groups().unwrap(), r1.list_groups().unwrap());
    // Defaults are the home's: a member makes none of its own.
    r2.ensure_iam_defaults(&me).unwrap();
}

#[test]
fn iam_changes_in_the_home_are_queued_for_members_and_applied_in_order() {
    let me = Principal::local_admin();
    let (r1, _d1) = region("r1");
    let (r2, _d2) = region("r2");
    let (r3, _d3) = region("r3");
    join(&r2, &r1);
    join(&r3, &r1);
    assert!(r1.iam_pending_members().unwrap().is_empty());

    r1.create_group(&me, "readers", "").unwrap();
    let old = r1.iam_state().unwrap();
    r1.create_policy(
        &me,
        "p",
        "",
        vec!["Allow group readers to read vaults in tenancy".into()],
    )
    .unwrap();
    let pending = r1.iam_pending_members().unwrap();
    assert_eq!(names(pending, |(r, _)| r.name.clone()), ["r2", "r3"]);

    let state = r1.iam_state().unwrap();
    assert_eq!(state.revision, old.revision + 1);
    r2.apply_iam_state("r1", state.clone()).unwrap();
    assert_eq!(
        names(r2.list_policies().unwrap(), |p| p.name.clone()).last().unwrap(),
        "p"
    );
    // An older state arriving late changes nothing.
    r2.apply_iam_state("r1", old).unwrap();
    assert_eq!(r2.list_policies().unwrap(), r1.list_policies().unwrap());
    r1.iam_shipped("r2", state.revision).unwrap();
    assert_eq!(
        names(r1.iam_pending_members().unwrap(), |(r, _)| r.name.clone()),
        ["r3"]
    );

    // A deletion is replicated too.
    r1.delete_policy(&me, "p").unwrap();
    r3.apply_iam_state("r1", r1.iam_state().unwrap()).unwrap();
    assert_eq!(r3.list_policies().unwrap(), r1.list_policies().unwrap());

    // Only the home may ship IAM: r3's state is refused by r2.
    let mut forged = r1.iam_state().unwrap();
    forged.from_region = "r3".into();
    forged.revision += 10;
    assert!(r2.apply_iam_state("r3", forged).is_err());
    // And a region whose tenancy has members cannot join another one.
    register(&r1, &r3);
    let err = r1.check_join_tenancy("r3").unwrap_err();
    assert!(err.to_string().contains("member region(s) r2, r3"), "{err}");
}

#[test]
fn a_region_with_iam_of_its_own_cannot_join() {
    let me = Principal::local_admin();
    let (r1, _d1) = region("r1");
    let (r2, _d2) = region("r2");
    r2.create_group(&me, "mine", "").unwrap();
    register(&r2, &r1);
    let err = r2.check_join_tenancy("r1").unwrap_err();
    assert!(err.to_string().contains("1 group(s)"), "{err}");
    // Without registering the home first: refused too.
    let (r3, _d3) = region("r3");
    assert!(matches!(
        r3.check_join_tenancy("r1"),
        Err(KmsError::InvalidParameter(_))
    ));
}
