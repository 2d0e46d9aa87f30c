"""Asymmetric master keys (RSA, ECDSA) and AES-128/192 through the real `oci` CLI: key shapes,
`signed-data sign` / `verified-data verify` with every signing algorithm OCI lists, RAW and
DIGEST messages, and RSA-OAEP encrypt/decrypt. Signatures and ciphertexts are checked with
python `cryptography` against the public key the server returns, never only by the server."""

import base64
import concurrent.futures
import hashlib
import json
import pathlib
import tempfile

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from test_oci_cli import Env, OciFailed, b64, cli, running_server

HASHES = {"SHA_224": hashes.SHA224, "SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384, "SHA_512": hashes.SHA512}
HASHLIB = {"SHA_224": hashlib.sha224, "SHA_256": hashlib.sha256, "SHA_384": hashlib.sha384, "SHA_512": hashlib.sha512}
RSA_ALGORITHMS = [f"{h}_RSA_{p}" for p in ("PKCS_PSS", "PKCS1_V1_5") for h in ("SHA_256", "SHA_384", "SHA_512")]
RSA_SHA224 = ["SHA_224_RSA_PKCS_PSS", "SHA_224_RSA_PKCS1_V1_5"]
ECDSA_ALGORITHMS = ["ECDSA_SHA_256", "ECDSA_SHA_384", "ECDSA_SHA_512"]
CURVES = {"NIST_P256": (32, ec.SECP256R1), "NIST_P384": (48, ec.SECP384R1), "NIST_P521": (66, ec.SECP521R1)}


def hash_name(algorithm):
    return algorithm.replace("ECDSA_", "")[:7]


class Kms:
    """The test server's default vault as the admin sees it."""

    def __init__(self, env):
        self.env = env
        self.management, self.crypto = env.endpoints(env.vault)

    def oci(self, *args, crypto=False):
        return self.env.oci("admin", "kms", *args, endpoint=self.crypto if crypto else self.management)

    def create_key(self, name, shape):
        return self.oci("management", "key", "create", "-c", self.env.tenancy, "--display-name", name,
                        "--key-shape", json.dumps(shape), "--wait-for-state", "ENABLED")["data"]

    def version(self, key_id, version_id):
        return self.oci("management", "key-version", "get", "--key-id", key_id, "--key-version-id", version_id)["data"]

    def public_key(self, key_id, version_id):
        return serialization.load_pem_public_key(self.version(key_id, version_id)["public-key"].encode())

    def sign(self, key_id, message, algorithm, message_type=None, version=None):
        args = ["crypto", "signed-data", "sign", "--key-id", key_id, "--message", b64(message),
                "--signing-algorithm", algorithm]
        if message_type:
            args += ["--message-type", message_type]
        if version:
            args += ["--key-version-id", version]
        return self.oci(*args, crypto=True)["data"]

    def verify(self, key_id, version, message, signature, algorithm, message_type=None):
        args = ["crypto", "verified-data", "verify", "--key-id", key_id, "--key-version-id", version,
                "--message", b64(message), "--signature", signature, "--signing-algorithm", algorithm]
        if message_type:
            args += ["--message-type", message_type]
        return self.oci(*args, crypto=True)["data"]["is-signature-valid"]


@pytest.fixture(scope="module")
def kms():
    with running_server() as (_, _, data_dir):
        kms_url = json.loads((data_dir / "serve.json").read_text())["kms"]
        with tempfile.TemporaryDirectory() as tmp:
            env = Env(kms_url, data_dir, pathlib.Path(tmp))
            env.add_user("admin", groups=["Administrators"])
            yield Kms(env)


@pytest.fixture(scope="module")
def keys(kms):
    """One key per asymmetric shape the signing tests use, by name."""
    shapes = {"rsa2048": {"algorithm": "RSA", "length": 256}}
    for curve, (length, _) in CURVES.items():
        shapes[curve] = {"algorithm": "ECDSA", "length": length, "curveId": curve}
    return {name: kms.create_key(f"sign-{name}", shape) for name, shape in shapes.items()}


def check_signature(public, algorithm, message, signature):
    """Verifies with `cryptography` (raises InvalidSignature)."""
    digest = HASHES[hash_name(algorithm)]()
    if algorithm.startswith("ECDSA"):
        public.verify(signature, message, ec.ECDSA(digest))
    elif algorithm.endswith("PSS"):
        public.verify(signature, message, padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
                      digest)
    else:
        public.verify(signature, message, padding.PKCS1v15(), digest)


def test_key_shapes_as_oci(kms):
    shapes = [{"algorithm": "AES", "length": n} for n in (16, 24, 32)]
    shapes += [{"algorithm": "RSA", "length": n} for n in (256, 384, 512)]
    shapes += [{"algorithm": "ECDSA", "length": n, "curveId": c} for c, (n, _) in CURVES.items()]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(lambda s: (s, kms.create_key(f"{s['algorithm']}-{s['length']}", s)), shapes))
    for shape, key in created:
        assert key["key-shape"]["algorithm"] == shape["algorithm"]
        assert key["key-shape"]["length"] == shape["length"]
        assert key["key-shape"].get("curve-id") == shape.get("curveId")
        version = kms.version(key["id"], key["current-key-version"])
        if shape["algorithm"] == "AES":
            assert version["public-key"] is None
            continue
        assert version["public-key"].startswith("-----BEGIN PUBLIC KEY-----\n")
        public = serialization.load_pem_public_key(version["public-key"].encode())
        if shape["algorithm"] == "RSA":
            assert isinstance(public, rsa.RSAPublicKey) and public.key_size == shape["length"] * 8
        else:
            assert isinstance(public, ec.EllipticCurvePublicKey)
            assert isinstance(public.curve, CURVES[shape["curveId"]][1])
    listed = kms.oci("management", "key", "list", "-c", kms.env.tenancy, "--all", "--algorithm", "ECDSA",
                     "--curve-id", "NIST_P384")["data"]
    assert [k["algorithm"] for k in listed if k["display-name"] == "ECDSA-48"] == ["ECDSA"]
    assert all(k["algorithm"] == "ECDSA" for k in listed)

    # AES-128 keys encrypt and decrypt (AES-GCM); they do not make data keys.
    aes128 = next(k for s, k in created if s == {"algorithm": "AES", "length": 16})
    ct = kms.oci("crypto", "encrypt", "--key-id", aes128["id"], "--plaintext", b64(b"short key"), crypto=True)["data"]
    pt = kms.oci("crypto", "decrypt", "--key-id", aes128["id"], "--ciphertext", ct["ciphertext"], crypto=True)["data"]
    assert base64.b64decode(pt["plaintext"]) == b"short key"
    with pytest.raises(OciFailed) as dek:
        kms.oci("crypto", "generate-data-encryption-key", "--key-id", aes128["id"], "--include-plaintext-key", "true",
                "--key-shape", '{"algorithm":"AES","length":32}', crypto=True)
    assert dek.value.error["status"] == 400 and "AES-256" in dek.value.error["message"]


@pytest.mark.parametrize("shape", [
    {"algorithm": "AES", "length": 64},
    {"algorithm": "RSA", "length": 128},
    {"algorithm": "RSA", "length": 2048},
    {"algorithm": "RSA", "length": 256, "curveId": "NIST_P256"},
    {"algorithm": "ECDSA", "length": 32},
    {"algorithm": "ECDSA", "length": 48, "curveId": "NIST_P256"},
    {"algorithm": "ECDSA", "length": 32, "curveId": "P_256"},
])
def test_bad_shapes_are_400(kms, shape):
    with pytest.raises(OciFailed) as bad:
        kms.oci("management", "key", "create", "-c", kms.env.tenancy, "--display-name", "bad",
                "--key-shape", json.dumps(shape))
    assert bad.value.error["status"] == 400
    assert "keyShape" in bad.value.error["message"]


@pytest.mark.parametrize("name,algorithms", [("rsa2048", RSA_ALGORITHMS)] + [(c, ECDSA_ALGORITHMS) for c in CURVES])
def test_sign_verify_every_algorithm(kms, keys, name, algorithms):
    key = keys[name]
    version = key["current-key-version"]
    public = kms.public_key(key["id"], version)
    message = f"pay 100 to {name}".encode()

    def one(case):
        algorithm, message_type = case
        sent = HASHLIB[hash_name(algorithm)](message).digest() if message_type == "DIGEST" else message
        signed = kms.sign(key["id"], sent, algorithm, message_type)
        assert signed["key-id"] == key["id"] and signed["key-version-id"] == version
        assert signed["signing-algorithm"] == algorithm
        signature = base64.b64decode(signed["signature"])
        check_signature(public, algorithm, message, signature)
        assert kms.verify(key["id"], version, sent, signed["signature"], algorithm, message_type) is True
        return algorithm, message_type, signed["signature"]

    cases = [(a, t) for a in algorithms for t in ("RAW", "DIGEST")]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, cases))
    # A signature of another message is not valid, and that is an answer, not an error.
    algorithm, _, signature = results[0]
    assert kms.verify(key["id"], version, b"pay 1000000", signature, algorithm) is False
    with pytest.raises(InvalidSignature):
        check_signature(public, algorithm, b"pay 1000000", base64.b64decode(signature))
    # Verify with another algorithm of the same family: also just invalid.
    other = results[2][0]
    assert kms.verify(key["id"], version, message, signature, other) is False


def test_rsa_sha224_is_refused_clearly(kms, keys):
    for algorithm in RSA_SHA224:
        with pytest.raises(OciFailed) as refused:
            kms.sign(keys["rsa2048"]["id"], b"m", algorithm)
        assert refused.value.error["status"] == 400
        assert "SHA-224" in refused.value.error["message"]


def test_wrong_algorithm_or_digest_is_400(kms, keys):
    rsa_key, ec_key = keys["rsa2048"]["id"], keys["NIST_P256"]["id"]
    aes_key = kms.env.key
    for key_id, algorithm in [(rsa_key, "ECDSA_SHA_256"), (ec_key, "SHA_256_RSA_PKCS_PSS"),
                              (aes_key, "ECDSA_SHA_256"), (aes_key, "SHA_256_RSA_PKCS1_V1_5")]:
        with pytest.raises(OciFailed) as wrong:
            kms.sign(key_id, b"m", algorithm)
        assert wrong.value.error["status"] == 400, (key_id, algorithm)
    # A DIGEST must be as long as the algorithm's hash.
    with pytest.raises(OciFailed) as short:
        kms.sign(ec_key, hashlib.sha256(b"m").digest(), "ECDSA_SHA_384", "DIGEST")
    assert short.value.error["status"] == 400 and "48-byte" in short.value.error["message"]
    # An asymmetric key wraps no data.
    with pytest.raises(OciFailed) as dek:
        kms.oci("crypto", "generate-data-encryption-key", "--key-id", ec_key, "--include-plaintext-key", "true",
                "--key-shape", '{"algorithm":"AES","length":32}', crypto=True)
    assert dek.value.error["status"] == 400
    with pytest.raises(OciFailed) as enc:
        kms.oci("crypto", "encrypt", "--key-id", ec_key, "--plaintext", b64(b"x"), crypto=True)
    assert enc.value.error["status"] == 400


def test_rotation_keeps_old_versions_verifying(kms):
    key = kms.create_key("rotating-signer", {"algorithm": "ECDSA", "length": 48, "curveId": "NIST_P384"})
    old = key["current-key-version"]
    message = b"contract v1"
    first = kms.sign(key["id"], message, "ECDSA_SHA_384")
    assert first["key-version-id"] == old
    new = kms.oci("management", "key-version", "create", "--key-id", key["id"])["data"]
    assert new["public-key"] != kms.version(key["id"], old)["public-key"]
    second = kms.sign(key["id"], message, "ECDSA_SHA_384")
    assert second["key-version-id"] == new["id"]
    assert kms.verify(key["id"], old, message, first["signature"], "ECDSA_SHA_384") is True
    assert kms.verify(key["id"], new["id"], message, first["signature"], "ECDSA_SHA_384") is False
    assert kms.verify(key["id"], new["id"], message, second["signature"], "ECDSA_SHA_384") is True
    # The old version still signs when named, and the signature checks against its own public key.
    again = kms.sign(key["id"], message, "ECDSA_SHA_384", version=old)
    assert again["key-version-id"] == old
    check_signature(kms.public_key(key["id"], old), "ECDSA_SHA_384", message, base64.b64decode(again["signature"]))
    # The rotated key keeps its shape.
    assert kms.oci("management", "key", "get", "--key-id", key["id"])["data"]["key-shape"]["curve-id"] == "NIST_P384"


def test_rsa_oaep_encrypt_and_decrypt(kms, keys):
    key = kms.create_key("rsa-oaep", {"algorithm": "RSA", "length": 384})
    version = key["current-key-version"]
    public = kms.public_key(key["id"], version)
    oaep = {"RSA_OAEP_SHA_1": hashes.SHA1, "RSA_OAEP_SHA_256": hashes.SHA256}
    for algorithm, digest in oaep.items():
        # Encrypted outside with the public key, decrypted by the service.
        secret = f"wrapped under {algorithm}".encode()
        outside = public.encrypt(secret, padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None))
        out = kms.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", b64(outside),
                      "--encryption-algorithm", algorithm, crypto=True)["data"]
        assert base64.b64decode(out["plaintext"]) == secret
        assert out["key-version-id"] == version and out["encryption-algorithm"] == algorithm
        # Encrypted by the service: one modulus-sized block, decrypting back.
        enc = kms.oci("crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(secret),
                      "--encryption-algorithm", algorithm.lower(), crypto=True)["data"]
        assert len(base64.b64decode(enc["ciphertext"])) == 384
        assert enc["encryption-algorithm"] == algorithm and enc["key-version-id"] == version
        back = kms.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", enc["ciphertext"],
                       "--encryption-algorithm", algorithm, crypto=True)["data"]
        assert base64.b64decode(back["plaintext"]) == secret
    # The other OAEP hash does not decrypt it.
    with pytest.raises(OciFailed) as wrong:
        kms.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", enc["ciphertext"],
                "--encryption-algorithm", "RSA_OAEP_SHA_1", crypto=True)
    assert wrong.value.error["status"] == 400
    # An RSA key needs an RSA algorithm; an AES key refuses one.
    with pytest.raises(OciFailed) as missing:
        kms.oci("crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"x"), crypto=True)
    assert missing.value.error["status"] == 400
    with pytest.raises(OciFailed) as aes:
        kms.oci("crypto", "encrypt", "--key-id", kms.env.key, "--plaintext", b64(b"x"),
                "--encryption-algorithm", "RSA_OAEP_SHA_256", crypto=True)
    assert aes.value.error["status"] == 400
    # After a rotation, data encrypted to the old public key decrypts naming the old version.
    kms.oci("management", "key-version", "create", "--key-id", key["id"])
    old_ct = public.encrypt(b"before rotation", padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                             algorithm=hashes.SHA256(), label=None))
    with pytest.raises(OciFailed):
        kms.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", b64(old_ct),
                "--encryption-algorithm", "RSA_OAEP_SHA_256", crypto=True)
    back = kms.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", b64(old_ct),
                   "--encryption-algorithm", "RSA_OAEP_SHA_256", "--key-version-id", version, crypto=True)["data"]
    assert base64.b64decode(back["plaintext"]) == b"before rotation"


def test_use_keys_signs_and_read_keys_only_sees_the_public_key(kms, keys):
    env = kms.env
    for group, verb in [("Signers", "use"), ("Readers", "read")]:
        cli(env.data_dir, "iam", "group", "create", group)
        cli(env.data_dir, "iam", "policy", "create", f"{group.lower()}-policy", "--statement",
            f"Allow group {group} to {verb} keys in tenancy")
        env.add_user(group.lower(), groups=[group])
    key = keys["NIST_P256"]
    version = key["current-key-version"]
    args = ["kms", "crypto", "signed-data", "sign", "--key-id", key["id"], "--message", b64(b"m"),
            "--signing-algorithm", "ECDSA_SHA_256"]
    signed = env.oci("signers", *args, endpoint=kms.crypto)["data"]
    assert env.oci("signers", "kms", "crypto", "verified-data", "verify", "--key-id", key["id"],
                   "--key-version-id", version, "--message", b64(b"m"), "--signature", signed["signature"],
                   "--signing-algorithm", "ECDSA_SHA_256", endpoint=kms.crypto)["data"]["is-signature-valid"] is True
    with pytest.raises(OciFailed) as refused:
        env.oci("readers", *args, endpoint=kms.crypto)
    assert refused.value.error["status"] == 404
    assert refused.value.error["code"] == "NotAuthorizedOrNotFound"
    pem = env.oci("readers", "kms", "management", "key-version", "get", "--key-id", key["id"],
                  "--key-version-id", version, endpoint=kms.management)["data"]["public-key"]
    check_signature(serialization.load_pem_public_key(pem.encode()), "ECDSA_SHA_256", b"m",
                    base64.b64decode(signed["signature"]))
