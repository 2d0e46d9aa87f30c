//! End-to-end tests of the real `sealstore` binary: `serve` lifecycle, the `kms` commands
//! (directly on the store and through a running server), simulated time, and crash safety.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealstore")
}

/// A data directory for one test.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.env("SEALSTORE_DATA_DIR", self.data_dir())
            .envs(common::metadata_env(&self.data_dir()))
            .env_remove("SEALSTORE_CLOCK_OFFSET_DAYS")
            .args(args);
        c
    }

    /// Runs a command that must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "sealstore {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command with `--json` that must succeed; returns its JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Runs a command that must fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out: Output = self.cmd(args).output().unwrap();
        assert!(
            !out.status.success(),
            "sealstore {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn serve(&self) -> Server {
        let child = self
            .cmd(&[
                "serve",
                "--scheduler-interval-secs",
                "1",
                "--s3-listen",
                "127.0.0.1:0",
                "--kms-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let serve_json = self.data_dir().join("serve.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !serve_json.exists() {
            assert!(Instant::now() < deadline, "serve did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        let info: Value = serde_json::from_slice(&std::fs::read(&serve_json).unwrap()).unwrap();
        Server { child, info }
    }
}

struct Server {
    child: Child,
    info: Value,
}

impl Server {
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

fn vault_and_key(env: &Env, extra_key_args: &[&str]) -> (String, String) {
    let vault = s(&env.json(&["kms", "vault", "create", "--name", "apps"])["id"]);
    let mut args = vec!["kms", "key", "create", "--vault", &vault, "--name", "orders"];
    args.extend_from_slice(extra_key_args);
    let key = s(&env.json(&args)["id"]);
    (vault, key)
}

#[test]
fn serve_creates_defaults_stops_on_ctrl_c_and_reuses_them() {
    let env = Env::new();
    let mut server = env.serve();
    let (vault, key) = (s(&server.info["defaultVaultId"]), s(&server.info["defaultKeyId"]));
    assert!(vault.starts_with("ocid1.vault.") && key.starts_with("ocid1.key."));
    assert!(Path::new(&s(&server.info["adminSocket"])).exists());

    // While the server holds the store, the CLI goes through the admin socket.
    let status = env.json(&["kms", "status"]);
    assert_eq!(s(&status["defaultKeyId"]), key);
    let listed = env.json(&["kms", "vault", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(s(&listed[0]["id"]), vault);

    server.signal("-INT");
    assert!(
        server.wait(Duration::from_secs(15)).success(),
        "Ctrl-C must stop serve cleanly"
    );
    let mut stdout = String::new();
    std::io::Read::read_to_string(server.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(
        stdout.contains(&format!("default vault  {vault} (created)")),
        "{stdout}"
    );
    assert!(!env.data_dir().join("serve.json").exists());
    drop(server);

    let mut again = env.serve();
    assert_eq!(s(&again.info["defaultVaultId"]), vault);
    assert_eq!(s(&again.info["defaultKeyId"]), key);
    again.signal("-TERM");
    assert!(again.wait(Duration::from_secs(15)).success());
    let mut stdout = String::new();
    std::io::Read::read_to_string(again.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains(&format!("default key    {key} (using)")), "{stdout}");

    // The root key was created private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.data_dir().join("root.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn encrypt_decrypt_rotation_and_rewrap_from_the_cli() {
    let env = Env::new();
    let (_, key) = vault_and_key(&env, &[]);
    let aad = r#"{"tenant":"acme","app":"billing"}"#;
    let enc = env.json(&[
        "kms",
        "encrypt",
        "--key",
        &key,
        "--plaintext",
        "card 4242",
        "--associated-data",
        aad,
    ]);
    let (ct1, v1) = (s(&enc["ciphertext"]), s(&enc["keyVersionId"]));

    // Associated data in another key order is the same associated data.
    let raw = env.ok(&[
        "kms",
        "decrypt",
        "--raw",
        "--ciphertext",
        &ct1,
        "--associated-data",
        r#"{"app":"billing","tenant":"acme"}"#,
    ]);
    assert_eq!(raw, "card 4242");
    let err = env.fails(&[
        "kms",
        "decrypt",
        "--ciphertext",
        &ct1,
        "--associated-data",
        r#"{"tenant":"evil"}"#,
    ]);
    assert!(err.contains("authentication failed"), "{err}");
    let err = env.fails(&["kms", "decrypt", "--ciphertext", &ct1]);
    assert!(err.contains("authentication failed"), "{err}");

    // Without associated data.
    let enc = env.json(&["kms", "encrypt", "--key", &key, "--plaintext-base64", "AAEC/w=="]);
    let dec = env.json(&["kms", "decrypt", "--ciphertext", &s(&enc["ciphertext"])]);
    assert_eq!(s(&dec["plaintext"]), "AAEC/w==");

    // Rotation: new ciphertexts carry the new version, old ones still decrypt.
    let v2 = s(&env.json(&["kms", "key", "rotate", &key])["id"]);
    assert_ne!(v1, v2);
    assert_eq!(s(&env.json(&["kms", "key", "get", &key])["currentKeyVersion"]), v2);
    let enc2 = env.json(&[
        "kms",
        "encrypt",
        "--key",
        &key,
        "--plaintext",
        "new",
        "--associated-data",
        aad,
    ]);
    assert_eq!(s(&enc2["keyVersionId"]), v2);
    let dec1 = env.json(&["kms", "decrypt", "--ciphertext", &ct1, "--associated-data", aad]);
    assert_eq!(s(&dec1["keyVersionId"]), v1);

    // Rewrap moves the old ciphertext to the current version without exposing the plaintext.
    let rewrapped = env.json(&["kms", "rewrap", "--ciphertext", &ct1, "--associated-data", aad]);
    assert_eq!(s(&rewrapped["keyVersionId"]), v2);
    assert_ne!(s(&rewrapped["ciphertext"]), ct1);
    let raw = env.ok(&[
        "kms",
        "decrypt",
        "--raw",
        "--ciphertext",
        &s(&rewrapped["ciphertext"]),
        "--associated-data",
        aad,
    ]);
    assert_eq!(raw, "card 4242");

    let versions = env.json(&["kms", "key", "versions", &key]);
    let ids: Vec<String> = versions.as_array().unwrap().iter().map(|v| s(&v["id"])).collect();
    assert_eq!(ids, vec![v1.clone(), v2.clone()]);

    // Disabled key denies both directions; enabling restores.
    env.ok(&["kms", "key", "disable", &key]);
    let err = env.fails(&["kms", "encrypt", "--key", &key, "--plaintext", "x"]);
    assert!(err.contains("access denied") && err.contains("disabled"), "{err}");
    let err = env.fails(&["kms", "decrypt", "--ciphertext", &ct1, "--associated-data", aad]);
    assert!(err.contains("disabled"), "{err}");
    env.ok(&["kms", "key", "enable", &key]);

    // A disabled old version stops its ciphertexts; the primary cannot be disabled.
    env.ok(&["kms", "key", "disable-version", &key, &v1]);
    let err = env.fails(&["kms", "decrypt", "--ciphertext", &ct1, "--associated-data", aad]);
    assert!(err.contains(&v1) && err.contains("disabled"), "{err}");
    let err = env.fails(&["kms", "key", "disable-version", &key, &v2]);
    assert!(err.contains("primary version"), "{err}");
    env.ok(&["kms", "key", "enable-version", &key, &v1]);
    env.ok(&["kms", "decrypt", "--ciphertext", &ct1, "--associated-data", aad]);

    // Data keys: the wrapped form decrypts to the plaintext form.
    let dek = env.json(&["kms", "generate-dek", "--key", &key]);
    let unwrapped = env.json(&["kms", "decrypt", "--ciphertext", &s(&dek["ciphertext"])]);
    assert_eq!(unwrapped["plaintext"], dek["plaintext"]);
    assert_eq!(base64_len(&s(&dek["plaintext"])), 32);
    let wrapped_only = env.json(&["kms", "generate-dek", "--key", &key, "--no-plaintext"]);
    assert!(wrapped_only["plaintext"].is_null());

    let verify = env.ok(&["kms", "audit", "verify"]);
    assert!(verify.contains("audit log intact"), "{verify}");
}

fn base64_len(b64: &str) -> usize {
    let pad = b64.chars().rev().take_while(|c| *c == '=').count();
    b64.len() / 4 * 3 - pad
}

#[test]
fn bad_input_gets_clear_errors() {
    let env = Env::new();
    // Every policy resource is named where users look: `iam --help` and the refusal.
    assert!(env.ok(&["iam", "--help"]).contains("audit-events"));
    assert!(env
        .fails(&[
            "iam",
            "policy",
            "create",
            "p",
            "--statement",
            "Allow group G to read secrets in tenancy"
        ])
        .contains("audit-events"));
    let (vault, key) = vault_and_key(&env, &[]);
    assert!(env
        .fails(&["kms", "key", "get", "not-an-id"])
        .contains("is not a key id"));
    let missing = vault.replace("ocid1.vault.", "ocid1.key.");
    assert!(env.fails(&["kms", "key", "get", &missing]).contains("not found"));
    assert!(env
        .fails(&["kms", "decrypt", "--ciphertext", "%%%"])
        .contains("not valid base64"));
    assert!(env
        .fails(&["kms", "decrypt", "--ciphertext", "aGVsbG8="])
        .contains("not a sealstore KMS ciphertext"));
    let big = "x".repeat(4097);
    assert!(env
        .fails(&["kms", "encrypt", "--key", &key, "--plaintext", &big])
        .contains("at most 4096"));
    let err = env.fails(&[
        "kms",
        "encrypt",
        "--key",
        &key,
        "--plaintext",
        "x",
        "--associated-data",
        "[1]",
    ]);
    assert!(err.contains("JSON object of strings"), "{err}");
    let err = env.fails(&[
        "kms",
        "key",
        "create",
        "--vault",
        &vault,
        "--name",
        "k",
        "--auto-rotate-days",
        "30",
    ]);
    assert!(err.contains("60–365"), "{err}");
    assert!(env.fails(&["kms", "key", "enable", &key]).contains("not Disabled"));
}

#[test]
fn vault_deletion_window_cancel_and_purge_with_simulated_time() {
    let env = Env::new();
    let (vault, key) = vault_and_key(&env, &[]);
    let ct = s(&env.json(&["kms", "encrypt", "--key", &key, "--plaintext", "keep me"])["ciphertext"]);

    for days in ["6", "31"] {
        let err = env.fails(&["kms", "vault", "schedule-deletion", &vault, "--days", days]);
        assert!(err.contains("between 7 and 30 days"), "{days}: {err}");
    }
    let pending = env.json(&["kms", "vault", "schedule-deletion", &vault]);
    assert_eq!(s(&pending["lifecycleState"]), "PENDING_DELETION");
    let err = env.fails(&["kms", "decrypt", "--ciphertext", &ct]);
    assert!(err.contains("scheduled for deletion"), "{err}");
    let back = env.json(&["kms", "vault", "cancel-deletion", &vault]);
    assert_eq!(s(&back["lifecycleState"]), "ACTIVE");
    assert!(back["timeOfDeletion"].is_null());
    assert_eq!(env.ok(&["kms", "decrypt", "--raw", "--ciphertext", &ct]), "keep me");

    env.json(&["kms", "vault", "schedule-deletion", &vault, "--days", "7"]);
    // Six days later nothing happens; eight days later the vault is purged.
    let out = env.ok(&["kms", "run-scheduler", "--clock-offset-days", "6"]);
    assert!(out.contains("purged 0 vault(s)"), "{out}");
    let out = env.ok(&["kms", "run-scheduler", "--clock-offset-days", "8"]);
    assert!(out.contains("purged 1 vault(s)"), "{out}");
    assert_eq!(
        s(&env.json(&["kms", "vault", "get", &vault])["lifecycleState"]),
        "DELETED"
    );
    assert_eq!(s(&env.json(&["kms", "key", "get", &key])["lifecycleState"]), "DELETED");
    let err = env.fails(&["kms", "decrypt", "--ciphertext", &ct]);
    assert!(
        err.contains("has been deleted") && err.contains("cannot be recovered"),
        "{err}"
    );
    assert!(env
        .fails(&["kms", "vault", "cancel-deletion", &vault])
        .contains("not PENDING_DELETION"));
    // Still refused later, and after reopening.
    let err = env.fails(&["kms", "decrypt", "--ciphertext", &ct, "--clock-offset-days", "100"]);
    assert!(err.contains("has been deleted"), "{err}");
}

#[test]
fn auto_rotation_and_compliance_with_simulated_time() {
    let env = Env::new();
    let (_, key) = vault_and_key(&env, &["--auto-rotate-days", "60"]);
    let (_, manual) = vault_and_key(&env, &[]);
    let v1 = s(&env.json(&["kms", "key", "get", &key])["currentKeyVersion"]);

    let out = env.ok(&["kms", "run-scheduler", "--clock-offset-days", "59"]);
    assert!(out.contains("rotated 0 key(s)"), "{out}");
    let out = env.ok(&["kms", "run-scheduler", "--clock-offset-days", "61"]);
    assert!(out.contains("rotated 1 key(s)"), "{out}");
    let got = env.json(&["kms", "key", "get", &key]);
    assert_ne!(s(&got["currentKeyVersion"]), v1);
    assert_eq!(s(&got["autoKeyRotationDetails"]["lastRotationStatus"]), "SUCCEEDED");
    let versions = env.json(&["kms", "key", "versions", &key]);
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[1]["isAutoRotated"], Value::Bool(true));

    // 366 days on, the manually rotated key is out of compliance (the auto one too: its
    // last rotation was at day 61); after a rotation it is clean.
    let report = env.json(&["kms", "compliance", "--clock-offset-days", "366"]);
    let flagged: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| s(&f["keyId"]))
        .collect();
    assert!(flagged.contains(&manual), "{report}");
    let text = env.ok(&["kms", "compliance", "--clock-offset-days", "366"]);
    assert!(text.contains(&format!("sealstore kms key rotate {manual}")), "{text}");
    env.ok(&["kms", "key", "rotate", &manual, "--clock-offset-days", "366"]);
    let report = env.json(&["kms", "compliance", "--clock-offset-days", "366"]);
    assert!(
        !report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| s(&f["keyId"]) == manual),
        "{report}"
    );
    // Today, nothing is old.
    let report = env.json(&["kms", "compliance"]);
    assert_eq!(report["findings"].as_array().unwrap().len(), 0, "{report}");
}

/// kill -9 of the server while clients create keys as fast as they can: every key whose
/// creation was acknowledged is there after restart, and the store and audit chain are sound.
#[test]
fn store_survives_kill_9_during_key_creation() {
    let env = Env::new();
    let server = env.serve();
    let vault = s(&server.info["defaultVaultId"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (dir, vault, stop) = (env.data_dir(), vault.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let out = Command::new(bin())
                        .env("SEALSTORE_DATA_DIR", &dir)
                        .envs(common::metadata_env(&dir))
                        .args([
                            "kms",
                            "key",
                            "create",
                            "--vault",
                            &vault,
                            "--name",
                            &format!("k{w}-{i}"),
                            "--json",
                        ])
                        .output()
                        .unwrap();
                    if !out.status.success() {
                        break; // the server died under us
                    }
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                    acknowledged.push(s(&v["id"]));
                }
                acknowledged
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.signal("-KILL");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acknowledged: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    drop(server);
    eprintln!("{} key creations acknowledged before kill -9", acknowledged.len());
    assert!(
        acknowledged.len() >= 3,
        "too few keys were created before the kill: {}",
        acknowledged.len()
    );

    // The stale socket is ignored: the CLI opens the store directly.
    let keys = env.json(&["kms", "key", "list", "--vault", &vault]);
    let present: std::collections::HashSet<String> = keys.as_array().unwrap().iter().map(|k| s(&k["id"])).collect();
    for id in &acknowledged {
        assert!(present.contains(id), "acknowledged key {id} was lost");
    }
    for k in keys.as_array().unwrap() {
        let versions = env.json(&["kms", "key", "versions", &s(&k["id"])]);
        assert_eq!(versions.as_array().unwrap().len(), 1, "every key has its first version");
    }
    assert!(env.ok(&["kms", "audit", "verify"]).contains("audit log intact"));
    // And the store works normally after the crash.
    let (_, key) = vault_and_key(&env, &[]);
    let ct = s(&env.json(&["kms", "encrypt", "--key", &key, "--plaintext", "after crash"])["ciphertext"]);
    assert_eq!(env.ok(&["kms", "decrypt", "--raw", "--ciphertext", &ct]), "after crash");
}

/// `kms audit verify` passes on an untouched log and fails — naming the entry — after one
/// entry is edited directly in the database file.
#[test]
fn audit_verify_detects_an_edited_entry() {
    let env = Env::new();
    let (_, key) = vault_and_key(&env, &[]);
    env.ok(&["kms", "encrypt", "--key", &key, "--plaintext", "x"]);
    env.fails(&["kms", "key", "enable", &key]); // a failed call is audited too
    let entries = env.json(&["kms", "audit", "list"]);
    let ops: Vec<String> = entries.as_array().unwrap().iter().map(|e| s(&e["operation"])).collect();
    assert_eq!(ops, ["CreateVault", "CreateKey", "Encrypt", "EnableKey"]);
    assert_eq!(s(&entries[3]["result"]), "FAILED");
    let verified = env.ok(&["kms", "audit", "verify"]);
    assert!(verified.contains("audit log intact: 4 entries verified"), "{verified}");
    // The head hash printed for external anchoring is the last entry's hash.
    assert!(
        verified.contains(&format!("head hash {}", s(&entries[3]["hash"]))),
        "{verified}"
    );

    let edit = |row: &[u8]| {
        String::from_utf8(row.to_vec())
            .unwrap()
            .replace("\"CreateKey\"", "\"GetKey\"")
    };
    if let Some(kv) = common::postgres_rows(&env.data_dir()) {
        let audit = kms_core::internals::schema::AUDIT.name();
        let row = kv.get("kms", audit, &2u64.to_be_bytes()).expect("audit entry 2");
        kv.put("kms", audit, &2u64.to_be_bytes(), edit(&row).as_bytes());
    } else {
        let db = redb::Database::open(env.data_dir().join("kms.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            use redb::ReadableTable;
            let mut table = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new(
                    kms_core::internals::schema::AUDIT.name(),
                ))
                .unwrap();
            let edited = edit(table.get(2).unwrap().unwrap().value());
            table.insert(2, edited.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    }
    let out = env.cmd(&["kms", "audit", "verify"]).output().unwrap();
    assert!(!out.status.success(), "verify must fail after an edit");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("BROKEN after 1 good entries") && stdout.contains("entry 2 was modified"),
        "{stdout}"
    );
}

#[test]
fn volume_create_import_export_check_delete() {
    let env = Env::new();
    env.ok(&["volume", "create", "disk", "--size", "8M"]);
    let list = env.json(&["volume", "list"]);
    assert_eq!(list[0]["name"], "disk");
    assert_eq!(list[0]["size"], 8 << 20);

    let image = env.dir.path().join("image.raw");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&image, &data).unwrap();
    env.ok(&["volume", "import", "disk", image.to_str().unwrap()]);
    let back = env.dir.path().join("back.raw");
    env.ok(&["volume", "export", "disk", back.to_str().unwrap()]);
    let exported = std::fs::read(&back).unwrap();
    assert_eq!(exported.len(), 8 << 20);
    assert_eq!(&exported[..data.len()], data.as_slice());
    assert!(exported[data.len()..].iter().all(|b| *b == 0));

    let info = env.json(&["volume", "info", "disk"]);
    assert_eq!(info["extents"], 8);
    assert_eq!(info["generations"][0]["extents"], 8);
    assert!(env.ok(&["volume", "check", "disk"]).contains("consistent"));
    assert!(env.ok(&["volume", "rotate", "disk"]).contains("generation 1"));
    let info = env.json(&["volume", "info", "disk"]);
    assert_eq!(info["generations"][0]["extents"], 8);
    assert_eq!(info["generations"][1]["extents"], 0);

    // Clear errors: a duplicate, a bad size, an image larger than the volume, a missing volume.
    assert!(env
        .fails(&["volume", "create", "disk", "--size", "8M"])
        .contains("already exists"));
    assert!(env
        .fails(&["volume", "create", "odd", "--size", "1000"])
        .contains("multiple of 4096"));
    let big = env.dir.path().join("big.raw");
    std::fs::write(&big, vec![1u8; (8 << 20) + 1]).unwrap();
    assert!(env
        .fails(&["volume", "import", "disk", big.to_str().unwrap()])
        .contains("larger than"));
    env.ok(&["volume", "delete", "disk"]);
    assert!(env.fails(&["volume", "info", "disk"]).contains("does not exist"));
}

#[test]
fn object_import_shows_bytes_rate_and_objects_at_a_terminal() {
    let env = Env::new();
    let help = env.ok(&["object", "import", "--help"]);
    assert!(
        help.contains("Bucket to upload into") && help.contains("Directory whose files"),
        "{help}"
    );
    let src = env.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big.bin"), vec![7u8; 6 << 20]).unwrap();
    std::fs::write(src.join("sub/small.txt"), b"small").unwrap();
    env.ok(&["object", "mb", "bulk-bucket"]);
    // At a terminal (a pseudo-terminal from util-linux `script`), the bar counts bytes.
    let command = format!("{} object import bulk-bucket {}", bin(), src.display());
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SEALSTORE_DATA_DIR", env.data_dir())
        .envs(common::metadata_env(&env.data_dir()))
        .output()
        .expect("util-linux script runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("6.00 MiB/6.00 MiB"), "{shown}");
    assert!(shown.contains("/s, ETA") && shown.contains("2/2 objects"), "{shown}");
    // Tables show sizes people read; --json the exact bytes.
    let inventory = env.ok(&["object", "inventory"]);
    assert!(
        inventory.contains("SIZE") && inventory.contains("6.00 MiB"),
        "{inventory}"
    );
    assert!(!inventory.contains("6291461"), "{inventory}");
    assert!(env.ok(&["--json", "object", "inventory"]).contains("6291461"));
}

#[test]
fn help_shows_each_group_of_global_options_once_where_it_applies() {
    let env = Env::new();
    // A command of one option: its option, the data directory, --json, help and version.
    for command in [
        &["iam", "user", "set-password", "--help"][..],
        &["iam", "group", "list", "--help"],
        &["s3", "--help"],
        &["kms", "vault", "list", "--help"],
    ] {
        let help = env.ok(command);
        assert!(
            help.lines().count() <= 20,
            "{command:?}: {} lines\n{help}",
            help.lines().count()
        );
        assert!(
            help.contains("Data directory:") && help.contains("--data-dir"),
            "{help}"
        );
        assert!(
            !help.contains("--kms-endpoint") && !help.contains("Remote KMS"),
            "{help}"
        );
    }
    let iam = env.ok(&["iam", "user", "set-password", "--help"]);
    assert!(
        !iam.contains("--pkcs11-module") && !iam.contains("--ekm-ca-cert"),
        "{iam}"
    );
    // The key commands may create and use HSM and EXTERNAL keys, not remote ones.
    let kms = env.ok(&["kms", "key", "create", "--help"]);
    assert!(
        kms.contains("HSM (PKCS#11):") && kms.contains("External key manager:"),
        "{kms}"
    );
    assert!(
        !kms.contains("--kms-endpoint") && !kms.contains("--object-backend"),
        "{kms}"
    );
    // The server takes them all, each group once under its heading.
    let serve = env.ok(&["serve", "--help"]);
    for heading in [
        "Data directory:",
        "Object storage:",
        "Remote KMS:",
        "HSM (PKCS#11):",
        "External key manager:",
    ] {
        assert_eq!(serve.matches(heading).count(), 1, "{heading}\n{serve}");
    }
    let defined = |option: &str| serve.lines().filter(|l| l.trim_start().starts_with(option)).count();
    assert_eq!(defined("--kms-endpoint <URL>"), 1, "{serve}");
    assert_eq!(defined("--data-dir <DIR>"), 1, "{serve}");
    assert!(!serve.contains("--json"), "{serve}");
    // The top level lists every group.
    let top = env.ok(&["--help"]);
    assert!(top.contains("Remote KMS:") && top.contains("Output:"), "{top}");

    // Hidden is not refused: options and variables still parse on every command, before or
    // after it, as scripts pass them.
    env.ok(&["iam", "user", "add", "alice"]);
    let listed = env.ok(&[
        "--pkcs11-sessions",
        "4",
        "iam",
        "user",
        "list",
        "--kms-profile",
        "OTHER",
    ]);
    assert!(listed.contains("alice"), "{listed}");
    let out = env
        .cmd(&["iam", "user", "list", "--json"])
        .env("SEALSTORE_KMS_PROFILE", "OTHER")
        .env("SEALSTORE_PKCS11_SESSIONS", "2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(env.ok(&["--json", "iam", "user", "list"]).trim_start().starts_with('['));
    // A bad value of a hidden option is still checked.
    assert!(env
        .fails(&["iam", "user", "list", "--pkcs11-sessions", "0"])
        .contains("pkcs11-sessions"));
}

#[test]
fn bench_counts_its_steps_with_an_eta_at_a_terminal_and_no_escapes_otherwise() {
    let env = Env::new();
    let command = format!("{} bench crypto --quick", bin());
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SEALSTORE_DATA_DIR", env.data_dir())
        .envs(common::metadata_env(&env.data_dir()))
        .output()
        .expect("util-linux script runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    let counted = shown.split("crypto: ").skip(1).any(|rest| {
        let (done, rest) = rest.split_once('/').unwrap_or_default();
        let (total, rest) = rest.split_once(' ').unwrap_or_default();
        done.parse::<u32>().is_ok() && total.parse::<u32>().is_ok_and(|n| n > 1) && rest.starts_with("steps, ETA")
    });
    assert!(counted, "{shown}");
    // Redirected, neither the progress nor the tables carry escape codes.
    let out = env.cmd(&["bench", "crypto", "--quick"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for stream in [&out.stdout, &out.stderr] {
        assert!(!stream.contains(&0x1b), "{}", String::from_utf8_lossy(stream));
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("AES-256-GCM"));
}
