"""Shared helpers for the namespace, conditional-write, listing, lifecycle and read-semantics
suites: a SeaweedFS server (as tests/common/mod.rs `SeaweedFs::start` runs it) to put under
`sealstore serve` as its object backend, `sealstore serve` on a data directory the caller
keeps (so it can be killed and restarted), a `backend_server` fixture parametrized over
("local", "seaweedfs"), unique bucket names with clean-up, and raw S3-signed requests that
keep a key's bytes exactly (`x//y`, `a/./b`, ...)."""

import contextlib
import http.client
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid

import botocore.exceptions
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import BINARY, make_client

BACKENDS = ["local", "seaweedfs"]
TEMP_FILE = re.compile(r"#\d+$")


# ----- small helpers -----------------------------------------------------------------------


def error_code(excinfo):
    """(code, HTTP status) of a botocore ClientError caught by pytest.raises."""
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def unique_bucket(prefix):
    """A bucket name no other test uses (S3 rules: lower case, 3..63 characters)."""
    return ("%s-%s" % (prefix, uuid.uuid4().hex[:12]))[:63]


def _no_expect_on_empty_body(request, **_kwargs):
    """botocore sends `Expect: 100-continue` even with an empty body; a server rightly answers
    such a request at once, and botocore then misreads the next response on that connection
    (a 60 s stall and a hidden resend: boto/botocore#3755). The header is not signed."""
    if request.headers.get("Content-Length") == "0" and "Expect" in request.headers:
        del request.headers["Expect"]


def client_for(server):
    """A boto3 client of `server` ((endpoint, keys, ...)) that sends no Expect header with
    empty bodies."""
    endpoint, keys = server[0], server[1]
    client = make_client(endpoint, keys["accessKeyId"], keys["secretAccessKey"])
    client.meta.events.register("before-send.s3", _no_expect_on_empty_body)
    return client


def list_all_keys(s3, bucket):
    """Every key of a bucket (ListObjectsV2, boto3's default url encoding decoded)."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def empty_and_delete_bucket(s3, bucket, extra_keys=()):
    """Best-effort clean-up: aborts the bucket's uploads, deletes its listed objects (and
    `extra_keys`, in case a listing under test misses some), deletes the bucket. Never raises:
    a test's own assertions say what went wrong; this only tidies up."""
    with contextlib.suppress(Exception):
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            with contextlib.suppress(Exception):
                s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    keys = set(extra_keys)
    with contextlib.suppress(Exception):
        keys |= set(list_all_keys(s3, bucket))
    for key in keys:
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=bucket, Key=key)
    with contextlib.suppress(Exception):
        s3.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def temp_bucket(s3, prefix, extra_keys=()):
    """Creates a uniquely named bucket; empties and deletes it afterwards. `extra_keys` (a
    mutable collection) names keys to delete even if the listing does not show them."""
    name = unique_bucket(prefix)
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        empty_and_delete_bucket(s3, name, extra_keys)


def quote_key(key):
    """A key as it goes into a request path: every byte but unreserved ones and `/` encoded
    (S3's canonical URI encoding, so the signature covers exactly these bytes)."""
    return urllib.parse.quote(key.encode("utf-8"), safe="/-_.~")


class _S3SigV4KeepingPayloadHash(S3SigV4Auth):
    """S3's SigV4 (no path normalization), keeping the caller's X-Amz-Content-SHA256
    (`UNSIGNED-PAYLOAD`) instead of hashing the request's (absent) body."""

    def _modify_request_before_signing(self, request):
        given = request.headers.get("X-Amz-Content-SHA256")
        super()._modify_request_before_signing(request)
        if given is not None:
            del request.headers["X-Amz-Content-SHA256"]
            request.headers["X-Amz-Content-SHA256"] = given


def s3_signed(endpoint, keys, method, path, headers=None, query=""):
    """A request signed as S3 signs it (no path normalization, unlike plain SigV4: `x//y` and
    `a/./b` stay as they are). `path` must already be percent-encoded; returns an AWSRequest."""
    headers = dict(headers or {})
    headers.setdefault("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")
    url = "%s%s" % (endpoint, path) + ("?" + query if query else "")
    request = AWSRequest(method=method, url=url, headers=headers)
    _S3SigV4KeepingPayloadHash(Credentials(keys["accessKeyId"], keys["secretAccessKey"]), "s3", "us-east-1").add_auth(request)
    return request


def raw_send(request, body=b"", timeout=60):
    """Sends a prepared request over http.client exactly as given (no URL rewriting);
    returns (status, headers dict lower-cased, body)."""
    parts = urllib.parse.urlsplit(request.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + ("?" + parts.query if parts.query else "")
        conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
        headers = dict(request.headers.items())
        headers.setdefault("Host", parts.netloc)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body or request.method in ("PUT", "POST"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            conn.send(body)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def xml_error_code(body):
    match = re.search(rb"<Code>([^<]*)</Code>", body)
    return match.group(1).decode() if match else None


# ----- SeaweedFS ---------------------------------------------------------------------------


def _loopback_ports(count):
    """`count` distinct free loopback ports whose +10000 twin (weed's default gRPC port) is
    free too and below 65536; all held while choosing, released together."""
    held, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if port + 10000 >= 65536:
                continue
            twin = socket.socket()
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                twin.close()
                continue
            held.append(twin)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def _http_status(port, method, path, body=b""):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request(method, path, body=body, headers={"Content-Length": str(len(body))})
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


class SeaweedFS:
    """`weed server` with master, volume, filer and S3 gateway on loopback ports."""

    def __init__(self):
        # A start that exits or is not ready in time (a port taken between choosing and binding,
        # a slow machine) is retried on fresh ports; the last attempt's log is in the error.
        log_tail = ""
        for _attempt in range(3):
            if self._start():
                return
            with open(os.path.join(self.dir.name, "weed.log"), errors="replace") as f:
                log_tail = "".join(f.readlines()[-40:])
            self.dir.cleanup()
        raise RuntimeError("SeaweedFS did not become ready in three attempts; last log:\n" + log_tail)

    def _start(self):
        self.dir = tempfile.TemporaryDirectory()
        p = _loopback_ports(8)
        self.s3_port = p[6]
        with open(os.path.join(self.dir.name, "weed.log"), "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "weed",
                    "server",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-master.telemetry=false",
                    "-dir=%s" % self.dir.name,
                    "-master.port=%d" % p[0],
                    "-master.port.grpc=%d" % p[1],
                    "-volume.port=%d" % p[2],
                    "-volume.port.grpc=%d" % p[3],
                    "-filer",
                    "-filer.port=%d" % p[4],
                    "-filer.port.grpc=%d" % p[5],
                    "-s3",
                    "-s3.port=%d" % p[6],
                    "-s3.port.grpc=%d" % p[7],
                    # Fixed default ports (8181, 9101) would clash with another SeaweedFS on the machine.
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-master.volumeSizeLimitMB=64",
                    "-volume.max=200",
                    "-volume.index=memory",
                ],
                cwd=self.dir.name,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.time() + 90
        while not (_http_status(self.s3_port, "PUT", "/probe") == 200 and _http_status(self.s3_port, "PUT", "/probe/k", b"x") == 200):
            if self.proc.poll() is not None or time.time() > deadline:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait(timeout=30)
                return False
            time.sleep(0.25)
        return True

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.s3_port

    def create_bucket(self, name):
        status = _http_status(self.s3_port, "PUT", "/" + name)
        assert status == 200, "SeaweedFS refused bucket %s: %s" % (name, status)

    def list_keys(self, bucket):
        """Every key in one of SeaweedFS's buckets (unsigned ListObjectsV2, url-encoded)."""
        keys, token = [], None
        while True:
            query = "list-type=2&encoding-type=url" + ("&continuation-token=" + urllib.parse.quote(token, safe="") if token else "")
            conn = http.client.HTTPConnection("127.0.0.1", self.s3_port, timeout=10)
            conn.request("GET", "/%s?%s" % (bucket, query))
            response = conn.getresponse()
            body = response.read().decode()
            conn.close()
            assert response.status == 200, body
            keys += [urllib.parse.unquote_plus(k) for k in re.findall(r"<Key>([^<]*)</Key>", body)]
            match = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", body)
            if "<IsTruncated>true</IsTruncated>" not in body or not match:
                return keys
            token = match.group(1)

    def env(self, bucket):
        return {
            "SEALSTORE_OBJECT_BACKEND": "s3://%s" % bucket,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_SKIP_SIGNATURE": "true",
        }

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.dir.cleanup()


# ----- sealstore serve on a kept data directory ---------------------------------------------


class Serve:
    """`sealstore serve` on `data_dir` (which outlives it), with `env` added to the
    environment. `stop()` terminates it, `kill()` sends SIGKILL."""

    def __init__(self, data_dir, env=None, args=()):
        self.data_dir = pathlib.Path(data_dir)
        serve_json = self.data_dir / "serve.json"
        # A killed server leaves its serve.json behind; the new one writes its own when ready.
        with contextlib.suppress(FileNotFoundError):
            serve_json.unlink()
        full_env = dict(os.environ, SEALSTORE_DATA_DIR=str(self.data_dir))
        full_env.pop("SEALSTORE_OBJECT_BACKEND", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0", *args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("sealstore serve exited with %s" % self.proc.returncode)
            if time.time() > deadline:
                self.kill()
                raise RuntimeError("sealstore serve did not become ready")
            try:
                self.endpoint = json.loads(serve_json.read_text())["s3"]
                self.keys = json.loads((self.data_dir / "s3-admin.json").read_text())
                break
            except (FileNotFoundError, ValueError, KeyError):
                time.sleep(0.05)

    def as_tuple(self):
        return (self.endpoint, self.keys, self.data_dir)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)


@contextlib.contextmanager
def serve_on(data_dir, env=None):
    server = Serve(data_dir, env)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def fresh_server(kind, weed=None):
    """A new `sealstore serve` on a new data directory, over the local filesystem or over a
    new bucket of `weed`; yields (endpoint, keys, data_dir, backing bucket or None)."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = pathlib.Path(tmp) / "data"
        env, backing = None, None
        if kind == "seaweedfs":
            backing = unique_bucket("backing")
            weed.create_bucket(backing)
            env = weed.env(backing)
        with serve_on(data_dir, env) as server:
            yield server.endpoint, server.keys, data_dir, backing


@pytest.fixture(scope="module", params=BACKENDS)
def backend_server(request):
    """A server per module and backend: yields (endpoint, keys, data_dir, backend name)."""
    weed = request.getfixturevalue("seaweedfs") if request.param == "seaweedfs" else None
    with fresh_server(request.param, weed) as (endpoint, keys, data_dir, _backing):
        yield endpoint, keys, data_dir, request.param


@pytest.fixture(scope="module")
def bs3(backend_server):
    """A boto3 client of `backend_server`."""
    return client_for(backend_server)


def files_under(root):
    """(regular files, directories) under `root`, `root` itself excluded."""
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        files += [os.path.join(dirpath, f) for f in filenames]
        dirs += [os.path.join(dirpath, d) for d in dirnames]
    return files, dirs


def client_error(fn, *args, **kwargs):
    """Calls a boto3 operation that must fail; returns (code, status)."""
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn(*args, **kwargs)
    return error_code(e)
