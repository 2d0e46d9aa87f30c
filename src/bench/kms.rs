//! Key-management workloads: wrapping a new data key under a master key (what every object
//! PUT and volume creation asks for) and unwrapping one (every GET, every volume open), for
//! each protection mode the KMS has keys in (the first given is the baseline), beside the raw AES-256-GCM seal of 32 bytes (the
//! cipher alone, without key lookup, header and audit record).

use std::sync::Arc;

use kms_core::{CreateKey, CreateVault, KeyProvider, Kms, KmsError, Ocid, Principal, ProtectionMode};

use super::{Unit, Workload};
use crate::crypto::gcm::GcmKey;

/// Associated data bound to every benchmark data key (an object identity's size).
const AAD: &[u8] = b"bench/bucket/object/version-0123456789";

/// The group of the wrap lines.
pub const WRAP_GROUP: &str = "wrap a new data key (generateDataEncryptionKey)";
/// The group of the unwrap lines.
pub const UNWRAP_GROUP: &str = "unwrap a data key (decrypt)";

/// A vault and a key in `mode` in `kms`, for benchmarking.
pub fn bench_key(kms: &Kms, mode: ProtectionMode) -> Result<Ocid, KmsError> {
    let me = Principal::local_admin();
    let vault = kms.create_vault(
        &me,
        CreateVault {
            display_name: format!("bench-{mode:?}").to_lowercase(),
            ..Default::default()
        },
    )?;
    let key = kms.create_key(
        &me,
        CreateKey {
            protection_mode: Some(mode),
            ..CreateKey::new(vault.id, "bench")
        },
    )?;
    Ok(key.id)
}

/// Wrap and unwrap on each of `keys` (`(mode, key)`; the first is the baseline of both
/// groups), then the raw cipher line of each group.
pub fn workloads(kms: &Arc<Kms>, keys: &[(ProtectionMode, Ocid)]) -> Result<Vec<Workload>, KmsError> {
    let mut out = Vec::new();
    for (i, (mode, key)) in keys.iter().enumerate() {
        let (kms, key) = (kms.clone(), key.clone());
        out.push(Workload {
            group: WRAP_GROUP.into(),
            name: format!("sealstore, {} key", mode_name(*mode)),
            unit: Unit::OpsPerSec,
            per_call: 1,
            baseline: i == 0,
            run: Box::new(move || {
                KeyProvider::generate_data_key(&*kms, &key, AAD).expect("wrap a data key");
            }),
        });
    }
    out.push(raw_gcm_line(WRAP_GROUP));
    for (i, (mode, key)) in keys.iter().enumerate() {
        let wrapped = KeyProvider::generate_data_key(&**kms, key, AAD)?.wrapped;
        let kms = kms.clone();
        out.push(Workload {
            group: UNWRAP_GROUP.into(),
            name: format!("sealstore, {} key", mode_name(*mode)),
            unit: Unit::OpsPerSec,
            per_call: 1,
            baseline: i == 0,
            run: Box::new(move || {
                kms.unwrap_data_key(&wrapped, AAD).expect("unwrap a data key");
            }),
        });
    }
    out.push(raw_gcm_line(UNWRAP_GROUP));
    Ok(out)
}

/// "SOFTWARE", "HSM", "EXTERNAL", as OCI names the modes.
pub fn mode_name(mode: ProtectionMode) -> &'static str {
    match mode {
        ProtectionMode::Software => "SOFTWARE",
        ProtectionMode::Hsm => "HSM",
        ProtectionMode::External => "EXTERNAL",
    }
}

fn raw_gcm_line(group: &str) -> Workload {
    let raw = GcmKey::new(&[7; 32]);
    Workload {
        group: group.into(),
        name: "raw AES-256-GCM seal of 32 bytes (no KMS)".into(),
        unit: Unit::OpsPerSec,
        per_call: 1,
        baseline: false,
        run: Box::new(move || {
            let mut dek = [0u8; 32];
            raw.seal_in_place([1; 12], AAD, &mut dek).expect("seal");
        }),
    }
}
