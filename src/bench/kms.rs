//! Key-management workloads: wrapping a new data key under a master key (what every object
//! PUT and volume creation asks for) and unwrapping one (every GET, every volume open), for
//! each protection mode the KMS has keys in (the first given is the baseline), beside the raw AES-256-GCM seal of 32 bytes (the
//! cipher alone, without key lookup, header and audit record).
//!
//! Then signing and verifying with an RSA-2048/3072/4096 and an ECDSA P-256/P-384/P-521 key
//! of each protection mode that signs (SOFTWARE the baseline, HSM when one is configured): a
//! sign is the private-key operation in the key's backend, a verify the public-key check in
//! software; `openssl speed rsa2048 ecdsap256` is the outside reference ([`openssl_speed`]).

use std::sync::Arc;

use kms_core::{
    CreateKey, CreateVault, Curve, KeyProvider, KeySpec, Kms, KmsError, MessageType, Ocid, Principal, ProtectionMode,
    SignatureInput, SigningAlgorithm,
};

use super::{Measured, Role, Unit, Workload};
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

/// The shapes the sign and verify lines measure, with the algorithm each signs with: PKCS#1
/// v1.5 with SHA-256 for RSA (what `openssl speed rsa2048` times), the curve's own hash for
/// ECDSA.
pub const SIGNING_SHAPES: [(KeySpec, &str); 6] = [
    (KeySpec::Rsa { len: 256 }, "SHA_256_RSA_PKCS1_V1_5"),
    (KeySpec::Rsa { len: 384 }, "SHA_256_RSA_PKCS1_V1_5"),
    (KeySpec::Rsa { len: 512 }, "SHA_256_RSA_PKCS1_V1_5"),
    (KeySpec::Ecdsa(Curve::P256), "ECDSA_SHA_256"),
    (KeySpec::Ecdsa(Curve::P384), "ECDSA_SHA_384"),
    (KeySpec::Ecdsa(Curve::P521), "ECDSA_SHA_512"),
];

/// The message signed and verified (its hash is what the key signs).
const MESSAGE: &[u8] = b"sealstore bench: a 40-byte message here.";

/// A key of shape `spec` in `mode` in a new vault of `kms`, for the sign and verify lines.
pub fn signing_key(kms: &Kms, mode: ProtectionMode, spec: KeySpec) -> Result<Ocid, KmsError> {
    let me = Principal::local_admin();
    let vault = kms.create_vault(
        &me,
        CreateVault {
            display_name: format!("bench-{mode:?}-{spec}").to_lowercase(),
            ..Default::default()
        },
    )?;
    let key = kms.create_key(
        &me,
        CreateKey {
            protection_mode: Some(mode),
            key_shape: Some(spec.shape()),
            ..CreateKey::new(vault.id, "bench")
        },
    )?;
    Ok(key.id)
}

/// The group of the sign lines of `spec` signing with `algorithm`.
pub fn sign_group(spec: KeySpec, algorithm: &str) -> String {
    format!("sign, {spec} ({algorithm})")
}

/// The group of the verify lines of `spec` with `algorithm`.
pub fn verify_group(spec: KeySpec, algorithm: &str) -> String {
    format!("verify, {spec} ({algorithm})")
}

/// Sign and verify lines, one group each per [`SIGNING_SHAPES`] entry, one line per mode in
/// `modes` (the first the baseline); makes a key of each shape in each mode.
pub fn signing_workloads(kms: &Arc<Kms>, modes: &[ProtectionMode]) -> Result<Vec<Workload>, KmsError> {
    let me = Principal::local_admin();
    let mut out = Vec::new();
    for (spec, algorithm) in SIGNING_SHAPES {
        let algorithm = SigningAlgorithm::parse(algorithm)?;
        let keys = modes
            .iter()
            .map(|mode| Ok((*mode, signing_key(kms, *mode, spec)?)))
            .collect::<Result<Vec<_>, KmsError>>()?;
        for (i, (mode, key)) in keys.iter().enumerate() {
            let (kms, key, me) = (kms.clone(), key.clone(), me.clone());
            out.push(Workload {
                group: sign_group(spec, algorithm.as_str()),
                name: format!("sealstore, {} key", mode_name(*mode)),
                unit: Unit::OpsPerSec,
                per_call: 1,
                baseline: i == 0,
                role: Role::Sealstore,
                run: Box::new(move || {
                    kms.sign(&me, input(&key, algorithm)).expect("sign");
                }),
            });
        }
        for (i, (mode, key)) in keys.iter().enumerate() {
            let signed = kms.sign(&me, input(key, algorithm))?;
            let version = signed.key_version_id;
            let (kms, key, me) = (kms.clone(), key.clone(), me.clone());
            out.push(Workload {
                group: verify_group(spec, algorithm.as_str()),
                name: format!("sealstore, {} key", mode_name(*mode)),
                unit: Unit::OpsPerSec,
                per_call: 1,
                baseline: i == 0,
                role: Role::Sealstore,
                run: Box::new(move || {
                    let valid = kms
                        .verify(
                            &me,
                            SignatureInput {
                                key_version_id: Some(&version),
                                ..input(&key, algorithm)
                            },
                            &signed.signature,
                        )
                        .expect("verify");
                    assert!(valid, "the benchmark's signature verifies");
                }),
            });
        }
    }
    Ok(out)
}

/// Signing [`MESSAGE`] with `key`'s current version.
fn input(key: &Ocid, algorithm: SigningAlgorithm) -> SignatureInput<'_> {
    SignatureInput {
        key_id: key,
        key_version_id: None,
        message: MESSAGE,
        message_type: MessageType::Raw,
        algorithm,
    }
}

/// What `openssl speed rsa2048 ecdsap256` measured: signatures and verifications per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpensslSpeed {
    /// RSA-2048 (sign/s, verify/s).
    pub rsa2048: (f64, f64),
    /// ECDSA P-256 (sign/s, verify/s).
    pub ecdsa_p256: (f64, f64),
}

/// Runs `openssl speed -seconds SECONDS rsa2048 ecdsap256`; `None` when openssl is not
/// installed or its output is not understood.
pub fn openssl_speed(seconds: u64) -> Option<OpensslSpeed> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", &seconds.max(1).to_string(), "rsa2048", "ecdsap256"])
        .output()
        .ok()?;
    parse_openssl_speed(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the summary of `openssl speed rsa2048 ecdsap256`:
///
/// ```text
///                   sign    verify    sign/s verify/s
/// rsa 2048 bits 0.000362s 0.000020s   2758.8  49121.1
///                               sign    verify    sign/s verify/s
///  256 bits ecdsa (nistp256)   0.0000s   0.0001s  41121.6  12750.5
/// ```
pub fn parse_openssl_speed(text: &str) -> Option<OpensslSpeed> {
    let rates = |pick: &dyn Fn(&str) -> bool| {
        let line = text.lines().find(|l| pick(l.trim()))?;
        let mut numbers = line.split_whitespace().rev().map(|w| w.parse::<f64>().ok());
        let verify = numbers.next()??;
        let sign = numbers.next()??;
        Some((sign, verify))
    };
    Some(OpensslSpeed {
        rsa2048: rates(&|l| l.starts_with("rsa 2048 bits") || l.starts_with("rsa  2048 bits"))?,
        ecdsa_p256: rates(&|l| l.contains("ecdsa (nistp256)"))?,
    })
}

/// Puts `speed`'s lines after the last line of the RSA-2048 and P-256 sign and verify groups
/// of `results` (kind `kind`), as rates only (openssl reports no operation count).
pub fn add_openssl_lines(kind: &str, results: &mut Vec<Measured>, speed: OpensslSpeed) {
    let (rsa, p256) = (SIGNING_SHAPES[0], SIGNING_SHAPES[3]);
    let lines = [
        (
            sign_group(rsa.0, rsa.1),
            "openssl speed rsa2048 (sign)",
            speed.rsa2048.0,
        ),
        (
            verify_group(rsa.0, rsa.1),
            "openssl speed rsa2048 (verify)",
            speed.rsa2048.1,
        ),
        (
            sign_group(p256.0, p256.1),
            "openssl speed ecdsap256 (sign)",
            speed.ecdsa_p256.0,
        ),
        (
            verify_group(p256.0, p256.1),
            "openssl speed ecdsap256 (verify)",
            speed.ecdsa_p256.1,
        ),
    ];
    for (group, name, value) in lines {
        let Some(at) = results.iter().rposition(|r| r.kind == kind && r.group == group) else {
            continue;
        };
        results.insert(
            at + 1,
            Measured {
                kind: kind.into(),
                group,
                name: name.into(),
                unit: Unit::OpsPerSec,
                value,
                ops: 0,
                seconds: 0.0,
                ratio: None,
                baseline: false,
                role: Role::Peer,
                latency: None,
                versus: None,
                rounds: Vec::new(),
            },
        );
    }
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
            role: Role::Sealstore,
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
            role: Role::Sealstore,
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
        role: Role::Peer,
        run: Box::new(move || {
            let mut dek = [0u8; 32];
            raw.seal_in_place([1; 12], AAD, &mut dek).expect("seal");
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_speed_summaries_are_read() {
        let v3 = "Doing 2048 bits private rsa's for 1s: 2759 2048 bits private RSA's in 1.00s
version: 3.0.19
                  sign    verify    sign/s verify/s
rsa 2048 bits 0.000362s 0.000020s   2758.8  49121.1
                              sign    verify    sign/s verify/s
 256 bits ecdsa (nistp256)   0.0000s   0.0001s  41121.6  12750.5
";
        assert_eq!(
            parse_openssl_speed(v3),
            Some(OpensslSpeed {
                rsa2048: (2758.8, 49121.1),
                ecdsa_p256: (41121.6, 12750.5),
            })
        );
        assert_eq!(parse_openssl_speed("openssl: command failed\n"), None);
    }

    #[test]
    fn openssl_lines_follow_their_groups() {
        let mut results: Vec<Measured> = [SIGNING_SHAPES[0], SIGNING_SHAPES[3]]
            .iter()
            .flat_map(|(spec, alg)| [sign_group(*spec, alg), verify_group(*spec, alg)])
            .map(|g| crate::bench::test_line("kms", &g, "sealstore, SOFTWARE key", Unit::OpsPerSec, 1.0, true))
            .collect();
        add_openssl_lines(
            "kms",
            &mut results,
            OpensslSpeed {
                rsa2048: (1.0, 2.0),
                ecdsa_p256: (3.0, 4.0),
            },
        );
        let names: Vec<(&str, f64)> = results.iter().map(|r| (r.name.as_str(), r.value)).collect();
        assert_eq!(
            names,
            [
                ("sealstore, SOFTWARE key", 1.0),
                ("openssl speed rsa2048 (sign)", 1.0),
                ("sealstore, SOFTWARE key", 1.0),
                ("openssl speed rsa2048 (verify)", 2.0),
                ("sealstore, SOFTWARE key", 1.0),
                ("openssl speed ecdsap256 (sign)", 3.0),
                ("sealstore, SOFTWARE key", 1.0),
                ("openssl speed ecdsap256 (verify)", 4.0),
            ]
        );
        assert!(results.iter().all(|r| r
            .group
            .contains(if r.group.contains("RSA") { "RSA-2048" } else { "P256" })));
    }
}
