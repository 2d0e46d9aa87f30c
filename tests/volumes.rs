//! Encrypted volumes through the library: sparse creation, aligned and unaligned I/O, holes
//! reading as zeros, no plaintext in the file, a damaged header copy survived, reopening with
//! the KMS, and the on-disk layout of `docs/FORMATS.md`.

mod common;

use std::sync::Arc;

use kms_core::{Defaults, KeyProvider, Kms, Principal};
use sealstore::block::{Volume, VolumeError};
use sealstore::crypto::xts::{Xts, XtsKey};
use sealstore::internals::{check, read_header};
use sealstore_format::volume::{VolumeHeader, SLOT_LEN};

struct Fixture {
    dir: tempfile::TempDir,
    keys: Arc<dyn KeyProvider>,
    defaults: Defaults,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(Kms::open(common::kms_config(&dir.path().join("kms"))).unwrap());
    let defaults = kms.ensure_defaults(&Principal::local_admin()).unwrap();
    Fixture {
        dir,
        keys: kms as Arc<dyn KeyProvider>,
        defaults,
    }
}

#[test]
fn sparse_volume_reads_zeros_and_round_trips_any_alignment() {
    let f = fixture();
    let vols = f.dir.path().join("volumes");
    let size = 64 << 20;
    let vol = Volume::create(&vols, "disk", size, &f.keys, &f.defaults.key.id).unwrap();
    assert!(vol.allocated().unwrap() < 1 << 20, "a new volume is sparse");

    let mut buf = vec![0xffu8; 10_000];
    vol.read_at(12_345, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0), "unwritten sectors read as zeros");

    // Aligned, unaligned, across sectors and across an extent boundary.
    let marker = b"SEALSTORE-VOLUME-PLAINTEXT-MARKER".repeat(300);
    for offset in [0u64, 4096, 1, 4095, (1 << 20) - 7, size - marker.len() as u64] {
        vol.write_at(offset, &marker).unwrap();
        let mut back = vec![0u8; marker.len()];
        vol.read_at(offset, &mut back).unwrap();
        assert_eq!(back, marker, "offset {offset}");
    }
    // A partial write keeps the rest of its sector.
    vol.write_at(8192, &[7u8; 4096]).unwrap();
    vol.write_at(8192 + 100, b"xyz").unwrap();
    let mut sector = vec![0u8; 4096];
    vol.read_at(8192, &mut sector).unwrap();
    assert_eq!(&sector[..100], &[7u8; 100]);
    assert_eq!(&sector[100..103], b"xyz");
    assert_eq!(&sector[103..], &[7u8; 3993]);
    vol.flush().unwrap();

    let out_of_range = vol.write_at(size - 10, &[0u8; 20]).unwrap_err();
    assert!(matches!(out_of_range, VolumeError::OutOfRange { .. }));

    // No plaintext in the file.
    let raw = std::fs::read(vols.join("disk.vol")).unwrap();
    assert!(!raw.windows(33).any(|w| w == b"SEALSTORE-VOLUME-PLAINTEXT-MARKER"));

    // Reopened through the KMS, the data is there.
    drop(vol);
    let vol = Volume::open(&vols.join("disk.vol"), &f.keys).unwrap();
    let mut back = vec![0u8; marker.len()];
    vol.read_at(1, &mut back).unwrap();
    assert_eq!(&back[..4094], &marker[..4094]);
    assert!(check(&vols.join("disk.vol"), false).unwrap().contains("consistent"));
}

#[test]
fn in_place_writes_match_copying_writes_at_any_alignment() {
    let f = fixture();
    let vols = f.dir.path().join("volumes");
    let size = 8 << 20;
    let copying = Volume::create(&vols, "copying", size, &f.keys, &f.defaults.key.id).unwrap();
    let in_place = Volume::create(&vols, "in-place", size, &f.keys, &f.defaults.key.id).unwrap();
    let data: Vec<u8> = (0..(3 << 20) + 12_345).map(|i: u32| (i * 7 % 251) as u8).collect();
    // Aligned (the in-place path), unaligned, and across extent boundaries.
    for offset in [0u64, 4096, (1 << 20) - 4096, 3, (2 << 20) + 100] {
        let piece = &data[..data.len().min((size - offset) as usize)];
        copying.write_at(offset, piece).unwrap();
        let mut scratch = piece.to_vec();
        in_place.write_at_in_place(offset, &mut scratch).unwrap();
        let (mut a, mut b) = (vec![0u8; size as usize], vec![0u8; size as usize]);
        copying.read_at(0, &mut a).unwrap();
        in_place.read_at(0, &mut b).unwrap();
        assert!(a == b, "offset {offset}: the volumes differ");
        let mut back = vec![0u8; piece.len()];
        in_place.read_at(offset, &mut back).unwrap();
        assert!(back == piece, "offset {offset}: wrong data read back");
    }
}

#[test]
fn a_damaged_header_copy_is_survived_and_both_damaged_is_refused() {
    let f = fixture();
    let vols = f.dir.path().join("volumes");
    let vol = Volume::create(&vols, "h", 8 << 20, &f.keys, &f.defaults.key.id).unwrap();
    vol.write_at(0, b"still here").unwrap();
    drop(vol);
    let path = vols.join("h.vol");
    let mut raw = std::fs::read(&path).unwrap();
    raw[20] ^= 0xff; // slot A
    std::fs::write(&path, &raw).unwrap();
    let vol = Volume::open(&path, &f.keys).unwrap();
    let mut back = [0u8; 10];
    vol.read_at(0, &mut back).unwrap();
    assert_eq!(&back, b"still here");
    drop(vol);
    raw[SLOT_LEN as usize + 20] ^= 0xff; // slot B too
    std::fs::write(&path, &raw).unwrap();
    let err = Volume::open(&path, &f.keys).unwrap_err().to_string();
    assert!(err.contains("both header copies"), "{err}");
}

#[test]
fn check_reports_a_damaged_or_stale_header_copy_and_repair_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(Kms::open(common::kms_config(&dir.path().join("kms"))).unwrap());
    let me = Principal::local_admin();
    let key = kms.ensure_defaults(&me).unwrap().key;
    let keys = kms.clone() as Arc<dyn KeyProvider>;
    let vols = dir.path().join("volumes");
    let path = vols.join("c.vol");
    let vol = Volume::create(&vols, "c", 8 << 20, &keys, &key.id).unwrap();
    vol.write_at(0, b"kept").unwrap();
    // The master key rotates; the volume moves every extent to a new generation under it.
    let old_version = key.current_key_version.clone();
    kms.create_key_version(&me, &key.id).unwrap();
    vol.rotate(&keys).unwrap();
    let mut from = 0;
    while let Some(extent) = vol.reencrypt_next(from).unwrap() {
        from = extent + 1;
    }
    vol.flush().unwrap();
    // Before the drop: generations 0 and 1 (this copy will play a stale slot below).
    let before_drop = std::fs::read(&path).unwrap()[..SLOT_LEN as usize].to_vec();
    assert_eq!(vol.drop_unused_generations().unwrap().len(), 1);
    drop(vol);
    // Both copies are rewritten: no copy keeps the dropped generation's wrapped key.
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(raw[..SLOT_LEN as usize], raw[SLOT_LEN as usize..2 * SLOT_LEN as usize]);
    assert!(check(&path, false)
        .unwrap()
        .contains("both header copies valid and the same"));
    kms.disable_key_version(&me, &key.id, &old_version, true).unwrap();

    // A damaged copy is reported (not silently replaced), and repaired from the other.
    let mut damaged = raw.clone();
    damaged[SLOT_LEN as usize + 40] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    let err = check(&path, false).unwrap_err().to_string();
    assert!(
        err.contains("header copy B is damaged") && err.contains("--repair"),
        "{err}"
    );
    let fixed = check(&path, true).unwrap();
    assert!(
        fixed.contains("repaired from copy A") && fixed.contains("consistent"),
        "{fixed}"
    );
    assert!(check(&path, false).unwrap().contains("the same"));

    // A stale copy naming the dropped generation (whose key version is now disabled) is
    // reported; with the good copy damaged, the volume still opens on it: no extent uses the
    // dropped generation, so its key is not needed.
    let mut stale = raw.clone();
    stale[SLOT_LEN as usize..2 * SLOT_LEN as usize].copy_from_slice(&before_drop);
    stale[40] ^= 0xff;
    std::fs::write(&path, &stale).unwrap();
    let err = check(&path, false).unwrap_err().to_string();
    assert!(err.contains("header copy A is damaged"), "{err}");
    let vol = Volume::open(&path, &keys).unwrap();
    let mut back = [0u8; 4];
    vol.read_at(0, &mut back).unwrap();
    assert_eq!(&back, b"kept");
    drop(vol);
    let mut stale_only = raw.clone();
    stale_only[SLOT_LEN as usize..2 * SLOT_LEN as usize].copy_from_slice(&before_drop);
    std::fs::write(&path, &stale_only).unwrap();
    let err = check(&path, false).unwrap_err().to_string();
    assert!(err.contains("header copy B is stale"), "{err}");
}

#[test]
fn discard_reads_back_zeros_frees_space_and_keeps_the_edges() {
    let f = fixture();
    let vols = f.dir.path().join("volumes");
    let vol = Volume::create(&vols, "d", 8 << 20, &f.keys, &f.defaults.key.id).unwrap();
    vol.write_at(0, &vec![0x77u8; 8 << 20]).unwrap();
    vol.flush().unwrap();
    let full = vol.allocated().unwrap();
    // Unaligned on both ends, across extents.
    let (at, len) = ((1 << 20) + 100, (4 << 20) - 200);
    vol.discard(at, len).unwrap();
    vol.flush().unwrap();
    let mut back = vec![0xffu8; 8 << 20];
    vol.read_at(0, &mut back).unwrap();
    let (at, len) = (at as usize, len as usize);
    assert!(back[..at].iter().all(|b| *b == 0x77));
    assert!(back[at..at + len].iter().all(|b| *b == 0));
    assert!(back[at + len..].iter().all(|b| *b == 0x77));
    let freed = full - vol.allocated().unwrap();
    // The edge sectors stay allocated; file systems may keep a block or two more.
    assert!(freed >= (4 << 20) - 4 * 4096, "freed {freed} bytes of {full}");
    // After a rotation the holes still read as zeros, and survive reopening.
    vol.rotate(&f.keys).unwrap();
    drop(vol);
    let vol = Volume::open(&vols.join("d.vol"), &f.keys).unwrap();
    let mut again = vec![0xffu8; 8 << 20];
    vol.read_at(0, &mut again).unwrap();
    assert_eq!(again, back);
}

#[test]
fn layout_follows_the_spec() {
    // docs/FORMATS.md, "Encrypted volume": slot A at 0, slot B at 64 KiB, the journal at the
    // first MiB boundary after the extent map (1 MiB + one byte per extent), data at the
    // first MiB boundary after the journal (4 KiB + one extent), sector n at data + 4096·n, encrypted with AES-256-XTS under tweak n with the key derived as
    // documented. Re-derive the key independently and decrypt a sector from the raw file.
    let f = fixture();
    let vols = f.dir.path().join("volumes");
    let vol = Volume::create(&vols, "spec", 3 << 20, &f.keys, &f.defaults.key.id).unwrap();
    let plain = vec![0x42u8; 4096];
    vol.write_at(5 * 4096, &plain).unwrap();
    drop(vol);
    let path = vols.join("spec.vol");
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(&raw[0..4], b"SSVL");
    assert_eq!(&raw[SLOT_LEN as usize..SLOT_LEN as usize + 4], b"SSVL");
    let header = read_header(&path).unwrap();
    assert_eq!(header.data_offset(), 4 << 20);
    assert_eq!(raw.len() as u64, (4 << 20) + (3 << 20));
    assert_eq!(VolumeHeader::parse(&raw[..SLOT_LEN as usize]).unwrap(), header);

    use base64::Engine;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(&header.generations[0].wrapped_dek)
        .unwrap();
    let aad = format!("sealstore volume v1\0{}\0{}", header.uuid, 0);
    let dek = f.keys.unwrap_data_key(&wrapped, aad.as_bytes()).unwrap();
    let prk = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, header.uuid.as_bytes()).extract(dek.expose());
    struct L;
    impl aws_lc_rs::hkdf::KeyType for L {
        fn len(&self) -> usize {
            64
        }
    }
    let mut key = [0u8; 64];
    prk.expand(&[b"sealstore volume xts v1".as_slice(), &[0u8]], L)
        .unwrap()
        .fill(&mut key)
        .unwrap();
    let at = (4 << 20) + 5 * 4096;
    let mut sector = raw[at..at + 4096].to_vec();
    Xts::new(&XtsKey::from_bytes(&key).unwrap())
        .unwrap()
        .decrypt_sectors(5, &mut sector)
        .unwrap();
    assert_eq!(sector, plain);
}

fn pattern(extent: u64, round: u8) -> Vec<u8> {
    (0..(1u64 << 20))
        .map(|i| (i as u8) ^ (extent as u8).wrapping_mul(31) ^ round)
        .collect()
}

#[test]
fn rotation_is_lazy_per_extent_and_the_sweep_finishes_it() {
    let f = fixture();
    let vols = f.dir.path().join("volumes");
    let vol = Volume::create(&vols, "rot", 8 << 20, &f.keys, &f.defaults.key.id).unwrap();
    for e in 0..7 {
        vol.write_at(e << 20, &pattern(e, 0)).unwrap();
    }
    // Extent 7 stays a hole.
    let new = vol.rotate(&f.keys).unwrap();
    assert_eq!(new, 1);
    assert_eq!(vol.extents_per_generation(), [(0, 8), (1, 0)].into());

    // Writes touch extents 2 (partly) and 5 (whole): only they move.
    vol.write_at((2 << 20) + 1000, b"new bytes").unwrap();
    vol.write_at(5 << 20, &pattern(5, 1)).unwrap();
    assert_eq!(vol.extents_per_generation(), [(0, 6), (1, 2)].into());
    assert_eq!(vol.generation_of(2), 1);
    assert_eq!(vol.generation_of(3), 0);
    let mut expected: Vec<Vec<u8>> = (0..7).map(|e| pattern(e, 0)).collect();
    expected[2][1000..1009].copy_from_slice(b"new bytes");
    expected[5] = pattern(5, 1);
    expected.push(vec![0u8; 1 << 20]);
    let check_all = |vol: &Volume| {
        for (e, want) in expected.iter().enumerate() {
            let mut got = vec![0u8; 1 << 20];
            vol.read_at((e as u64) << 20, &mut got).unwrap();
            assert!(got == *want, "extent {e} differs");
        }
    };
    check_all(&vol);

    // Reopened, the map is the same.
    drop(vol);
    let vol = Volume::open(&vols.join("rot.vol"), &f.keys).unwrap();
    assert_eq!(vol.extents_per_generation(), [(0, 6), (1, 2)].into());

    // The sweep moves the rest; then generation 0 can go, and reads still work.
    let mut from = 0;
    while let Some(e) = vol.reencrypt_next(from).unwrap() {
        from = e + 1;
    }
    assert_eq!(vol.extents_per_generation(), [(0, 0), (1, 8)].into());
    let dropped = vol.drop_unused_generations().unwrap();
    assert_eq!(dropped.iter().map(|g| g.id).collect::<Vec<_>>(), vec![0]);
    check_all(&vol);
    drop(vol);
    let vol = Volume::open(&vols.join("rot.vol"), &f.keys).unwrap();
    assert_eq!(vol.header().generations.len(), 1);
    check_all(&vol);
    assert!(vol.allocated().unwrap() < 9 << 20, "the hole stayed a hole");
}

#[test]
fn a_crash_at_each_step_of_an_extent_reencryption_is_recovered() {
    for step in 1..=3u8 {
        let f = fixture();
        let vols = f.dir.path().join("volumes");
        let vol = Volume::create(&vols, "crash", 4 << 20, &f.keys, &f.defaults.key.id).unwrap();
        for e in 0..4 {
            vol.write_at(e << 20, &pattern(e, 0)).unwrap();
        }
        vol.rotate(&f.keys).unwrap();
        vol.inject_crash_after(step);
        let mut new = pattern(3, 9);
        new.truncate(5000);
        assert!(vol.write_at((3 << 20) + 10, &new).is_err(), "step {step}");
        drop(vol); // the process "dies" here: nothing else is written

        let vol = Volume::open(&vols.join("crash.vol"), &f.keys).unwrap();
        // The journal was complete, so the re-encryption is finished on open.
        assert_eq!(vol.generation_of(3), 1, "step {step}");
        let mut got = vec![0u8; 1 << 20];
        vol.read_at(3 << 20, &mut got).unwrap();
        let mut want = pattern(3, 0);
        want[10..10 + new.len()].copy_from_slice(&new);
        assert!(got == want, "step {step}: extent 3 is neither old nor new");
        for e in 0..3 {
            vol.read_at(e << 20, &mut got).unwrap();
            assert!(got == pattern(e, 0), "step {step}: extent {e}");
        }
        assert!(check(&vols.join("crash.vol"), false).unwrap().contains("consistent"));
    }

    // A torn journal (crash while writing it) is ignored: the extent keeps its old contents.
    let f = fixture();
    let vols = f.dir.path().join("volumes");
    let vol = Volume::create(&vols, "torn", 4 << 20, &f.keys, &f.defaults.key.id).unwrap();
    vol.write_at(3 << 20, &pattern(3, 0)).unwrap();
    vol.rotate(&f.keys).unwrap();
    vol.inject_crash_after(1);
    assert!(vol.write_at(3 << 20, b"lost").is_err());
    let journal_data = vol.header().journal_offset() + 4096 + 100;
    drop(vol);
    let mut raw = std::fs::read(vols.join("torn.vol")).unwrap();
    raw[journal_data as usize] ^= 1;
    std::fs::write(vols.join("torn.vol"), &raw).unwrap();
    let vol = Volume::open(&vols.join("torn.vol"), &f.keys).unwrap();
    assert_eq!(vol.generation_of(3), 0);
    let mut got = vec![0u8; 1 << 20];
    vol.read_at(3 << 20, &mut got).unwrap();
    assert!(got == pattern(3, 0));
}

#[test]
fn one_process_at_a_time() {
    let f = fixture();
    let vols = f.dir.path().join("volumes");
    let vol = Volume::create(&vols, "locked", 1 << 20, &f.keys, &f.defaults.key.id).unwrap();
    let err = Volume::open(&vols.join("locked.vol"), &f.keys).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    drop(vol);
    Volume::open(&vols.join("locked.vol"), &f.keys).unwrap();
}
