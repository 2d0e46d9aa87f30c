"""HSM protection through the real binary: a SoftHSM2 token (softhsm2, installed by
./scripts/test) made here, keys created with protection mode HSM by the `oci` CLI and by
`sealstore kms`, then used by S3 objects and volumes; RSA and ECDSA keys sign, verify and
decrypt in the token, their signatures checked by python `cryptography` against the public key
the server returns, and the token inspected with `pkcs11-tool` (opensc, installed by
./scripts/test)."""

import base64
import concurrent.futures
import filecmp
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import boto3
import pytest
from botocore.config import Config
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from test_oci_cli import Env, OciFailed, b64, cli, sealstore  # same directory
from test_asymmetric import (CURVES, ECDSA_ALGORITHMS, HASHLIB, RSA_ALGORITHMS, RSA_SHA224, Kms,
                             check_signature, hash_name)
from conftest import running_server  # tests/s3, put on sys.path by test_oci_cli

MODULE = os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
LABEL = "sealstore"
PIN = "4321"


@pytest.fixture(scope="module")
def token():
    """A fresh SoftHSM2 token; its flags for sealstore. SOFTHSM2_CONF is set for this module."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        tmp = pathlib.Path(tmp)
        (tmp / "tokens").mkdir()
        conf = tmp / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        mp.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--pin", PIN, "--so-pin", "87654321"],
            check=True, capture_output=True,
        )
        pin_file = tmp / "pin"
        pin_file.write_text(PIN + "\n")
        pin_file.chmod(0o600)
        yield tmp, ["--pkcs11-module", MODULE, "--pkcs11-token-label", LABEL, "--pkcs11-pin-file", str(pin_file)]


@pytest.fixture(scope="module")
def server(token):
    tmp, flags = token
    with running_server(*flags) as (endpoint, keys, data_dir):
        env = Env(json.loads((data_dir / "serve.json").read_text())["kms"], data_dir, tmp)
        env.add_user("admin", groups=["Administrators"])
        management, crypto = env.endpoints(env.vault)
        key = env.oci(
            "admin", "kms", "management", "key", "create", "--compartment-id", env.tenancy,
            "--display-name", "hsm-key", "--key-shape", '{"algorithm":"AES","length":32}',
            "--protection-mode", "HSM", "--wait-for-state", "ENABLED", endpoint=management,
        )["data"]
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=keys["accessKeyId"],
            aws_secret_access_key=keys["secretAccessKey"], region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, max_pool_connections=16),
        )
        yield env, management, crypto, key, s3



def test_an_hsm_key_through_the_oci_cli(server):
    env, management, crypto, key, _ = server
    assert key["protection-mode"] == "HSM"
    got = env.oci("admin", "kms", "management", "key", "get", "--key-id", key["id"], endpoint=management)["data"]
    assert got["protection-mode"] == "HSM" and got["lifecycle-state"] == "ENABLED"

    plaintext = "c2VjcmV0IGluIHRoZSB0b2tlbg=="
    first = env.oci("admin", "kms", "crypto", "encrypt", "--key-id", key["id"], "--plaintext", plaintext,
                    "--associated-data", '{"app":"hsm"}', endpoint=crypto)["data"]
    env.oci("admin", "kms", "management", "key-version", "create", "--key-id", key["id"], endpoint=management)
    second = env.oci("admin", "kms", "crypto", "encrypt", "--key-id", key["id"], "--plaintext", plaintext,
                     endpoint=crypto)["data"]
    assert first["key-version-id"] != second["key-version-id"]
    back = env.oci("admin", "kms", "crypto", "decrypt", "--key-id", key["id"], "--ciphertext", first["ciphertext"],
                   "--associated-data", '{"app":"hsm"}', endpoint=crypto)["data"]
    assert back["plaintext"] == plaintext and back["key-version-id"] == first["key-version-id"]

    dek = env.oci("admin", "kms", "crypto", "generate-data-encryption-key", "--key-id", key["id"],
                  "--include-plaintext-key", "true", "--key-shape", '{"algorithm":"AES","length":32}',
                  endpoint=crypto)["data"]
    unwrapped = env.oci("admin", "kms", "crypto", "decrypt", "--key-id", key["id"], "--ciphertext",
                        dek["ciphertext"], endpoint=crypto)["data"]
    assert unwrapped["plaintext"] == dek["plaintext"]


def token_objects():
    """The objects in the token, as `pkcs11-tool --list-objects` (logged in) shows them: one
    dict per object with its kind ("Private Key Object; RSA", ...), label and access flags."""
    tool = shutil.which("pkcs11-tool")
    assert tool, "pkcs11-tool is missing: run ./scripts/test, which installs opensc"
    out = subprocess.run([tool, "--module", MODULE, "--token-label", LABEL, "--login", "--pin", PIN,
                          "--list-objects"], check=True, capture_output=True, text=True).stdout
    objects = []
    for line in out.splitlines():
        if line and not line.startswith(" ") and "Object;" in line:
            objects.append({"kind": line.strip(), "label": None, "access": set()})
        elif objects and line.strip().startswith("label:"):
            objects[-1]["label"] = line.split(":", 1)[1].strip()
        elif objects and line.strip().startswith("Access:"):
            objects[-1]["access"] = {a.strip() for a in line.split(":", 1)[1].split(",")}
    return objects


def objects_of(version_id):
    return [o for o in token_objects() if o["label"] == version_id]


def assert_in_the_token(version_id, algorithm):
    """A private key object (sensitive, never extractable) and its public key object."""
    objects = objects_of(version_id)
    kinds = sorted(o["kind"].split(";")[0] for o in objects)
    assert kinds == ["Private Key Object", "Public Key Object"], objects
    private = next(o for o in objects if o["kind"].startswith("Private"))
    assert private["kind"].split(";")[1].split()[0] == {"RSA": "RSA", "ECDSA": "EC"}[algorithm], private
    assert {"sensitive", "always sensitive", "never extractable", "local"} <= private["access"], private


def create_hsm_key(kms, name, shape):
    return kms.oci("management", "key", "create", "-c", kms.env.tenancy, "--display-name", name,
                   "--key-shape", json.dumps(shape), "--protection-mode", "HSM", "--wait-for-state", "ENABLED")["data"]


@pytest.fixture(scope="module")
def hsm(server):
    """The server's default vault as the admin sees it (test_asymmetric's helper)."""
    return Kms(server[0])


@pytest.fixture(scope="module")
def hsm_signers(hsm):
    shapes = {"rsa2048": {"algorithm": "RSA", "length": 256}}
    for curve, (length, _) in CURVES.items():
        shapes[curve] = {"algorithm": "ECDSA", "length": length, "curveId": curve}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        keys = pool.map(lambda item: (item[0], create_hsm_key(hsm, f"hsm-sign-{item[0]}", item[1])), shapes.items())
        return dict(keys)


def test_hsm_keys_of_every_shape_are_made_in_the_token(hsm):
    shapes = [{"algorithm": "AES", "length": n} for n in (16, 24)]
    shapes += [{"algorithm": "RSA", "length": n} for n in (256, 384, 512)]
    shapes += [{"algorithm": "ECDSA", "length": n, "curveId": c} for c, (n, _) in CURVES.items()]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(lambda s: (s, create_hsm_key(hsm, f"hsm-{s['algorithm']}-{s['length']}", s)), shapes))
    for shape, key in created:
        assert key["protection-mode"] == "HSM"
        assert key["key-shape"]["algorithm"] == shape["algorithm"] and key["key-shape"]["length"] == shape["length"]
        version = hsm.version(key["id"], key["current-key-version"])
        if shape["algorithm"] == "AES":
            assert version["public-key"] is None
            [secret] = objects_of(version["id"])
            assert secret["kind"] == f"Secret Key Object; AES length {shape['length']}", secret
            assert {"sensitive", "never extractable"} <= secret["access"], secret
            ct = hsm.oci("crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"short"), crypto=True)["data"]
            pt = hsm.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", ct["ciphertext"],
                         crypto=True)["data"]
            assert base64.b64decode(pt["plaintext"]) == b"short"
            continue
        public = serialization.load_pem_public_key(version["public-key"].encode())
        if shape["algorithm"] == "RSA":
            assert isinstance(public, rsa.RSAPublicKey) and public.key_size == shape["length"] * 8
            assert public.public_numbers().e == 65537
        else:
            assert isinstance(public.curve, CURVES[shape["curveId"]][1])
        assert_in_the_token(version["id"], shape["algorithm"])
    # Listed as HSM keys.
    listed = hsm.oci("management", "key", "list", "-c", hsm.env.tenancy, "--all", "--protection-mode", "HSM")["data"]
    assert {k["id"] for _, k in created} <= {k["id"] for k in listed}


@pytest.mark.parametrize("name,algorithms", [("rsa2048", RSA_ALGORITHMS + RSA_SHA224)] +
                         [(c, ECDSA_ALGORITHMS) for c in CURVES])
def test_hsm_keys_sign_in_the_token_and_verify(hsm, hsm_signers, name, algorithms):
    key = hsm_signers[name]
    version = key["current-key-version"]
    public = hsm.public_key(key["id"], version)
    message = f"pay 100 to {name}".encode()

    def one(case):
        algorithm, message_type = case
        sent = HASHLIB[hash_name(algorithm)](message).digest() if message_type == "DIGEST" else message
        signed = hsm.sign(key["id"], sent, algorithm, message_type)
        assert signed["key-version-id"] == version and signed["signing-algorithm"] == algorithm
        check_signature(public, algorithm, message, base64.b64decode(signed["signature"]))
        assert hsm.verify(key["id"], version, sent, signed["signature"], algorithm, message_type) is True
        return algorithm, signed["signature"]

    # Every algorithm on RAW messages, two on DIGESTs (SHA-224 among them for RSA).
    cases = [(a, "RAW") for a in algorithms] + [(algorithms[0], "DIGEST"), (algorithms[-1], "DIGEST")]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, cases))
    for algorithm, signature in [results[0], results[-1]]:
        assert hsm.verify(key["id"], version, b"pay 1000000", signature, algorithm) is False
        with pytest.raises(InvalidSignature):
            check_signature(public, algorithm, b"pay 1000000", base64.b64decode(signature))


def test_hsm_rsa_oaep_decrypts_in_the_token(hsm):
    key = create_hsm_key(hsm, "hsm-oaep", {"algorithm": "RSA", "length": 384})
    version = key["current-key-version"]
    public = hsm.public_key(key["id"], version)

    def decrypt(ciphertext, algorithm):
        return hsm.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", b64(ciphertext),
                       "--encryption-algorithm", algorithm, crypto=True)["data"]

    sha1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    outside = public.encrypt(b"wrapped outside", sha1)
    out = decrypt(outside, "RSA_OAEP_SHA_1")
    assert base64.b64decode(out["plaintext"]) == b"wrapped outside" and out["key-version-id"] == version
    # Encrypted by the service (with the public key), decrypted in the token.
    enc = hsm.oci("crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"wrapped inside"),
                  "--encryption-algorithm", "RSA_OAEP_SHA_1", crypto=True)["data"]
    back = decrypt(base64.b64decode(enc["ciphertext"]), "RSA_OAEP_SHA_1")
    assert base64.b64decode(back["plaintext"]) == b"wrapped inside"
    altered = bytearray(outside)
    altered[5] ^= 1
    with pytest.raises(OciFailed) as bad:
        decrypt(bytes(altered), "RSA_OAEP_SHA_1")
    assert bad.value.error["status"] == 400
    # SHA-256 OAEP: decrypted if the token does it; SoftHSM2 2.6 does SHA-1 only, and that is
    # a clear 400, not a wrong plaintext.
    sha256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    try:
        out = decrypt(public.encrypt(b"under sha-256", sha256), "RSA_OAEP_SHA_256")
        assert base64.b64decode(out["plaintext"]) == b"under sha-256"
    except OciFailed as refused:
        assert refused.error["status"] == 400
        assert "cannot decrypt RSA_OAEP_SHA_256" in refused.error["message"], refused.error


def test_hsm_rotation_keeps_old_versions_verifying(hsm):
    key = create_hsm_key(hsm, "hsm-rotating", {"algorithm": "RSA", "length": 256})
    old = key["current-key-version"]
    message = b"contract v1"
    first = hsm.sign(key["id"], message, "SHA_224_RSA_PKCS_PSS")
    new = hsm.oci("management", "key-version", "create", "--key-id", key["id"])["data"]
    second = hsm.sign(key["id"], message, "SHA_224_RSA_PKCS_PSS")
    assert (first["key-version-id"], second["key-version-id"]) == (old, new["id"])
    assert hsm.verify(key["id"], old, message, first["signature"], "SHA_224_RSA_PKCS_PSS") is True
    assert hsm.verify(key["id"], new["id"], message, first["signature"], "SHA_224_RSA_PKCS_PSS") is False
    assert hsm.verify(key["id"], new["id"], message, second["signature"], "SHA_224_RSA_PKCS_PSS") is True
    check_signature(hsm.public_key(key["id"], old), "SHA_224_RSA_PKCS_PSS", message,
                    base64.b64decode(first["signature"]))
    check_signature(serialization.load_pem_public_key(new["public-key"].encode()), "SHA_224_RSA_PKCS_PSS", message,
                    base64.b64decode(second["signature"]))
    for version in (old, new["id"]):
        assert_in_the_token(version, "RSA")


def test_deleting_an_hsm_key_destroys_its_objects_in_the_token(token, tmp_path):
    tmp, flags = token
    data = tmp_path / "data"
    (tmp_path / "oci").mkdir()
    with running_server(*flags, data_dir=data):
        env = Env(json.loads((data / "serve.json").read_text())["kms"], data, tmp_path / "oci")
        env.add_user("admin", groups=["Administrators"])
        kms = Kms(env)
        doomed = create_hsm_key(kms, "doomed", {"algorithm": "ECDSA", "length": 32, "curveId": "NIST_P256"})
        rotated = kms.oci("management", "key-version", "create", "--key-id", doomed["id"])["data"]
        kept = create_hsm_key(kms, "kept", {"algorithm": "RSA", "length": 256})
        versions = [doomed["current-key-version"], rotated["id"]]
        for version in versions:
            assert_in_the_token(version, "ECDSA")
        kms.oci("management", "key", "schedule-deletion", "--key-id", doomed["id"])
        # Pending deletion: unusable, but still in the token until the deadline.
        with pytest.raises(OciFailed):
            kms.sign(doomed["id"], b"m", "ECDSA_SHA_256")
        assert len(objects_of(rotated["id"])) == 2
    # Past the deadline (at most 30 days ahead) the scheduler destroys the key's material.
    sealstore(data, *flags, "kms", "run-scheduler", "--clock-offset-days", "31")
    for version in versions:
        assert objects_of(version) == []
    assert_in_the_token(kept["current-key-version"], "RSA")


def test_objects_under_an_hsm_key_with_eight_clients_at_once(server):
    _, _, _, key, s3 = server
    s3.create_bucket(Bucket="hsm")
    bodies = {f"obj-{i}": os.urandom(100_000 + i) for i in range(8)}

    def put_and_get(name):
        s3.put_object(Bucket="hsm", Key=name, Body=bodies[name], ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=key["id"])
        got = s3.get_object(Bucket="hsm", Key=name)
        assert got["SSEKMSKeyId"] == key["id"]
        return got["Body"].read()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = dict(zip(bodies, pool.map(put_and_get, bodies)))
    assert results == bodies


def test_a_volume_under_an_hsm_key(token, tmp_path):
    _, flags = token
    data = tmp_path / "data"
    vault = json.loads(sealstore(data, *flags, "--json", "kms", "vault", "create", "--name", "v").stdout)["id"]
    key = json.loads(sealstore(data, *flags, "--json", "kms", "key", "create", "--vault", vault, "--name", "vol",
                               "--protection-mode", "HSM").stdout)
    assert key["protectionMode"] == "HSM"
    sealstore(data, *flags, "volume", "create", "disk", "--size", "4M", "--key", key["id"])
    image = tmp_path / "image"
    image.write_bytes(os.urandom(4 << 20))
    sealstore(data, *flags, "volume", "import", "disk", str(image))
    sealstore(data, *flags, "volume", "export", "disk", str(tmp_path / "out"))
    assert filecmp.cmp(image, tmp_path / "out", shallow=False)

    # Without the token, the data directory cannot open the volume's data key.
    out = sealstore(data, "volume", "export", "disk", str(tmp_path / "nope"), check=False)
    assert out.returncode != 0 and "protection mode HSM is not configured" in out.stderr, out.stderr


def test_a_wrong_pin_or_token_fails_at_start_with_the_reason(token, tmp_path):
    tmp, flags = token
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000\n")
    bad = flags[:-1] + [str(wrong)]
    out = sealstore(tmp_path / "d1", *bad, "serve", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0",
                    check=False)
    assert out.returncode != 0 and f"the PIN for token '{LABEL}' is wrong" in out.stderr, out.stderr
    other = list(flags)
    other[other.index(LABEL)] = "no-such-token"
    out = sealstore(tmp_path / "d2", *other, "kms", "status", check=False)
    assert out.returncode != 0 and "no initialized token labelled 'no-such-token'" in out.stderr, out.stderr


def test_an_imported_key_with_hsm_protection_lives_in_the_token_and_cannot_be_exported(hsm):
    """`key import --protection-mode HSM`: the material is unwrapped into the token, sensitive and
    not extractable from then on (the token truthfully records that it was not always: neither
    `always sensitive`, `never extractable` nor `local`, unlike a generated key); it signs there
    with the key we hold; `crypto key export` refuses HSM keys, as OCI does."""
    from test_byok import pkcs8, public_pem, wrap

    ours = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrapping = hsm.oci("management", "wrapping-key", "get")["data"]["public-key"]
    wrapped = wrap(wrapping, pkcs8(ours))
    key = hsm.oci("management", "key", "import", "-c", hsm.env.tenancy, "--display-name", "hsm-byok",
                  "--key-shape", json.dumps({"algorithm": "RSA", "length": 256}), "--protection-mode", "HSM",
                  "--wrapped-import-key",
                  json.dumps({"keyMaterial": b64(wrapped), "wrappingAlgorithm": "RSA_OAEP_AES_SHA256"}))["data"]
    assert key["protection-mode"] == "HSM"
    version = hsm.version(key["id"], key["current-key-version"])
    assert version["origin"] == "EXTERNAL"
    assert version["public-key"].strip() == public_pem(ours.public_key()).strip()
    objects = objects_of(version["id"])
    private = next(o for o in objects if o["kind"].startswith("Private"))
    assert "sensitive" in private["access"] and "extractable" not in private["access"], private
    assert not {"local", "never extractable"} & private["access"], private
    signed = hsm.sign(key["id"], b"imported into the token", "SHA_256_RSA_PKCS1_V1_5")
    ours.public_key().verify(base64.b64decode(signed["signature"]), b"imported into the token",
                             padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(OciFailed) as refused:
        hsm.oci("crypto", "key", "export", "--key-id", key["id"], "--algorithm", "RSA_OAEP_AES_SHA256",
                "--public-key", public_pem(ours.public_key()), crypto=True)
    assert refused.value.error["status"] == 400 and "SOFTWARE" in refused.value.error["message"]
