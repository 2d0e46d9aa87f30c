"""EXTERNAL keys with real processes: a sealstore whose EXTERNAL vault points at
`sealstore ekm serve` (the reference external key manager, its own data directory), driven by
the `oci` CLI, S3 and the sealstore CLI; tokens forged with openssl for the refusals; a key
manager that never answers, and a port that refuses."""

import base64
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config

from test_oci_cli import Env, OciFailed, cli, sealstore, self_signed_cert  # same directory
from conftest import BINARY, running_server  # tests/s3, put on sys.path by test_oci_cli



class KeyManager:
    """`sealstore ekm serve` on its own data directory, trusting one sealstore's JWKS."""

    def __init__(self, tmp, jwks, extra=()):
        """`jwks`: a file or URL; `extra`: more `ekm serve` options."""
        self.dir = tmp / "ekm"
        self.proc = subprocess.Popen(
            [str(BINARY), "--data-dir", str(self.dir), "ekm", "serve", "--listen", "127.0.0.1:0",
             "--jwks", str(jwks), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        info = self.dir / "ekm.json"
        deadline = time.time() + 30
        while not info.exists():
            assert self.proc.poll() is None, "ekm serve exited"
            assert time.time() < deadline, "ekm serve did not start"
            time.sleep(0.05)
        self.url = json.loads(info.read_text())["url"]

    def run(self, *args):
        return json.loads(sealstore(self.dir, "--json", "ekm", *args).stdout or "null")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def world():
    with running_server() as (endpoint, keys, data_dir), tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        env = Env(json.loads((data_dir / "serve.json").read_text())["kms"], data_dir, tmp)
        env.add_user("admin", groups=["Administrators"])
        # The key manager reads the JWKS the KMS API publishes.
        ekm = KeyManager(tmp, env.url + "/.well-known/jwks.json")
        try:
            ext_key = ekm.run("key", "create", "orders")
            vault_url = f"{ekm.url}/ekm/v1/vaults/{ext_key['vaultId']}"
            vault = env.oci("admin", "kms", "management", "vault", "create", "--compartment-id", env.tenancy,
                            "--display-name", "external", "--vault-type", "EXTERNAL",
                            "--external-key-manager-metadata",
                            json.dumps({"externalVaultEndpointUrl": vault_url, "privateEndpointId": "none",
                                        "oauthMetadata": {"idcsAccountNameUrl": "none", "clientAppId": "none",
                                                          "clientAppSecret": "none"}}))["data"]
            management, crypto = env.endpoints(vault["id"])
            key = env.oci("admin", "kms", "management", "key", "create", "--compartment-id", env.tenancy,
                          "--display-name", "orders", "--key-shape", '{"algorithm":"AES","length":32}',
                          "--protection-mode", "EXTERNAL",
                          "--external-key-reference", json.dumps({"externalKeyId": ext_key["id"]}),
                          endpoint=management)["data"]
            s3 = boto3.client(
                "s3", endpoint_url=endpoint, aws_access_key_id=keys["accessKeyId"],
                aws_secret_access_key=keys["secretAccessKey"], region_name="us-east-1",
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            )
            s3.create_bucket(Bucket="ext")
            yield {"env": env, "ekm": ekm, "ext_key": ext_key, "vault": vault, "key": key, "s3": s3,
                   "management": management, "crypto": crypto, "data_dir": data_dir, "tmp": tmp}
        finally:
            ekm.stop()


def encrypt(w, text, aad=None):
    args = ["kms", "crypto", "encrypt", "--key-id", w["key"]["id"],
            "--plaintext", base64.b64encode(text).decode()]
    if aad:
        args += ["--associated-data", json.dumps(aad)]
    return w["env"].oci("admin", *args, endpoint=w["crypto"])["data"]


def decrypt(w, ciphertext, aad=None):
    args = ["kms", "crypto", "decrypt", "--key-id", w["key"]["id"], "--ciphertext", ciphertext]
    if aad:
        args += ["--associated-data", json.dumps(aad)]
    return base64.b64decode(w["env"].oci("admin", *args, endpoint=w["crypto"])["data"]["plaintext"])


def test_keys_are_references_and_crypto_goes_through_the_key_manager(world):
    w = world
    assert w["key"]["protection-mode"] == "EXTERNAL"
    got = w["env"].oci("admin", "kms", "management", "key", "get", "--key-id", w["key"]["id"],
                       endpoint=w["management"])["data"]
    assert got["external-key-reference-details"]["external-key-id"] == w["ext_key"]["id"]
    vault = w["env"].oci("admin", "kms", "management", "vault", "get", "--vault-id", w["vault"]["id"])["data"]
    assert vault["external-key-manager-metadata-summary"]["external-vault-endpoint-url"].startswith(w["ekm"].url)
    versions = w["env"].oci("admin", "kms", "management", "key-version", "list", "--key-id", w["key"]["id"],
                            endpoint=w["management"])["data"]
    assert [v["external-key-reference-details"]["external-key-version-id"] for v in versions] == \
        [w["ext_key"]["currentKeyVersion"]]

    out = encrypt(w, b"external secret", {"app": "orders"})
    assert decrypt(w, out["ciphertext"], {"app": "orders"}) == b"external secret"
    with pytest.raises(OciFailed) as wrong:
        decrypt(w, out["ciphertext"], {"app": "billing"})
    assert wrong.value.error.get("code") == "InvalidParameter"

    body = os.urandom(1 << 20)
    w["s3"].put_object(Bucket="ext", Key="o", Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=w["key"]["id"])
    assert w["s3"].get_object(Bucket="ext", Key="o")["Body"].read() == body

    # sealstore's store holds no key material for it: the key manager's data directory does.
    audit = sealstore(w["ekm"].dir, "--json", "kms", "audit", "list").stdout
    assert "ekm-client/" in audit and "Encrypt" in audit


def test_external_keys_are_aes_256_only(world):
    w = world
    for shape in ({"algorithm": "RSA", "length": 256}, {"algorithm": "AES", "length": 16}):
        with pytest.raises(OciFailed) as refused:
            w["env"].oci("admin", "kms", "management", "key", "create", "--compartment-id", w["env"].tenancy,
                         "--display-name", "not-aes-256", "--key-shape", json.dumps(shape),
                         "--protection-mode", "EXTERNAL",
                         "--external-key-reference", json.dumps({"externalKeyId": w["ext_key"]["id"]}),
                         endpoint=w["management"])
        assert refused.value.error["status"] == 400
        assert "AES-256" in refused.value.error["message"]


def test_rotation_in_the_key_manager_reaches_new_data_and_old_data_still_reads(world):
    w = world
    w["s3"].put_object(Bucket="ext", Key="before", Body=b"v1 data", ServerSideEncryption="aws:kms",
                       SSEKMSKeyId=w["key"]["id"])
    old_ct = encrypt(w, b"old")["ciphertext"]
    rotated = w["ekm"].run("key", "rotate", w["ext_key"]["id"])
    # serve picks it up on its schedule; refresh asks now.
    added = cli(w["data_dir"], "kms", "key", "refresh", w["key"]["id"])
    assert [v["externalKeyReferenceDetails"]["externalKeyVersionId"] for v in added] == [rotated["id"]]
    new = encrypt(w, b"new")
    assert new["key-version-id"] == added[0]["id"]
    w["s3"].put_object(Bucket="ext", Key="after", Body=b"v2 data", ServerSideEncryption="aws:kms",
                       SSEKMSKeyId=w["key"]["id"])
    inventory = {r["keyVersionId"]: r for r in cli(w["data_dir"], "object", "inventory")}
    assert inventory[added[0]["id"]]["objects"] >= 1 and inventory[added[0]["id"]]["current"]
    assert decrypt(w, old_ct) == b"old"
    assert w["s3"].get_object(Bucket="ext", Key="before")["Body"].read() == b"v1 data"
    assert w["s3"].get_object(Bucket="ext", Key="after")["Body"].read() == b"v2 data"
    # Rotating the EXTERNAL key here is refused with the way to do it.
    with pytest.raises(OciFailed) as refused:
        w["env"].oci("admin", "kms", "management", "key-version", "create", "--key-id", w["key"]["id"],
                     endpoint=w["management"])
    assert "external key manager" in refused.value.error.get("message", "")


def test_revoking_the_client_denies_every_call_until_restored(world):
    w = world
    ct = encrypt(w, b"still mine")["ciphertext"]
    tenancy = w["env"].tenancy
    sealstore(w["ekm"].dir, "ekm", "revoke-client", tenancy)
    try:
        with pytest.raises(OciFailed) as denied:
            decrypt(w, ct)
        message = denied.value.error.get("message", "")
        assert "external key manager denied access" in message, denied.value.error
        # Each layer says what it adds once, not "access denied: … access denied: …".
        assert message.lower().count("access denied") <= 1, message
        with pytest.raises(Exception) as s3_denied:
            w["s3"].get_object(Bucket="ext", Key="o")
        assert "AccessDenied" in str(s3_denied.value)
    finally:
        sealstore(w["ekm"].dir, "ekm", "restore-client", tenancy)
    assert decrypt(w, ct) == b"still mine"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(tmp, key_der, claims, kid):
    """An RS256 JWT signed with openssl by the PKCS#8 DER key `key_der`."""
    pem = tmp / "signing.pem"
    subprocess.run(["openssl", "pkey", "-inform", "DER", "-in", str(key_der), "-out", str(pem)], check=True)
    signing_input = f"{b64url(json.dumps({'alg': 'RS256', 'typ': 'JWT', 'kid': kid}).encode())}." \
                    f"{b64url(json.dumps(claims).encode())}"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(pem)], input=signing_input.encode(),
                         capture_output=True, check=True).stdout
    return f"{signing_input}.{b64url(sig)}"


def call_ekm(url, path, token):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_the_key_manager_verifies_every_token(world):
    w = world
    tmp, ekm = w["tmp"], w["ekm"]
    key_der = w["data_dir"] / "ekm-client.key"
    jwks = json.loads(sealstore(w["data_dir"], "kms", "jwks").stdout)
    with urllib.request.urlopen(w["env"].url + "/.well-known/jwks.json", timeout=10) as published:
        assert json.loads(published.read()) == jwks
    kid = jwks["keys"][0]["kid"]
    now = int(time.time())
    good = {"iss": "sealstore", "sub": w["env"].tenancy, "aud": ekm.url, "scope": "ekm.read ekm.crypto",
            "iat": now, "exp": now + 120}
    path = f"/ekm/v1/keys/{w['ext_key']['id']}"
    status, key = call_ekm(ekm.url, path, forge(tmp, key_der, good, kid))
    assert status == 200 and key["keyId"] == w["ext_key"]["id"], key

    stranger = tmp / "stranger.der"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-outform", "DER", "-out", str(stranger)], check=True, capture_output=True)
    cases = {
        "wrong audience": forge(tmp, key_der, {**good, "aud": "http://somewhere-else:1"}, kid),
        "expired": forge(tmp, key_der, {**good, "iat": now - 600, "exp": now - 300}, kid),
        "bad signature": forge(tmp, stranger, good, kid),
        "unknown key": forge(tmp, key_der, good, "not-a-published-kid"),
        "no scope": forge(tmp, key_der, {**good, "scope": "other"}, kid),
        "not a token": "abc.def.ghi",
    }
    for case, token in cases.items():
        status, answer = call_ekm(ekm.url, path, token)
        assert status == 401, (case, status, answer)
    status, _ = call_ekm(ekm.url, path, "")
    assert status == 401


def test_a_silent_key_manager_times_out_after_two_tries_and_a_refusing_one_fails_fast(world, tmp_path):
    w = world
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held = []
    stop = threading.Event()

    def accept_and_say_nothing():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ekm/v1/vaults/{w['ext_key']['vaultId']}"
        vault = cli(w["data_dir"], "kms", "vault", "create", "--name", "silent", "--type", "external",
                    "--external-vault-url", url)
        start = time.monotonic()
        out = sealstore(w["data_dir"], "kms", "key", "create", "--vault", vault["id"], "--name", "k",
                        "--external-key-id", w["ext_key"]["id"], check=False)
        elapsed = time.monotonic() - start
        assert out.returncode != 0 and "timed out: no answer within the 1 s read timeout; retried once" in out.stderr, out.stderr
        # Two attempts of at most 1.5 s (500 ms to connect, 1 s to answer): about 2 s here.
        print(f"silent key manager: error after {elapsed:.2f} s")
        assert 1.8 < elapsed < 5, elapsed
    finally:
        stop.set()
        silent.close()
        for c in held:
            c.close()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ekm/v1/vaults/{w['ext_key']['vaultId']}"
    vault = cli(w["data_dir"], "kms", "vault", "create", "--name", "refusing", "--type", "external",
                "--external-vault-url", url)
    start = time.monotonic()
    out = sealstore(w["data_dir"], "kms", "key", "create", "--vault", vault["id"], "--name", "k",
                    "--external-key-id", w["ext_key"]["id"], check=False)
    elapsed = time.monotonic() - start
    assert out.returncode != 0 and "refused" in out.stderr.lower(), out.stderr
    assert elapsed < 1.0, elapsed


def test_an_https_key_manager_is_verified_against_its_certificate(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    with running_server("--ekm-ca-cert", str(cert)) as (_, _, data_dir):
        kms_url = json.loads((data_dir / "serve.json").read_text())["kms"]
        ekm = KeyManager(tmp_path, kms_url + "/.well-known/jwks.json",
                         extra=["--tls-cert", str(cert), "--tls-key", str(key)])
        try:
            assert ekm.url.startswith("https://")
            ext = ekm.run("key", "create", "tls")
            vault_url = f"{ekm.url}/ekm/v1/vaults/{ext['vaultId']}"

            # Without the certificate, the key manager is not trusted.
            other = tmp_path / "untrusting"
            v = json.loads(sealstore(other, "--json", "kms", "vault", "create", "--name", "x", "--type", "external",
                                     "--external-vault-url", vault_url).stdout)
            out = sealstore(other, "kms", "key", "create", "--vault", v["id"], "--name", "k",
                            "--external-key-id", ext["id"], check=False)
            assert out.returncode != 0 and "certificate" in out.stderr.lower(), out.stderr

            # The server trusts it (--ekm-ca-cert): a key and a round trip over TLS.
            vault = cli(data_dir, "kms", "vault", "create", "--name", "tls", "--type", "external",
                        "--external-vault-url", vault_url)
            key_ = cli(data_dir, "kms", "key", "create", "--vault", vault["id"], "--name", "k",
                       "--external-key-id", ext["id"])
            ct = cli(data_dir, "kms", "encrypt", "--key", key_["id"], "--plaintext", "over tls")["ciphertext"]
            back = sealstore(data_dir, "kms", "decrypt", "--raw", "--ciphertext", ct).stdout
            assert back == "over tls"
        finally:
            ekm.stop()
