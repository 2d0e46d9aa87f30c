"""Bring your own key and key export through the real `oci` CLI: the vault's wrapping key,
`key import` / `key-version import` with material wrapped as OCI documents (RSA_OAEP_SHA256 and
RSA_OAEP_AES_SHA256, built here with python `cryptography`), refusal of every bad or
mis-wrapped material with nothing created, `crypto key export` unwrapped here, and
`sealstore kms key import`. What the server says is always checked against an independent
library: the public key of an imported key is the one we hold, signatures verify, exported
material is the material we imported."""

import base64
import json
import os
import pathlib
import tempfile

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap_with_padding

from test_oci_cli import Env, OciFailed, b64, cli, running_server, sealstore

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def wrap(public_pem, material, algorithm="RSA_OAEP_AES_SHA256", temporary=None):
    """Wraps `material` as OCI's import documentation does with openssl."""
    public = serialization.load_pem_public_key(public_pem.encode())
    if algorithm == "RSA_OAEP_SHA256":
        return public.encrypt(material, OAEP)
    temporary = temporary or os.urandom(32)
    return public.encrypt(temporary, OAEP) + aes_key_wrap_with_padding(temporary, material)


def unwrap(private, blob, algorithm):
    if algorithm == "RSA_OAEP_SHA256":
        return private.decrypt(blob, OAEP)
    size = private.key_size // 8
    return aes_key_unwrap_with_padding(private.decrypt(blob[:size], OAEP), blob[size:])


def pkcs8(private):
    return private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def public_pem(key):
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class Kms:
    def __init__(self, env):
        self.env = env
        self.management, self.crypto = env.endpoints(env.vault)

    def oci(self, *args, crypto=False, user="admin"):
        return self.env.oci(user, "kms", *args, endpoint=self.crypto if crypto else self.management)

    def wrapping_key(self):
        return self.oci("management", "wrapping-key", "get")["data"]

    def import_key(self, name, shape, material, algorithm="RSA_OAEP_AES_SHA256", user="admin"):
        wrapped = wrap(self.wrapping_key()["public-key"], material, algorithm)
        return self.oci("management", "key", "import", "-c", self.env.tenancy, "--display-name", name,
                        "--key-shape", json.dumps(shape), "--wrapped-import-key",
                        json.dumps({"keyMaterial": b64(wrapped), "wrappingAlgorithm": algorithm}), user=user)["data"]

    def version(self, key_id, version_id):
        return self.oci("management", "key-version", "get", "--key-id", key_id, "--key-version-id", version_id)["data"]

    def key_ids(self):
        listed = self.oci("management", "key", "list", "-c", self.env.tenancy, "--all")
        return {k["id"] for k in (listed or {"data": []})["data"]}

    def export(self, key_id, public, algorithm, version=None, user="admin"):
        args = ["crypto", "key", "export", "--key-id", key_id, "--algorithm", algorithm, "--public-key", public]
        if version:
            args += ["--key-version-id", version]
        return self.oci(*args, crypto=True, user=user)["data"]


@pytest.fixture(scope="module")
def kms():
    with running_server() as (_, _, data_dir):
        kms_url = json.loads((data_dir / "serve.json").read_text())["kms"]
        with tempfile.TemporaryDirectory() as tmp:
            env = Env(kms_url, data_dir, pathlib.Path(tmp))
            env.add_user("admin", groups=["Administrators"])
            yield Kms(env)


@pytest.fixture(scope="module")
def caller():
    """The RSA key pair an exporting caller holds."""
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def test_wrapping_key_is_one_rsa4096_key_per_vault(kms):
    first = kms.wrapping_key()
    assert first == kms.wrapping_key()
    assert first["id"].startswith("ocid1.wrappingkey.")
    assert first["vault-id"] == kms.env.vault
    assert first["compartment-id"] == kms.env.tenancy
    assert first["lifecycle-state"] == "ENABLED"
    public = serialization.load_pem_public_key(first["public-key"].encode())
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 4096


@pytest.mark.parametrize("length,algorithm", [(16, "RSA_OAEP_SHA256"), (24, "RSA_OAEP_AES_SHA256"),
                                              (32, "RSA_OAEP_AES_SHA256")])
def test_import_aes_key_then_export_gives_back_the_same_material(kms, caller, length, algorithm):
    material = os.urandom(length)
    key = kms.import_key(f"byok-aes-{length}", {"algorithm": "AES", "length": length}, material, algorithm)
    assert key["key-shape"] == {"algorithm": "AES", "length": length, "curve-id": None}
    version = kms.version(key["id"], key["current-key-version"])
    assert version["origin"] == "EXTERNAL"
    assert version["public-key"] is None
    # The key works like any other…
    sealed = kms.oci("crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"byok data"),
                     crypto=True)["data"]["ciphertext"]
    opened = kms.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", sealed, crypto=True)["data"]
    assert opened["plaintext"] == b64(b"byok data")
    # …and its material is the one we brought, as an export under our own key shows.
    for export_algorithm in ("RSA_OAEP_AES_SHA256", "RSA_OAEP_SHA256"):
        out = kms.export(key["id"], public_pem(caller.public_key()), export_algorithm)
        assert out["algorithm"] == export_algorithm
        assert out["key-version-id"] == key["current-key-version"]
        assert out["vault-id"] == kms.env.vault
        blob = base64.b64decode(out["encrypted-key"])
        assert unwrap(caller, blob, export_algorithm) == material


@pytest.mark.parametrize("curve,length", [(ec.SECP256R1, 32), (ec.SECP384R1, 48), (ec.SECP521R1, 66)])
def test_import_ecdsa_key_signs_with_our_key(kms, curve, length):
    private = ec.generate_private_key(curve())
    curve_id = {32: "NIST_P256", 48: "NIST_P384", 66: "NIST_P521"}[length]
    key = kms.import_key(f"byok-{curve_id}", {"algorithm": "ECDSA", "length": length, "curveId": curve_id},
                         pkcs8(private))
    version = kms.version(key["id"], key["current-key-version"])
    assert version["origin"] == "EXTERNAL"
    assert version["public-key"].strip() == public_pem(private.public_key()).strip()
    signed = kms.oci("crypto", "signed-data", "sign", "--key-id", key["id"], "--message", b64(b"hello"),
                     "--signing-algorithm", "ECDSA_SHA_256", crypto=True)["data"]
    private.public_key().verify(base64.b64decode(signed["signature"]), b"hello",
                                ec.ECDSA(hashes.SHA256()))


def test_import_rsa_key_signs_decrypts_and_exports_as_ours(kms, caller):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = kms.import_key("byok-rsa", {"algorithm": "RSA", "length": 256}, pkcs8(private))
    version_id = key["current-key-version"]
    assert kms.version(key["id"], version_id)["public-key"].strip() == public_pem(private.public_key()).strip()
    signed = kms.oci("crypto", "signed-data", "sign", "--key-id", key["id"], "--message", b64(b"contract"),
                     "--signing-algorithm", "SHA_256_RSA_PKCS_PSS", crypto=True)["data"]
    private.public_key().verify(base64.b64decode(signed["signature"]), b"contract",
                                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    ciphertext = private.public_key().encrypt(b"for the server", OAEP)
    out = kms.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", b64(ciphertext),
                  "--encryption-algorithm", "RSA_OAEP_SHA_256", crypto=True)["data"]
    assert out["plaintext"] == b64(b"for the server")
    exported = kms.export(key["id"], public_pem(caller.public_key()), "RSA_OAEP_AES_SHA256")
    der = unwrap(caller, base64.b64decode(exported["encrypted-key"]), "RSA_OAEP_AES_SHA256")
    back = serialization.load_der_private_key(der, password=None)
    assert back.private_numbers() == private.private_numbers()
    # An RSA private key does not fit one RSA-OAEP block: export says to use the AES format.
    with pytest.raises(OciFailed) as refused:
        kms.export(key["id"], public_pem(caller.public_key()), "RSA_OAEP_SHA256")
    assert refused.value.error["status"] == 400 and "RSA_OAEP_AES_SHA256" in refused.value.error["message"]


def test_key_version_import_rotates_and_old_ciphertexts_still_decrypt(kms, caller):
    first = os.urandom(32)
    key = kms.import_key("byok-rotated", {"algorithm": "AES", "length": 32}, first)
    old = kms.oci("crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"old"),
                  crypto=True)["data"]["ciphertext"]
    second = os.urandom(32)
    wrapped = wrap(kms.wrapping_key()["public-key"], second)
    version = kms.oci("management", "key-version", "import", "--key-id", key["id"], "--wrapped-import-key",
                      json.dumps({"keyMaterial": b64(wrapped), "wrappingAlgorithm": "RSA_OAEP_AES_SHA256"}))["data"]
    assert version["origin"] == "EXTERNAL" and version["key-id"] == key["id"]
    now = kms.oci("management", "key", "get", "--key-id", key["id"])["data"]
    assert now["current-key-version"] == version["id"] != key["current-key-version"]
    assert kms.oci("crypto", "decrypt", "--key-id", key["id"], "--ciphertext", old,
                   crypto=True)["data"]["plaintext"] == b64(b"old")
    out = kms.export(key["id"], public_pem(caller.public_key()), "RSA_OAEP_SHA256")
    assert unwrap(caller, base64.b64decode(out["encrypted-key"]), "RSA_OAEP_SHA256") == second
    out = kms.export(key["id"], public_pem(caller.public_key()), "RSA_OAEP_SHA256",
                     version=key["current-key-version"])
    assert unwrap(caller, base64.b64decode(out["encrypted-key"]), "RSA_OAEP_SHA256") == first


def bad_imports(kms):
    """(case, shape, wrappedImportKey) that must all be refused."""
    pem = kms.wrapping_key()["public-key"]
    aes = os.urandom(32)
    good = wrap(pem, aes)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    rsa3072 = pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=3072))
    shape = {"algorithm": "AES", "length": 32}
    key = lambda blob, alg="RSA_OAEP_AES_SHA256": {"keyMaterial": b64(blob), "wrappingAlgorithm": alg}
    flipped = [bytes(b ^ (1 if i == at else 0) for i, b in enumerate(good)) for at in (0, 511, 512, len(good) - 1)]
    return [
        *[(f"flipped byte {n}", shape, key(blob)) for n, blob in enumerate(flipped)],
        ("truncated", shape, key(good[:-8])),
        ("wrong length for the shape", {"algorithm": "AES", "length": 16}, key(good)),
        ("AES material for an RSA shape", {"algorithm": "RSA", "length": 256}, key(good)),
        ("RSA-3072 material for RSA-2048", {"algorithm": "RSA", "length": 256}, key(wrap(pem, rsa3072))),
        ("wrapped under another key", shape, key(wrap(public_pem(stranger.public_key()), aes))),
        ("declared with the other algorithm", shape, key(good, "RSA_OAEP_SHA256")),
        ("unknown algorithm", shape, key(good, "RSA_OAEP_SHA1")),
        ("not base64", shape, {"keyMaterial": "***", "wrappingAlgorithm": "RSA_OAEP_AES_SHA256"}),
    ]


def test_bad_or_miswrapped_material_is_400_and_creates_nothing(kms):
    before = kms.key_ids()
    for case, shape, wrapped in bad_imports(kms):
        with pytest.raises(OciFailed) as refused:
            kms.oci("management", "key", "import", "-c", kms.env.tenancy, "--display-name", "bad",
                    "--key-shape", json.dumps(shape), "--wrapped-import-key", json.dumps(wrapped))
        assert refused.value.error["status"] == 400, case
        assert refused.value.error["message"], case
    assert kms.key_ids() == before
    # key-version import refuses the same way and the key keeps its version.
    key = kms.import_key("byok-victim", {"algorithm": "AES", "length": 32}, os.urandom(32))
    for case, _, wrapped in bad_imports(kms)[:5]:
        with pytest.raises(OciFailed) as refused:
            kms.oci("management", "key-version", "import", "--key-id", key["id"], "--wrapped-import-key",
                    json.dumps(wrapped))
        assert refused.value.error["status"] == 400, case
    versions = kms.oci("management", "key-version", "list", "--key-id", key["id"])["data"]
    assert [v["id"] for v in versions] == [key["current-key-version"]]


def test_export_refusals(kms, caller):
    key = kms.env.key
    for bad_public, why in [("file://k.pem", "PEM"),
                            (public_pem(ec.generate_private_key(ec.SECP256R1()).public_key()), "RSA"),
                            (public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)
                                        .public_key()), "2048, 3072 or 4096")]:
        with pytest.raises(OciFailed) as refused:
            kms.export(key, bad_public, "RSA_OAEP_AES_SHA256")
        assert refused.value.error["status"] == 400 and why in refused.value.error["message"]
    # A caller who may use keys may not take them away.
    cli(kms.env.data_dir, "iam", "group", "create", "ByokUsers")
    cli(kms.env.data_dir, "iam", "policy", "create", "byok-users", "--statement",
        "Allow group ByokUsers to use keys in tenancy")
    kms.env.add_user("byok-app", groups=["ByokUsers"])
    with pytest.raises(OciFailed) as refused:
        kms.export(key, public_pem(caller.public_key()), "RSA_OAEP_AES_SHA256", user="byok-app")
    assert refused.value.error["status"] == 404
    with pytest.raises(OciFailed) as refused:
        kms.import_key("not-allowed", {"algorithm": "AES", "length": 32}, b"k" * 32, user="byok-app")
    assert refused.value.error["status"] == 404


def test_sealstore_cli_imports_local_material(kms, tmp_path):
    private = ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "ec.pem"
    pem.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    key = cli(kms.env.data_dir, "kms", "key", "import", "--vault", kms.env.vault, "--name", "cli-ec",
              "--shape", "ECDSA-P384", "--material", str(pem))
    assert key["keyShape"] == {"algorithm": "ECDSA", "length": 48, "curveId": "NIST_P384"}
    version = kms.version(key["id"], key["currentKeyVersion"])
    assert version["origin"] == "EXTERNAL"
    assert version["public-key"].strip() == public_pem(private.public_key()).strip()
    raw = tmp_path / "aes.key"
    raw.write_bytes(os.urandom(32))
    aes = cli(kms.env.data_dir, "kms", "key", "import", "--vault", kms.env.vault, "--name", "cli-aes",
              "--material", str(raw))
    rotated = cli(kms.env.data_dir, "kms", "key", "import-version", aes["id"], "--material", str(raw))
    assert rotated["origin"] == "EXTERNAL" and rotated["id"] != aes["currentKeyVersion"]
    # Material that does not fit the shape never leaves the machine as a key.
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 20)
    out = sealstore(kms.env.data_dir, "kms", "key", "import", "--vault", kms.env.vault, "--name", "short",
                    "--material", str(short), check=False)
    assert out.returncode != 0 and "20 bytes" in out.stderr, out.stderr


def test_imports_and_exports_are_audited(kms):
    log = cli(kms.env.data_dir, "kms", "audit", "list", "--limit", "100000")
    operations = {e["operation"] for e in log}
    assert {"CreateWrappingKey", "ImportKey", "ImportKeyVersion", "ExportKey"} <= operations
    refused = [e for e in log if e["operation"] == "ImportKey" and e["result"] == "FAILED"]
    assert refused and all(e["message"] for e in refused), "refused imports are audited, with the reason"
