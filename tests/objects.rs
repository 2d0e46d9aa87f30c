//! End-to-end tests of encrypted objects through the real binary: bulk import/export, the
//! key-version inventory, the re-encryption sweep under kill -9, and kill -9 during a PUT.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealstore")
}

struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(&'static str, String)>,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            vars: Vec::new(),
        }
    }

    /// An environment whose objects live in `bucket` on a SeaweedFS server.
    fn on_s3(weed: &common::SeaweedFs, bucket: &str) -> Env {
        weed.create_bucket(bucket);
        Env {
            dir: tempfile::tempdir().unwrap(),
            vars: weed.env(bucket),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.env("SEALSTORE_DATA_DIR", self.path("data"))
            .envs(common::metadata_env(&self.path("data")))
            .env_remove("SEALSTORE_OBJECT_BACKEND")
            .args(args);
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sealstore {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_tree(root: &Path, count: usize) {
    for i in 0..count {
        let dir = root.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("obj-{i:04}")),
            bytes(i as u64, 500 + (i * 7919) % 20_000),
        )
        .unwrap();
    }
}

fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff").arg("-r").arg(a).arg(b).output().unwrap();
    assert!(
        out.status.success(),
        "trees differ:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn default_key(env: &Env) -> String {
    env.json(&["kms", "status"])["defaultKeyId"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn old_version_objects(env: &Env) -> u64 {
    let inv = env.json(&["object", "inventory"]);
    inv.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["current"] == false)
        .map(|r| r["objects"].as_u64().unwrap())
        .sum()
}

/// The acceptance test of the sweep: 500 objects, a rotation, `reencrypt --full` killed with
/// SIGKILL part-way, then resumed: every object reads back identical, none is left on the old
/// version, and only then may the old version be disabled.
#[test]
fn full_reencrypt_sweep_survives_kill_9_and_resumes() {
    let env = Env::new();
    let source = env.path("source");
    write_tree(&source, 500);
    env.ok(&["object", "mb", "bucket-a"]);
    env.ok(&["object", "import", "bucket-a", source.to_str().unwrap()]);
    let key = default_key(&env);
    let versions = env.json(&["kms", "key", "versions", &key]);
    let v1 = versions[0]["id"].as_str().unwrap().to_owned();
    env.ok(&["kms", "key", "rotate", &key]);
    assert_eq!(old_version_objects(&env), 500);

    // The old version still protects data: disabling it is refused with the count.
    let refused = env.run(&["kms", "key", "disable-version", &key, &v1]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("still protects 500 object(s) or volume(s)"));

    // Kill the sweep part-way; retry with a later kill if it had not started yet (a loaded
    // machine can take seconds to start the process and open the data directory).
    let mut killed_mid_sweep = false;
    for delay_ms in [400u64, 800, 1600, 3200, 6400, 12800] {
        let mut child = env
            .cmd(&["reencrypt", "--bucket", "bucket-a", "--full"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep finished within {delay_ms} ms: too fast to interrupt"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let left = old_version_objects(&env);
        if left > 0 && left < 500 {
            killed_mid_sweep = true;
            break;
        }
    }
    assert!(killed_mid_sweep, "could not interrupt the sweep part-way");

    let resumed = env.run(&["reencrypt", "--bucket", "bucket-a", "--full"]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("resuming an interrupted sweep after"), "{stderr}");
    assert!(
        stdout.contains(", resumed") && stdout.contains("0 object(s) on old key versions"),
        "{stdout}"
    );
    let visited: u64 = stdout.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        visited > 0 && visited < 500,
        "the resumed run should only do the rest: {stdout}"
    );
    assert_eq!(old_version_objects(&env), 0);

    let exported = env.path("exported");
    env.ok(&["object", "export", "bucket-a", exported.to_str().unwrap()]);
    assert_same_tree(&source, &exported);

    // Now nothing depends on v1 and it may be disabled.
    env.ok(&["kms", "key", "disable-version", &key, &v1]);
}

#[test]
fn rewrap_sweep_moves_every_object_and_is_idempotent() {
    let env = Env::new();
    let source = env.path("source");
    write_tree(&source, 40);
    env.ok(&["object", "mb", "bucket-b"]);
    env.ok(&["object", "import", "bucket-b", source.to_str().unwrap()]);
    let key = default_key(&env);
    env.ok(&["kms", "key", "rotate", &key]);
    let out = env.ok(&["reencrypt", "--bucket", "bucket-b", "--rewrap"]);
    assert!(out.contains("40 object(s) visited, 40 rewritten"), "{out}");
    // The closing line and the inventory give sizes people read, not byte counts.
    let closing = out.lines().next().unwrap_or_default();
    assert!(closing.ends_with("iB)") || closing.ends_with(" B)"), "{out}");
    assert!(out.contains("SIZE") && !out.contains("BYTES"), "{out}");
    assert!(out.contains("0 object(s) on old key versions"), "{out}");
    let again = env.ok(&["reencrypt", "--bucket", "bucket-b", "--rewrap"]);
    assert!(again.contains("40 object(s) visited, 0 rewritten"), "{again}");
    let exported = env.path("exported");
    env.ok(&["object", "export", "bucket-b", exported.to_str().unwrap()]);
    assert_same_tree(&source, &exported);
}

/// kill -9 during a PUT that replaces an object: afterwards the object is the old one,
/// intact, or the new one, complete — never a mix or a fragment.
#[test]
fn kill_9_during_put_leaves_old_or_new_object() {
    let env = Env::new();
    env.ok(&["object", "mb", "bucket-c"]);
    let old = bytes(1, 100_000);
    let new = bytes(2, 64 << 20);
    std::fs::write(env.path("old"), &old).unwrap();
    std::fs::write(env.path("new"), &new).unwrap();
    env.ok(&[
        "object",
        "put",
        "bucket-c",
        "k",
        "--file",
        env.path("old").to_str().unwrap(),
    ]);

    let mut saw_old = false;
    for delay_ms in [50u64, 150, 300, 600] {
        let mut child = env
            .cmd(&[
                "object",
                "put",
                "bucket-c",
                "k",
                "--file",
                env.path("new").to_str().unwrap(),
            ])
            .spawn()
            .unwrap();
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        let got = env.path("got");
        env.ok(&["object", "get", "bucket-c", "k", "-o", got.to_str().unwrap()]);
        let got = std::fs::read(&got).unwrap();
        assert!(
            got == old || got == new,
            "after kill at {:?}: object is neither old nor new ({} bytes)",
            start.elapsed(),
            got.len()
        );
        if got == old {
            assert!(!finished);
            saw_old = true;
        } else {
            // The new object landed; put the old one back for the next round.
            env.ok(&[
                "object",
                "put",
                "bucket-c",
                "k",
                "--file",
                env.path("old").to_str().unwrap(),
            ]);
        }
    }
    assert!(
        saw_old,
        "no kill landed before the PUT completed; the test did not exercise a crash"
    );
    // The index was not left pointing at a half-written object either.
    let head = env.json(&["object", "head", "bucket-c", "k"]);
    assert_eq!(head["size"], old.len() as u64);
}

/// Peak resident memory (VmHWM, KiB) of a running process, polled until it exits.
fn run_measuring_peak_rss(mut cmd: Command) -> (std::process::ExitStatus, u64) {
    // glibc gives each thread that allocates an arena of its own and keeps freed batches there,
    // so under a loaded machine (more threads touching more arenas) the peak grows with the
    // allocator's caching, not with what sealstore holds. Two arenas measure the latter.
    cmd.env("MALLOC_ARENA_MAX", "2");
    let mut child = cmd.spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
                let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak_kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 1 GiB object goes in and out in bounded memory: the process's peak RSS stays within
/// 64 MiB of what a tiny object costs.
#[test]
fn one_gib_put_and_get_in_bounded_memory() {
    let env = Env::new();
    env.ok(&["object", "mb", "big-bucket"]);
    let small = env.path("small");
    std::fs::write(&small, b"tiny").unwrap();
    let big = env.path("big");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let block = bytes(9, 1 << 20);
        for i in 0..1024u32 {
            f.write_all(&block[..(1 << 20) - 4]).unwrap();
            f.write_all(&i.to_le_bytes()).unwrap();
        }
    }
    let (status, baseline) = run_measuring_peak_rss(env.cmd(&[
        "object",
        "put",
        "big-bucket",
        "small",
        "--file",
        small.to_str().unwrap(),
    ]));
    assert!(status.success());
    let (status, put_peak) =
        run_measuring_peak_rss(env.cmd(&["object", "put", "big-bucket", "big", "--file", big.to_str().unwrap()]));
    assert!(status.success());
    let out = env.path("big.out");
    let (status, get_peak) =
        run_measuring_peak_rss(env.cmd(&["object", "get", "big-bucket", "big", "-o", out.to_str().unwrap()]));
    assert!(status.success());
    eprintln!("peak RSS: baseline {baseline} KiB, 1 GiB PUT {put_peak} KiB, 1 GiB GET {get_peak} KiB");
    assert!(
        put_peak < baseline + 64 * 1024,
        "PUT peak {put_peak} KiB vs baseline {baseline} KiB"
    );
    assert!(
        get_peak < baseline + 64 * 1024,
        "GET peak {get_peak} KiB vs baseline {baseline} KiB"
    );
    let same = Command::new("cmp").arg(&big).arg(&out).status().unwrap();
    assert!(same.success(), "the 1 GiB object did not read back identical");
    std::fs::remove_file(&big).ok();
    std::fs::remove_file(&out).ok();
}

/// With the index gone, `index rebuild` finds the buckets in the backend and recreates
/// listings (sizes, ETags), the inventory and the checkpoints' basis from the objects alone.
#[test]
fn index_rebuild_recreates_listing_and_inventory() {
    let env = Env::new();
    let source = env.path("source");
    write_tree(&source, 30);
    env.ok(&["object", "mb", "rebuilt"]);
    env.ok(&["object", "import", "rebuilt", source.to_str().unwrap()]);
    let key = default_key(&env);
    env.ok(&["kms", "key", "rotate", &key]);
    env.ok(&[
        "object",
        "put",
        "rebuilt",
        "after-rotation",
        "--file",
        source.join("d0/obj-0000").to_str().unwrap(),
    ]);
    let listing = env.json(&["object", "ls", "rebuilt"]);
    let inventory = env.json(&["object", "inventory"]);

    // The index is lost: its file, or its rows on PostgreSQL.
    match common::postgres_rows(&env.path("data")) {
        Some(kv) => assert!(kv.delete_namespace("objects") > 0),
        None => std::fs::remove_file(env.path("data/objects.redb")).unwrap(),
    }
    let out = env.ok(&["index", "rebuild"]);
    assert!(out.contains("rebuilt: 31 object(s) indexed"), "{out}");

    let strip = |v: &serde_json::Value| -> Vec<(String, u64, String, String)> {
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let s = |k: &str| o[k].as_str().unwrap().to_owned();
                (s("key"), o["size"].as_u64().unwrap(), s("etag"), s("keyVersionId"))
            })
            .collect()
    };
    assert_eq!(strip(&env.json(&["object", "ls", "rebuilt"])), strip(&listing));
    assert_eq!(env.json(&["object", "inventory"]), inventory);
    let exported = env.path("exported");
    env.ok(&["object", "export", "rebuilt", exported.to_str().unwrap()]);
    std::fs::remove_file(exported.join("after-rotation")).unwrap();
    assert_same_tree(&source, &exported);
}

/// The whole object face with the ciphertext in an S3-compatible store (SeaweedFS):
/// import, rotation, a full re-encryption sweep, export — and what SeaweedFS holds is
/// ciphertext.
#[test]
fn s3_object_backend_through_the_cli() {
    let weed = common::SeaweedFs::start();
    let env = Env::on_s3(&weed, "sealstore-objects");
    let source = env.path("source");
    write_tree(&source, 50);
    env.ok(&["object", "mb", "on-s3"]);
    env.ok(&["object", "import", "on-s3", source.to_str().unwrap()]);
    // Not on local disk: in SeaweedFS, as ciphertext.
    assert!(!env.path("data/objects/on-s3").exists());
    assert!(!env.path("data/objects/_buckets").exists());
    // docs/FORMATS.md, "Object layout": SHA-256(key)[0] in hex, then the key's bytes outside
    // [A-Za-z0-9._-] as !XX, then '!'.
    let raw = common::http_get(
        weed.s3_port,
        "/sealstore-objects/_buckets/on-s3/objects/b7/d0!2Fobj-0000!",
    )
    .expect("object in SeaweedFS");
    assert_eq!(&raw[..4], b"SSOB");
    let plain = std::fs::read(source.join("d0/obj-0000")).unwrap();
    assert!(!raw.windows(32).any(|w| w == &plain[..32]));

    let key = default_key(&env);
    env.ok(&["kms", "key", "rotate", &key]);
    assert_eq!(old_version_objects(&env), 50);
    let out = env.ok(&["reencrypt", "--bucket", "on-s3", "--full"]);
    assert!(
        out.contains("50 object(s) visited, 50 rewritten") && out.contains("0 object(s) on old key versions"),
        "{out}"
    );
    let exported = env.path("exported");
    env.ok(&["object", "export", "on-s3", exported.to_str().unwrap()]);
    assert_same_tree(&source, &exported);
    let range = env.run(&["object", "get", "on-s3", "d0/obj-0000", "--range", "100-199"]);
    assert!(range.status.success());
    assert_eq!(range.stdout, &plain[100..200]);
}

/// An acknowledged PUT is on disk, not only in the page cache: after the object file is
/// renamed into place its data and its directory are synced, and only then is its index entry
/// committed (seen with strace, for a single-put object and a streamed multipart one).
#[test]
fn acknowledged_puts_sync_the_object_and_its_directory_before_the_index() {
    let Some(strace) = common::which("strace") else {
        panic!("strace is needed (./scripts/test installs it)");
    };
    let env = Env::new();
    env.ok(&["object", "mb", "synced"]);
    // On PostgreSQL the index commit is the COMMIT sent to the server (durable there when it
    // answers): traced as the client's writes to its socket.
    let postgres = common::metadata_env(&env.path("data")).is_some();
    let trace = match postgres {
        true => "trace=fdatasync,fsync,rename,sendto",
        false => "trace=fdatasync,fsync,rename",
    };
    for (key, len) in [("small", 1000usize), ("large", 3 << 20)] {
        let file = env.path(key);
        std::fs::write(&file, bytes(4, len)).unwrap();
        let log = env.path(&format!("{key}.strace"));
        let traced = Command::new(&strace)
            .args(["-f", "-y", "-s", "64", "-e", trace, "-o"])
            .arg(&log)
            .arg(bin())
            .env("SEALSTORE_DATA_DIR", env.path("data"))
            .envs(common::metadata_env(&env.path("data")))
            .env_remove("SEALSTORE_OBJECT_BACKEND")
            .args([
                "object",
                "put",
                "synced",
                &format!("dir/{key}"),
                "--file",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(traced.status.success(), "{}", String::from_utf8_lossy(&traced.stderr));
        let log = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let find = |what: &dyn Fn(&str) -> bool| lines.iter().position(|l| what(l));
        let object = format!("dir!2F{key}!>");
        let renamed = find(&|l| l.contains("rename(") && l.contains(&format!("dir!2F{key}!\")")))
            .unwrap_or_else(|| panic!("{key}: no rename into place:\n{log}"));
        let data = find(&|l| l.contains("fdatasync(") && l.contains(&object))
            .unwrap_or_else(|| panic!("{key}: the object file is never synced:\n{log}"));
        let dir =
            find(&|l| l.contains("fsync(") && l.contains("/objects/_buckets/synced/objects/") && !l.contains("!>"))
                .unwrap_or_else(|| panic!("{key}: its directory is never synced:\n{log}"));
        let index = lines
            .iter()
            .rposition(|l| match postgres {
                true => l.contains("sendto(") && l.contains("COMMIT"),
                false => l.contains("fdatasync(") && l.contains("objects.redb>"),
            })
            .unwrap_or_else(|| panic!("{key}: no index commit:\n{log}"));
        assert!(
            renamed < data && data < dir && dir < index,
            "{key}: order rename {renamed}, data {data}, dir {dir}, index {index}:\n{log}"
        );
    }
}
