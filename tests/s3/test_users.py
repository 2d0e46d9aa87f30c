"""`sealstore s3 user add|list|remove` against a running server: keys work at once, removed
keys stop at once, secrets are shown only when created."""

import json
import os
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import BINARY, make_client


def s3_user(data_dir, *args):
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
    out = subprocess.run([str(BINARY), "s3", "user", *args], env=env, capture_output=True, text=True)
    return out


def test_add_use_list_and_remove_a_user(server):
    endpoint, admin, data_dir = server
    out = s3_user(data_dir, "add", "alice", "--json")
    assert out.returncode == 0, out.stderr
    alice = json.loads(out.stdout)
    assert alice["name"] == "alice" and alice["accessKeyId"] != admin["accessKeyId"]

    client = make_client(endpoint, alice["accessKeyId"], alice["secretAccessKey"])
    client.create_bucket(Bucket="alice-bucket")
    client.put_object(Bucket="alice-bucket", Key="k", Body=b"from alice")
    # Every user may use every bucket: the admin reads what alice wrote.
    admin_client = make_client(endpoint, admin["accessKeyId"], admin["secretAccessKey"])
    assert admin_client.get_object(Bucket="alice-bucket", Key="k")["Body"].read() == b"from alice"

    wrong = make_client(endpoint, alice["accessKeyId"], "x" + alice["secretAccessKey"][1:])
    with pytest.raises(ClientError) as e:
        wrong.list_buckets()
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    listing = s3_user(data_dir, "list")
    assert listing.returncode == 0, listing.stderr
    assert "alice" in listing.stdout and alice["accessKeyId"] in listing.stdout
    assert alice["secretAccessKey"] not in listing.stdout and admin["secretAccessKey"] not in listing.stdout
    names = [u["name"] for u in json.loads(s3_user(data_dir, "list", "--json").stdout)]
    assert names == ["admin", "alice"]

    again = s3_user(data_dir, "add", "alice")
    assert again.returncode != 0 and "already exists" in again.stderr

    removed = s3_user(data_dir, "remove", alice["accessKeyId"])
    assert removed.returncode == 0, removed.stderr
    with pytest.raises(ClientError) as e:
        client.list_buckets()
    assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    missing = s3_user(data_dir, "remove", "alice")
    assert missing.returncode != 0 and "no S3 user" in missing.stderr
    admin_client.delete_object(Bucket="alice-bucket", Key="k")
    admin_client.delete_bucket(Bucket="alice-bucket")
