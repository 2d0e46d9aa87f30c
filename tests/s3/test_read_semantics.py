"""Reads as S3 answers them: GET/HEAD `?partNumber=N` of a multipart object (206, that part's
bytes, Content-Range, x-amz-mp-parts-count), and the standard headers (Cache-Control,
Content-Disposition, Content-Encoding, Content-Language, Expires) stored on PutObject and
CreateMultipartUpload, overridden by `response-*` on GET, kept or replaced by CopyObject."""

import datetime
import gzip
import hashlib
import os

import pytest

from seaweed import client_error, client_for, empty_and_delete_bucket, temp_bucket, unique_bucket

MIB = 1 << 20
EXPIRES = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
EXPIRES_HTTP = "Wed, 02 Jan 2030 03:04:05 GMT"
OVERRIDE_EXPIRES = datetime.datetime(2031, 6, 7, 8, 9, 10, tzinfo=datetime.timezone.utc)
OVERRIDE_EXPIRES_HTTP = "Sat, 07 Jun 2031 08:09:10 GMT"


@pytest.fixture(scope="module")
def rs3(server):
    """A client of the session's server (local backend) of this module's own."""
    return client_for(server)


def headers(response):
    return response["ResponseMetadata"]["HTTPHeaders"]


# ----- partNumber --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["5M-5M-1M", "uneven"])
def multipart_object(rs3, request):
    """A completed 3-part object; yields (bucket, key, parts, ETag)."""
    sizes = {"5M-5M-1M": [5 * MIB, 5 * MIB, 1 * MIB], "uneven": [5 * MIB + 1, 6 * MIB + 12345, 7]}[request.param]
    bucket = unique_bucket("parts")
    rs3.create_bucket(Bucket=bucket)
    try:
        parts = [os.urandom(n) for n in sizes]
        upload = rs3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        done = [
            {"PartNumber": n, "ETag": rs3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=body)["ETag"]}
            for n, body in enumerate(parts, 1)
        ]
        etag = rs3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": done})["ETag"]
        yield bucket, "mp", parts, etag
    finally:
        empty_and_delete_bucket(rs3, bucket)


def part_range(parts, n):
    start = sum(len(p) for p in parts[: n - 1])
    return start, start + len(parts[n - 1]) - 1, sum(len(p) for p in parts)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_get_part_number(rs3, multipart_object, n):
    bucket, key, parts, etag = multipart_object
    got = rs3.get_object(Bucket=bucket, Key=key, PartNumber=n)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    body = got["Body"].read()
    assert len(body) == len(parts[n - 1])
    assert hashlib.sha256(body).digest() == hashlib.sha256(parts[n - 1]).digest()
    assert got["ContentRange"] == "bytes %d-%d/%d" % part_range(parts, n)
    assert got["ContentLength"] == len(parts[n - 1])
    assert got["PartsCount"] == 3
    assert headers(got)["x-amz-mp-parts-count"] == "3"
    assert got["ETag"] == etag


@pytest.mark.parametrize("n", [1, 2, 3])
def test_head_part_number(rs3, multipart_object, n):
    bucket, key, parts, etag = multipart_object
    head = rs3.head_object(Bucket=bucket, Key=key, PartNumber=n)
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentLength"] == len(parts[n - 1])
    assert head["ContentRange"] == "bytes %d-%d/%d" % part_range(parts, n)
    assert head["PartsCount"] == 3
    assert head["ETag"] == etag


def test_part_number_beyond_the_last_part(rs3, multipart_object):
    bucket, key, _, _ = multipart_object
    assert client_error(rs3.get_object, Bucket=bucket, Key=key, PartNumber=4) == ("InvalidPartNumber", 416)
    assert client_error(rs3.head_object, Bucket=bucket, Key=key, PartNumber=4)[1] == 416
    # The whole object still reads whole.
    whole = rs3.get_object(Bucket=bucket, Key=key)
    assert whole["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert whole["ContentLength"] == sum(len(p) for p in multipart_object[2])


def test_part_number_of_a_single_put_object(rs3):
    with temp_bucket(rs3, "part1") as bucket:
        body = os.urandom(100_000)
        rs3.put_object(Bucket=bucket, Key="single", Body=body)
        got = rs3.get_object(Bucket=bucket, Key="single", PartNumber=1)
        status = got["ResponseMetadata"]["HTTPStatusCode"]
        assert status in (200, 206)
        if status == 206:
            assert got["ContentRange"] == "bytes 0-%d/%d" % (len(body) - 1, len(body))
        assert got["Body"].read() == body
        head = rs3.head_object(Bucket=bucket, Key="single", PartNumber=1)
        assert head["ContentLength"] == len(body)
        assert client_error(rs3.get_object, Bucket=bucket, Key="single", PartNumber=2) == ("InvalidPartNumber", 416)


# ----- standard headers --------------------------------------------------------------------

STANDARD = dict(
    CacheControl="max-age=60, must-revalidate",
    ContentDisposition='attachment; filename="report 1.txt"',
    ContentEncoding="gzip",
    ContentLanguage="fr-CA",
    Expires=EXPIRES,
)
STANDARD_HEADERS = {
    "cache-control": "max-age=60, must-revalidate",
    "content-disposition": 'attachment; filename="report 1.txt"',
    "content-encoding": "gzip",
    "content-language": "fr-CA",
    "expires": EXPIRES_HTTP,
}


def assert_standard_headers(response, expected=STANDARD_HEADERS):
    got = headers(response)
    assert {name: got.get(name) for name in expected} == expected


def test_standard_headers_from_put_object(rs3):
    body = gzip.compress(b"hello " * 1000)
    with temp_bucket(rs3, "stdhdr") as bucket:
        rs3.put_object(Bucket=bucket, Key="doc", Body=body, ContentType="text/plain", **STANDARD)
        got = rs3.get_object(Bucket=bucket, Key="doc")
        assert got["Body"].read() == body
        assert_standard_headers(got)
        assert got["ContentType"] == "text/plain"
        assert_standard_headers(rs3.head_object(Bucket=bucket, Key="doc"))
        # A ranged read carries them too.
        assert_standard_headers(rs3.get_object(Bucket=bucket, Key="doc", Range="bytes=0-9"))
        # Without them, none come back.
        rs3.put_object(Bucket=bucket, Key="bare", Body=b"x")
        bare = headers(rs3.head_object(Bucket=bucket, Key="bare"))
        assert [h for h in STANDARD_HEADERS if h in bare] == []


def test_standard_headers_from_create_multipart_upload(rs3):
    with temp_bucket(rs3, "stdhdrmp") as bucket:
        upload = rs3.create_multipart_upload(Bucket=bucket, Key="doc", ContentType="application/x-mp", **STANDARD)["UploadId"]
        parts = [os.urandom(5 * MIB), b"end"]
        done = [
            {"PartNumber": n, "ETag": rs3.upload_part(Bucket=bucket, Key="doc", UploadId=upload, PartNumber=n, Body=body)["ETag"]}
            for n, body in enumerate(parts, 1)
        ]
        rs3.complete_multipart_upload(Bucket=bucket, Key="doc", UploadId=upload, MultipartUpload={"Parts": done})
        got = rs3.get_object(Bucket=bucket, Key="doc")
        assert got["Body"].read() == b"".join(parts)
        assert_standard_headers(got)
        assert got["ContentType"] == "application/x-mp"
        assert_standard_headers(rs3.head_object(Bucket=bucket, Key="doc"))
        assert_standard_headers(rs3.get_object(Bucket=bucket, Key="doc", PartNumber=2))


def test_response_overrides_on_get(rs3):
    with temp_bucket(rs3, "override") as bucket:
        rs3.put_object(Bucket=bucket, Key="doc", Body=b"payload", ContentType="text/plain", **STANDARD)
        got = rs3.get_object(
            Bucket=bucket,
            Key="doc",
            ResponseCacheControl="no-store",
            ResponseContentDisposition='inline; filename="x.bin"',
            ResponseContentEncoding="identity",
            ResponseContentLanguage="de-DE",
            ResponseContentType="application/x-override",
            ResponseExpires=OVERRIDE_EXPIRES,
        )
        assert got["Body"].read() == b"payload"
        h = headers(got)
        assert h["cache-control"] == "no-store"
        assert h["content-disposition"] == 'inline; filename="x.bin"'
        assert h["content-encoding"] == "identity"
        assert h["content-language"] == "de-DE"
        assert h["content-type"] == "application/x-override"
        assert h["expires"] == OVERRIDE_EXPIRES_HTTP
        # One override at a time leaves the others as stored.
        got = rs3.get_object(Bucket=bucket, Key="doc", ResponseContentLanguage="en")
        expected = dict(STANDARD_HEADERS, **{"content-language": "en"})
        assert_standard_headers(got, expected)
        assert got["ContentType"] == "text/plain"
        # The stored headers are unchanged by overridden reads.
        assert_standard_headers(rs3.head_object(Bucket=bucket, Key="doc"))


def test_copy_object_keeps_or_replaces_standard_headers(rs3):
    with temp_bucket(rs3, "copyhdr") as bucket:
        rs3.put_object(Bucket=bucket, Key="src", Body=b"source", ContentType="text/x-src", Metadata={"a": "1"}, **STANDARD)
        rs3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "src"}, MetadataDirective="COPY")
        head = rs3.head_object(Bucket=bucket, Key="copied")
        assert_standard_headers(head)
        assert head["ContentType"] == "text/x-src" and head["Metadata"] == {"a": "1"}
        rs3.copy_object(
            Bucket=bucket,
            Key="replaced",
            CopySource={"Bucket": bucket, "Key": "src"},
            MetadataDirective="REPLACE",
            ContentType="text/x-new",
            CacheControl="no-cache",
            ContentLanguage="es",
        )
        head = rs3.head_object(Bucket=bucket, Key="replaced")
        h = headers(head)
        assert h.get("cache-control") == "no-cache"
        assert h.get("content-language") == "es"
        assert head["ContentType"] == "text/x-new"
        # REPLACE takes the request's headers only: the ones it leaves out are gone.
        assert [name for name in ("content-disposition", "content-encoding", "expires") if name in h] == []
        assert head.get("Metadata", {}) == {}
        assert rs3.get_object(Bucket=bucket, Key="replaced")["Body"].read() == b"source"
