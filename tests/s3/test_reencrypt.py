"""`sealstore reencrypt` and `sealstore object inventory` while the server runs: the server
sweeps the bucket itself, locking each object, so S3 writes during the sweep are never
undone; SSE-C objects are counted and left alone."""

import json
import os
import subprocess
import threading

from conftest import BINARY, make_client, running_server


def cli(data_dir, *args):
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
    out = subprocess.run([str(BINARY), *args], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_sweep_in_the_server_beside_concurrent_writes():
    with running_server() as (endpoint, keys, data_dir):
        s3 = make_client(endpoint, keys["accessKeyId"], keys["secretAccessKey"])
        vault = json.loads((data_dir / "serve.json").read_text())["defaultVaultId"]
        key_id = json.loads(cli(data_dir, "kms", "key", "create", "--vault", vault, "--name", "sweep", "--json"))["id"]
        old_version = json.loads(cli(data_dir, "kms", "key", "get", key_id, "--json"))["currentKeyVersion"]
        s3.create_bucket(Bucket="sweep")
        kms_args = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_id}
        for i in range(200):
            s3.put_object(Bucket="sweep", Key=f"k{i:03}", Body=b"v1-%d" % i, **kms_args)
        customer = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(32)}
        s3.put_object(Bucket="sweep", Key="customer", Body=b"mine", **customer)
        cli(data_dir, "kms", "key", "rotate", key_id)

        # Overwrite every third object while the sweep runs.
        def writer():
            for i in range(0, 200, 3):
                s3.put_object(Bucket="sweep", Key=f"k{i:03}", Body=b"v2-%d" % i, **kms_args)

        thread = threading.Thread(target=writer)
        thread.start()
        out = cli(data_dir, "reencrypt", "--bucket", "sweep", "--rewrap")
        thread.join()
        assert "object(s) visited" in out
        assert "1 object(s) use customer-provided keys" in out

        # A second sweep catches whatever a concurrent write left on the old version (none:
        # writes use the current one), and the old version protects nothing any more.
        cli(data_dir, "reencrypt", "--bucket", "sweep", "--rewrap")
        inventory = json.loads(cli(data_dir, "object", "inventory", "--json"))
        assert all(row["current"] or row["objects"] == 0 for row in inventory), inventory
        assert not any(row["keyVersionId"] == old_version for row in inventory)
        cli(data_dir, "kms", "key", "disable-version", key_id, old_version)

        for i in range(200):
            expected = (b"v2-%d" if i % 3 == 0 else b"v1-%d") % i
            assert s3.get_object(Bucket="sweep", Key=f"k{i:03}")["Body"].read() == expected, i
        assert s3.get_object(Bucket="sweep", Key="customer", **customer)["Body"].read() == b"mine"
