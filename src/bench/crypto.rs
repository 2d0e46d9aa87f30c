//! Crypto workloads: segmented AES-256-GCM seal/open of one object (sealstore's object
//! format) and the AES-256-XTS 4 KiB sector path (the volume format), each beside the raw
//! aws-lc primitive over the same bytes.

use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::{Role, Unit, Workload};
use crate::crypto::segment::{SegmentCipher, SegmentSize};
use crate::crypto::xts::{Xts, XtsKey};

/// The thread counts measured: 1, and all the machine has (when more than 1).
pub fn thread_counts() -> Vec<usize> {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    if all > 1 {
        vec![1, all]
    } else {
        vec![1]
    }
}

fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool"),
    )
}

/// Seal and open of one `object_size`-byte object, raw aws-lc (one call) and sealstore's
/// segmented format (64 KiB segments) on each of [`thread_counts`].
pub fn gcm(object_size: usize) -> Vec<Workload> {
    let plain: Arc<Vec<u8>> = Arc::new((0..object_size).map(|i| (i * 31) as u8).collect());
    let cipher = Arc::new(SegmentCipher::new(&[5; 32], [1; 7], [2; 32], SegmentSize::DEFAULT));
    let sealed = Arc::new(cipher.seal(0, &plain, true).expect("seal"));
    let raw = Arc::new(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[5; 32]).expect("key")));
    let label = super::size_label(object_size);
    let seal_group = format!("AES-256-GCM seal, {label} object");
    let open_group = format!("AES-256-GCM open, {label} object");
    let bytes = object_size as u64;
    let mut out = Vec::new();

    let (raw_seal, mut scratch) = (raw.clone(), plain.to_vec());
    out.push(Workload {
        group: seal_group.clone(),
        name: "raw aws-lc-rs, 1 call".into(),
        unit: Unit::BytesPerSec,
        per_call: bytes,
        baseline: true,
        role: Role::Baseline,
        run: Box::new(move || {
            let _ = raw_seal.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::from([2u8; 32]),
                &mut scratch,
            );
        }),
    });
    for threads in thread_counts() {
        let (pool, cipher, plain) = (pool(threads), cipher.clone(), plain.clone());
        let mut sealed = vec![0u8; cipher.sealed_batch_len(plain.len())];
        out.push(Workload {
            group: seal_group.clone(),
            name: format!("sealstore, {threads} thread(s)"),
            unit: Unit::BytesPerSec,
            per_call: bytes,
            baseline: false,
            role: Role::Sealstore,
            run: Box::new(move || pool.install(|| cipher.seal_into(0, &plain, true, &mut sealed).expect("seal"))),
        });
    }

    let (raw_ct, raw_tag) = {
        let mut ct = plain.to_vec();
        let tag = raw
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from([2u8; 32]), &mut ct)
            .expect("seal");
        (ct, tag)
    };
    let mut opened = vec![0u8; object_size];
    out.push(Workload {
        group: open_group.clone(),
        name: "raw aws-lc-rs, 1 call".into(),
        unit: Unit::BytesPerSec,
        per_call: bytes,
        baseline: true,
        role: Role::Baseline,
        run: Box::new(move || {
            raw.open_separate_gather(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::from([2u8; 32]),
                &raw_ct,
                raw_tag.as_ref(),
                &mut opened,
            )
            .expect("open");
        }),
    });
    for threads in thread_counts() {
        let (pool, cipher, sealed) = (pool(threads), cipher.clone(), sealed.clone());
        let mut opened = vec![0u8; object_size];
        out.push(Workload {
            group: open_group.clone(),
            name: format!("sealstore, {threads} thread(s)"),
            unit: Unit::BytesPerSec,
            per_call: bytes,
            baseline: false,
            role: Role::Sealstore,
            run: Box::new(move || pool.install(|| cipher.open_into(0, &sealed, true, &mut opened).expect("open"))),
        });
    }
    out
}

/// The volume sector path on 1 MiB (256 sectors of 4 KiB), beside raw aws-lc XTS on the same
/// 256 units (the baseline) and as one 1 MiB unit (the ceiling no sector format reaches).
pub fn xts() -> Vec<Workload> {
    const SIZE: usize = 1 << 20;
    let key = XtsKey::generate().expect("an XTS key");
    let mut out = Vec::new();
    for encrypt in [true, false] {
        let group = format!(
            "AES-256-XTS {}, 4 KiB sectors",
            if encrypt { "encrypt" } else { "decrypt" }
        );
        let lines: [(&str, bool, Role, u8); 3] = [
            ("raw aws-lc, 256 units of 4 KiB", true, Role::Baseline, 0),
            ("raw aws-lc, one 1 MiB unit", false, Role::Peer, 1),
            ("sealstore sector path", false, Role::Sealstore, 2),
        ];
        for (name, baseline, role, kind) in lines {
            let mut xts = Xts::new(&key).expect("XTS");
            let mut buf = vec![0x5au8; SIZE];
            out.push(Workload {
                group: group.clone(),
                name: name.into(),
                unit: Unit::BytesPerSec,
                per_call: SIZE as u64,
                baseline,
                role,
                run: Box::new(move || match (kind, encrypt) {
                    (0, _) => {
                        for (i, unit) in buf.chunks_exact_mut(4096).enumerate() {
                            let tweak = 7 + i as u128;
                            if encrypt {
                                xts.encrypt_unit(tweak, unit).expect("xts")
                            } else {
                                xts.decrypt_unit(tweak, unit).expect("xts")
                            }
                        }
                    }
                    (1, true) => xts.encrypt_unit(7, &mut buf).expect("xts"),
                    (1, false) => xts.decrypt_unit(7, &mut buf).expect("xts"),
                    (_, true) => xts.encrypt_sectors(7, &mut buf).expect("xts"),
                    (_, false) => xts.decrypt_sectors(7, &mut buf).expect("xts"),
                }),
            });
        }
    }
    out
}
