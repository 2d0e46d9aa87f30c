"""boto3 against the real server: bucket lifecycle, objects, ranges, listings, auth errors,
and no plaintext at rest."""

import hashlib
import os

import botocore.exceptions
import pytest

from conftest import make_client


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_bucket_lifecycle(s3):
    s3.create_bucket(Bucket="lifecycle")
    assert "lifecycle" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="lifecycle")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket="lifecycle")
    assert error_code(e) == ("BucketAlreadyOwnedByYou", 409)
    s3.put_object(Bucket="lifecycle", Key="k", Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_bucket(Bucket="lifecycle")
    assert error_code(e) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="lifecycle", Key="k")
    s3.delete_bucket(Bucket="lifecycle")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_bucket(Bucket="lifecycle")
    assert error_code(e)[1] == 404


def test_put_get_head_delete_with_metadata(s3):
    s3.create_bucket(Bucket="objects")
    body = os.urandom(300_000)
    put = s3.put_object(Bucket="objects", Key="dir/file.bin", Body=body, ContentType="application/x-test", Metadata={"owner": "alice"})
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    assert put["ServerSideEncryption"] == "AES256"
    got = s3.get_object(Bucket="objects", Key="dir/file.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"owner": "alice"}
    head = s3.head_object(Bucket="objects", Key="dir/file.bin")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == put["ETag"]
    s3.delete_object(Bucket="objects", Key="dir/file.bin")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objects", Key="dir/file.bin")
    assert error_code(e) == ("NoSuchKey", 404)


def test_ranges(s3):
    s3.create_bucket(Bucket="ranges")
    body = os.urandom(200_000)
    s3.put_object(Bucket="ranges", Key="r", Body=body)
    for header, start, end in [("bytes=0-0", 0, 1), ("bytes=65519-65521", 65519, 65522), ("bytes=150000-", 150000, 200000), ("bytes=-100", 199900, 200000), ("bytes=199999-300000", 199999, 200000)]:
        got = s3.get_object(Bucket="ranges", Key="r", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, header
        assert got["ContentRange"] == "bytes %d-%d/200000" % (start, end - 1), header
        assert got["Body"].read() == body[start:end], header
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="ranges", Key="r", Range="bytes=200000-200010")
    assert error_code(e) == ("InvalidRange", 416)


def test_list_objects_v2_prefix_delimiter_and_pages(s3):
    s3.create_bucket(Bucket="listing")
    keys = ["a/%04d" % i for i in range(1200)] + ["b/x", "b/y/z", "c", "sp ace+plus"]
    for k in keys:
        s3.put_object(Bucket="listing", Key=k, Body=b"")
    seen = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="listing", PaginationConfig={"PageSize": 500}):
        seen += [o["Key"] for o in page.get("Contents", [])]
    assert seen == sorted(keys)
    top = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/"]
    assert [o["Key"] for o in top["Contents"]] == ["c", "sp ace+plus"]
    under_b = s3.list_objects_v2(Bucket="listing", Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in under_b["Contents"]] == ["b/x"]
    assert [p["Prefix"] for p in under_b["CommonPrefixes"]] == ["b/y/"]


def test_wrong_credentials_are_refused(server):
    endpoint, keys, _ = server
    bad_secret = make_client(endpoint, keys["accessKeyId"], "wrong" + keys["secretAccessKey"][5:])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad_secret.list_buckets()
    assert error_code(e) == ("SignatureDoesNotMatch", 403)
    unknown = make_client(endpoint, "SSUNKNOWNKEY0000000", keys["secretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.list_buckets()
    assert error_code(e) == ("InvalidAccessKeyId", 403)


def test_content_md5_is_checked(s3):
    import base64

    s3.create_bucket(Bucket="digests")
    body = b"payload" * 100
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket="digests", Key="ok", Body=body, ContentMD5=good)
    assert s3.get_object(Bucket="digests", Key="ok")["Body"].read() == body
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="digests", Key="bad", Body=body, ContentMD5=wrong)
    assert error_code(e)[1] == 400
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="digests", Key="bad")
    assert error_code(e)[1] == 404
    # A failed overwrite leaves the previous object intact.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="digests", Key="ok", Body=b"replacement", ContentMD5=wrong)
    assert error_code(e)[1] == 400
    assert s3.get_object(Bucket="digests", Key="ok")["Body"].read() == body

    # Bodies above 1 MiB stream through parts hashed beside the writes: the same checks.
    big = os.urandom(17 * 1024 * 1024 + 3)
    big_md5 = base64.b64encode(hashlib.md5(big).digest()).decode()
    put = s3.put_object(Bucket="digests", Key="big", Body=big, ContentMD5=big_md5)
    assert put["ETag"] == '"%s"' % hashlib.md5(big).hexdigest()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="digests", Key="big", Body=big[:-1] + b"!", ContentMD5=big_md5)
    assert error_code(e) == ("BadDigest", 400)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="digests", Key="big-bad", Body=big, ContentMD5=wrong)
    assert error_code(e)[1] == 400
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="digests", Key="big-bad")
    assert error_code(e)[1] == 404
    got = s3.get_object(Bucket="digests", Key="big")
    assert got["ETag"] == put["ETag"] and got["Body"].read() == big


def test_copy_object_reencrypts_and_keeps_or_replaces_metadata(s3):
    s3.create_bucket(Bucket="copies")
    body = os.urandom(100_000)
    s3.put_object(Bucket="copies", Key="src", Body=body, ContentType="text/x-src", Metadata={"a": "1"})
    copied = s3.copy_object(Bucket="copies", Key="dst", CopySource={"Bucket": "copies", "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    dst = s3.get_object(Bucket="copies", Key="dst")
    assert dst["Body"].read() == body
    assert dst["ContentType"] == "text/x-src" and dst["Metadata"] == {"a": "1"}
    s3.copy_object(
        Bucket="copies", Key="dst", CopySource="copies/src", MetadataDirective="REPLACE", ContentType="text/x-new", Metadata={"b": "2"}
    )
    head = s3.head_object(Bucket="copies", Key="dst")
    assert head["ContentType"] == "text/x-new" and head["Metadata"] == {"b": "2"}
    # Onto itself: allowed, re-encrypts, content unchanged.
    s3.copy_object(Bucket="copies", Key="src", CopySource="copies/src", MetadataDirective="REPLACE", Metadata={"a": "1"})
    assert s3.get_object(Bucket="copies", Key="src")["Body"].read() == body


def test_delete_objects_and_cleanup_through_list_object_versions(s3):
    s3.create_bucket(Bucket="cleanup")
    for i in range(30):
        s3.put_object(Bucket="cleanup", Key="k%02d" % i, Body=b"x")
    versions = s3.list_object_versions(Bucket="cleanup", MaxKeys=20)
    assert versions["IsTruncated"] is True
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in versions["Versions"])
    rest = s3.list_object_versions(Bucket="cleanup", KeyMarker=versions["NextKeyMarker"])
    keys = [v["Key"] for v in versions["Versions"] + rest["Versions"]]
    assert keys == ["k%02d" % i for i in range(30)]
    result = s3.delete_objects(Bucket="cleanup", Delete={"Objects": [{"Key": k, "VersionId": "null"} for k in keys]})
    assert len(result["Deleted"]) == 30 and "Errors" not in result
    assert s3.list_objects_v2(Bucket="cleanup")["KeyCount"] == 0
    s3.delete_bucket(Bucket="cleanup")


def test_list_objects_v1_markers(s3):
    s3.create_bucket(Bucket="v1-listing")
    keys = ["p/%03d" % i for i in range(25)] + ["q"]
    for k in keys:
        s3.put_object(Bucket="v1-listing", Key=k, Body=b"")
    seen = []
    for page in s3.get_paginator("list_objects").paginate(Bucket="v1-listing", PaginationConfig={"PageSize": 10}):
        seen += [o["Key"] for o in page.get("Contents", [])]
    assert seen == keys
    rolled = s3.list_objects(Bucket="v1-listing", Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["p/"] and [o["Key"] for o in rolled["Contents"]] == ["q"]


MIB = 1 << 20


def test_multipart_upload_with_ranges_across_parts(s3):
    s3.create_bucket(Bucket="multipart")
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB + 123), os.urandom(777)]
    up = s3.create_multipart_upload(Bucket="multipart", Key="big", ContentType="application/x-big", Metadata={"m": "v"})
    uid = up["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="multipart")["Uploads"]] == [uid]
    etags = []
    for i, data in enumerate(parts, start=1):
        etags.append(s3.upload_part(Bucket="multipart", Key="big", UploadId=uid, PartNumber=i, Body=data)["ETag"])
    listed = s3.list_parts(Bucket="multipart", Key="big", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MIB), (2, 5 * MIB + 123), (3, 777)]
    done = s3.complete_multipart_upload(
        Bucket="multipart", Key="big", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, start=1)]},
    )
    combined = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert done["ETag"] == '"%s-3"' % combined
    whole = b"".join(parts)
    got = s3.get_object(Bucket="multipart", Key="big")
    assert got["Body"].read() == whole and got["ContentType"] == "application/x-big" and got["Metadata"] == {"m": "v"}
    # A range spanning the first part boundary, and one ending in the last part.
    for start, end in [(5 * MIB - 10, 5 * MIB + 10), (10 * MIB + 100, len(whole) - 1)]:
        r = s3.get_object(Bucket="multipart", Key="big", Range="bytes=%d-%d" % (start, end))
        assert r["Body"].read() == whole[start:end + 1]
    assert s3.list_multipart_uploads(Bucket="multipart").get("Uploads", []) == []
    # Parts never show up as objects.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="multipart")["Contents"]] == ["big"]


def test_multipart_errors_and_abort(s3):
    s3.create_bucket(Bucket="multipart-errors")
    uid = s3.create_multipart_upload(Bucket="multipart-errors", Key="k")["UploadId"]
    e1 = s3.upload_part(Bucket="multipart-errors", Key="k", UploadId=uid, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket="multipart-errors", Key="k", UploadId=uid, PartNumber=2, Body=b"tail")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(
            Bucket="multipart-errors", Key="k", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
    assert error_code(e) == ("EntityTooSmall", 400)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(
            Bucket="multipart-errors", Key="k", UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}]}
        )
    assert error_code(e) == ("InvalidPart", 400)
    s3.abort_multipart_upload(Bucket="multipart-errors", Key="k", UploadId=uid)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_parts(Bucket="multipart-errors", Key="k", UploadId=uid)
    assert error_code(e) == ("NoSuchUpload", 404)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="multipart-errors", Key="k")
    assert error_code(e) == ("NoSuchKey", 404)


def test_upload_file_uses_multipart_transparently(s3, tmp_path):
    from boto3.s3.transfer import TransferConfig

    s3.create_bucket(Bucket="transfers")
    data = os.urandom(23 * MIB + 5)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
    s3.upload_file(str(src), "transfers", "file.bin", Config=config)
    dst = tmp_path / "dst.bin"
    s3.download_file("transfers", "file.bin", str(dst), Config=config)
    assert dst.read_bytes() == data
    assert s3.head_object(Bucket="transfers", Key="file.bin")["ETag"].endswith('-3"')


def test_conditional_get_and_head(s3):
    import datetime

    s3.create_bucket(Bucket="conditions")
    put = s3.put_object(Bucket="conditions", Key="c", Body=b"conditional")
    tag = put["ETag"]
    modified = s3.head_object(Bucket="conditions", Key="c")["LastModified"]
    assert s3.get_object(Bucket="conditions", Key="c", IfMatch=tag)["Body"].read() == b"conditional"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="conditions", Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert error_code(e)[1] == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="conditions", Key="c", IfNoneMatch=tag)
    assert error_code(e)[1] == 304
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="conditions", Key="c", IfNoneMatch=tag)
    assert error_code(e)[1] == 304
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="conditions", Key="c", IfModifiedSince=modified + datetime.timedelta(seconds=5))
    assert error_code(e)[1] == 304
    assert s3.get_object(Bucket="conditions", Key="c", IfModifiedSince=modified - datetime.timedelta(days=1))["Body"].read()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="conditions", Key="c", IfUnmodifiedSince=modified - datetime.timedelta(days=1))
    assert error_code(e)[1] == 412
    assert s3.head_object(Bucket="conditions", Key="c", IfUnmodifiedSince=modified + datetime.timedelta(seconds=5))["ETag"] == tag


def test_presigned_get_and_put(s3):
    import urllib.error
    import urllib.request

    s3.create_bucket(Bucket="presigned")
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "presigned", "Key": "p"}, ExpiresIn=300)
    req = urllib.request.Request(put_url, data=b"via presigned PUT", method="PUT")
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "p"}, ExpiresIn=300)
    with urllib.request.urlopen(get_url) as resp:
        assert resp.read() == b"via presigned PUT"
    # A signature with one character changed is refused.
    signature = get_url.split("X-Amz-Signature=")[1].split("&")[0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(get_url.replace(signature, flipped))
    assert e.value.code == 403
