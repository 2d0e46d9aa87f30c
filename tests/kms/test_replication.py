"""Cross-region vault replication with real processes: two `sealstore serve --region` on one
machine (separate data directories and ports), registered as peers both ways; kill -9 and
restarts; a capturing proxy between them; failover of a data path."""

import base64
import http.server
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config

from test_oci_cli import OCI, Env, OciFailed, cli, make_key_pair, sealstore, sign  # same directory
from conftest import BINARY  # tests/s3, put on sys.path by test_oci_cli

OCI_PYTHON = OCI.parent / "python"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



class Region:
    """`sealstore serve --region NAME` on fixed ports, so that it can be killed and restarted."""

    def __init__(self, tmp, name, extra=()):
        self.name, self.dir = name, tmp / name
        self.kms_port, self.extra = free_port(), list(extra)
        self.url = f"http://127.0.0.1:{self.kms_port}"
        self.proc = None
        self.start()

    def start(self):
        (self.dir / "serve.json").unlink(missing_ok=True)
        self.log = open(self.dir.parent / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            [str(BINARY), "--data-dir", str(self.dir), "serve", "--region", self.name, "--s3-listen", "127.0.0.1:0",
             "--kms-listen", f"127.0.0.1:{self.kms_port}", *self.extra],
            stdout=self.log, stderr=self.log,
        )
        deadline = time.time() + 30
        while not (self.dir / "serve.json").exists():
            assert self.proc.poll() is None, f"{self.name} exited"
            assert time.time() < deadline, f"{self.name} did not start"
            time.sleep(0.05)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def cli(self, *args):
        return cli(self.dir, *args)


def register(a, b, endpoint_of_b=None):
    """`a` learns `b` (at `endpoint_of_b`, by default b's own URL)."""
    identity = a.dir.parent / f"{b.name}.identity.json"
    identity.write_text(sealstore(b.dir, "--json", "kms", "region", "identity").stdout)
    sealstore(a.dir, "kms", "region", "add", b.name, "--endpoint", endpoint_of_b or b.url,
              "--public-key", str(identity))


def wait_for(check, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def encrypt(region, key, text):
    return region.cli("kms", "encrypt", "--key", key, "--plaintext", text)


def decrypt(region, ciphertext):
    return sealstore(region.dir, "kms", "decrypt", "--raw", "--ciphertext", ciphertext).stdout


@pytest.fixture()
def pair(tmp_path):
    r1, r2 = Region(tmp_path, "r1"), Region(tmp_path, "r2")
    try:
        register(r1, r2)
        register(r2, r1)
        yield r1, r2
    finally:
        r1.stop()
        r2.stop()


def replicated_vault(r1, r2):
    vault = r1.cli("kms", "vault", "create", "--name", "replicated")["id"]
    key = r1.cli("kms", "key", "create", "--vault", vault, "--name", "k")["id"]
    r1.cli("kms", "vault", "replicate", vault, "--region", r2.name)
    wait_for(lambda: r1.cli("kms", "vault", "replicas", vault)[0]["status"] == "ACTIVE", what="ACTIVE replica")
    return vault, key


def test_a_replica_serves_crypto_follows_rotations_and_refuses_management(pair):
    r1, r2 = pair
    vault, key = replicated_vault(r1, r2)
    # Ciphertext made in either region decrypts in both.
    ct1 = encrypt(r1, key, "from r1")["ciphertext"]
    ct2 = encrypt(r2, key, "from r2")["ciphertext"]
    assert decrypt(r2, ct1) == "from r1" and decrypt(r1, ct2) == "from r2"

    # A rotation in r1 is usable in r2 within 2 s; measured over 100 rotations.
    lags = []
    for _ in range(100):
        version = r1.cli("kms", "key", "rotate", key)["id"]
        start = time.monotonic()
        wait_for(lambda: encrypt(r2, key, "x")["keyVersionId"] == version, timeout=2, what="rotation in r2")
        lags.append((time.monotonic() - start) * 1000)
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1]
    print(f"\nreplication lag over {len(lags)} rotations, rotation acknowledged in r1 → a `sealstore kms encrypt`"
          f" in r2 uses it (includes the CLI's start-up per poll): p50 {statistics.median(lags):.0f} ms,"
          f" p99 {p99:.0f} ms, max {lags[-1]:.0f} ms")
    assert lags[-1] < 2000
    # The shipper's own view: change committed in r1 → acknowledged by r2.
    log = re.sub(r"\x1b\[[0-9;]*m", "", (r1.dir.parent / "r1.log").read_text())
    shipped = sorted(int(m) for m in re.findall(r"lag_ms=(\d+)", log))
    assert len(shipped) >= 100, len(shipped)
    print(f"shipping lag (r1 log, change committed → r2 acknowledged) over {len(shipped)} shipments: "
          f"p50 {statistics.median(shipped):.0f} ms, p99 {shipped[int(len(shipped) * 0.99) - 1]} ms")

    # Management on the replica: 409 naming the primary region.
    out = sealstore(r2.dir, "kms", "key", "disable", key, check=False)
    assert out.returncode != 0 and "replica of region r1" in out.stderr, out.stderr
    # A disable in r1 reaches r2: crypto there is refused too.
    r1.cli("kms", "key", "disable", key)
    wait_for(lambda: sealstore(r2.dir, "kms", "encrypt", "--key", key, "--plaintext", "x", check=False).returncode != 0,
             timeout=2, what="disable in r2")
    # Both regions audit the replication.
    audit1 = sealstore(r1.dir, "--json", "kms", "audit", "list").stdout
    audit2 = sealstore(r2.dir, "--json", "kms", "audit", "list").stdout
    assert "CreateReplica" in audit1 and "ShipReplication" in audit1
    assert "ApplyReplication" in audit2


def test_the_api_shows_replicas_and_refuses_management_on_the_replica_with_409(pair, tmp_path):
    r1, r2 = pair
    vault, key = replicated_vault(r1, r2)
    env2 = Env(r2.url, r2.dir, tmp_path)
    env2.add_user("admin", groups=["Administrators"])
    got = env2.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]
    assert got["is-primary"] is False
    management = got["management-endpoint"]
    with pytest.raises(OciFailed) as refused:
        env2.oci("admin", "kms", "management", "key-version", "create", "--key-id", key, endpoint=management)
    assert refused.value.error.get("status") == 409 or "409" in refused.value.stderr
    assert "r1" in refused.value.error.get("message", "")
    (tmp_path / "e1").mkdir(exist_ok=True)
    env1 = Env(r1.url, r1.dir, tmp_path / "e1")
    env1.add_user("admin", groups=["Administrators"])
    status, replicas = sign(env1, "GET", f"/20180608/vaults/{vault}/replicas")
    assert status == 200 and replicas[0]["region"] == "r2" and replicas[0]["status"] == "ACTIVE", replicas
    assert env1.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]["is-primary"] is True


def test_nothing_acknowledged_is_lost_when_either_region_is_killed(pair):
    r1, r2 = pair
    vault, key = replicated_vault(r1, r2)
    # r2 dies; r1 rotates twice; r2 comes back and catches up.
    r2.kill9()
    v1 = r1.cli("kms", "key", "rotate", key)["id"]
    v2 = r1.cli("kms", "key", "rotate", key)["id"]
    assert r1.cli("kms", "vault", "replicas", vault)[0]["pendingChanges"] >= 2
    r2.start()
    wait_for(lambda: encrypt(r2, key, "x")["keyVersionId"] == v2, timeout=15, what="catch-up")
    versions = {v["id"] for v in r2.cli("kms", "key", "versions", key)}
    assert {v1, v2} <= versions

    # r1 dies right after acknowledging a new key; after restart, it reaches r2.
    new_key = r1.cli("kms", "key", "create", "--vault", vault, "--name", "late")["id"]
    r1.kill9()
    r1.start()
    assert r1.cli("kms", "key", "get", new_key)["id"] == new_key
    wait_for(lambda: r2.cli("kms", "key", "get", new_key)["id"] == new_key, timeout=15, what="new key in r2")


def test_an_unregistered_server_cannot_push_and_no_key_crosses_in_clear(tmp_path):
    r1, r2 = Region(tmp_path, "r1"), Region(tmp_path, "r2")
    stranger = Region(tmp_path, "r1-impostor")
    captured = []
    try:
        # r1 reaches r2 through a proxy that keeps every request body.
        class Capture(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                captured.append(body)
                req = urllib.request.Request(r2.url + self.path, data=body, method="POST",
                                             headers={k: v for k, v in self.headers.items()})
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        status, answer = resp.status, resp.read()
                except urllib.error.HTTPError as e:
                    status, answer = e.code, e.read()
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        # The proxy forwards the Host header as r1 signed it, for r2's own address.
        register(r1, r2, endpoint_of_b=f"http://127.0.0.1:{proxy.server_address[1]}")
        register(r2, r1)
        vault, key = replicated_vault(r1, r2)
        ct = encrypt(r1, key, "probe")["ciphertext"]
        assert decrypt(r2, ct) == "probe"
        assert captured, "the proxy saw the shipments"

        # No 32-byte window of any shipment (raw, or base64-decoded field) opens r1's ciphertext.
        blobs = [base64.b64encode(b).decode() for b in captured]
        scan = subprocess.run(
            [str(OCI_PYTHON), "-c", SCAN, ct], input=json.dumps(blobs), capture_output=True, text=True, timeout=300,
        )
        assert scan.returncode == 0, scan.stderr
        assert scan.stdout.strip().startswith("no key found"), scan.stdout

        # A server r2 never registered signs a shipment of its own: refused, nothing applied.
        register(stranger, r2)
        v = stranger.cli("kms", "vault", "create", "--name", "forged")["id"]
        stranger.cli("kms", "vault", "replicate", v, "--region", "r2")
        time.sleep(1.5)
        assert stranger.cli("kms", "vault", "replicas", v)[0]["status"] == "CREATING"
        out = sealstore(r2.dir, "kms", "vault", "get", v, check=False)
        assert out.returncode != 0 and "not found" in out.stderr
        log = (tmp_path / "r1-impostor.log").read_text()
        assert "401" in log and "not registered" in log, log[-2000:]
    finally:
        for r in (r1, r2, stranger):
            r.stop()


SCAN = r"""
import base64, json, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
ct = base64.b64decode(sys.argv[1])
# sealstore ciphertext: SSKC, version, key id, version id, then nonce(12) || body || tag(16)
pos = 5
for _ in range(2):
    pos += 1 + ct[pos]
header, payload = ct[:pos], ct[pos:]
nonce, sealed = payload[:12], payload[12:]
candidates = []
for blob in json.load(sys.stdin):
    raw = base64.b64decode(blob)
    candidates.append(raw)
    doc = json.loads(raw)
    def walk(v):
        if isinstance(v, str):
            try:
                candidates.append(base64.b64decode(v, validate=True))
            except Exception:
                pass
        elif isinstance(v, list):
            for x in v: walk(x)
        elif isinstance(v, dict):
            for x in v.values(): walk(x)
    walk(doc)
tried = 0
for data in candidates:
    for i in range(0, max(0, len(data) - 31)):
        tried += 1
        try:
            AESGCM(data[i:i + 32]).decrypt(nonce, sealed, header)
            print("KEY FOUND in a shipment")
            sys.exit(0)
        except Exception:
            pass
print(f"no key found ({tried} windows tried)")
"""


def test_failover_a_data_path_reads_through_the_replica(pair, tmp_path):
    r1, r2 = pair
    vault, key = replicated_vault(r1, r2)
    # The data path's user, with the same API key, in both regions (IAM is per region).
    private, public = make_key_pair(tmp_path, "storage")
    config = tmp_path / "oci-config"
    text = ""
    for r in (r1, r2):
        sealstore(r.dir, "iam", "group", "create", "storage")
        sealstore(r.dir, "iam", "policy", "create", "storage-keys", "--statement",
                  "Allow group storage to use key-family in tenancy")
        user = cli(r.dir, "iam", "user", "add", "storage", "--public-key", str(public), "--group", "storage")
        tenancy = cli(r.dir, "kms", "status")["tenancyId"]
        text += (f"[{r.name}]\nuser={user['id']}\nfingerprint={user['apiKeys'][0]['fingerprint']}\n"
                 f"tenancy={tenancy}\nkey_file={private}\n\n")
    config.write_text(text)
    # Each region is its own tenancy: the replica sits in r2's root compartment.
    data = tmp_path / "data"

    def data_path(region):
        s3_port = free_port()
        proc = subprocess.Popen(
            [str(BINARY), "--data-dir", str(data), "serve", "--s3-listen", f"127.0.0.1:{s3_port}",
             "--kms-listen", "127.0.0.1:0", "--kms-endpoint", region.url, "--kms-config", str(config),
             "--kms-profile", region.name, "--kms-key", key],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while not (data / "serve.json").exists():
            assert proc.poll() is None and time.time() < deadline, "data path did not start"
            time.sleep(0.05)
        creds = json.loads((data / "s3-admin.json").read_text())
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name="us-east-1",
                          aws_access_key_id=creds["accessKeyId"], aws_secret_access_key=creds["secretAccessKey"],
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        return proc, s3

    proc, s3 = data_path(r1)
    body = os.urandom(200_000)
    try:
        s3.create_bucket(Bucket="failover")
        s3.put_object(Bucket="failover", Key="o", Body=body)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        (data / "serve.json").unlink(missing_ok=True)
    r1.stop()
    proc, s3 = data_path(r2)
    try:
        assert s3.get_object(Bucket="failover", Key="o")["Body"].read() == body
    finally:
        proc.terminate()
        proc.wait(timeout=15)
