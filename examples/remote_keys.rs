//! Data keys from another machine's sealstore: a running `sealstore serve` holds the master
//! key, and this program — as a data path on a second machine would — asks its KMS API for
//! data keys with OCI-signed requests (`sealstore::remote::RemoteKms`, the same
//! client `sealstore serve --kms-endpoint` uses). It encrypts with the data key locally, keeps
//! only the wrapped copy, and unwraps it again through the API; then shows what is refused:
//! other associated data, a user with no policy on the key, and the key once disabled.
//!
//! ```sh
//! cargo build --bin sealstore && cargo run --example remote_keys
//! ```
//!
//! The example starts its own `sealstore serve` on a temporary data directory and free ports,
//! and stops it at the end. It runs the binary named by `SEALSTORE_BIN` or, without it, the
//! `sealstore` that Cargo built beside this example (`target/<profile>/sealstore`): build
//! that first. The server side (user, API key, policy, key) is set up with the CLI, as an
//! administrator would; the client side needs only the endpoint and an OCI config profile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use kms_core::{KeyProvider, Ocid, ResourceType};
use sealstore::crypto::gcm::{GcmKey, NONCE_LEN};
use sealstore::remote::{RemoteConfig, RemoteKms};
use serde_json::Value;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let bin = sealstore_binary()?;
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("keys-server");

    // Machine A: the key server.
    let server = Server::start(&bin, &data_dir)?;
    let admin = |args: &[&str]| sealstore_json(&bin, &data_dir, args);
    let status = admin(&["kms", "status"])?;
    let tenancy = field(&status, "tenancyId")?;
    let vault = field(&status, "defaultVaultId")?;
    let key = field(
        &admin(&["kms", "key", "create", "--vault", &vault, "--name", "remote-data"])?,
        "id",
    )?;
    // The data path's user may use keys (crypto calls), nothing more; a second user has no
    // policy at all.
    admin(&["iam", "group", "create", "data-path"])?;
    admin(&[
        "iam",
        "policy",
        "create",
        "data-path-keys",
        "--statement",
        "Allow group data-path to use key-family in tenancy",
    ])?;
    let config_file = dir.path().join("oci-config");
    let mut config = String::new();
    for (user, group) in [("app", Some("data-path")), ("stranger", None)] {
        config += &api_user(&bin, &data_dir, dir.path(), &tenancy, user, group)?;
    }
    std::fs::write(&config_file, config)?;
    println!("key server {} (tenancy {tenancy}), master key {key}", server.kms_url);

    // Machine B: only the endpoint and an OCI config profile with the user's API key.
    let remote = |profile: &str| {
        RemoteKms::new(&RemoteConfig {
            endpoint: server.kms_url.clone(),
            config_file: config_file.clone(),
            profile: profile.into(),
            ca_cert: None,
        })
    };
    let keys = remote("app")?;
    let key_id = Ocid::parse(ResourceType::Key, &key)?;
    let aad = b"bucket=invoices/2026-12.csv";

    let data_key = keys.generate_data_key(&key_id, aad)?;
    let dek = data_key.plaintext.as_ref().ok_or("the KMS returned no plaintext key")?;
    println!(
        "data key from {}: 32 bytes to encrypt with, {} bytes wrapped under version {}",
        keys.endpoint(),
        data_key.wrapped.len(),
        data_key.key_version_id
    );
    // A fresh data key per message, so the one nonce it is ever used with may be fixed.
    let message = b"invoice 2026-12: 1,204.50 EUR";
    let nonce = [0u8; NONCE_LEN];
    let mut sealed = message.to_vec();
    let tag = GcmKey::new(dek.expose()).seal_in_place(nonce, aad, &mut sealed)?;
    sealed.extend_from_slice(&tag);
    drop(data_key.plaintext); // keep only the wrapped key beside the data
    println!("sealed {} bytes locally into {}", message.len(), sealed.len());

    // Reading back: the wrapped key goes to the KMS, the plaintext key comes back.
    let dek = keys.unwrap_data_key(&data_key.wrapped, aad)?;
    let mut opened = sealed.clone();
    let len = GcmKey::new(dek.expose()).open_in_place(nonce, aad, &mut opened)?;
    assert_eq!(&opened[..len], message);
    println!(
        "unwrapped through the API and opened: {:?}",
        String::from_utf8_lossy(&opened[..len])
    );

    // Refusals. Other associated data: the wrapped key does not open.
    let refused = keys
        .unwrap_data_key(&data_key.wrapped, b"bucket=someone-else")
        .map(drop);
    println!("unwrap with other associated data: {}", refusal(refused)?);
    // A user whose policies do not cover the key: it does not even see it.
    let stranger = remote("stranger")?;
    let refused = stranger.unwrap_data_key(&data_key.wrapped, aad).map(drop);
    println!("unwrap as a user with no policy: {}", refusal(refused)?);
    // The key disabled on the server: new data keys and unwraps are refused until enabled.
    admin(&["kms", "key", "disable", &key])?;
    let refused = keys.generate_data_key(&key_id, aad).map(drop);
    println!("new data key, key disabled: {}", refusal(refused)?);
    let refused = keys.unwrap_data_key(&data_key.wrapped, aad).map(drop);
    println!("unwrap, key disabled: {}", refusal(refused)?);
    admin(&["kms", "key", "enable", &key])?;
    keys.unwrap_data_key(&data_key.wrapped, aad)?;
    println!("enabled again: the wrapped key unwraps");
    Ok(())
}

/// The `sealstore` binary: `$SEALSTORE_BIN`, or the one in this example's target directory
/// (`target/<profile>/examples/remote_keys` → `target/<profile>/sealstore`).
fn sealstore_binary() -> Result<PathBuf, Error> {
    if let Some(bin) = std::env::var_os("SEALSTORE_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile_dir| profile_dir.join("sealstore"))
        .filter(|bin| bin.is_file());
    beside.ok_or_else(|| "no sealstore binary: run `cargo build --bin sealstore` first, or set SEALSTORE_BIN".into())
}

/// A `sealstore serve` on free loopback ports, stopped when dropped.
struct Server {
    child: Child,
    kms_url: String,
}

impl Server {
    fn start(bin: &Path, data_dir: &Path) -> Result<Server, Error> {
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Server {
            child,
            kms_url: String::new(),
        };
        // serve.json appears once every listener is up; it names the bound addresses.
        let ready = data_dir.join("serve.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("sealstore serve exited: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("sealstore serve did not become ready in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let info: Value = serde_json::from_slice(&std::fs::read(ready)?)?;
        server.kms_url = field(&info, "kms")?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sealstore --json --data-dir DATA_DIR ARGS` (through the running server's admin
/// socket) and parses what it prints.
fn sealstore_json(bin: &Path, data_dir: &Path, args: &[&str]) -> Result<Value, Error> {
    let out = Command::new(bin)
        .arg("--json")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("sealstore {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)).into());
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A user with a fresh RSA API key (in `dir`), optionally in `group`; returns its OCI config
/// profile, as `sealstore iam user add` prints it.
fn api_user(
    bin: &Path,
    data_dir: &Path,
    dir: &Path,
    tenancy: &str,
    name: &str,
    group: Option<&str>,
) -> Result<String, Error> {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)?;
    let private = dir.join(format!("{name}.pem"));
    std::fs::write(&private, pem("PRIVATE KEY", pair.as_der()?.as_ref()))?;
    let public = dir.join(format!("{name}.pub.pem"));
    std::fs::write(
        &public,
        kms_core::protection::public_key_pem(pair.public_key().as_der()?.as_ref()),
    )?;
    let public = public.to_str().ok_or("temporary path is not UTF-8")?;
    let mut args = vec!["iam", "user", "add", name, "--public-key", public];
    args.extend(group.map(|g| ["--group", g]).into_iter().flatten());
    let user = sealstore_json(bin, data_dir, &args)?;
    let fingerprint = user["apiKeys"][0]["fingerprint"]
        .as_str()
        .ok_or("no API key fingerprint")?;
    Ok(format!(
        "[{name}]\nuser={}\nfingerprint={fingerprint}\ntenancy={tenancy}\nkey_file={}\n\n",
        field(&user, "id")?,
        private.display()
    ))
}

/// DER as PEM with `label` (64-column base64).
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).expect("base64 is ASCII"))
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A string field of a JSON object.
fn field(value: &Value, name: &str) -> Result<String, Error> {
    Ok(value[name]
        .as_str()
        .ok_or_else(|| format!("no '{name}' in {value}"))?
        .to_owned())
}

/// The error of a call that must fail.
fn refusal(result: kms_core::Result<()>) -> Result<String, Error> {
    match result {
        Ok(()) => Err("the call was not refused".into()),
        Err(e) => Ok(format!("refused ({e})")),
    }
}
