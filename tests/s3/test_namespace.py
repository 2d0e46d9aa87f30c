"""Every S3 key is its own object, on the local backend and over SeaweedFS: keys that a file
system (or object_store's Path) would merge or refuse — `x//y`, `/lead`, `trail/`, `a/./b`,
`..`, `%2F`, control characters, 1024-byte keys — round-trip exactly, beside the keys they
resemble; the server's own names for upload parts are unreachable from the S3 namespace;
listings are in S3's order (UTF-8 bytes) with S3's delimiter roll-up and pagination."""

import hashlib
import os
import urllib.parse
import xml.etree.ElementTree as ET

import botocore.exceptions
import pytest

from conftest import aws
from seaweed import (  # noqa: F401 (backend_server and bs3 are fixtures)
    backend_server,
    bs3,
    client_error,
    empty_and_delete_bucket,
    quote_key,
    raw_send,
    s3_signed,
    temp_bucket,
    unique_bucket,
)

MIB = 1 << 20


def key_id(key):
    """A readable, ASCII test id for a key."""
    if len(key.encode()) > 40:
        return "%s...(%d bytes)" % (key[:12].encode("unicode_escape").decode(), len(key.encode()))
    return key.encode("unicode_escape").decode() or "<empty>"


def body_for(key):
    """Content that differs between any two keys (folder markers excepted: empty)."""
    if key == "photos/":
        return b""
    return b"body of " + key.encode("utf-8") + b" " + hashlib.sha256(key.encode("utf-8")).digest()


def etag(body):
    return '"%s"' % hashlib.md5(body).hexdigest()


def by_bytes(keys):
    """S3's order: UTF-8 byte order."""
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def assert_object(s3, bucket, key, body):
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body, "GET %r returned another object's bytes" % key
    assert got["ETag"] == etag(body), key
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(body), key
    assert head["ETag"] == etag(body), key


def xml_safe(key):
    """Whether XML 1.0 can carry `key` (an error message quoting a key with other control
    characters cannot be parsed, so only the status is checked for those)."""
    return all(c in "\t\n\r" or ord(c) >= 0x20 for c in key)


def assert_missing(s3, bucket, key):
    code, status = client_error(s3.get_object, Bucket=bucket, Key=key)
    assert status == 404, key
    if xml_safe(key):
        assert code == "NoSuchKey", key
    assert client_error(s3.head_object, Bucket=bucket, Key=key)[1] == 404, key


# ----- pairs of keys that must stay two objects ----------------------------------------------

PAIRS = [
    ("x//y", "x/y"),
    ("/lead", "lead"),
    ("trail/", "trail"),
    ("a/b/", "a/b"),
    ("photos/", "photos/a.jpg"),
    ("f", "f/a"),
    ("a/./b", "a/b"),
    ("a/../b", "b"),
    ("a/../b", "a/b"),
    (".", ".."),
    ("./x", "x"),
    ("/", "//"),
    ("x///y", "x//y"),
    ("a%2Fb", "a/b"),
    ("%25", "%"),
]


@pytest.mark.parametrize("order", ["first-then-second", "second-then-first"])
@pytest.mark.parametrize("pair", PAIRS, ids=["%s|%s" % (key_id(a), key_id(b)) for a, b in PAIRS])
def test_pair_is_two_objects(bs3, pair, order):
    first, second = pair if order == "first-then-second" else pair[::-1]
    with temp_bucket(bs3, "pair", extra_keys=pair) as bucket:
        for key in (first, second):
            assert bs3.put_object(Bucket=bucket, Key=key, Body=body_for(key))["ResponseMetadata"]["HTTPStatusCode"] == 200
        for key in pair:
            assert_object(bs3, bucket, key, body_for(key))
        listed = [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert listed == by_bytes(pair)
        # Deleting either leaves the other readable and listed.
        for gone, kept in ((first, second), (second, first)):
            bs3.delete_object(Bucket=bucket, Key=gone)
            assert_missing(bs3, bucket, gone)
            assert_object(bs3, bucket, kept, body_for(kept))
            assert [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket).get("Contents", [])] == [kept]
            bs3.put_object(Bucket=bucket, Key=gone, Body=body_for(gone))
        assert [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket).get("Contents", [])] == by_bytes(pair)


# ----- odd keys round-trip ------------------------------------------------------------------

ODD_KEYS = [
    ".",
    "..",
    "a/./b",
    "a/../b",
    "../escape",
    "a/..",
    "%",
    "%2F",
    "a%2Fb",
    "%25",
    "%zz",
    "~",
    "~user/x",
    "#1",
    "name#1",
    "dir/name#12345",
    "?",
    "a?b=c&d",
    "*",
    "a*b",
    " ",
    "sp ace",
    " lead-space",
    "trail-space ",
    "tab\tkey",
    "ctl\x01key",
    "del\x7fkey",
    "new\nline",
    "plus+sign",
    "back\\slash",
    "colon:semi;eq=",
    "xml&<>\"'",
    "[]{}^|`",
    "é",
    "café/日本/😀.txt",
    "日本",
    "😀",
    "k" * 1024,
    "é" * 512,
    "seg/" + "s" * 300 + "/end",
    "s" * 300,
    "/" + "x" * 300 + "//" + "y" * 300 + "/",
]


@pytest.mark.parametrize("key", ODD_KEYS, ids=[key_id(k) for k in ODD_KEYS])
def test_odd_key_round_trips(bs3, key):
    body = body_for(key) + os.urandom(100)
    with temp_bucket(bs3, "odd", extra_keys=[key]) as bucket:
        put = bs3.put_object(Bucket=bucket, Key=key, Body=body)
        assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert put["ETag"] == etag(body)
        assert_object(bs3, bucket, key, body)
        assert [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket).get("Contents", [])] == [key]
        listed = bs3.list_objects_v2(Bucket=bucket, Prefix=key)
        assert [(o["Key"], o["Size"], o["ETag"]) for o in listed.get("Contents", [])] == [(key, len(body), etag(body))]
        v1 = bs3.list_objects(Bucket=bucket)
        assert [o["Key"] for o in v1.get("Contents", [])] == [key]
        bs3.delete_object(Bucket=bucket, Key=key)
        assert_missing(bs3, bucket, key)
        assert bs3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.parametrize("key", ["k" * 1025, "é" * 512 + "x", "dir/" + "x" * 1021], ids=["1025-ascii", "1025-bytes-utf8", "1025-with-slash"])
def test_key_longer_than_1024_bytes_is_refused(bs3, key):
    with temp_bucket(bs3, "toolong", extra_keys=[key]) as bucket:
        assert client_error(bs3.put_object, Bucket=bucket, Key=key, Body=b"x") == ("KeyTooLongError", 400)
        assert client_error(bs3.create_multipart_upload, Bucket=bucket, Key=key)[1] == 400
        assert bs3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        assert bs3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


RAW_KEYS = ["x//y", "/lead", "a/./b", "a/../b", ".", "..", "trail/", "sp ace", "ctl\x01", "é/日本"]


def test_raw_signed_requests_address_the_same_keys_as_boto3(backend_server, bs3):
    """Raw S3-signed PUT/GET (path sent byte for byte) and boto3 agree on which object a key
    names, including dot segments and empty segments no client may normalize away."""
    endpoint, keys = backend_server[0], backend_server[1]
    with temp_bucket(bs3, "raw", extra_keys=RAW_KEYS) as bucket:
        for key in RAW_KEYS:
            path = "/%s/%s" % (bucket, quote_key(key))
            body = b"raw " + key.encode()
            status, _, reply = raw_send(s3_signed(endpoint, keys, "PUT", path), body)
            assert status == 200, (key, reply)
        for key in RAW_KEYS:
            assert bs3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"raw " + key.encode(), key
            bs3.put_object(Bucket=bucket, Key=key, Body=b"boto " + key.encode())
        for key in RAW_KEYS:
            path = "/%s/%s" % (bucket, quote_key(key))
            status, headers, reply = raw_send(s3_signed(endpoint, keys, "GET", path))
            assert (status, reply) == (200, b"boto " + key.encode()), key
            assert headers["etag"] == etag(b"boto " + key.encode())
        assert [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket)["Contents"]] == by_bytes(RAW_KEYS)


# ----- the server's internal names are ordinary keys to S3 -------------------------------------


def test_internal_part_names_are_ordinary_keys(bs3):
    with temp_bucket(bs3, "internal") as bucket:
        upload = bs3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
        part1, part2 = os.urandom(5 * MIB), os.urandom(300_000)
        e1 = bs3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=part1)["ETag"]
        e2 = bs3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=2, Body=part2)["ETag"]
        lookalikes = [
            ".sealstore-uploads/%s/00001" % upload,
            ".sealstore-uploads/%s/00002" % upload,
            ".sealstore-uploads/%s" % upload,
            ".sealstore-uploads/",
            "_buckets/%s/uploads/%s/00001" % (bucket, upload),
            "_buckets/%s/big" % bucket,
            "_buckets/%s/objects/big!" % bucket,
            "_buckets/%s/uploads/%s/00002" % (bucket, upload),
            "big!",
            "%s/big" % bucket,
            "uploads/%s/00001" % upload,
            "%s/00001" % upload,
            "%s/1" % upload,
            "big#1",
            "big/",
        ]
        junk = {k: b"junk " + k.encode() for k in lookalikes}
        for key, body in junk.items():
            assert bs3.put_object(Bucket=bucket, Key=key, Body=body)["ResponseMetadata"]["HTTPStatusCode"] == 200
        # The upload's parts are untouched by those objects.
        parts = bs3.list_parts(Bucket=bucket, Key="big", UploadId=upload)["Parts"]
        assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, len(part1), e1), (2, len(part2), e2)]
        # In-progress parts are not objects.
        assert by_bytes(junk) == [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket)["Contents"]]
        bs3.complete_multipart_upload(
            Bucket=bucket,
            Key="big",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
        got = bs3.get_object(Bucket=bucket, Key="big")["Body"].read()
        assert len(got) == len(part1) + len(part2)
        assert hashlib.sha256(got).digest() == hashlib.sha256(part1 + part2).digest()
        for key, body in junk.items():
            assert bs3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
        assert [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket)["Contents"]] == by_bytes(list(junk) + ["big"])
        # Deleting the look-alikes leaves the completed object whole.
        for key in junk:
            bs3.delete_object(Bucket=bucket, Key=key)
        assert [o["Key"] for o in bs3.list_objects_v2(Bucket=bucket)["Contents"]] == ["big"]
        assert hashlib.sha256(bs3.get_object(Bucket=bucket, Key="big")["Body"].read()).digest() == hashlib.sha256(part1 + part2).digest()


# ----- listing in S3's order ----------------------------------------------------------------

SHAPE_KEYS = sorted(
    set(k for pair in PAIRS for k in pair)
    | set(ODD_KEYS)
    | {"A", "a", "B", "b/", "Z", "zz", "a/", "a/b0", "a/b/c", "a/b/c/d", "a/c", "a0", "a-b", "a.b", "x/", "x/y/z", "x//", "x//y/z", "//lead2", "/x/y", "photos/b.jpg", "photos/sub/c.jpg", "f/b/c"}
)


@pytest.fixture(scope="module")
def shapes(bs3):
    """A bucket holding every shape of key above; yields (bucket, stored keys in S3 order,
    {key: error} for the PUTs that failed). The listing tests compare against the keys that
    were stored, so that one key the server cannot store fails one test
    (`test_every_shape_is_stored`) and leaves the listing tests to judge the listing."""
    bucket = unique_bucket("shapes")
    bs3.create_bucket(Bucket=bucket)
    try:
        failed = {}
        for key in SHAPE_KEYS:
            try:
                bs3.put_object(Bucket=bucket, Key=key, Body=body_for(key))
            except botocore.exceptions.ClientError as e:
                failed[key] = "%s %s" % (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"])
        yield bucket, by_bytes(k for k in SHAPE_KEYS if k not in failed), failed
    finally:
        empty_and_delete_bucket(bs3, bucket, SHAPE_KEYS)


def test_every_shape_is_stored(shapes):
    _, stored, failed = shapes
    assert {key_id(k): error for k, error in failed.items()} == {}
    assert len(stored) == len(SHAPE_KEYS)


def expected_listing(keys, prefix="", delimiter=None):
    """S3's definition: keys under `prefix`; with a delimiter, a key holding it after the prefix
    rolls up into the common prefix `prefix + ... + delimiter`. Returns (contents, prefixes)
    and the merged order in which pages return both."""
    contents, prefixes = [], []
    for key in by_bytes(keys):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if common not in prefixes:
                prefixes.append(common)
        else:
            contents.append(key)
    return contents, prefixes, by_bytes(contents + prefixes)


def test_byte_order_examples():
    """The expected order itself (a self-check of `by_bytes`)."""
    assert by_bytes(["é", "a", "A", "b"]) == ["A", "a", "b", "é"]
    assert by_bytes(["a/b0", "a/b/", "a/b"]) == ["a/b", "a/b/", "a/b0"]
    assert by_bytes(["\x7f", "~", "\x01", " "]) == ["\x01", " ", "~", "\x7f"]
    assert by_bytes(["😀", "日本", "é"]) == ["é", "日本", "😀"]


def test_list_v2_returns_every_key_in_byte_order(bs3, shapes):
    bucket, keys, _ = shapes
    listed = bs3.list_objects_v2(Bucket=bucket)
    assert listed["KeyCount"] == len(keys) and not listed["IsTruncated"]
    assert [o["Key"] for o in listed["Contents"]] == keys
    assert [o["Size"] for o in listed["Contents"]] == [len(body_for(k)) for k in keys]
    v1 = bs3.list_objects(Bucket=bucket)
    assert [o["Key"] for o in v1["Contents"]] == keys and not v1["IsTruncated"]


def pages_v2(s3, bucket, max_keys, **kwargs):
    """Every page of ListObjectsV2 by continuation token; returns the list of pages."""
    pages, token = [], None
    while True:
        args = dict(Bucket=bucket, MaxKeys=max_keys, **kwargs)
        if token:
            args["ContinuationToken"] = token
        page = s3.list_objects_v2(**args)
        pages.append(page)
        entries = len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
        assert page["KeyCount"] == entries
        assert entries <= max_keys
        if not page["IsTruncated"]:
            return pages
        assert entries == max_keys, "a truncated page must be full"
        token = page["NextContinuationToken"]
        assert len(pages) < 2000, "pagination does not end"


def pages_v1(s3, bucket, max_keys, **kwargs):
    """Every page of ListObjects (V1) by marker: NextMarker when given (with a delimiter),
    else the last key, as S3 documents."""
    pages, marker = [], None
    while True:
        args = dict(Bucket=bucket, MaxKeys=max_keys, **kwargs)
        if marker is not None:
            args["Marker"] = marker
        page = s3.list_objects(**args)
        pages.append(page)
        entries = page.get("Contents", []) + page.get("CommonPrefixes", [])
        assert len(entries) <= max_keys
        if not page["IsTruncated"]:
            return pages
        assert len(entries) == max_keys, "a truncated page must be full"
        if "Delimiter" in kwargs:
            marker = page["NextMarker"]
        else:
            marker = page.get("NextMarker") or page["Contents"][-1]["Key"]
        assert len(pages) < 2000, "pagination does not end"


def flatten(pages):
    """(contents, prefixes) over pages, in page order."""
    contents = [o["Key"] for p in pages for o in p.get("Contents", [])]
    prefixes = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
    return contents, prefixes


@pytest.mark.parametrize("max_keys", [1, 2, 3, 7])
def test_list_v2_pages_concatenate_to_the_full_listing(bs3, shapes, max_keys):
    bucket, keys, _ = shapes
    contents, prefixes = flatten(pages_v2(bs3, bucket, max_keys))
    assert prefixes == []
    assert contents == keys


@pytest.mark.parametrize("max_keys", [1, 2, 3, 7])
def test_list_v1_pages_by_marker_concatenate_to_the_full_listing(bs3, shapes, max_keys):
    bucket, keys, _ = shapes
    contents, prefixes = flatten(pages_v1(bs3, bucket, max_keys))
    assert prefixes == []
    assert contents == keys


@pytest.mark.parametrize("start_after", ["a/b", "a/b/", "m", "/", ".", "é", "x//y", "\x01"])
def test_list_v2_start_after_and_v1_marker(bs3, shapes, start_after):
    bucket, keys, _ = shapes
    after = [k for k in keys if k.encode() > start_after.encode()]
    got = bs3.list_objects_v2(Bucket=bucket, StartAfter=start_after)
    assert [o["Key"] for o in got.get("Contents", [])] == after
    got = bs3.list_objects(Bucket=bucket, Marker=start_after)
    assert [o["Key"] for o in got.get("Contents", [])] == after


PREFIXES = ["", "a/", "x/", "/", "a", "a/b", "photos/", "f", "trail", ".", "x//", "nothing-here/"]


@pytest.mark.parametrize("prefix", PREFIXES, ids=[key_id(p) for p in PREFIXES])
def test_list_with_delimiter_rolls_up_as_s3_defines(bs3, shapes, prefix):
    bucket, keys, _ = shapes
    contents, prefixes, merged = expected_listing(keys, prefix, "/")
    got = bs3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
    assert [o["Key"] for o in got.get("Contents", [])] == contents
    assert [c["Prefix"] for c in got.get("CommonPrefixes", [])] == prefixes
    assert got["KeyCount"] == len(contents) + len(prefixes)
    v1 = bs3.list_objects(Bucket=bucket, Prefix=prefix, Delimiter="/")
    assert [o["Key"] for o in v1.get("Contents", [])] == contents
    assert [c["Prefix"] for c in v1.get("CommonPrefixes", [])] == prefixes
    # Without a delimiter: exactly the keys under the prefix.
    flat = bs3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert [o["Key"] for o in flat.get("Contents", [])] == expected_listing(keys, prefix)[0]


@pytest.mark.parametrize("max_keys", [1, 2, 3])
@pytest.mark.parametrize("prefix", ["", "a/", "x/", "/"], ids=["root", "a", "x", "slash"])
def test_list_with_delimiter_pages_have_no_duplicates(bs3, shapes, prefix, max_keys):
    bucket, keys, _ = shapes
    contents, prefixes, merged = expected_listing(keys, prefix, "/")
    pages = pages_v2(bs3, bucket, max_keys, Prefix=prefix, Delimiter="/")
    assert flatten(pages) == (contents, prefixes)
    # Page by page, entries come in the merged order.
    in_order = []
    for p in pages:
        in_order += by_bytes([o["Key"] for o in p.get("Contents", [])] + [c["Prefix"] for c in p.get("CommonPrefixes", [])])
    assert in_order == merged
    pages = pages_v1(bs3, bucket, max_keys, Prefix=prefix, Delimiter="/")
    assert flatten(pages) == (contents, prefixes)


def test_other_delimiters(bs3, shapes):
    bucket, keys, _ = shapes
    for prefix, delimiter in [("", "b"), ("a", "/b"), ("", "."), ("x/", "//"), ("", "é")]:
        contents, prefixes, _ = expected_listing(keys, prefix, delimiter)
        got = bs3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter=delimiter)
        assert [o["Key"] for o in got.get("Contents", [])] == contents, (prefix, delimiter)
        assert [c["Prefix"] for c in got.get("CommonPrefixes", [])] == prefixes, (prefix, delimiter)


def _printable_ascii(s):
    return all(0x20 < ord(c) < 0x7F for c in s)


def test_encoding_type_url_round_trips_control_characters(bs3, shapes):
    """With EncodingType=url given explicitly, boto3 leaves the answer as sent: keys,
    prefixes and common prefixes come url-encoded (printable ASCII only) and decode to the
    stored keys."""
    bucket, keys, _ = shapes
    got = bs3.list_objects_v2(Bucket=bucket, EncodingType="url")
    assert got["EncodingType"] == "url"
    encoded = [o["Key"] for o in got["Contents"]]
    assert all(_printable_ascii(k) for k in encoded), [k for k in encoded if not _printable_ascii(k)]
    assert [urllib.parse.unquote_plus(k) for k in encoded] == keys
    v1 = bs3.list_objects(Bucket=bucket, EncodingType="url")
    assert [urllib.parse.unquote_plus(o["Key"]) for o in v1["Contents"]] == keys
    # Common prefixes and the prefix too.
    for prefix in ["", "a/"]:
        contents, prefixes, _ = expected_listing(keys, prefix, "/")
        got = bs3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/", EncodingType="url")
        assert [urllib.parse.unquote_plus(o["Key"]) for o in got.get("Contents", [])] == contents
        assert [urllib.parse.unquote_plus(c["Prefix"]) for c in got.get("CommonPrefixes", [])] == prefixes
        assert all(_printable_ascii(c["Prefix"]) for c in got.get("CommonPrefixes", []))
    ctl = [k for k in keys if any(ord(c) < 0x20 or ord(c) == 0x7F for c in k)]
    assert len(ctl) >= 4
    for key in ctl:
        got = bs3.list_objects_v2(Bucket=bucket, Prefix=key, EncodingType="url")
        assert [urllib.parse.unquote_plus(o["Key"]) for o in got["Contents"]] == [key]


def test_encoding_type_url_encodes_the_echoed_parameters(backend_server, bs3):
    """S3 url-encodes, besides keys, the request values it echoes (Prefix, Delimiter, Marker,
    NextMarker, StartAfter) when asked for EncodingType=url: a control character in a marker
    would otherwise make the answer unparseable XML (and boto3's paginators send the last key
    back as the marker)."""
    endpoint, keys = backend_server[0], backend_server[1]
    names = ["ctl\x01a", "ctl\x01b", "ctl\x01c/d"]
    with temp_bucket(bs3, "echo", extra_keys=names) as bucket:
        for key in names:
            bs3.put_object(Bucket=bucket, Key=key, Body=b"1")
        def q(value):
            return urllib.parse.quote(value, safe="")

        for query, echoed in [
            ("list-type=2&encoding-type=url&prefix=%s&start-after=%s&delimiter=%%2F" % (q("ctl\x01"), q("ctl\x01a")), {"Prefix": "ctl\x01", "StartAfter": "ctl\x01a", "Delimiter": "/"}),
            ("encoding-type=url&prefix=%s&marker=%s&delimiter=%%2F&max-keys=1" % (q("ctl\x01"), q("ctl\x01a")), {"Prefix": "ctl\x01", "Marker": "ctl\x01a", "NextMarker": "ctl\x01b"}),
        ]:
            status, _, body = raw_send(s3_signed(endpoint, keys, "GET", "/" + bucket, query=query))
            assert status == 200, body
            root = ET.fromstring(body)  # parseable: nothing unencoded
            ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
            got = {name: urllib.parse.unquote_plus(root.find(ns + name).text) for name in echoed if root.find(ns + name) is not None}
            assert got == echoed
            listed = [urllib.parse.unquote_plus(e.text) for e in root.findall("%sContents/%sKey" % (ns, ns))]
            assert listed == ["ctl\x01b"]
            prefixes = [urllib.parse.unquote_plus(e.text) for e in root.findall("%sCommonPrefixes/%sPrefix" % (ns, ns))]
            assert prefixes == ([] if "max-keys=1" in query else ["ctl\x01c/"])


def test_unencoded_listing_escapes_xml(backend_server, bs3):
    """Without encoding-type (raw request: boto3 always asks for url), keys come XML-escaped."""
    endpoint, keys = backend_server[0], backend_server[1]
    names = ["xml&<>\"'", "x//y", "é", "sp ace", "plus+", "%2F", "/lead", "a/b/"]
    with temp_bucket(bs3, "xmlesc", extra_keys=names) as bucket:
        for key in names:
            bs3.put_object(Bucket=bucket, Key=key, Body=b"1")
        status, _, body = raw_send(s3_signed(endpoint, keys, "GET", "/" + bucket, query="list-type=2"))
        assert status == 200, body
        ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
        root = ET.fromstring(body)
        listed = [e.text for e in root.iter("{%s}Key" % ns["s3"])] or [e.text for e in root.iter("Key")]
        assert listed == by_bytes(names)


# ----- the aws CLI -------------------------------------------------------------------------


def test_aws_cli_cp_of_odd_keys(backend_server, bs3, tmp_path):
    """`aws s3 cp` keeps `x//y` apart from `x/y`; `trail/` (which `aws s3 cp` would take for a
    folder to copy into) goes up with `s3api put-object` and down with `aws s3 cp`."""
    keys = ["x//y", "x/y", "trail/", "trail", "/lead"]
    with temp_bucket(bs3, "awscli-ns", extra_keys=keys) as bucket:
        files = {}
        for i, key in enumerate(keys):
            files[key] = tmp_path / ("up%d" % i)
            files[key].write_bytes(body_for(key) + os.urandom(1000))
        aws(backend_server, "s3", "cp", str(files["x//y"]), "s3://%s/x//y" % bucket, timeout=120)
        aws(backend_server, "s3", "cp", str(files["x/y"]), "s3://%s/x/y" % bucket, timeout=120)
        aws(backend_server, "s3", "cp", str(files["/lead"]), "s3://%s//lead" % bucket, timeout=120)
        aws(backend_server, "s3api", "put-object", "--bucket", bucket, "--key", "trail/", "--body", str(files["trail/"]), timeout=120)
        aws(backend_server, "s3api", "put-object", "--bucket", bucket, "--key", "trail", "--body", str(files["trail"]), timeout=120)
        for i, key in enumerate(keys):
            down = tmp_path / ("down%d" % i)
            aws(backend_server, "s3", "cp", "s3://%s/%s" % (bucket, key), str(down), timeout=120)
            assert down.read_bytes() == files[key].read_bytes(), key
        listing = aws(backend_server, "s3api", "list-objects-v2", "--bucket", bucket, "--query", "Contents[].Key", "--output", "text", timeout=120)
        assert listing.split() == by_bytes(keys)
        aws(backend_server, "s3", "rm", "s3://%s/x//y" % bucket, timeout=120)
        assert_missing(bs3, bucket, "x//y")
        assert bs3.get_object(Bucket=bucket, Key="x/y")["Body"].read() == files["x/y"].read_bytes()
