"""Nothing resurrected, nothing leaked: a bucket deleted with an upload in progress comes back
empty; after everything is deleted the backend holds nothing (no file or directory under
`<data_dir>/objects`, no key in SeaweedFS's backing bucket); a server killed with -9 in the
middle of a PUT or an UploadPart cleans up its temporary files when it starts again, and shows
only what it acknowledged."""

import base64
import contextlib
import hashlib
import http.client
import os
import pathlib
import tempfile
import time
import urllib.parse

import botocore.exceptions
import pytest

from seaweed import (
    BACKENDS,
    TEMP_FILE,
    Serve,
    client_error,
    client_for,
    empty_and_delete_bucket,
    files_under,
    fresh_server,
    list_all_keys,
    quote_key,
    s3_signed,
    unique_bucket,
)

MIB = 1 << 20


@pytest.fixture(params=BACKENDS)
def fresh(request):
    """A server of its own (so that "nothing left" means this test's things), over the local
    filesystem or a new SeaweedFS bucket; yields a dict with s3, data_dir, kind, weed, backing."""
    weed = request.getfixturevalue("seaweedfs") if request.param == "seaweedfs" else None
    with fresh_server(request.param, weed) as (endpoint, keys, data_dir, backing):
        yield dict(
            s3=client_for((endpoint, keys)),
            endpoint=endpoint,
            keys=keys,
            data_dir=data_dir,
            kind=request.param,
            weed=weed,
            backing=backing,
        )


def leftovers(env):
    """What the backend still holds: local files and directories under objects/, or keys of
    the SeaweedFS backing bucket."""
    if env["kind"] == "local":
        files, dirs = files_under(env["data_dir"] / "objects")
        return files + dirs
    return env["weed"].list_keys(env["backing"])


def assert_nothing_left(env, timeout=10):
    deadline = time.time() + timeout
    while True:
        left = leftovers(env)
        if not left:
            return
        assert time.time() < deadline, "left behind after everything was deleted: %r" % left[:20]
        time.sleep(0.2)


# ----- DeleteBucket with an upload in progress ---------------------------------------------------


def test_delete_bucket_with_upload_in_progress(fresh):
    s3 = fresh["s3"]
    bucket = unique_bucket("mpdel")
    s3.create_bucket(Bucket=bucket)
    try:
        upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
        part = os.urandom(5 * MIB)
        e1 = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=part)["ETag"]
        try:
            deleted = s3.delete_bucket(Bucket=bucket)
            assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
        except botocore.exceptions.ClientError as e:
            assert (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]) == ("BucketNotEmpty", 409)
            # Refused: the upload is intact; aborting it lets the bucket go.
            assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [upload]
            s3.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload)
            assert s3.delete_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert client_error(s3.head_bucket, Bucket=bucket)[1] == 404
        # Either way, the bucket created again under the same name is empty, and the old
        # upload is gone for good.
        s3.create_bucket(Bucket=bucket)
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert client_error(s3.upload_part, Bucket=bucket, Key="big", UploadId=upload, PartNumber=2, Body=b"late") == ("NoSuchUpload", 404)
        assert client_error(
            s3.complete_multipart_upload,
            Bucket=bucket,
            Key="big",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]},
        ) == ("NoSuchUpload", 404)
        assert client_error(s3.list_parts, Bucket=bucket, Key="big", UploadId=upload) == ("NoSuchUpload", 404)
        assert client_error(s3.head_object, Bucket=bucket, Key="big")[1] == 404
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        s3.delete_bucket(Bucket=bucket)
        assert_nothing_left(fresh)
    finally:
        empty_and_delete_bucket(s3, bucket)


# ----- a mixed workload, then everything deleted -------------------------------------------------


def multipart(s3, bucket, key, parts, **kwargs):
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **kwargs)["UploadId"]
    done = []
    for n, body in enumerate(parts, 1):
        done.append({"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=body)["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})


def test_nothing_left_after_everything_is_deleted(fresh):
    s3 = fresh["s3"]
    buckets = [unique_bucket("gc"), unique_bucket("gc2")]
    for b in buckets:
        s3.create_bucket(Bucket=b)
    bucket, other = buckets
    try:
        long_key = "seg/" + "s" * 300 + "/" + "t" * 300 + "/end"
        singles = {
            "plain": os.urandom(1000),
            "dir/sub/file": os.urandom(70_000),
            long_key: os.urandom(5000),
            "s" * 300: b"one long segment",
            "photos/": b"",
            "photos/a.jpg": os.urandom(2000),
            "x//y": b"double slash",
            "/lead": b"leading slash",
            "trail/": b"trailing slash",
            "é/日本": b"utf-8",
        }
        for key, body in singles.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        # Overwrites: bigger, smaller, empty, multipart over single and single over multipart.
        for body in (os.urandom(300_000), b"", os.urandom(10)):
            s3.put_object(Bucket=bucket, Key="plain", Body=body)
        big = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1024)]
        multipart(s3, bucket, "mp/big", big)
        assert s3.get_object(Bucket=bucket, Key="mp/big")["Body"].read() == b"".join(big)
        multipart(s3, bucket, "plain", [os.urandom(5 * MIB), b"tail"])
        s3.put_object(Bucket=bucket, Key="mp/big", Body=b"small again")
        multipart(s3, bucket, long_key, [os.urandom(5 * MIB), os.urandom(100)])
        # A part uploaded twice: the second one counts.
        upload = s3.create_multipart_upload(Bucket=bucket, Key="twice")["UploadId"]
        s3.upload_part(Bucket=bucket, Key="twice", UploadId=upload, PartNumber=1, Body=os.urandom(3 * MIB))
        e = s3.upload_part(Bucket=bucket, Key="twice", UploadId=upload, PartNumber=1, Body=b"second")["ETag"]
        s3.complete_multipart_upload(Bucket=bucket, Key="twice", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
        assert s3.get_object(Bucket=bucket, Key="twice")["Body"].read() == b"second"
        # Aborted uploads, and uploads still in progress at the end.
        for key in ("aborted", "photos/", long_key):
            upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=os.urandom(5 * MIB))
            s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=2, Body=b"x")
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
        for key in ("pending", "x//y"):
            upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=os.urandom(1 * MIB))
        # A refused PUT (wrong Content-MD5) and copies, in this bucket and to another.
        wrong = base64.b64encode(hashlib.md5(b"not it").digest()).decode()
        with pytest.raises(botocore.exceptions.ClientError):
            s3.put_object(Bucket=bucket, Key="refused", Body=os.urandom(200_000), ContentMD5=wrong)
        s3.copy_object(Bucket=bucket, Key="copy/of/plain", CopySource={"Bucket": bucket, "Key": "plain"})
        s3.copy_object(Bucket=other, Key="x//y", CopySource={"Bucket": bucket, "Key": "x//y"})
        s3.put_object(Bucket=other, Key="a/b/c/d/e/f", Body=b"deep")
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "photos/a.jpg"}, {"Key": "dir/sub/file"}]})
        assert s3.get_object(Bucket=other, Key="x//y")["Body"].read() == b"double slash"

        # Everything away: uploads aborted, objects deleted, buckets deleted.
        for b in buckets:
            for u in s3.list_multipart_uploads(Bucket=b).get("Uploads", []):
                s3.abort_multipart_upload(Bucket=b, Key=u["Key"], UploadId=u["UploadId"])
            for key in list_all_keys(s3, b):
                s3.delete_object(Bucket=b, Key=key)
            assert s3.list_objects_v2(Bucket=b)["KeyCount"] == 0
            s3.delete_bucket(Bucket=b)
        assert_nothing_left(fresh)
    finally:
        for b in buckets:
            empty_and_delete_bucket(s3, b)


# ----- kill -9 in the middle of a write ------------------------------------------------------


def temp_files(data_dir):
    files, _ = files_under(pathlib.Path(data_dir) / "objects")
    return [f for f in files if TEMP_FILE.search(os.path.basename(f))]


def empty_dirs(data_dir):
    _, dirs = files_under(pathlib.Path(data_dir) / "objects")
    return [d for d in dirs if not os.listdir(d)]


def start_streaming_put(server, path, query, total):
    """Opens a connection and sends the head of a signed PUT of `total` bytes (unsigned
    payload); returns the connection, for the caller to send body bytes on."""
    request = s3_signed(server.endpoint, server.keys, "PUT", path, {"Content-Length": str(total)}, query)
    parts = urllib.parse.urlsplit(request.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("PUT", parts.path + ("?" + parts.query if parts.query else ""), skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", parts.netloc)
    for name, value in request.headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    return conn


def send_until_temp_file(conn, data_dir, before, total):
    """Sends 10 MiB of body, then more (never all of `total`) until a new temporary file
    shows under objects/; returns the new temporary files."""
    chunk, sent, limit = os.urandom(MIB), 0, total - 2 * MIB
    while sent < min(10 * MIB, limit):
        conn.send(chunk)
        sent += len(chunk)
    deadline = time.time() + 20
    while True:
        new = set(temp_files(data_dir)) - set(before)
        if new:
            return sorted(new)
        assert time.time() < deadline, "no temporary file (name ending in #<digits>) appeared under objects/ after %d MiB of a PUT" % (sent // MIB)
        if sent < limit:
            conn.send(chunk)
            sent += len(chunk)
        else:
            time.sleep(0.1)


@contextlib.contextmanager
def kept_data_dir():
    with tempfile.TemporaryDirectory() as tmp:
        yield pathlib.Path(tmp) / "data"


def wait_until_clean(data_dir, timeout=30):
    deadline = time.time() + timeout
    while True:
        temps, empties = temp_files(data_dir), empty_dirs(data_dir)
        if not temps and not empties:
            return
        assert time.time() < deadline, "after a restart, still: temporary files %r, empty directories %r" % (temps[:10], empties[:10])
        time.sleep(0.25)


def acknowledged_objects(s3, bucket):
    """Objects written and acknowledged before the crash: key → bytes."""
    objects = {
        "keep/small": os.urandom(1000),
        "keep/seg/" + "s" * 300 + "/file": os.urandom(100_000),
        "keep/folder/": b"",
        "x//y": b"double",
    }
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    multipart(s3, bucket, "keep/mp", parts)
    objects["keep/mp"] = b"".join(parts)
    return objects


def assert_intact(s3, bucket, objects):
    for key, body in objects.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key


def kill_mid_put(server, data_dir, path, query, total):
    """Streams a PUT of `total` bytes to `path`?`query` until its temporary file shows, kills
    the server with -9 there, starts it again on the same data dir and waits until nothing of
    the write is left; returns the new server."""
    before = temp_files(data_dir)
    conn = start_streaming_put(server, path, query, total)
    try:
        assert send_until_temp_file(conn, data_dir, before, total)
        server.kill()
    finally:
        conn.close()
    server = Serve(data_dir)
    wait_until_clean(data_dir)
    return server


def delete_everything_and_find_nothing_left(s3, bucket, data_dir):
    for key in list_all_keys(s3, bucket):
        s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)
    files, dirs = files_under(data_dir / "objects")
    assert files + dirs == []


def test_kill_9_mid_put_leaves_no_trace():
    with kept_data_dir() as data_dir:
        server = Serve(data_dir)
        bucket = unique_bucket("crash")
        try:
            s3 = client_for(server.as_tuple())
            s3.create_bucket(Bucket=bucket)
            objects = acknowledged_objects(s3, bucket)
            server = kill_mid_put(server, data_dir, "/%s/%s" % (bucket, quote_key("victim")), "", 50 * MIB)
            s3 = client_for(server.as_tuple())
            assert client_error(s3.head_object, Bucket=bucket, Key="victim")[1] == 404
            assert list_all_keys(s3, bucket) == sorted(objects, key=lambda k: k.encode())
            assert_intact(s3, bucket, objects)
            # The key can be written normally afterwards.
            s3.put_object(Bucket=bucket, Key="victim", Body=b"now whole")
            assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == b"now whole"
            delete_everything_and_find_nothing_left(s3, bucket, data_dir)
        finally:
            with contextlib.suppress(Exception):
                empty_and_delete_bucket(client_for(server.as_tuple()), bucket)
            server.stop()


def test_kill_9_mid_upload_part_leaves_no_trace():
    with kept_data_dir() as data_dir:
        server = Serve(data_dir)
        bucket = unique_bucket("crashmp")
        try:
            s3 = client_for(server.as_tuple())
            s3.create_bucket(Bucket=bucket)
            objects = acknowledged_objects(s3, bucket)
            upload = s3.create_multipart_upload(Bucket=bucket, Key="mpvictim")["UploadId"]
            part1 = os.urandom(5 * MIB)
            e1 = s3.upload_part(Bucket=bucket, Key="mpvictim", UploadId=upload, PartNumber=1, Body=part1)["ETag"]
            query = "partNumber=2&uploadId=%s" % urllib.parse.quote(upload, safe="")
            server = kill_mid_put(server, data_dir, "/%s/%s" % (bucket, quote_key("mpvictim")), query, 30 * MIB)
            s3 = client_for(server.as_tuple())
            assert client_error(s3.head_object, Bucket=bucket, Key="mpvictim")[1] == 404
            assert list_all_keys(s3, bucket) == sorted(objects, key=lambda k: k.encode())
            assert_intact(s3, bucket, objects)
            # The acknowledged part is there, the half-sent one is not; the upload completes.
            parts = s3.list_parts(Bucket=bucket, Key="mpvictim", UploadId=upload).get("Parts", [])
            assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, len(part1), e1)]
            e2 = s3.upload_part(Bucket=bucket, Key="mpvictim", UploadId=upload, PartNumber=2, Body=b"the end")["ETag"]
            s3.complete_multipart_upload(
                Bucket=bucket,
                Key="mpvictim",
                UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
            )
            assert s3.get_object(Bucket=bucket, Key="mpvictim")["Body"].read() == part1 + b"the end"
            delete_everything_and_find_nothing_left(s3, bucket, data_dir)
        finally:
            with contextlib.suppress(Exception):
                empty_and_delete_bucket(client_for(server.as_tuple()), bucket)
            server.stop()


@pytest.mark.parametrize("kind", BACKENDS)
def test_kill_9_during_concurrent_puts_keeps_every_acknowledged_one(request, kind):
    """Index entries of concurrent PUTs are committed in groups: killed with -9 while 16
    clients write, the server comes back with every PUT it acknowledged, byte for byte (on
    local disk and in front of SeaweedFS)."""
    import threading

    weed = request.getfixturevalue("seaweedfs") if kind == "seaweedfs" else None
    env = None
    if weed is not None:
        backing = unique_bucket("backing")
        weed.create_bucket(backing)
        env = weed.env(backing)
    with kept_data_dir() as data_dir:
        server = Serve(data_dir, env)
        bucket = unique_bucket("groups")
        try:
            client_for(server.as_tuple()).create_bucket(Bucket=bucket)
            acknowledged, lock, stop = {}, threading.Lock(), threading.Event()

            def writer(n):
                s3 = client_for(server.as_tuple())
                i = 0
                while not stop.is_set():
                    key, body = "w%d/%d" % (n, i), os.urandom(100 + (n * 977 + i * 131) % 9000)
                    try:
                        s3.put_object(Bucket=bucket, Key=key, Body=body)
                    except Exception:  # the server was killed: unacknowledged
                        return
                    with lock:
                        acknowledged[key] = body
                    i += 1

            threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
            for t in threads:
                t.start()
            deadline = time.time() + 30
            while len(acknowledged) < 200 and time.time() < deadline:
                time.sleep(0.05)
            server.kill()
            stop.set()
            for t in threads:
                t.join(timeout=60)
            with lock:
                done = dict(acknowledged)
            assert len(done) >= 200, "only %d PUTs acknowledged in 30 s" % len(done)
            server = Serve(data_dir, env)
            s3 = client_for(server.as_tuple())
            assert_intact(s3, bucket, done)
        finally:
            with contextlib.suppress(Exception):
                empty_and_delete_bucket(client_for(server.as_tuple()), bucket)
            server.stop()
