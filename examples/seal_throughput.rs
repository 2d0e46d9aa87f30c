//! Measures, in one run, AES-256-GCM throughput of the raw aws-lc-rs primitive and of
//! sealstore's segmented object encryption (1 thread and all threads; sealing both in place,
//! as the streaming pipeline does, and into a new buffer), seal and open, on a
//! buffer of SIZE_MIB (64 by default; 4 is the batch the streaming pipeline works in).
//! Prints one JSON object; `scripts/bench-crypto` puts it beside `openssl speed`.
//!
//! `cargo run --release --example seal_throughput [-- SECONDS [SIZE_MIB]]`

use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sealstore::crypto::segment::{SegmentCipher, SegmentSize};

/// Runs `f` (which processes `size` bytes) repeatedly for about `secs` seconds; returns GB/s.
fn gbps(size: usize, secs: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        f();
        n += 1;
    }
    (n as f64 * size as f64) / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let size_mib: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let size = size_mib << 20;
    let gbps = |f: &mut dyn FnMut()| gbps(size, secs, f);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plain: Vec<u8> = (0..size).map(|i| (i * 31) as u8).collect();
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[5; 32]).unwrap());
    let cipher = SegmentCipher::new(&[5; 32], [1; 7], [2; 32], SegmentSize::DEFAULT);
    let mut sealed = cipher.seal(0, &plain, true).unwrap();
    let mut opened = vec![0u8; size];
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let all = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();

    let mut scratch = plain.clone();
    let raw_seal = gbps(&mut || {
        let _tag = raw
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::from([2u8; 32]),
                &mut scratch,
            )
            .unwrap();
    });
    // The same primitive called once per segment: what a segmented format costs by itself.
    let seg = SegmentSize::DEFAULT.get() as usize;
    let raw_seal_per_segment = gbps(&mut || {
        for chunk in scratch.chunks_mut(seg) {
            let _tag = raw
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from([2u8; 32]), chunk)
                .unwrap();
        }
    });
    let mut raw_ct = plain.clone();
    let tag = raw
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from([2u8; 32]), &mut raw_ct)
        .unwrap();
    let raw_open = gbps(&mut || {
        raw.open_separate_gather(
            Nonce::assume_unique_for_key([1; 12]),
            Aad::from([2u8; 32]),
            &raw_ct,
            tag.as_ref(),
            &mut opened,
        )
        .unwrap();
    });
    let seal_1 = gbps(&mut || one.install(|| cipher.seal_into(0, &plain, true, &mut sealed).unwrap()));
    let seal_all = gbps(&mut || all.install(|| cipher.seal_into(0, &plain, true, &mut sealed).unwrap()));
    let mut in_place = plain.clone();
    let seal_in_place_1 = gbps(&mut || {
        one.install(|| cipher.seal_in_place(0, &mut in_place, true).unwrap());
    });
    let seal_in_place_all = gbps(&mut || {
        all.install(|| cipher.seal_in_place(0, &mut in_place, true).unwrap());
    });
    let open_1 = gbps(&mut || one.install(|| cipher.open_into(0, &sealed, true, &mut opened).unwrap()));
    let open_all = gbps(&mut || all.install(|| cipher.open_into(0, &sealed, true, &mut opened).unwrap()));
    assert_eq!(opened, plain);
    println!(
        "{{\"threads\":{threads},\"bufferMiB\":{size_mib},\"segmentBytes\":{},\"rawSealGBps\":{raw_seal:.3},\"rawSealPerSegmentGBps\":{raw_seal_per_segment:.3},\"rawOpenGBps\":{raw_open:.3},\
         \"sealGBps1\":{seal_1:.3},\"sealGBpsAll\":{seal_all:.3},\"sealInPlaceGBps1\":{seal_in_place_1:.3},\"sealInPlaceGBpsAll\":{seal_in_place_all:.3},\"openGBps1\":{open_1:.3},\"openGBpsAll\":{open_all:.3}}}",
        SegmentSize::DEFAULT.get()
    );
}
