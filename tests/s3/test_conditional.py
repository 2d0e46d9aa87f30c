"""Conditional writes as S3 has them, on the local backend and over SeaweedFS:
`If-None-Match: *` and `If-Match: "<etag>"` on PutObject, on CompleteMultipartUpload and on the
destination of CopyObject (412 PreconditionFailed; If-Match on a missing key: 404 NoSuchKey and
nothing created), and exactly one winner among concurrent create-if-absent writes."""

import hashlib
import os
import threading

import botocore.exceptions
import pytest

from conftest import make_client, run_aws
from seaweed import (  # noqa: F401 (backend_server and bs3 are fixtures)
    backend_server,
    bs3,
    client_error,
    raw_send,
    s3_signed,
    temp_bucket,
)

MIB = 1 << 20


def etag(body):
    return '"%s"' % hashlib.md5(body).hexdigest()


def content(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def assert_absent(s3, bucket, key):
    assert client_error(s3.head_object, Bucket=bucket, Key=key)[1] == 404
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])].count(key) == 0


# ----- PutObject ---------------------------------------------------------------------------


def test_put_if_none_match_star(bs3):
    with temp_bucket(bs3, "ifnone") as bucket:
        first, second = os.urandom(1000), os.urandom(1000)
        put = bs3.put_object(Bucket=bucket, Key="k", Body=first, IfNoneMatch="*")
        assert put["ResponseMetadata"]["HTTPStatusCode"] == 200 and put["ETag"] == etag(first)
        assert client_error(bs3.put_object, Bucket=bucket, Key="k", Body=second, IfNoneMatch="*") == ("PreconditionFailed", 412)
        assert content(bs3, bucket, "k") == first
        # Once deleted, the key is absent again.
        bs3.delete_object(Bucket=bucket, Key="k")
        assert bs3.put_object(Bucket=bucket, Key="k", Body=second, IfNoneMatch="*")["ETag"] == etag(second)
        assert content(bs3, bucket, "k") == second
        # Keys that only look like "k" do not count as it.
        for other in ["k/", "/k", "K", "k "]:
            bs3.put_object(Bucket=bucket, Key=other, Body=b"o", IfNoneMatch="*")
        assert content(bs3, bucket, "k") == second


def test_put_if_match(bs3):
    with temp_bucket(bs3, "ifmatch") as bucket:
        first, second, third = os.urandom(2000), os.urandom(2000), os.urandom(2000)
        # Missing key: 404 NoSuchKey, and nothing is created.
        assert client_error(bs3.put_object, Bucket=bucket, Key="k", Body=first, IfMatch=etag(first)) == ("NoSuchKey", 404)
        assert_absent(bs3, bucket, "k")
        bs3.put_object(Bucket=bucket, Key="k", Body=first)
        # Another ETag: 412, object unchanged.
        assert client_error(bs3.put_object, Bucket=bucket, Key="k", Body=second, IfMatch=etag(second)) == ("PreconditionFailed", 412)
        assert content(bs3, bucket, "k") == first
        # The current ETag: replaced.
        put = bs3.put_object(Bucket=bucket, Key="k", Body=second, IfMatch=etag(first))
        assert put["ResponseMetadata"]["HTTPStatusCode"] == 200 and put["ETag"] == etag(second)
        assert content(bs3, bucket, "k") == second
        # The old ETag no longer matches.
        assert client_error(bs3.put_object, Bucket=bucket, Key="k", Body=third, IfMatch=etag(first)) == ("PreconditionFailed", 412)
        assert content(bs3, bucket, "k") == second


def test_put_if_match_on_a_multipart_etag(bs3):
    with temp_bucket(bs3, "ifmatchmp") as bucket:
        upload = bs3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        e = bs3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
        done = bs3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
        assert done["ETag"].endswith('-1"')
        assert client_error(bs3.put_object, Bucket=bucket, Key="k", Body=b"new", IfMatch=etag(b"part")) == ("PreconditionFailed", 412)
        bs3.put_object(Bucket=bucket, Key="k", Body=b"new", IfMatch=done["ETag"])
        assert content(bs3, bucket, "k") == b"new"


# ----- CompleteMultipartUpload -------------------------------------------------------------


def start_upload(s3, bucket, key, body):
    """An upload of `body` as one part, ready to complete; returns (upload id, parts)."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    e = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=body)["ETag"]
    return upload, {"Parts": [{"PartNumber": 1, "ETag": e}]}


def complete(s3, bucket, key, upload, parts, **conditions):
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload=parts, **conditions)


def test_complete_multipart_if_none_match_star(bs3):
    with temp_bucket(bs3, "mpifnone") as bucket:
        first, second = os.urandom(100_000), os.urandom(100_000)
        upload, parts = start_upload(bs3, bucket, "k", first)
        done = complete(bs3, bucket, "k", upload, parts, IfNoneMatch="*")
        assert done["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert content(bs3, bucket, "k") == first
        upload, parts = start_upload(bs3, bucket, "k", second)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            complete(bs3, bucket, "k", upload, parts, IfNoneMatch="*")
        assert (e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("PreconditionFailed", 412)
        assert content(bs3, bucket, "k") == first
        assert bs3.head_object(Bucket=bucket, Key="k")["ETag"] == done["ETag"]


def test_complete_multipart_if_match(bs3):
    with temp_bucket(bs3, "mpifmatch") as bucket:
        first, second = os.urandom(100_000), os.urandom(100_000)
        # Missing key: 404 NoSuchKey, nothing created.
        upload, parts = start_upload(bs3, bucket, "k", first)
        assert client_error(complete, bs3, bucket, "k", upload, parts, IfMatch=etag(first)) == ("NoSuchKey", 404)
        assert_absent(bs3, bucket, "k")
        with_nothing = complete(bs3, bucket, "k", *start_upload(bs3, bucket, "k", first))
        assert content(bs3, bucket, "k") == first
        # Another ETag: 412, unchanged.
        upload, parts = start_upload(bs3, bucket, "k", second)
        assert client_error(complete, bs3, bucket, "k", upload, parts, IfMatch=etag(first)) == ("PreconditionFailed", 412)
        assert content(bs3, bucket, "k") == first
        # The current ETag (the first upload's md5-of-md5s-1): replaced.
        upload, parts = start_upload(bs3, bucket, "k", second)
        done = complete(bs3, bucket, "k", upload, parts, IfMatch=with_nothing["ETag"])
        assert done["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert content(bs3, bucket, "k") == second


# ----- CopyObject: the conditions are on the destination ---------------------------------------


def test_copy_if_none_match_is_about_the_destination(bs3):
    with temp_bucket(bs3, "cpifnone") as bucket:
        src, old = os.urandom(5000), os.urandom(5000)
        bs3.put_object(Bucket=bucket, Key="src", Body=src)
        # The source exists but the destination does not: the copy happens.
        bs3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, IfNoneMatch="*")
        assert content(bs3, bucket, "dst") == src
        bs3.put_object(Bucket=bucket, Key="dst", Body=old)
        assert client_error(
            bs3.copy_object, Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, IfNoneMatch="*"
        ) == ("PreconditionFailed", 412)
        assert content(bs3, bucket, "dst") == old


def test_copy_if_match_is_about_the_destination(bs3):
    with temp_bucket(bs3, "cpifmatch") as bucket:
        src, old = os.urandom(5000), os.urandom(5000)
        bs3.put_object(Bucket=bucket, Key="src", Body=src)
        source = {"Bucket": bucket, "Key": "src"}
        # Missing destination: 404 NoSuchKey (even with the source's ETag), nothing created.
        assert client_error(bs3.copy_object, Bucket=bucket, Key="dst", CopySource=source, IfMatch=etag(src)) == ("NoSuchKey", 404)
        assert_absent(bs3, bucket, "dst")
        bs3.put_object(Bucket=bucket, Key="dst", Body=old)
        # The source's ETag is not the destination's: 412.
        assert client_error(bs3.copy_object, Bucket=bucket, Key="dst", CopySource=source, IfMatch=etag(src)) == ("PreconditionFailed", 412)
        assert content(bs3, bucket, "dst") == old
        # The destination's ETag: copied.
        copied = bs3.copy_object(Bucket=bucket, Key="dst", CopySource=source, IfMatch=etag(old))
        assert copied["CopyObjectResult"]["ETag"] == etag(src)
        assert content(bs3, bucket, "dst") == src


def test_copy_destination_and_source_conditions_together(backend_server, bs3):
    """x-amz-copy-source-if-match is about the source, If-Match about the destination; both
    must hold. Sent as raw signed requests, header by header."""
    endpoint, keys = backend_server[0], backend_server[1]
    with temp_bucket(bs3, "cpboth") as bucket:
        src, old = os.urandom(3000), os.urandom(3000)
        bs3.put_object(Bucket=bucket, Key="src", Body=src)
        bs3.put_object(Bucket=bucket, Key="dst", Body=old)

        def copy(**headers):
            headers = {k.replace("_", "-"): v for k, v in headers.items()}
            headers["x-amz-copy-source"] = "/%s/src" % bucket
            return raw_send(s3_signed(endpoint, keys, "PUT", "/%s/dst" % bucket, headers))

        status, _, body = copy(**{"x-amz-copy-source-if-match": etag(src), "If-Match": etag(src)})
        assert status == 412 and b"PreconditionFailed" in body
        status, _, body = copy(**{"x-amz-copy-source-if-match": etag(old), "If-Match": etag(old)})
        assert status == 412 and b"PreconditionFailed" in body
        assert content(bs3, bucket, "dst") == old
        status, _, body = copy(**{"x-amz-copy-source-if-match": etag(src), "If-None-Match": "*"})
        assert status == 412 and b"PreconditionFailed" in body
        assert content(bs3, bucket, "dst") == old
        status, _, body = copy(**{"x-amz-copy-source-if-match": etag(src), "If-Match": etag(old)})
        assert status == 200, body
        assert content(bs3, bucket, "dst") == src


# ----- races -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 2 * MIB], ids=["1KB", "2MiB"])
def test_concurrent_create_if_absent_has_one_winner(backend_server, bs3, size):
    endpoint, keys = backend_server[0], backend_server[1]
    with temp_bucket(bs3, "race") as bucket:
        clients = [make_client(endpoint, keys["accessKeyId"], keys["secretAccessKey"]) for _ in range(16)]
        bodies = [bytes([i]) * 16 + os.urandom(size) for i in range(16)]
        barrier = threading.Barrier(16)
        results = [None] * 16

        def attempt(i):
            barrier.wait()
            try:
                put = clients[i].put_object(Bucket=bucket, Key="one", Body=bodies[i], IfNoneMatch="*")
                results[i] = (put["ResponseMetadata"]["HTTPStatusCode"], put["ETag"])
            except botocore.exceptions.ClientError as e:
                results[i] = (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"])
            except Exception as e:  # noqa: BLE001 (recorded, asserted below)
                results[i] = (None, repr(e))

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        winners = [i for i, r in enumerate(results) if r[0] == 200]
        assert len(winners) == 1, results
        assert sorted(r for i, r in enumerate(results) if i not in winners) == [(412, "PreconditionFailed")] * 15
        winner = winners[0]
        assert results[winner][1] == etag(bodies[winner])
        assert content(bs3, bucket, "one") == bodies[winner]
        assert [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket)["Contents"]] == ["one"]


# ----- the aws CLI -------------------------------------------------------------------------


def test_aws_cli_put_object_if_none_match(backend_server, bs3, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(os.urandom(4000))
    second.write_bytes(os.urandom(4000))
    with temp_bucket(bs3, "awscli-cond") as bucket:

        def put(path):
            args = ("s3api", "put-object", "--bucket", bucket, "--key", "doc", "--body", str(path), "--if-none-match", "*")
            return run_aws(backend_server, *args, timeout=120)

        out = put(first)
        assert out.returncode == 0, out.stderr
        assert etag(first.read_bytes()).strip('"') in out.stdout
        out = put(second)
        assert out.returncode != 0
        assert "PreconditionFailed" in out.stderr, out.stderr
        assert content(bs3, bucket, "doc") == first.read_bytes()
