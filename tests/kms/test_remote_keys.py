"""The data path on one sealstore, its keys in another's KMS API (`--kms-endpoint`).

Server A holds the keys; a user of A signs for the data path, allowed only `use key-family`.
Server B serves S3 with every data key from A; a third data directory makes volumes with
keys from A. Key management happens on A with the real `oci` CLI, and B follows it."""

import filecmp
import json
import os
import pathlib
import socket
import tempfile

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from test_oci_cli import Env, cli, make_key_pair, sealstore, self_signed_cert  # same directory
from conftest import running_server  # noqa: E402  (tests/s3, put on sys.path by test_oci_cli)


class KeysServer:
    """Server A, its data-path user's profile and one key for the data path."""

    def __init__(self, env):
        self.env = env
        cli(env.data_dir, "iam", "group", "create", "data-path")
        cli(
            env.data_dir,
            "iam",
            "policy",
            "create",
            "data-path-keys",
            "--statement",
            "Allow group data-path to use key-family in tenancy",
        )
        env.add_user("datapath", groups=["data-path"])
        management, _ = env.endpoints(env.vault)
        self.management = management
        self.key = env.oci(
            "admin", "kms", "management", "key", "create",
            "--compartment-id", env.tenancy, "--display-name", "remote-data",
            "--key-shape", '{"algorithm":"AES","length":32}',
            "--wait-for-state", "ENABLED", endpoint=management,
        )["data"]["id"]

    def flags(self, profile="datapath"):
        return [
            "--kms-endpoint", self.env.url,
            "--kms-config", str(self.env.config),
            "--kms-profile", profile,
            "--kms-key", self.key,
        ]

    def key_get(self):
        return self.env.oci("admin", "kms", "management", "key", "get", "--key-id", self.key,
                            endpoint=self.management)["data"]

    def key_action(self, action):
        self.env.oci("admin", "kms", "management", "key", action, "--key-id", self.key,
                     endpoint=self.management)


@pytest.fixture(scope="module")
def keys_server():
    with running_server() as (_, _, data_dir):
        kms_url = json.loads((data_dir / "serve.json").read_text())["kms"]
        with tempfile.TemporaryDirectory() as tmp:
            env = Env(kms_url, data_dir, pathlib.Path(tmp))
            env.add_user("admin", groups=["Administrators"])
            yield KeysServer(env)


@pytest.fixture(scope="module")
def data_server(keys_server):
    """Server B: S3 with data keys from A."""
    with running_server(*keys_server.flags()) as (endpoint, keys, data_dir):
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=keys["accessKeyId"],
            aws_secret_access_key=keys["secretAccessKey"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        s3.create_bucket(Bucket="remote")
        yield s3, data_dir


def inventory(data_dir):
    return cli(data_dir, "object", "inventory")


def test_objects_are_sealed_under_the_remote_key_and_follow_its_state(keys_server, data_server):
    s3, data_dir = data_server
    body = os.urandom(3 << 20) + b"remote keys"
    s3.put_object(Bucket="remote", Key="a", Body=body)
    assert s3.get_object(Bucket="remote", Key="a")["Body"].read() == body

    # The object's data key is wrapped by A's key, at its current version.
    version = keys_server.key_get()["current-key-version"]
    rows = [r for r in inventory(data_dir) if r["keyVersionId"] == version]
    assert rows and rows[0]["keyId"] == keys_server.key and rows[0]["objects"] >= 1, inventory(data_dir)

    # Disabling the key on A shuts the data path out on B; enabling lets it back in.
    keys_server.key_action("disable")
    try:
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            s3.get_object(Bucket="remote", Key="a")
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
        assert "DISABLED" in denied.value.response["Error"]["Message"]
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3.put_object(Bucket="remote", Key="b", Body=b"x")
        assert refused.value.response["Error"]["Code"] == "KMS.DisabledException"
    finally:
        keys_server.key_action("enable")
    assert s3.get_object(Bucket="remote", Key="a")["Body"].read() == body


def test_sse_kms_names_a_remote_key_by_id_or_alias(keys_server, data_server):
    s3, _ = data_server
    for key_id in (keys_server.key, "alias/remote-data"):
        s3.put_object(Bucket="remote", Key="kms", Body=b"named", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_id)
        head = s3.head_object(Bucket="remote", Key="kms")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == keys_server.key
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        s3.put_object(Bucket="remote", Key="kms", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="alias/no-such-key")
    assert missing.value.response["Error"]["Code"] == "KMS.NotFoundException"


def test_rotation_on_the_kms_moves_new_objects_and_old_ones_still_read(keys_server, data_server):
    s3, data_dir = data_server
    s3.put_object(Bucket="remote", Key="before", Body=b"old version")
    old = keys_server.key_get()["current-key-version"]
    new = keys_server.env.oci("admin", "kms", "management", "key-version", "create", "--key-id", keys_server.key,
                              endpoint=keys_server.management)["data"]["id"]
    assert new != old
    s3.put_object(Bucket="remote", Key="after", Body=b"new version")
    by_version = {r["keyVersionId"]: r for r in inventory(data_dir)}
    assert by_version[new]["objects"] == 1 and by_version[new]["current"] is True
    assert by_version[old]["current"] is False
    assert s3.get_object(Bucket="remote", Key="before")["Body"].read() == b"old version"
    assert s3.get_object(Bucket="remote", Key="after")["Body"].read() == b"new version"

    # A sweep through B re-wraps every data key on A (the DEKs never reach B in the sweep).
    sealstore(data_dir, "reencrypt", "--bucket", "remote", "--rewrap")
    by_version = {r["keyVersionId"]: r for r in inventory(data_dir)}
    assert old not in by_version, by_version
    assert s3.get_object(Bucket="remote", Key="before")["Body"].read() == b"old version"



def test_volumes_take_their_data_key_from_the_remote_kms(keys_server, tmp_path):
    data_dir = tmp_path / "volumes"
    flags = keys_server.flags()
    sealstore(data_dir, *flags, "volume", "create", "v", "--size", "8M")
    image = tmp_path / "image"
    image.write_bytes(os.urandom(8 << 20))
    sealstore(data_dir, *flags, "volume", "import", "v", str(image))
    info = json.loads(sealstore(data_dir, "--json", "volume", "info", "v").stdout)
    assert [g["keyId"] for g in info["generations"]] == [keys_server.key], info

    # Without the remote KMS the key cannot be opened: this data directory has none of it.
    local = sealstore(data_dir, "volume", "export", "v", str(tmp_path / "nope"), check=False)
    assert local.returncode != 0 and "does not exist here" in local.stderr, local.stderr

    out = tmp_path / "out"
    sealstore(data_dir, *flags, "volume", "export", "v", str(out))
    assert filecmp.cmp(image, out, shallow=False)


def test_a_bad_signature_or_an_unreachable_kms_fails_at_start_with_the_reason(keys_server, tmp_path):
    env = keys_server.env
    # The data path's profile, but another key file: it does not match the fingerprint.
    stranger, _ = make_key_pair(tmp_path, "stranger")
    config = tmp_path / "config"
    text = env.config.read_text()
    section = text[text.index("[datapath]"):]
    section = section[: section.index("\n\n") + 2]
    key_line = next(line for line in section.splitlines() if line.startswith("key_file="))
    config.write_text(section.replace(key_line, f"key_file={stranger}"))
    flags = ["--kms-endpoint", env.url, "--kms-config", str(config), "--kms-profile", "datapath",
             "--kms-key", keys_server.key]
    out = sealstore(tmp_path / "d1", *flags, "volume", "create", "v", "--size", "1M", check=False)
    assert out.returncode != 0
    assert "did not accept this server's request signature" in out.stderr, out.stderr

    # A port nothing listens on: refused at once, said so.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags[1] = f"http://127.0.0.1:{port}"
    out = sealstore(tmp_path / "d2", *flags, "volume", "create", "v", "--size", "1M", check=False)
    assert out.returncode != 0
    assert "key manager unavailable" in out.stderr and "127.0.0.1" in out.stderr, out.stderr

    # A user with no policy sees no such key.
    env.add_user("nobody")
    flags = keys_server.flags(profile="nobody")
    out = sealstore(tmp_path / "d3", *flags, "volume", "create", "v", "--size", "1M", check=False)
    assert out.returncode != 0 and "not found" in out.stderr, out.stderr


def test_an_https_kms_is_verified_against_its_certificate(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    with running_server("--kms-tls-cert", str(cert), "--kms-tls-key", str(key)) as (_, _, data_dir):
        url = json.loads((data_dir / "serve.json").read_text())["kms"]
        env = Env(url, data_dir, tmp_path)
        env.add_user("admin", groups=["Administrators"])
        flags = ["--kms-endpoint", url, "--kms-config", str(env.config), "--kms-profile", "admin",
                 "--kms-key", env.key]
        volumes = tmp_path / "volumes"
        # Not signed by a CA this machine trusts: refused, and said why.
        out = sealstore(volumes, *flags, "volume", "create", "v", "--size", "1M", check=False)
        assert out.returncode != 0 and "certificate" in out.stderr.lower(), out.stderr
        flags += ["--kms-ca-cert", str(cert)]
        sealstore(volumes, *flags, "volume", "create", "v", "--size", "1M")
        image = tmp_path / "image"
        image.write_bytes(os.urandom(1 << 20))
        sealstore(volumes, *flags, "volume", "import", "v", str(image))
        sealstore(volumes, *flags, "volume", "export", "v", str(tmp_path / "out"))
        assert filecmp.cmp(image, tmp_path / "out", shallow=False)
