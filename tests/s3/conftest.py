"""Fixtures for the S3 suite: a real `sealstore serve` on a free port, and boto3 clients."""

import contextlib
import json
import os
import pathlib
import subprocess
import tempfile
import time

import urllib.error
import urllib.request

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("SEALSTORE_BIN", ROOT / "target" / "debug" / "sealstore"))

# On PostgreSQL (SEALSTORE_TEST_POSTGRES_URL, set by scripts/with-postgres), every sealstore
# the suites start runs through tests/pg-launcher: the metadata of each data directory in a
# database of its own on that server (docs/METADATA.md, "Tests").
POSTGRES = os.environ.get("SEALSTORE_TEST_POSTGRES_URL") or None
if POSTGRES and BINARY.name != "pg-launcher":
    os.environ["SEALSTORE_REAL_BIN"] = str(BINARY)
    BINARY = ROOT / "tests" / "pg-launcher"
if POSTGRES:
    assert os.environ.get("SEALSTORE_REAL_BIN"), "SEALSTORE_BIN is the launcher: set SEALSTORE_REAL_BIN"
    # Each launch is noted here, for the check at the end of the session.
    os.environ.setdefault("SEALSTORE_TEST_PG_LAUNCHES", tempfile.mkstemp(prefix="sealstore-pg-launches-")[1])
REDB_FILES = ("kms.redb", "objects.redb", "s3-users.redb")


def psql(url, sql):
    """Runs `sql` on `url` with psql; its unaligned output."""
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def database_url(data_dir):
    """The URL of the database tests/pg-launcher gives `data_dir`."""
    h = 0xCBF29CE484222325
    for b in os.fsencode(os.path.abspath(data_dir)):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    base, sep, query = POSTGRES.partition("?")
    return f"{base.rsplit('/', 1)[0]}/sealstore_dir_{h:016x}{sep}{query}"


def assert_metadata_on_postgres(data_dir):
    """On PostgreSQL: `data_dir` has no redb metadata file, and its database has rows (the
    server really keeps its metadata there)."""
    if not POSTGRES:
        return
    present = [f for f in REDB_FILES if (pathlib.Path(data_dir) / f).exists()]
    assert not present, f"on PostgreSQL, yet {data_dir} holds {present}"
    rows = int(psql(database_url(data_dir), "SELECT count(*) FROM sealstore_kv"))
    assert rows > 0, f"no rows in the database of {data_dir}"


def pytest_sessionfinish(session, exitstatus):
    """On PostgreSQL: some test started sealstore through tests/pg-launcher, and no data
    directory it was started on holds a redb metadata file. A failure fails the session."""
    if not POSTGRES:
        return
    launches = pathlib.Path(os.environ["SEALSTORE_TEST_PG_LAUNCHES"])
    dirs = {line.split("\t")[0] for line in launches.read_text().splitlines() if line}
    stray = [f"{d}/{f}" for d in sorted(dirs) for f in REDB_FILES if os.path.exists(os.path.join(d, f))]
    problem = ("on PostgreSQL, but no test started sealstore through tests/pg-launcher" if not dirs
               else f"redb metadata files on a PostgreSQL run: {stray}" if stray else None)
    if problem:
        session.config.get_terminal_writer().line(f"\nFAILED: {problem}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        session.config.get_terminal_writer().line(
            f"\nmetadata on PostgreSQL: sealstore started on {len(dirs)} data directories, none with a redb file")


@contextlib.contextmanager
def running_server(*args, listen="127.0.0.1:0", log=None, env_extra=None, data_dir=None):
    """Starts `sealstore serve` (with extra `args`) on a temporary data directory (or on
    `data_dir`, which outlives the server); yields (endpoint, keys, data_dir) once it is ready,
    and stops it afterwards. `log`: a file (open for writing) to take the server's log
    (stderr); `env_extra`: more environment."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = pathlib.Path(data_dir) if data_dir else pathlib.Path(tmp) / "data"
        env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir), **(env_extra or {}))
        env.pop("SEALSTORE_OBJECT_BACKEND", None)
        proc = subprocess.Popen(
            [str(BINARY), "serve", "--s3-listen", listen, "--kms-listen", "127.0.0.1:0", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log if log is not None else subprocess.DEVNULL,
        )
        try:
            serve_json = data_dir / "serve.json"
            deadline = time.time() + 30
            while not serve_json.exists():
                assert proc.poll() is None, "sealstore serve exited"
                assert time.time() < deadline, "sealstore serve did not become ready"
                time.sleep(0.05)
            info = json.loads(serve_json.read_text())
            keys = json.loads((data_dir / "s3-admin.json").read_text())
            assert_metadata_on_postgres(data_dir)
            yield info["s3"], keys, data_dir
        finally:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def server():
    """One server for the session; yields (endpoint, keys, data_dir)."""
    with running_server() as s:
        yield s


def make_client(endpoint, access_key, secret_key):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="session")
def s3(server):
    endpoint, keys, _ = server
    return make_client(endpoint, keys["accessKeyId"], keys["secretAccessKey"])


def run_aws(server, *args, timeout=600):
    """Runs the aws CLI against `server` ((endpoint, keys, ...)) with its admin keys and no
    config of the machine's; returns the finished process."""
    endpoint, keys = server[0], server[1]
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=keys["accessKeyId"],
        AWS_SECRET_ACCESS_KEY=keys["secretAccessKey"],
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    return subprocess.run(["aws", "--endpoint-url", endpoint, *args], env=env, capture_output=True, text=True, timeout=timeout)


def aws(server, *args, timeout=600):
    """Runs an aws CLI command that must succeed; returns its stdout."""
    out = run_aws(server, *args, timeout=timeout)
    assert out.returncode == 0, "aws %s failed:\n%s" % (" ".join(args), out.stderr)
    return out.stdout


def signed_request(endpoint, keys, method, path, headers):
    """A request signed by botocore's SigV4 (headers must include X-Amz-Content-SHA256), for
    tests that send bodies or operations boto3 would not."""
    request = AWSRequest(method=method, url=f"{endpoint}{path}", headers=headers)
    SigV4Auth(Credentials(keys["accessKeyId"], keys["secretAccessKey"]), "s3", "us-east-1").add_auth(request)
    return request


def send(request, body):
    """Sends a signed request with `body`; returns (status, response body), errors included."""
    raw = urllib.request.Request(request.url, data=body, method=request.method, headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(raw, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="session")
def seaweedfs():
    """One SeaweedFS (master, volume, filer, S3 gateway; see seaweed.py) for the whole session,
    started the first time a test asks for it."""
    from seaweed import SeaweedFS  # seaweed.py imports this module

    weed = SeaweedFS()
    try:
        yield weed
    finally:
        weed.stop()
