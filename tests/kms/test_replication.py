"""Cross-region vault replication with real processes: two `sealstore serve --region` on one
machine (separate data directories and ports), registered as peers both ways; kill -9 and
restarts; a capturing proxy between them; failover of a data path; regions of one tenancy
(IAM made in the home region, one oci config for every region)."""

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
    # Without --json: `region identity` prints the very JSON `region add` reads.
    identity.write_text(sealstore(b.dir, "kms", "region", "identity").stdout)
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
    wait_for(lambda: r1.cli("kms", "vault", "replicas", vault)[0]["status"] == "CREATED", what="CREATED replica")
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
    status, replicas = sign(env1, "GET", f"/20180608/vaults/{vault}/actions/listReplicas")
    assert status == 200 and replicas[0]["region"] == "r2" and replicas[0]["status"] == "CREATED", replicas
    # The old sealstore-only path is gone (the CLI never sent it).
    assert sign(env1, "GET", f"/20180608/vaults/{vault}/replicas")[0] == 404
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


def test_rotations_at_load_survive_kill_9_of_either_side_and_converge(pair, tmp_path):
    """Rotations through the API as fast as three clients go (about 100/s here) while r2 is
    killed -9 and restarted, then r1: every rotation r1 acknowledged is in r1 after its
    restart and reaches r2, which ends with exactly r1's versions; lag is measured."""
    r1, r2 = pair
    vault, key = replicated_vault(r1, r2)
    env1 = Env(r1.url, r1.dir, tmp_path)
    env1.add_user("admin", groups=["Administrators"])
    rotate_path = f"/kms/{vault}/management/20180608/keys/{key}/keyVersions"
    acknowledged, stop = [], threading.Event()

    def rotate():
        while not stop.is_set():
            try:
                status, body = sign(env1, "POST", rotate_path, b"{}")
            except OSError:  # r1 is down
                time.sleep(0.05)
                continue
            if status == 200:
                acknowledged.append(body["id"])
            else:
                time.sleep(0.05)

    rotators = [threading.Thread(target=rotate) for _ in range(3)]
    started = time.monotonic()
    for t in rotators:
        t.start()
    try:
        time.sleep(2)
        r2.kill9()
        time.sleep(2)
        r2.start()
        time.sleep(2)
        r1.kill9()
        restarted = time.monotonic()
        r1.start()
        restart_ms = (time.monotonic() - restarted) * 1000
        time.sleep(2)
    finally:
        stop.set()
        for t in rotators:
            t.join(timeout=60)
    elapsed = time.monotonic() - started
    assert len(acknowledged) > 100, len(acknowledged)

    # Nothing acknowledged is lost in r1, and r2 ends with exactly r1's versions.
    in_r1 = {v["id"] for v in r1.cli("kms", "key", "versions", key)}
    assert set(acknowledged) <= in_r1, set(acknowledged) - in_r1
    converging = time.monotonic()
    wait_for(lambda: {v["id"] for v in r2.cli("kms", "key", "versions", key)} == in_r1, timeout=60,
             what="r2 to hold r1's versions")
    catch_up_ms = (time.monotonic() - converging) * 1000
    current = r1.cli("kms", "key", "get", key)["currentKeyVersion"]
    made_in_r1 = encrypt(r1, key, "after the storm")
    assert made_in_r1["keyVersionId"] == current
    assert decrypt(r2, made_in_r1["ciphertext"]) == "after the storm"
    assert encrypt(r2, key, "x")["keyVersionId"] == current

    log = re.sub(r"\x1b\[[0-9;]*m", "", (r1.dir.parent / "r1.log").read_text())
    shipped = sorted(int(m) for m in re.findall(r"\blag_ms=(\d+)", log))
    print(f"\n{len(acknowledged)} rotations acknowledged in {elapsed:.1f} s ({len(acknowledged) / elapsed:.0f}/s) by 3"
          f" clients, r2 and then r1 killed -9 and restarted (r1 serving again after {restart_ms:.0f} ms);"
          f" shipping lag (change committed in r1 → acknowledged by r2) over {len(shipped)} shipments:"
          f" p50 {statistics.median(shipped):.0f} ms, p99 {shipped[int(len(shipped) * 0.99) - 1]} ms;"
          f" r2 held all {len(in_r1)} versions {catch_up_ms:.0f} ms after the load stopped")


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


# ---- The oci CLI's replication commands (issue 20) ----

def oci_env(region, tmp_path):
    """An `oci` config whose `admin` profile is an administrator of `region` (each region is
    its own tenancy here)."""
    home = tmp_path / f"oci-{region.name}"
    home.mkdir(exist_ok=True)
    env = Env(region.url, region.dir, home)
    env.add_user("admin", groups=["Administrators"])
    return env


def oci_replicas(env, vault, *args):
    out = env.oci("admin", "kms", "management", "vault", "list-vault-replicas", "--vault-id", vault, *args)
    return out


def statuses(env, vault):
    out = oci_replicas(env, vault)
    return {r["region"]: r["status"] for r in (out or {"data": []})["data"]}


def test_list_vault_replicas_creating_then_created_with_endpoints_paged_and_sorted(tmp_path):
    r1, r2, r3 = Region(tmp_path, "r1"), Region(tmp_path, "r2"), Region(tmp_path, "r3")
    try:
        for other in (r2, r3):
            register(r1, other)
            register(other, r1)
        e1 = oci_env(r1, tmp_path)
        vault = r1.cli("kms", "vault", "create", "--name", "three-regions")["id"]
        r1.cli("kms", "key", "create", "--vault", vault, "--name", "k")
        # No replica yet: the CLI prints nothing and succeeds.
        assert oci_replicas(e1, vault) is None

        # r2 is down: its replica stays CREATING until r2 acknowledges the first shipment.
        r2.kill9()
        for region in ("r2", "r3"):
            assert e1.oci("admin", "kms", "management", "vault", "create-vault-replica", "--vault-id", vault,
                          "--replica-region", region) is None
        wait_for(lambda: statuses(e1, vault) == {"r2": "CREATING", "r3": "CREATED"}, what="r3 CREATED, r2 CREATING")
        listed = {r["region"]: r for r in oci_replicas(e1, vault)["data"]}
        for r in (r2, r3):
            assert listed[r.name]["crypto-endpoint"] == f"{r.url}/kms/{vault}/crypto", listed
            assert listed[r.name]["management-endpoint"] == f"{r.url}/kms/{vault}/management", listed
        r2.start()
        wait_for(lambda: statuses(e1, vault) == {"r2": "CREATED", "r3": "CREATED"}, timeout=15, what="r2 CREATED")

        # Paging and sorting as for every OCI list.
        first = oci_replicas(e1, vault, "--limit", "1", "--sort-by", "TIMECREATED", "--sort-order", "ASC")
        assert [r["region"] for r in first["data"]] == ["r2"] and first["opc-next-page"], first
        # (`--all` with `--sort-by` fails inside oci-cli 3.95.1 itself: it re-sorts by a
        # time_created that VaultReplicaSummary does not have.) Default order: newest first.
        every = oci_replicas(e1, vault, "--all", "--page-size", "1")
        assert [r["region"] for r in every["data"]] == ["r3", "r2"], every
        by_name = oci_replicas(e1, vault, "--sort-by", "DISPLAYNAME", "--sort-order", "DESC")
        assert [r["region"] for r in by_name["data"]] == ["r3", "r2"], by_name
        # The replica's endpoints answer for the vault, as a replica.
        e3 = oci_env(r3, tmp_path)
        got = e3.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]
        assert got["is-primary"] is False and got["management-endpoint"] == listed["r3"]["management-endpoint"]
    finally:
        for r in (r1, r2, r3):
            r.stop()


def replication_status(env, management, replication_id):
    out = env.oci("admin", "kms", "management", "replication-status-details", "get-replication-status",
                  "--replication-id", replication_id, endpoint=management)
    return {r["region"]: r["status"] for r in out["data"]["replica-details"]}


def test_replica_details_on_both_sides_and_get_replication_status(pair, tmp_path):
    r1, r2 = pair
    vault, key = replicated_vault(r1, r2)
    e1, e2 = oci_env(r1, tmp_path), oci_env(r2, tmp_path)
    v1 = e1.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]
    v2 = e2.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]
    assert v1["is-primary"] is True and v2["is-primary"] is False
    created = v1["replica-details"]["replication-id"]
    assert created and v2["replica-details"] == {"replication-id": created}, (v1, v2)
    assert v2["management-endpoint"].startswith(r2.url) and v2["crypto-endpoint"].startswith(r2.url)
    mgmt1, mgmt2 = v1["management-endpoint"], v2["management-endpoint"]

    # Keys and versions carry replicaDetails and isPrimary in both regions.
    k1 = e1.oci("admin", "kms", "management", "key", "get", "--key-id", key, endpoint=mgmt1)["data"]
    k2 = e2.oci("admin", "kms", "management", "key", "get", "--key-id", key, endpoint=mgmt2)["data"]
    assert k1["is-primary"] is True and k2["is-primary"] is False
    assert k1["replica-details"]["replication-id"] == k2["replica-details"]["replication-id"] == created
    version = k1["current-key-version"]
    kv2 = e2.oci("admin", "kms", "management", "key-version", "get", "--key-id", key, "--key-version-id", version,
                 endpoint=mgmt2)["data"]
    assert kv2["is-primary"] is False and kv2["replica-details"]["replication-id"] == created

    assert replication_status(e1, mgmt1, created) == {"r2": "REPLICATED"}
    assert replication_status(e2, mgmt2, created) == {"r2": "REPLICATED"}

    # r2 down: a rotation in r1 has a new replication id, REPLICATING until r2 is back.
    r2.kill9()
    rotated = r1.cli("kms", "key", "rotate", key)["id"]
    k1 = e1.oci("admin", "kms", "management", "key", "get", "--key-id", key, endpoint=mgmt1)["data"]
    rotation = k1["replica-details"]["replication-id"]
    assert rotation != created
    kv1 = e1.oci("admin", "kms", "management", "key-version", "get", "--key-id", key, "--key-version-id", rotated,
                 endpoint=mgmt1)["data"]
    assert kv1["replica-details"]["replication-id"] == rotation
    assert replication_status(e1, mgmt1, rotation) == {"r2": "REPLICATING"}
    assert replication_status(e1, mgmt1, created) == {"r2": "REPLICATED"}
    r2.start()
    wait_for(lambda: replication_status(e1, mgmt1, rotation) == {"r2": "REPLICATED"}, timeout=15,
             what="rotation REPLICATED")
    assert replication_status(e2, mgmt2, rotation) == {"r2": "REPLICATED"}
    # An id no operation has: 404.
    with pytest.raises(OciFailed) as unknown:
        replication_status(e1, mgmt1, f"{vault}.op999")
    assert unknown.value.error.get("status") == 404


def test_delete_vault_replica_destination_stops_serving_then_create_again(pair, tmp_path):
    r1, r2 = pair
    vault, key = replicated_vault(r1, r2)
    e1, e2 = oci_env(r1, tmp_path), oci_env(r2, tmp_path)
    crypto2 = e2.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]["crypto-endpoint"]
    ct = encrypt(r2, key, "before")["ciphertext"]

    # DELETING until r2 confirms, DELETED after.
    r2.kill9()
    assert e1.oci("admin", "kms", "management", "vault", "delete-vault-replica", "--vault-id", vault,
                  "--replica-region", "r2") is None
    assert statuses(e1, vault) == {"r2": "DELETING"}
    r2.start()
    wait_for(lambda: statuses(e1, vault) == {"r2": "DELETED"}, timeout=15, what="DELETED")

    # r2 no longer serves the vault: 404 on its endpoints, crypto refused, material gone.
    with pytest.raises(OciFailed) as gone:
        e2.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)
    assert gone.value.error.get("status") == 404
    with pytest.raises(OciFailed) as refused:
        e2.oci("admin", "kms", "crypto", "encrypt", "--key-id", key, "--plaintext", "eA==", endpoint=crypto2)
    assert refused.value.error.get("status") == 404
    out = sealstore(r2.dir, "kms", "encrypt", "--key", key, "--plaintext", "x", check=False)
    assert out.returncode != 0 and "not found" in out.stderr, out.stderr
    out = sealstore(r2.dir, "kms", "decrypt", "--raw", "--ciphertext", ct, check=False)
    assert out.returncode != 0, out.stdout
    # Both sides audit it.
    audit1 = sealstore(r1.dir, "--json", "kms", "audit", "list").stdout
    audit2 = sealstore(r2.dir, "--json", "kms", "audit", "list").stdout
    assert "DeleteReplica" in audit1 and "ReplicaDeleted" in audit1
    assert "DestroyReplica" in audit2

    # Created again: r2 serves the vault again, old ciphertext included.
    assert e1.oci("admin", "kms", "management", "vault", "create-vault-replica", "--vault-id", vault,
                  "--replica-region", "r2") is None
    wait_for(lambda: statuses(e1, vault) == {"r2": "CREATED"}, timeout=15, what="CREATED again")
    assert decrypt(r2, ct) == "before"
    assert e2.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]["is-primary"] is False


def test_a_data_directory_keeps_its_region_and_says_so(tmp_path):
    # First opened by a command without --region: local-1, and serve --region r1 is refused.
    plain = tmp_path / "plain"
    assert cli(plain, "kms", "status")["region"] == "local-1"
    out = sealstore(plain, "serve", "--region", "r1", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0",
                    check=False, timeout=60)
    assert out.returncode != 0
    assert "belongs to region local-1" in out.stderr and "not r1" in out.stderr, out.stderr
    # Created by serve --region r1: another --region is refused, none keeps r1.
    r1 = Region(tmp_path, "r1")
    r1.stop()
    out = sealstore(r1.dir, "serve", "--region", "r2", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0",
                    check=False, timeout=60)
    assert out.returncode != 0
    assert "belongs to region r1" in out.stderr and "not r2" in out.stderr, out.stderr
    assert cli(r1.dir, "kms", "status")["region"] == "r1"


def test_region_add_reads_what_region_identity_prints_and_explains_a_bad_file(pair, tmp_path):
    r1, r2 = pair
    printed = sealstore(r2.dir, "kms", "region", "identity").stdout
    identity = json.loads(printed)
    assert identity["region"] == "r2" and identity["signingKey"] and identity["wrappingKey"]
    # A public key PEM is not an identity: the error says what is.
    private, public = make_key_pair(tmp_path, "not-an-identity")
    out = sealstore(r1.dir, "kms", "region", "add", "r2", "--endpoint", r2.url, "--public-key", str(public),
                    check=False)
    assert out.returncode != 0
    assert "kms region identity" in out.stderr and "signingKey" in out.stderr, out.stderr


# ---- One tenancy across regions (issue 20, item 2) ----

def join_tenancy(member, home):
    """`member` joins `home`'s tenancy (both registered both ways first)."""
    register(member, home)
    register(home, member)
    return json.loads(sealstore(member.dir, "kms", "region", "join-tenancy", home.name).stdout)


def tenancy_of(region):
    return json.loads(sealstore(region.dir, "kms", "region", "tenancy").stdout)


def user_ids(region):
    return {u["name"]: u["id"] for u in region.cli("iam", "user", "list")}


def refused_by(env, profile, *args, endpoint):
    """The status of an oci call that must fail."""
    with pytest.raises(OciFailed) as failed:
        env.oci(profile, *args, endpoint=endpoint)
    return failed.value.error.get("status")


def test_one_tenancy_across_regions_one_config_iam_in_the_home_region_only(tmp_path):
    r1, r2, r3 = Region(tmp_path, "r1"), Region(tmp_path, "r2"), Region(tmp_path, "r3")
    try:
        home_tenancy = r1.cli("kms", "status")["tenancyId"]
        assert r2.cli("kms", "status")["tenancyId"] != home_tenancy
        # r2 and r3 join r1's tenancy: they adopt its id and IAM, with the same OCIDs.
        for member in (r2, r3):
            joined = join_tenancy(member, r1)
            assert joined["tenancyId"] == home_tenancy and joined["homeRegion"] == "r1", joined
            assert member.cli("kms", "status")["tenancyId"] == home_tenancy
        assert {m["region"] for m in tenancy_of(r1)["members"]} == {"r2", "r3"}
        admins = {g["name"]: g["id"] for g in r1.cli("iam", "group", "list")}["Administrators"]
        assert {g["name"]: g["id"] for g in r2.cli("iam", "group", "list")}["Administrators"] == admins

        # ONE config file; its users are made in the home region only.
        (tmp_path / "oci").mkdir()
        env = Env(r1.url, r1.dir, tmp_path / "oci")
        admin = env.add_user("admin", groups=["Administrators"])
        wait_for(lambda: user_ids(r2).get("admin") == admin["id"] == user_ids(r3).get("admin"), what="admin in r2, r3")

        # A replicated vault, read and used in r2 with the same profile: only --endpoint differs.
        vault = r1.cli("kms", "vault", "create", "--name", "global")["id"]
        key = r1.cli("kms", "key", "create", "--vault", vault, "--name", "k")["id"]
        r1.cli("kms", "vault", "replicate", vault, "--region", "r2")
        wait_for(lambda: r1.cli("kms", "vault", "replicas", vault)[0]["status"] == "CREATED", what="replica")
        got = env.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault, endpoint=r2.url)["data"]
        assert got["is-primary"] is False and got["compartment-id"] == home_tenancy, got
        crypto2 = got["crypto-endpoint"]
        assert crypto2.startswith(r2.url)
        plaintext = base64.b64encode(b"one tenancy").decode()
        ct = env.oci("admin", "kms", "crypto", "encrypt", "--key-id", key, "--plaintext", plaintext,
                     endpoint=crypto2)["data"]["ciphertext"]
        crypto1 = env.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]["crypto-endpoint"]
        back = env.oci("admin", "kms", "crypto", "decrypt", "--key-id", key, "--ciphertext", ct, endpoint=crypto1)
        assert back["data"]["plaintext"] == plaintext

        # IAM changes in a member are refused, naming the home region; nothing changes there.
        private, public = make_key_pair(tmp_path, "intruder")
        for args in (["iam", "user", "add", "intruder", "--public-key", str(public)],
                     ["iam", "group", "create", "g2"],
                     ["iam", "policy", "create", "p2", "--statement", "Allow group g2 to read vaults in tenancy"],
                     ["iam", "compartment", "create", "c2"]):
            out = sealstore(r2.dir, *args, check=False)
            assert out.returncode != 0 and "home region r1" in out.stderr, (args, out.stderr)
        assert "intruder" not in user_ids(r2)
        assert "JoinTenancy" in sealstore(r2.dir, "--json", "kms", "audit", "list").stdout

        # A policy made in the home region takes effect in the member; deleted, it stops.
        r1.cli("iam", "group", "create", "readers")
        env.add_user("reader", groups=["readers"])
        wait_for(lambda: "reader" in user_ids(r2), what="reader in r2")
        vault_get = ("kms", "management", "vault", "get", "--vault-id", vault)
        assert refused_by(env, "reader", *vault_get, endpoint=r2.url) == 404
        r1.cli("iam", "policy", "create", "read-vaults", "--statement", "Allow group readers to read vaults in tenancy")
        wait_for(lambda: env.oci("reader", *vault_get, endpoint=r2.url)["data"]["id"] == vault,
                 what="the policy in r2")
        r1.cli("iam", "policy", "delete", "read-vaults")
        wait_for(lambda: refused_by(env, "reader", *vault_get, endpoint=r2.url) == 404, what="the policy gone in r2")

        # A member that was down catches up: r3 is killed, IAM changes in r1, r3 comes back.
        r3.kill9()
        late = env.add_user("late", groups=["Administrators"])
        r1.cli("iam", "policy", "create", "late-readers", "--statement",
               "Allow group readers to read vaults in tenancy")
        pending = {m["region"]: m for m in tenancy_of(r1)["members"]}["r3"]
        assert pending["acknowledgedRevision"] < tenancy_of(r1)["iamRevision"] and pending["pendingSince"]
        r3.start()
        wait_for(lambda: user_ids(r3).get("late") == late["id"], timeout=15, what="r3 catching up")
        assert "late-readers" in {p["name"] for p in r3.cli("iam", "policy", "list")}
        assert tenancy_of(r3)["iamRevision"] == tenancy_of(r1)["iamRevision"]
        wait_for(lambda: all(m["pendingSince"] is None for m in tenancy_of(r1)["members"]), what="all acknowledged")
        # The caught-up member authenticates the new user with the same config.
        assert env.oci("late", "kms", "management", "vault", "list", "--compartment-id", home_tenancy,
                       endpoint=r3.url)["data"]
    finally:
        for r in (r1, r2, r3):
            r.stop()


def test_a_region_with_iam_of_its_own_cannot_join(tmp_path):
    r1, r2 = Region(tmp_path, "r1"), Region(tmp_path, "r2")
    try:
        r2.cli("iam", "group", "create", "mine")
        register(r2, r1)
        register(r1, r2)
        out = sealstore(r2.dir, "kms", "region", "join-tenancy", "r1", check=False)
        assert out.returncode != 0 and "IAM of its own" in out.stderr and "1 group(s)" in out.stderr, out.stderr
        # Refused before asking r1: r1 has no member.
        assert tenancy_of(r1)["members"] == []
        assert r2.cli("kms", "status")["tenancyId"] != r1.cli("kms", "status")["tenancyId"]
    finally:
        r1.stop()
        r2.stop()
