"""Protocol details as AWS has them: request ids on every answer, what is logged (and at
which level), AWS's 400s for misused headers, 304 and listing details, and the answer for
objects whose ciphertext was damaged at rest."""

import base64
import hashlib
import os
import pathlib
import re
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import make_client, running_server, signed_request

REQUEST_ID = re.compile(r"^[0-9A-F]{16}$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def logged():
    """A server of its own whose log (sealstore at debug, the rest at the default level) is
    kept: yields (endpoint, keys, data_dir, log path)."""
    with tempfile.TemporaryDirectory() as tmp:
        log_path = pathlib.Path(tmp) / "serve.log"
        with open(log_path, "w") as log:
            env = {"SEALSTORE_LOG": "info,sealstore=debug", "NO_COLOR": "1"}
            with running_server(log=log, env_extra=env) as (endpoint, keys, data_dir):
                yield endpoint, keys, data_dir, log_path


@pytest.fixture(scope="module")
def s3p(logged):
    endpoint, keys, _, _ = logged
    client = make_client(endpoint, keys["accessKeyId"], keys["secretAccessKey"])
    client.create_bucket(Bucket="proto")
    return client


def log_text(log_path):
    return ANSI.sub("", log_path.read_text())


def wait_for_log(log_path, needle, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log_text(log_path)
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in the server log:\n{log_text(log_path)[-4000:]}")


def error_lines(log_path):
    return [line for line in log_text(log_path).splitlines() if re.search(r"\bERROR\b", line)]


def raw(logged, method, path, body=b"", headers=None, sign=True, keys=None):
    """Sends a request (signed unless `sign` is false); returns (status, headers, body)."""
    endpoint, admin_keys, _, _ = logged
    headers = dict(headers or {})
    if sign:
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
        request = signed_request(endpoint, keys or admin_keys, method, path, headers)
        url, headers = request.url, dict(request.headers.items())
    else:
        url = f"{endpoint}{path}"
    req = urllib.request.Request(url, data=body if body else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def assert_ids(headers, body=None):
    """The answer has a request id and an x-amz-id-2; an error body repeats the id."""
    rid = headers.get("x-amz-request-id")
    assert rid and REQUEST_ID.match(rid), dict(headers)
    host = headers.get("x-amz-id-2")
    assert host and base64.b64decode(host, validate=True), dict(headers)
    if body:
        root = ET.fromstring(body)
        assert root.tag == "Error", body
        assert root.findtext("RequestId") == rid, body
        assert root.findtext("HostId") == host, body
    return rid


# --- 1. Request ids -------------------------------------------------------------------------


def test_every_answer_carries_a_request_id(logged, s3p):
    put = s3p.put_object(Bucket="proto", Key="ids", Body=b"hello")
    rid_put = assert_ids(put["ResponseMetadata"]["HTTPHeaders"])
    assert put["ResponseMetadata"]["RequestId"] == rid_put
    got = s3p.get_object(Bucket="proto", Key="ids")
    assert_ids(got["ResponseMetadata"]["HTTPHeaders"])
    assert got["ResponseMetadata"]["RequestId"] != rid_put

    # Errors: 404 GET (body), 404 HEAD (no body), 501 for an operation sealstore lacks.
    status, headers, body = raw(logged, "GET", "/proto/missing")
    assert status == 404
    assert_ids(headers, body)
    status, headers, body = raw(logged, "HEAD", "/proto/missing")
    assert status == 404 and body == b""
    assert_ids(headers)
    status, headers, body = raw(logged, "GET", "/proto?tagging")
    assert status == 501, body
    assert_ids(headers, body)
    # Authentication failures: a wrong secret, an unknown key, no signature at all.
    _, keys, _, _ = logged
    wrong = dict(keys, secretAccessKey="x" * 40)
    status, headers, body = raw(logged, "GET", "/proto/ids", keys=wrong)
    assert status == 403
    assert_ids(headers, body)
    status, headers, body = raw(logged, "GET", "/proto/ids", keys=dict(keys, accessKeyId="SSNOSUCHKEY"))
    assert status == 403
    assert_ids(headers, body)
    status, headers, body = raw(logged, "GET", "/proto/ids", sign=False)
    assert status == 403
    assert_ids(headers, body)
    # boto3 reads the id of an error too.
    with pytest.raises(ClientError) as e:
        s3p.get_object(Bucket="proto", Key="missing")
    assert REQUEST_ID.match(e.value.response["ResponseMetadata"]["RequestId"])


def test_the_log_line_of_a_request_has_its_id(logged, s3p):
    _, _, _, log_path = logged
    status, headers, body = raw(logged, "GET", "/proto/not-here-either")
    assert status == 404
    rid = assert_ids(headers, body)
    text = wait_for_log(log_path, rid)
    line = next(line for line in text.splitlines() if rid in line and "not-here-either" in line)
    assert "404" in line and "ERROR" not in line, line


# --- 2. Logging ------------------------------------------------------------------------------


def test_client_errors_and_unsupported_operations_are_not_logged_as_errors(logged, s3p):
    _, keys, _, log_path = logged
    before = error_lines(log_path)
    probes = [
        ("GET", "/proto?tagging"),
        ("GET", "/proto?cors"),
        ("GET", "/proto?policy"),
        ("GET", "/proto?lifecycle"),
        ("GET", "/proto?versioning"),
        ("GET", "/proto?object-lock"),
        ("GET", "/proto/ids?tagging"),
        ("GET", "/proto/ids?acl"),
        ("GET", "/proto/missing"),
        ("HEAD", "/proto/missing"),
        ("GET", "/no-such-bucket?list-type=2"),
        ("DELETE", "/no-such-bucket"),
    ]
    statuses = {raw(logged, method, path)[0] for method, path in probes}
    assert 501 in statuses and 404 in statuses, statuses
    raw(logged, "GET", "/proto/ids", keys=dict(keys, secretAccessKey="y" * 40))
    raw(logged, "GET", "/proto/ids", sign=False)
    raw(logged, "OPTIONS", "/proto/ids", sign=False)
    # The last probe is logged (at debug) once everything before it was.
    status, headers, _ = raw(logged, "GET", "/proto?website")
    wait_for_log(log_path, headers["x-amz-request-id"])
    assert error_lines(log_path) == before


# --- 3. Validation as AWS ------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"x-amz-server-side-encryption": "AES256"},
        {"x-amz-server-side-encryption": "aws:kms"},
        {"x-amz-server-side-encryption-aws-kms-key-id": "alias/whatever"},
    ],
    ids=["sse-s3", "sse-kms", "kms-key-id"],
)
def test_sse_headers_on_get_and_head_are_invalid(logged, s3p, header):
    s3p.put_object(Bucket="proto", Key="sse-read", Body=b"data")
    status, headers, body = raw(logged, "GET", "/proto/sse-read", headers=header)
    assert status == 400, body
    assert ET.fromstring(body).findtext("Code") == "InvalidArgument"
    assert_ids(headers, body)
    status, _, _ = raw(logged, "HEAD", "/proto/sse-read", headers=header)
    assert status == 400


def test_sse_c_without_the_key_md5_is_invalid(logged, s3p):
    key = bytes(range(32))
    body = b"secret"
    headers = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
        "Content-Length": str(len(body)),
    }
    status, _, reply = raw(logged, "PUT", "/proto/sse-c-no-md5", body=body, headers=headers)
    assert status == 400, reply
    root = ET.fromstring(reply)
    assert root.findtext("Code") == "InvalidArgument"
    assert "MD5" in root.findtext("Message")
    with pytest.raises(ClientError):
        s3p.head_object(Bucket="proto", Key="sse-c-no-md5")
    # With the MD5 (as boto3 sends it) the same key works.
    s3p.put_object(Bucket="proto", Key="sse-c-md5", Body=body, SSECustomerAlgorithm="AES256", SSECustomerKey=key)


def test_delete_objects_takes_at_most_1000_keys(s3p):
    too_many = [{"Key": f"k{i}"} for i in range(1001)]
    with pytest.raises(ClientError) as e:
        s3p.delete_objects(Bucket="proto", Delete={"Objects": too_many, "Quiet": True})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.value.response["Error"]["Code"] == "MalformedXML"
    s3p.delete_objects(Bucket="proto", Delete={"Objects": too_many[:1000], "Quiet": True})


def test_copy_onto_itself_must_change_something(s3p):
    s3p.put_object(Bucket="proto", Key="self", Body=b"me", Metadata={"a": "1"})
    with pytest.raises(ClientError) as e:
        s3p.copy_object(Bucket="proto", Key="self", CopySource={"Bucket": "proto", "Key": "self"})
    err = e.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Error"]["Code"] == "InvalidRequest"
    assert err["Error"]["Message"] == (
        "This copy request is illegal because it is trying to copy an object to itself without changing the "
        "object's metadata, storage class, website redirect location or encryption attributes."
    )
    with pytest.raises(ClientError):
        s3p.copy_object(
            Bucket="proto", Key="self", CopySource={"Bucket": "proto", "Key": "self"}, MetadataDirective="COPY"
        )
    # Any change makes it legal: new metadata, an encryption request, a storage class.
    s3p.copy_object(
        Bucket="proto",
        Key="self",
        CopySource={"Bucket": "proto", "Key": "self"},
        MetadataDirective="REPLACE",
        Metadata={"a": "2"},
    )
    assert s3p.head_object(Bucket="proto", Key="self")["Metadata"] == {"a": "2"}
    s3p.copy_object(Bucket="proto", Key="self", CopySource={"Bucket": "proto", "Key": "self"}, ServerSideEncryption="AES256")
    s3p.copy_object(Bucket="proto", Key="self", CopySource={"Bucket": "proto", "Key": "self"}, StorageClass="STANDARD")
    assert s3p.get_object(Bucket="proto", Key="self")["Body"].read() == b"me"
    # Another key is no copy onto itself.
    s3p.copy_object(Bucket="proto", Key="self-2", CopySource={"Bucket": "proto", "Key": "self"})


def test_cors_preflight(logged):
    status, headers, body = raw(logged, "OPTIONS", "/proto/any", sign=False)
    assert status == 400, body
    assert_ids(headers, body)
    status, headers, body = raw(
        logged,
        "OPTIONS",
        "/proto/any",
        sign=False,
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "GET"},
    )
    assert status == 403, body
    assert ET.fromstring(body).findtext("Code") == "AccessForbidden"
    assert_ids(headers, body)


# --- 4. Responses ---------------------------------------------------------------------------


def test_not_modified_carries_the_validators(logged, s3p):
    put = s3p.put_object(Bucket="proto", Key="cond", Body=b"conditional")
    etag = put["ETag"]
    head = s3p.head_object(Bucket="proto", Key="cond")
    for method in ("GET", "HEAD"):
        status, headers, _ = raw(logged, method, "/proto/cond", headers={"If-None-Match": etag})
        assert status == 304
        assert headers["ETag"] == etag
        assert headers["Last-Modified"] == head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
        assert_ids(headers)
        status, headers, _ = raw(
            logged, method, "/proto/cond", headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}
        )
        assert status == 304
        assert headers["ETag"] == etag


def test_listings_name_the_owner(logged, s3p):
    s3p.put_object(Bucket="proto", Key="owned", Body=b"x")
    v2 = s3p.list_objects_v2(Bucket="proto", Prefix="owned")
    assert "Owner" not in v2["Contents"][0]
    v2 = s3p.list_objects_v2(Bucket="proto", Prefix="owned", FetchOwner=True)
    owner = v2["Contents"][0]["Owner"]
    assert owner["DisplayName"] == "admin"
    assert re.match(r"^[0-9a-f]{64}$", owner["ID"])
    v1 = s3p.list_objects(Bucket="proto", Prefix="owned")
    assert v1["Contents"][0]["Owner"] == owner
    assert s3p.list_buckets()["Owner"] == owner


# --- 5. Damaged ciphertext ------------------------------------------------------------------


def ciphertext_of(data_dir, size):
    """The stored file of the one object of `size` plaintext bytes: the regular file under
    `objects/` whose size is the plaintext's plus the format's overhead (a header of at most
    a few KiB, a 16-byte tag per 64 KiB segment)."""
    overhead = 8192 + 16 * (size // 65520 + 1)
    found = [
        p
        for p in (data_dir / "objects").rglob("*")
        if p.is_file() and not p.is_symlink() and 0 < p.stat().st_size - size <= overhead
    ]
    assert len(found) == 1, found
    return found[0]


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def retrying_client(logged):
    endpoint, keys, _, _ = logged
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=keys["accessKeyId"],
        aws_secret_access_key=keys["secretAccessKey"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, signature_version="s3v4", retries={"mode": "standard", "max_attempts": 5}
        ),
    )


def gets_of(log_path, key):
    """The server's log lines for GETs of `key`."""
    return [line for line in log_text(log_path).splitlines() if f'method=GET path="/proto/{key}"' in line]


def damage_warnings(log_path, key):
    return [line for line in log_text(log_path).splitlines() if "WARN" in line and f"key={key}" in line]


def test_damaged_header_is_a_clear_error_that_clients_do_not_retry(logged, s3p):
    _, _, data_dir, log_path = logged
    body = os.urandom(10007)
    s3p.put_object(Bucket="proto", Key="bad-header", Body=body)
    path = ciphertext_of(data_dir, len(body))
    flip(path, 20)  # inside the header's salt: its sealed metadata no longer authenticates

    client = retrying_client(logged)
    with pytest.raises(ClientError) as e:
        client.get_object(Bucket="proto", Key="bad-header")
    err = e.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert err["Error"]["Code"] == "ObjectTampered"
    assert err["ResponseMetadata"]["RetryAttempts"] == 0
    rid = err["ResponseMetadata"]["RequestId"]
    text = wait_for_log(log_path, "key=bad-header")
    assert len(gets_of(log_path, "bad-header")) == 1, text
    warnings = damage_warnings(log_path, "bad-header")
    assert len(warnings) == 1 and "bucket=proto" in warnings[0] and rid in warnings[0], warnings

    # HEAD answers from the index, without reading the ciphertext (docs/S3.md).
    assert client.head_object(Bucket="proto", Key="bad-header")["ContentLength"] == len(body)
    assert error_lines(log_path) == []


def test_damaged_first_segment_is_a_clear_error(logged, s3p):
    _, _, data_dir, log_path = logged
    body = os.urandom(20011)
    s3p.put_object(Bucket="proto", Key="bad-segment", Body=body)
    path = ciphertext_of(data_dir, len(body))
    flip(path, path.stat().st_size - 100)  # inside segment 0, the only one
    status, headers, reply = raw(logged, "GET", "/proto/bad-segment")
    assert status == 409, reply
    assert ET.fromstring(reply).findtext("Code") == "ObjectTampered"
    assert_ids(headers, reply)
    status, _, _ = raw(logged, "GET", "/proto/bad-segment", headers={"Range": "bytes=100-199"})
    assert status == 409
    wait_for_log(log_path, "key=bad-segment")
    warnings = damage_warnings(log_path, "bad-segment")
    assert len(warnings) == 2 and all("segment=0" in w for w in warnings), warnings
    assert error_lines(log_path) == []


def test_damage_further_on_cuts_the_body_short_and_spares_other_ranges(logged, s3p):
    _, _, data_dir, log_path = logged
    body = os.urandom(6 * 1024 * 1024 + 13)
    s3p.put_object(Bucket="proto", Key="bad-tail", Body=body)
    path = ciphertext_of(data_dir, len(body))
    flip(path, path.stat().st_size - 100)  # in the last segment, past the first batch
    got = s3p.get_object(Bucket="proto", Key="bad-tail")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(Exception):
        got["Body"].read()
    # The undamaged start reads as it was, and a range in the damaged segment is refused.
    head = s3p.get_object(Bucket="proto", Key="bad-tail", Range="bytes=0-99999")["Body"].read()
    assert head == body[:100000]
    with pytest.raises(ClientError) as e:
        s3p.get_object(Bucket="proto", Key="bad-tail", Range=f"bytes={len(body) - 10}-")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    wait_for_log(log_path, "key=bad-tail")
    last_segment = len(body) // 65520
    warnings = damage_warnings(log_path, "bad-tail")
    assert len(warnings) == 2 and all(f"segment={last_segment}" in w for w in warnings), warnings
    assert error_lines(log_path) == []
