//! A block volume in-process: a sparse file whose 4 KiB sectors are sealed with AES-256-XTS,
//! its data key wrapped by an embedded kms-core. Writes and reads sectors, rotates the master
//! key and the volume's data key, and shows an extent moving to the new generation on its
//! next write (lazily), then the rest with a sweep.
//!
//! ```sh
//! cargo run --example volume
//! ```
//!
//! `sealstore serve --nbd-listen` serves the same volumes to qemu, nbdcopy, fio or the kernel.

use std::sync::Arc;

use kms_core::{CreateKey, CreateVault, KeyProvider, Kms, KmsConfig, Principal};
use sealstore::block::Volume;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let kms = Arc::new(Kms::open(KmsConfig::new(dir.path().join("kms")))?);
    let me = Principal::local_admin();
    let vault = kms.create_vault(
        &me,
        CreateVault {
            display_name: "volumes".into(),
            ..Default::default()
        },
    )?;
    let key = kms.create_key(&me, CreateKey::new(vault.id, "disks"))?;
    let keys: Arc<dyn KeyProvider> = kms.clone();

    let volume = Volume::create(dir.path(), "disk", 64 << 20, &keys, &key.id)?;
    println!(
        "volume of {} MiB, generation {}",
        volume.size() >> 20,
        volume.current_generation()
    );

    // Two extents (1 MiB each) written: extent 0 and extent 5.
    let sector = vec![0xabu8; 4096];
    volume.write_at(0, &sector)?;
    volume.write_at(5 << 20, &sector)?;
    let mut back = vec![0u8; 4096];
    volume.read_at(5 << 20, &mut back)?;
    assert_eq!(back, sector);
    volume.read_at(1 << 20, &mut back)?;
    assert!(back.iter().all(|&b| b == 0), "never written: reads as zeros");
    println!("extents per generation: {:?}", volume.extents_per_generation());

    // A rotation of the master key, followed by the volume: a new data-key generation.
    kms.create_key_version(&me, &key.id)?;
    let new = volume
        .rotate_if_key_rotated(&keys)?
        .ok_or("the volume did not follow the key's rotation")?;
    assert_eq!(volume.current_generation(), new);

    // The next write of extent 0 re-encrypts it under the new generation; extent 5 waits.
    volume.write_at(4096, &sector)?;
    assert_eq!(volume.generation_of(0), new);
    assert_ne!(volume.generation_of(5), new);
    println!(
        "after one write under generation {new}: {:?}",
        volume.extents_per_generation()
    );

    // The sweep moves the rest; then the old generation protects nothing and is dropped.
    let (moved, _) = volume.reencrypt_all(0, |_| true)?;
    let dropped = volume.drop_unused_generations()?;
    volume.read_at(5 << 20, &mut back)?;
    assert_eq!(back, sector, "same bytes under the new generation");
    println!(
        "sweep moved {moved} extent(s); dropped generation(s) {:?}; now {:?}",
        dropped.iter().map(|g| g.id).collect::<Vec<_>>(),
        volume.extents_per_generation()
    );
    volume.flush()?;
    Ok(())
}
