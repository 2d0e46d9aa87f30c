"""`sealstore migrate-metadata`: a single server's metadata (redb files) moved into PostgreSQL,
then served by a fleet of two gateways — the same tenancy and keys, every object readable
byte for byte, its S3 users, one verifiable audit chain; a second migration into the same
database, and a migration of a running server's files, refused."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import BINARY, Gateway


def run(env, *args):
    return subprocess.run([str(BINARY), *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_single_server_moves_to_postgres_and_a_fleet_serves_what_it_had(pg, weed, tmp_path):
    bucket = weed.create_bucket()
    base = dict(os.environ, SEALSTORE_OBJECT_BACKEND="s3://" + bucket, AWS_ENDPOINT=weed.endpoint,
                AWS_ALLOW_HTTP="true", AWS_REGION="us-east-1", AWS_SKIP_SIGNATURE="true")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "SEALSTORE_METADATA_URL"):
        base.pop(k, None)
    single_dir = tmp_path / "single"
    single_env = dict(base, SEALSTORE_DATA_DIR=str(single_dir))

    # A single server on redb: a bucket with objects, a second S3 user, KMS audit entries.
    single = Gateway("single", single_dir, single_env, []).start()
    before = json.loads((single_dir / "serve.json").read_text())
    keys = json.loads((single_dir / "s3-admin.json").read_text())
    s3 = single.s3(keys)
    s3.create_bucket(Bucket="moved")
    bodies = {f"dir/object-{i}": os.urandom(1000 * i + 1) for i in range(12)}
    bodies["big"] = os.urandom(3 << 20)
    for key, body in bodies.items():
        s3.put_object(Bucket="moved", Key=key, Body=body)
    other = single.cli("s3", "user", "add", "carol")
    # Refused while the server holds its files.
    url = pg.create_database()
    busy = run(single_env, "migrate-metadata", "--to", url)
    assert busy.returncode != 0 and "in use by another sealstore process" in busy.stderr, busy.stderr
    single.stop()
    assert (single_dir / "kms.redb").exists() and (single_dir / "objects.redb").exists()

    moved = run(single_env, "migrate-metadata", "--to", url)
    assert moved.returncode == 0, moved.stderr
    for namespace in ("kms", "objects", "s3-users"):
        assert f"{namespace}" in moved.stdout and "read back, equal" in moved.stdout, moved.stdout
    again = run(single_env, "migrate-metadata", "--to", url)
    assert again.returncode != 0 and "already holds kms metadata" in again.stderr, again.stderr
    # The files are left as they were.
    assert (single_dir / "kms.redb").exists()

    # Two gateways on the database: new data directories, the single server's root key.
    gateways = []
    try:
        for name in ("a", "b"):
            data_dir = tmp_path / name
            data_dir.mkdir()
            shutil.copy2(single_dir / "root.key", data_dir / "root.key")
            env = dict(base, SEALSTORE_DATA_DIR=str(data_dir), SEALSTORE_METADATA_URL=url)
            gateways.append(Gateway(name, data_dir, env, []).start())
        for g in gateways:
            after = json.loads((g.data_dir / "serve.json").read_text())
            for field in ("tenancyId", "defaultVaultId", "defaultKeyId"):
                assert after[field] == before[field], field
            assert not (g.data_dir / "kms.redb").exists(), "a gateway on PostgreSQL wrote redb files"
            client = g.s3(keys)
            listed = [o["Key"] for o in client.list_objects_v2(Bucket="moved")["Contents"]]
            assert sorted(listed) == sorted(bodies)
            for key, body in bodies.items():
                assert client.get_object(Bucket="moved", Key=key)["Body"].read() == body, key
            carol = g.s3(other)
            assert carol.get_object(Bucket="moved", Key="big")["Body"].read() == bodies["big"]
            report = g.cli("kms", "audit", "verify")
            assert report.get("failure") is None and report["entriesChecked"] > 0, report
        # And it goes on from there: a write through one is read through the other.
        gateways[0].s3(keys).put_object(Bucket="moved", Key="after", Body=b"fleet")
        assert gateways[1].s3(keys).get_object(Bucket="moved", Key="after")["Body"].read() == b"fleet"
    finally:
        for g in gateways:
            g.stop()
