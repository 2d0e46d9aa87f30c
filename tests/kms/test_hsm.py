"""HSM protection through the real binary: a SoftHSM2 token (softhsm2, installed by
./scripts/test) made here, keys created with protection mode HSM by the `oci` CLI and by
`sealstore kms`, then used by S3 objects and volumes."""

import concurrent.futures
import filecmp
import json
import os
import pathlib
import subprocess
import tempfile

import boto3
import pytest
from botocore.config import Config

from test_oci_cli import Env, OciFailed, cli, sealstore  # same directory
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


@pytest.mark.parametrize("shape", [
    {"algorithm": "AES", "length": 16},
    {"algorithm": "RSA", "length": 256},
    {"algorithm": "ECDSA", "length": 32, "curveId": "NIST_P256"},
])
def test_hsm_keys_are_aes_256_only_for_now(server, shape):
    env, management, _, _, _ = server
    with pytest.raises(OciFailed) as refused:
        env.oci("admin", "kms", "management", "key", "create", "--compartment-id", env.tenancy,
                "--display-name", "hsm-other", "--key-shape", json.dumps(shape), "--protection-mode", "HSM",
                endpoint=management)
    assert refused.value.error["status"] == 400
    assert "HSM keys are AES-256 only" in refused.value.error["message"]


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
