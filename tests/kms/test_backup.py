"""Key and vault backup and restore with the real `oci` CLI against a real `sealstore serve`
(issue 21 item 5; format: docs/KMS_BACKUP.md).

Backups go to a presigned PUT URL of sealstore's own S3 face (a pre-authenticated request URI)
and to a bucket of that S3 face (BUCKET). Deleted keys are purged by stopping the server and
running the scheduler with the clock 31 days ahead, then starting it again."""

import base64
import datetime
import hashlib
import hmac
import json
import socket
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from test_oci_cli import Env, OciFailed, cli, sealstore  # same directory
from conftest import BINARY, make_client  # tests/s3, put on sys.path by test_oci_cli

BUCKET = "kms-backups"
MAGIC = "sealstore-kms-backup v1\n"


def open_backup(root_key, text):
    """Opens a backup as docs/KMS_BACKUP.md says, independently of sealstore's code."""
    prk = hmac.new(b"sealstore/kms-backup/v1", root_key, hashlib.sha256).digest()

    def expand(info, n):
        return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:n]

    header, body = text.split("---\n")
    header += "---\n"
    fields = dict(line.split(": ", 1) for line in header.splitlines()[1:-1])
    assert fields["deployment"] == expand(b"sealstore/kms-backup/v1/deployment-id", 8).hex()
    key = expand(b"sealstore/kms-backup/v1/file-key\0" + base64.b64decode(fields["salt"]), 32)
    box = base64.b64decode(body)
    payload = AESGCM(key).decrypt(box[:12], box[12:], b"sealstore/kms-backup/v1\0" + header.encode())
    return fields, json.loads(payload)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`sealstore serve` on fixed ports, so that it can be stopped and started again."""

    def __init__(self, data_dir):
        self.dir = data_dir
        self.kms_port, self.s3_port = free_port(), free_port()
        self.proc = None
        self.start()

    def start(self):
        (self.dir / "serve.json").unlink(missing_ok=True)
        self.log = open(self.dir.parent / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [str(BINARY), "--data-dir", str(self.dir), "serve", "--s3-listen", f"127.0.0.1:{self.s3_port}",
             "--kms-listen", f"127.0.0.1:{self.kms_port}"],
            stdout=self.log, stderr=self.log,
        )
        deadline = time.time() + 30
        while not (self.dir / "serve.json").exists():
            assert self.proc.poll() is None, "sealstore serve exited"
            assert time.time() < deadline, "sealstore serve did not start"
            time.sleep(0.05)
        self.info = json.loads((self.dir / "serve.json").read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.log.close()

    def purge(self):
        """Runs the scheduler 31 days ahead, with the server stopped: deletions come due."""
        self.stop()
        out = sealstore(self.dir, "kms", "run-scheduler", "--clock-offset-days", "31")
        self.start()
        return out.stdout


class World:
    def __init__(self, tmp):
        (tmp / "data").mkdir()
        self.server = Server(tmp / "data")
        self.env = Env(self.server.info["kms"], self.server.dir, tmp)
        self.env.add_user("admin", groups=["Administrators"])
        keys = json.loads((self.server.dir / "s3-admin.json").read_text())
        self.s3 = make_client(self.server.info["s3"], keys["accessKeyId"], keys["secretAccessKey"])
        self.s3.create_bucket(Bucket=BUCKET)
        self.tmp = tmp
        self.management, self.crypto = self.env.endpoints(self.env.vault)

    def oci(self, *args, endpoint=None, profile="admin"):
        return self.env.oci(profile, *args, endpoint=endpoint)

    def put_url(self, name):
        return self.s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": name}, ExpiresIn=600)

    def get_url(self, name):
        return self.s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": name}, ExpiresIn=600)

    def stored(self, name):
        return self.s3.get_object(Bucket=BUCKET, Key=name)["Body"].read()

    def file(self, name, data):
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def key(self, name, endpoint=None, shape='{"algorithm":"AES","length":32}'):
        return self.oci("kms", "management", "key", "create", "-c", self.env.tenancy, "--display-name", name,
                        "--key-shape", shape, "--wait-for-state", "ENABLED",
                        endpoint=endpoint or self.management)["data"]

    def vault(self, name):
        vault = self.oci("kms", "management", "vault", "create", "-c", self.env.tenancy, "--display-name", name,
                         "--vault-type", "DEFAULT", "--wait-for-state", "ACTIVE")["data"]
        return vault, vault["management-endpoint"], vault["crypto-endpoint"]

    def encrypt(self, key_id, text, crypto=None):
        return self.oci("kms", "crypto", "encrypt", "--key-id", key_id, "--plaintext",
                        base64.b64encode(text).decode(), endpoint=crypto or self.crypto)["data"]["ciphertext"]

    def decrypt(self, key_id, ciphertext, crypto=None):
        out = self.oci("kms", "crypto", "decrypt", "--key-id", key_id, "--ciphertext", ciphertext,
                       endpoint=crypto or self.crypto)["data"]
        return base64.b64decode(out["plaintext"])

    def get_key(self, key_id, management=None):
        return self.oci("kms", "management", "key", "get", "--key-id", key_id,
                        endpoint=management or self.management)["data"]

    def delete_key(self, key_id, management=None):
        when = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=8)).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z")
        self.oci("kms", "management", "key", "schedule-deletion", "--key-id", key_id, "--time-of-deletion", when,
                 endpoint=management or self.management)

    def delete_vault(self, vault_id):
        when = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=8)).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z")
        self.oci("kms", "management", "vault", "schedule-deletion", "--vault-id", vault_id, "--time-of-deletion",
                 when)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("backup"))
    try:
        yield w
    finally:
        w.server.stop()


def refused(call):
    with pytest.raises(OciFailed) as failure:
        call()
    return failure.value.error


def test_key_backup_to_a_presigned_uri_and_to_a_bucket(world):
    key = world.key("backed-up")
    out = world.oci("kms", "management", "key", "backup", "--key-id", key["id"], "--uri", world.put_url("k.uri"),
                    "--wait-for-state", "ENABLED", endpoint=world.management)["data"]
    assert out["id"] == key["id"] and out["lifecycle-state"] == "ENABLED"
    via_uri = world.stored("k.uri").decode()
    assert via_uri.startswith(MAGIC + "kind: key\nresource: " + key["id"] + "\n")
    assert "\r" not in via_uri and via_uri.endswith("\n")

    world.oci("kms", "management", "key", "backup", "--key-id", key["id"], "--namespace", "ignored",
              "--bucket-name", BUCKET, "--object-name", "k.bucket", endpoint=world.management)
    via_bucket = world.stored("k.bucket").decode()
    assert via_bucket.startswith(MAGIC + "kind: key\nresource: " + key["id"] + "\n")
    assert via_bucket != via_uri  # a fresh salt and nonce each time

    # The key still exists: restoring it is a conflict, whichever way.
    error = refused(lambda: world.oci("kms", "management", "key", "restore-from-file",
                                      "--restore-key-from-file-location", world.file("k.txt", via_uri.encode()),
                                      endpoint=world.management))
    assert error["status"] == 409 and key["id"] in error["message"], error
    error = refused(lambda: world.oci("kms", "management", "key", "restore", "--uri", world.get_url("k.uri"),
                                      endpoint=world.management))
    assert error["status"] == 409, error

    # A location that refuses the PUT (an unsigned URL) fails the backup with a clear message.
    unsigned = world.server.info["s3"] + f"/{BUCKET}/unsigned"
    error = refused(lambda: world.oci("kms", "management", "key", "backup", "--key-id", key["id"], "--uri", unsigned,
                                      endpoint=world.management))
    assert error["status"] == 400 and "refused the backup" in error["message"], error
    error = refused(lambda: world.oci("kms", "management", "key", "backup", "--key-id", key["id"], "--namespace", "n",
                                      "--bucket-name", "no-such-bucket", "--object-name", "o",
                                      endpoint=world.management))
    assert error["status"] == 400 and "no-such-bucket" in error["message"], error


def test_vault_backup_and_conflict(world):
    vault, management, _ = world.vault("vault-backup")
    world.key("in-vault", endpoint=management)
    out = world.oci("kms", "management", "vault", "backup", "--vault-id", vault["id"], "--uri", world.put_url("v.uri"),
                    "--is-include-keys", "true", "--wait-for-state", "ACTIVE")["data"]
    assert out["id"] == vault["id"] and out["lifecycle-state"] == "ACTIVE"
    backup = world.stored("v.uri")
    assert backup.decode().startswith(MAGIC + "kind: vault\nresource: " + vault["id"] + "\n")
    error = refused(lambda: world.oci("kms", "management", "vault", "restore-from-file", "-c", world.env.tenancy,
                                      "--restore-vault-from-file-location", world.file("v.bin", backup)))
    assert error["status"] == 409 and vault["id"] in error["message"], error
    # A key backup is not a vault backup.
    key_backup = world.stored("k.uri")
    error = refused(lambda: world.oci("kms", "management", "vault", "restore-from-file", "-c", world.env.tenancy,
                                      "--restore-vault-from-file-location", world.file("k.bin", key_backup)))
    assert error["status"] == 400 and "key backup" in error["message"], error


def test_backup_and_restore_need_manage(world):
    cli(world.env.data_dir, "iam", "group", "create", "BackupUsers")
    cli(world.env.data_dir, "iam", "policy", "create", "backup-users", "--statement",
        "Allow group BackupUsers to use keys in tenancy", "--statement",
        "Allow group BackupUsers to read vaults in tenancy")
    world.env.add_user("user", groups=["BackupUsers"])
    key = world.env.key
    error = refused(lambda: world.oci("kms", "management", "key", "backup", "--key-id", key, "--uri",
                                      world.put_url("denied"), endpoint=world.management, profile="user"))
    assert error["status"] == 404, error
    error = refused(lambda: world.oci("kms", "management", "vault", "backup", "--vault-id", world.env.vault, "--uri",
                                      world.put_url("denied"), profile="user"))
    assert error["status"] == 404, error
    error = refused(lambda: world.oci("kms", "management", "key", "restore-from-file",
                                      "--restore-key-from-file-location",
                                      world.file("k2.txt", world.stored("k.uri")), endpoint=world.management,
                                      profile="user"))
    assert error["status"] == 404, error
    assert "denied" not in [o["Key"] for o in world.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_deleted_keys_and_vaults_come_back(world):
    w = world
    # Keys of the default vault, each with an old and a current version and ciphertexts of both.
    keys = {name: w.key(name) for name in ("from-file", "from-uri", "from-bucket")}
    texts = {}
    for name, key in keys.items():
        old = w.encrypt(key["id"], f"{name} old".encode())
        w.oci("kms", "management", "key-version", "create", "--key-id", key["id"], endpoint=w.management)
        texts[name] = [(old, f"{name} old".encode()), (w.encrypt(key["id"], f"{name} new".encode()),
                                                       f"{name} new".encode())]
    rsa = w.key("rsa", shape='{"algorithm":"RSA","length":256}')
    # Two vaults with keys: one restored from a file, one from the object store.
    vaults = {}
    for name in ("vault-file", "vault-bucket"):
        vault, management, crypto = w.vault(name)
        key = w.key(f"{name}-key", endpoint=management)
        ct = w.encrypt(key["id"], name.encode(), crypto=crypto)
        vaults[name] = (vault, key, ct)

    for name, key in list(keys.items()) + [("rsa", rsa)]:
        w.oci("kms", "management", "key", "backup", "--key-id", key["id"], "--namespace", "n", "--bucket-name",
              BUCKET, "--object-name", f"{name}.key", "--wait-for-state", "ENABLED", endpoint=w.management)
    for name, (vault, _, _) in vaults.items():
        w.oci("kms", "management", "vault", "backup", "--vault-id", vault["id"], "--uri", w.put_url(f"{name}.vault"),
              "--is-include-keys", "true", "--wait-for-state", "ACTIVE")

    # The backup holds every version with its material, sealed under the root key.
    fields, payload = open_backup((w.server.dir / "root.key").read_bytes(), w.stored("from-file.key").decode())
    assert fields["kind"] == "key" and fields["resource"] == keys["from-file"]["id"]
    [entry] = payload["keys"]
    assert entry["key"]["id"] == keys["from-file"]["id"] and len(entry["versions"]) == 2
    assert all(v["material"]["kind"] == "secret" and len(base64.b64decode(v["material"]["data"])) == 32
               for v in entry["versions"])
    fields, payload = open_backup((w.server.dir / "root.key").read_bytes(), w.stored("vault-file.vault").decode())
    assert fields["kind"] == "vault" and payload["vault"]["id"] == vaults["vault-file"][0]["id"]
    assert [k["key"]["id"] for k in payload["keys"]] == [vaults["vault-file"][1]["id"]]

    for key in list(keys.values()) + [rsa]:
        w.delete_key(key["id"])
    for vault, _, _ in vaults.values():
        w.delete_vault(vault["id"])
    assert "purged 2 vault(s) and 4 key(s)" in w.server.purge()
    w.management, w.crypto = w.env.endpoints(w.env.vault)
    for key in keys.values():
        assert w.get_key(key["id"])["lifecycle-state"] == "DELETED"

    # Altered backups are refused and restore nothing: a flipped byte in the middle, at the
    # end, and a truncated file. (XOR 1 keeps the text UTF-8, so the CLI sends it.)
    good = w.stored("from-file.key")
    middle = len(good) // 2
    altered = {
        "middle": good[:middle] + bytes([good[middle] ^ 1]) + good[middle + 1:],
        "end": good[:-1] + bytes([good[-1] ^ 1]),
        "before-end": good[:-2] + bytes([good[-2] ^ 1]) + good[-1:],
        "truncated": good[: len(good) - 20],
    }
    for what, data in altered.items():
        error = refused(lambda: w.oci("kms", "management", "key", "restore-from-file",
                                      "--restore-key-from-file-location", w.file(f"bad-{what}.txt", data),
                                      endpoint=w.management))
        assert error["status"] == 400 and "backup rejected" in error["message"], (what, error)
        assert w.get_key(keys["from-file"]["id"])["lifecycle-state"] == "DELETED"
    vault_good = w.stored("vault-file.vault")
    for what, data in {"middle": vault_good[:100] + bytes([vault_good[100] ^ 0x80]) + vault_good[101:],
                       "truncated": vault_good[:-1]}.items():
        error = refused(lambda: w.oci("kms", "management", "vault", "restore-from-file", "-c", w.env.tenancy,
                                      "--restore-vault-from-file-location", w.file(f"bad-{what}.bin", data)))
        assert error["status"] == 400 and "backup rejected" in error["message"], (what, error)
        assert w.oci("kms", "management", "vault", "get", "--vault-id",
                     vaults["vault-file"][0]["id"])["data"]["lifecycle-state"] == "DELETED"

    # The key backup survives the CLI's text mode: restore-from-file.
    restored = w.oci("kms", "management", "key", "restore-from-file", "--restore-key-from-file-location",
                     w.file("from-file.txt", good), endpoint=w.management)["data"]
    # From the object store: a presigned GET URL, and the bucket.
    restored_uri = w.oci("kms", "management", "key", "restore", "--uri", w.get_url("from-uri.key"),
                         endpoint=w.management)["data"]
    restored_bucket = w.oci("kms", "management", "key", "restore", "--namespace", "n", "--bucket-name", BUCKET,
                            "--object-name", "from-bucket.key", endpoint=w.management)["data"]
    restored_rsa = w.oci("kms", "management", "key", "restore-from-file", "--restore-key-from-file-location",
                         w.file("rsa.txt", w.stored("rsa.key")), endpoint=w.management)["data"]
    assert restored_rsa["key-shape"] == rsa["key-shape"] and restored_rsa["lifecycle-state"] == "ENABLED"
    for name, out in (("from-file", restored), ("from-uri", restored_uri), ("from-bucket", restored_bucket)):
        key = keys[name]
        assert out["id"] == key["id"] and out["restored-from-key-id"] == key["id"], out
        assert out["lifecycle-state"] == "ENABLED"
        versions = w.oci("kms", "management", "key-version", "list", "--key-id", key["id"], "--all",
                         endpoint=w.management)["data"]
        assert len(versions) == 2
        for v in versions:
            got = w.oci("kms", "management", "key-version", "get", "--key-id", key["id"], "--key-version-id", v["id"],
                        endpoint=w.management)["data"]
            assert got["restored-from-key-version-id"] == v["id"] and got["lifecycle-state"] == "ENABLED"
        for ciphertext, plaintext in texts[name]:
            assert w.decrypt(key["id"], ciphertext) == plaintext
        assert w.decrypt(key["id"], w.encrypt(key["id"], b"after restore")) == b"after restore"

    # Restored again while it exists: 409.
    error = refused(lambda: w.oci("kms", "management", "key", "restore-from-file",
                                  "--restore-key-from-file-location", w.file("again.txt", good),
                                  endpoint=w.management))
    assert error["status"] == 409, error

    # Vaults, with their keys.
    vault, key, ct = vaults["vault-file"]
    out = w.oci("kms", "management", "vault", "restore-from-file", "-c", w.env.tenancy,
                "--restore-vault-from-file-location", w.file("vault.bin", vault_good))["data"]
    assert out["id"] == vault["id"] and out["restored-from-vault-id"] == vault["id"]
    assert out["lifecycle-state"] == "ACTIVE"
    assert w.decrypt(key["id"], ct, crypto=out["crypto-endpoint"]) == b"vault-file"
    vault, key, ct = vaults["vault-bucket"]
    w.s3.put_object(Bucket=BUCKET, Key="copied.vault", Body=w.stored("vault-bucket.vault"))
    out = w.oci("kms", "management", "vault", "restore", "-c", w.env.tenancy, "--namespace", "n", "--bucket-name",
                BUCKET, "--object-name", "copied.vault")["data"]
    assert out["id"] == vault["id"] and out["restored-from-vault-id"] == vault["id"]
    restored_key = w.get_key(key["id"], management=out["management-endpoint"])
    assert restored_key["restored-from-key-id"] == key["id"]
    assert w.decrypt(key["id"], ct, crypto=out["crypto-endpoint"]) == b"vault-bucket"
    error = refused(lambda: w.oci("kms", "management", "vault", "restore", "-c", w.env.tenancy, "--uri",
                                  w.get_url("vault-file.vault")))
    assert error["status"] == 409, error

    # Every backup and restore is in the audit log, refusals included.
    entries = cli(w.env.data_dir, "kms", "audit", "list", "--limit", "100000")
    names = {e["operation"] for e in entries}
    assert {"BackupKey", "BackupVault", "RestoreKey", "RestoreVault"} <= names, names
    restores = [e for e in entries if e["operation"] == "RestoreKey"]
    assert any(e.get("keyId") == keys["from-file"]["id"] for e in restores)
    assert len(restores) >= 4 + len(altered)


def test_sealstore_cli_backs_up_and_restores_through_the_server(world):
    """`sealstore kms key|vault backup|restore` (through the admin socket) use the same calls,
    the server's buckets included; the oci CLI restores what they wrote, and the reverse."""
    w = world
    key = w.key("cli-backup")
    ct = w.encrypt(key["id"], b"cli")
    out = cli(w.env.data_dir, "kms", "key", "backup", key["id"], "--bucket", BUCKET, "--object", "cli.key")
    assert out["id"] == key["id"]
    assert w.stored("cli.key").decode().startswith(MAGIC + "kind: key\n")
    refused = sealstore(w.env.data_dir, "kms", "key", "restore", "--vault", w.env.vault, "--bucket", BUCKET,
                        "--object", "cli.key", check=False)
    assert refused.returncode != 0 and "exists" in refused.stderr, refused.stderr
    vault, _, _ = w.vault("cli-vault")
    cli(w.env.data_dir, "kms", "vault", "backup", vault["id"], "--include-keys", "--uri", w.put_url("cli.vault"))
    assert w.stored("cli.vault").decode().startswith(MAGIC + "kind: vault\n")

    w.delete_key(key["id"])
    w.server.purge()
    w.management, w.crypto = w.env.endpoints(w.env.vault)
    restored = cli(w.env.data_dir, "kms", "key", "restore", "--vault", w.env.vault, "--uri", w.get_url("cli.key"))
    assert restored["id"] == key["id"] and restored["restoredFromKeyId"] == key["id"]
    assert w.decrypt(key["id"], ct) == b"cli"
