//! SoftHSM2 for the HSM tests (`apt-get install softhsm2`, which `./scripts/test` does): where
//! its PKCS#11 module is, and fresh tokens for one test process. SoftHSM reads its
//! configuration once per process, at `C_Initialize`: call [`init_tokens`] first.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SoftHSM2 PKCS#11 module (`SOFTHSM2_MODULE`, or Debian's path).
pub fn module() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("SOFTHSM2_MODULE").unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into()));
    assert!(
        path.exists(),
        "SoftHSM2 is not installed ({} is missing): run ./scripts/test, which installs it",
        path.display()
    );
    path
}

/// Fresh SoftHSM2 tokens labelled `labels`, each with user PIN `pin`, kept in `dir`, for this
/// process.
pub fn init_tokens(dir: &Path, labels: &[&str], pin: &str) {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // Read by the module at C_Initialize, which has not happened yet in this process.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    for label in labels {
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin,
                "--so-pin",
                "12345678",
            ])
            .output()
            .expect("softhsm2-util runs (run ./scripts/test, which installs softhsm2)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
