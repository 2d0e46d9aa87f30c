"""Encrypted volumes served over NBD, driven by the real tools: nbdinfo, nbdcopy (libnbd),
qemu-io and qemu-img (qemu-utils), fio's nbd engine with crc32c verification."""

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "s3"))
from conftest import BINARY  # noqa: E402

TOOLS = ["nbdinfo", "nbdcopy", "qemu-io", "qemu-img", "fio"]
MARKER = b"SEALSTORE-NBD-PLAINTEXT-MARKER-0123456789"


def test_tools_are_installed():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"missing {missing}: ./scripts/test installs libnbd-bin, fio and qemu-utils"


class Served:
    def __init__(self, data_dir, name, *args, listen="tcp:127.0.0.1:0"):
        env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
        self.proc = subprocess.Popen(
            [str(BINARY), "volume", "serve", name, "--listen", listen, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("serving NBD on "), line + self.proc.stderr.read()
        where = line.split("serving NBD on ", 1)[1].strip()
        if where.startswith("tcp:"):
            self.uri = f"nbd://{where[4:]}/{name}"
        else:
            self.uri = f"nbd+unix:///{name}?socket={where[5:]}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0


@contextlib.contextmanager
def serve_with_nbd(data_dir):
    """`sealstore serve --nbd-listen` on an existing data directory; yields its NBD base URI."""
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0", "--nbd-listen", "tcp:127.0.0.1:0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        serve_json = data_dir / "serve.json"
        deadline = time.time() + 30
        while not serve_json.exists():
            assert proc.poll() is None and time.time() < deadline, "serve did not start"
            time.sleep(0.05)
        nbd = json.loads(serve_json.read_text())["nbd"]
        assert nbd.startswith("tcp:")
        yield f"nbd://{nbd[4:]}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cli(data_dir, *args):
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
    out = subprocess.run([str(BINARY), *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def volume_with_image(data_dir, tmp_path, name, mib):
    """A new volume holding a random image of `mib` MiB; returns the image file."""
    cli(data_dir, "volume", "create", name, "--size", f"{mib}M")
    image = tmp_path / f"{name}.img"
    image.write_bytes(os.urandom(mib << 20))
    cli(data_dir, "volume", "import", name, str(image))
    return image


def run(*args, timeout=600):
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def volume():
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = pathlib.Path(tmp) / "data"
        cli(data_dir, "volume", "create", "disk", "--size", "512M")
        served = Served(data_dir, "disk")
        yield served, data_dir, pathlib.Path(tmp)
        served.stop()


def test_nbdinfo_shows_the_export(volume):
    served, _, _ = volume
    info = json.loads(run("nbdinfo", "--json", served.uri))
    export = info["exports"][0]
    assert export["export-size"] == 512 << 20
    assert export["can_flush"] and export["can_fua"] and export["can_zero"] and not export["is_read_only"]
    assert export["can_trim"] and export["can_fast_zero"], export
    listing = run("nbdinfo", "--list", served.uri.rsplit("/", 1)[0])
    assert 'export="disk"' in listing
    # libnbd asks for structured replies, and gets them.
    assert "using structured packets" in run("nbdinfo", served.uri)


def test_nbdcopy_256_mib_in_and_out(volume):
    served, _, tmp = volume
    src, back = tmp / "in.img", tmp / "out.img"
    with open(src, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    run("nbdcopy", str(src), served.uri)
    run("nbdcopy", "--requests=16", served.uri, str(back))
    assert back.stat().st_size == 512 << 20
    run("cmp", "-n", str(256 << 20), str(src), str(back))


def test_qemu_io_patterns_unaligned_and_zeroes(volume):
    served, _, _ = volume
    out = run(
        "qemu-io", "-f", "raw",
        "-c", "write -P 0xab 300M 1M",
        "-c", "read -P 0xab 300M 1M",
        "-c", "write -P 0xcd 310000001 7777",
        "-c", "read -P 0xcd 310000001 7777",
        "-c", "read -P 0xab 300M 4096",
        "-c", "write -z 301M 64k",
        "-c", "read -P 0 301M 64k",
        "-c", "flush",
        served.uri,
    )
    assert "Pattern verification failed" not in out and out.count("read ") == 4, out


def test_qemu_img_convert_to_and_from_the_export(volume):
    served, _, tmp = volume
    image = tmp / "small.raw"
    data = os.urandom(8 << 20)
    image.write_bytes(data)
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(image), served.uri)
    back = tmp / "small-back.raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", served.uri, str(back))
    assert back.read_bytes()[: len(data)] == data


def test_fio_random_4k_writes_at_depth_32_verified(volume):
    served, _, _ = volume
    common = [
        "fio", "--name=nbd", "--ioengine=nbd", f"--uri={served.uri}", "--bs=4k", "--iodepth=32",
        "--size=64M", "--offset=400M", "--verify=crc32c", "--verify_fatal=1", "--randseed=7",
    ]
    out = run(*common, "--rw=randwrite", "--do_verify=1")
    assert "err= 0" in out, out
    # A second, read-only pass verifies what the first wrote.
    out = run(*common, "--rw=randwrite", "--verify_only")
    assert "err= 0" in out and "verify" not in out.split("err= 0", 1)[1].split("\n", 1)[0], out


def test_no_plaintext_in_the_volume_file(volume):
    served, data_dir, tmp = volume
    payload = tmp / "marker.bin"
    payload.write_bytes(MARKER * 100_000)
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(payload), served.uri)
    run("qemu-io", "-f", "raw", "-c", "flush", served.uri)
    raw = (data_dir / "volumes" / "disk.vol").read_bytes()
    assert MARKER[:20] not in raw
    back = tmp / "marker-back.bin"
    run("nbdcopy", served.uri, str(back))
    assert back.read_bytes()[: len(MARKER) * 100_000] == MARKER * 100_000


def test_unix_socket_and_read_only(tmp_path):
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "ro", "--size", "16M")
    sock = tmp_path / "nbd.sock"
    served = Served(data_dir, "ro", "--read-only", listen=f"unix:{sock}")
    try:
        info = json.loads(run("nbdinfo", "--json", served.uri))
        assert info["exports"][0]["is_read_only"]
        out = subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", served.uri], capture_output=True, text=True, timeout=60
        )
        assert "write failed" in (out.stdout + out.stderr) or out.returncode != 0, out
        run("qemu-io", "-f", "raw", "-r", "-c", "read -P 0 0 1M", served.uri)
    finally:
        served.stop()


def test_kill_9_loses_nothing_flushed(tmp_path):
    """Writes acknowledged before a completed FLUSH survive kill -9 of the server in the
    middle of a fio run; the volume checks clean after the crash."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "crash", "--size", "128M")
    served = Served(data_dir, "crash")
    pattern = tmp_path / "pattern.bin"
    pattern.write_bytes(os.urandom(8 << 20))
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(pattern), served.uri)
    run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 100M 3M", "-c", "flush", served.uri)
    # Random writes to another region, killed half-way.
    fio = subprocess.Popen(
        ["fio", "--name=crash", "--ioengine=nbd", f"--uri={served.uri}", "--rw=randwrite", "--bs=4k",
         "--iodepth=32", "--size=32M", "--offset=40M", "--time_based", "--runtime=30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)
    served.proc.kill()
    served.proc.wait(timeout=10)
    fio.wait(timeout=60)

    assert "consistent" in cli(data_dir, "volume", "check", "crash")
    served = Served(data_dir, "crash")
    try:
        back = tmp_path / "back.bin"
        run("nbdcopy", served.uri, str(back))
        with open(back, "rb") as f:
            assert f.read(8 << 20) == pattern.read_bytes()
            f.seek(100 << 20)
            assert f.read(3 << 20) == b"\x5a" * (3 << 20)
    finally:
        served.stop()


def test_kill_9_during_trims_and_zeroing_loses_nothing_flushed(tmp_path):
    """A discard and a zeroing acknowledged before a FLUSH survive kill -9 in the middle of a
    storm of trims and writes elsewhere; data around them is intact and the volume checks
    clean."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "holes", "--size", "96M")
    served = Served(data_dir, "holes")
    pattern = tmp_path / "pattern.bin"
    pattern.write_bytes(os.urandom(16 << 20))
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(pattern), served.uri)
    run("qemu-io", "-f", "raw", "-c", "discard 4M 2M", "-c", "write -z -u 9M 1M", "-c", "write -z 12M 1M", "-c",
        "flush", served.uri)
    storm = subprocess.Popen(
        ["fio", "--name=storm", "--ioengine=nbd", f"--uri={served.uri}", "--rw=randtrimwrite", "--bs=64k",
         "--iodepth=16", "--size=32M", "--offset=48M", "--time_based", "--runtime=30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.5)
    assert storm.poll() is None, storm.stderr.read()  # the storm is running when the server dies
    served.proc.kill()
    served.proc.wait(timeout=10)
    storm.wait(timeout=60)

    assert "consistent" in cli(data_dir, "volume", "check", "holes")
    served = Served(data_dir, "holes")
    try:
        back = tmp_path / "back.bin"
        run("nbdcopy", served.uri, str(back))
        expected = bytearray(pattern.read_bytes())
        expected[4 << 20:6 << 20] = bytes(2 << 20)
        expected[9 << 20:10 << 20] = bytes(1 << 20)
        expected[12 << 20:13 << 20] = bytes(1 << 20)
        with open(back, "rb") as f:
            assert f.read(16 << 20) == bytes(expected)
    finally:
        served.stop()


def test_sealstore_serve_exports_every_volume(tmp_path):
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "alpha", "--size", "8M")
    cli(data_dir, "volume", "create", "beta", "--size", "16M")
    with serve_with_nbd(data_dir) as base:
        listing = run("nbdinfo", "--list", base)
        assert 'export="alpha"' in listing and 'export="beta"' in listing
        assert json.loads(run("nbdinfo", "--json", f"{base}/beta"))["exports"][0]["export-size"] == 16 << 20
        run("qemu-io", "-f", "raw", "-c", "write -P 0x77 1M 64k", "-c", "flush", f"{base}/alpha")
        run("qemu-io", "-f", "raw", "-c", "read -P 0x77 1M 64k", f"{base}/alpha")
        out = subprocess.run(["nbdinfo", f"{base}/gamma"], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "gamma" in out.stderr


class RawClient:
    """Speaks NBD over a socket byte by byte, to send what well-behaved clients never do."""

    def __init__(self, host, port, name):
        import socket
        import struct

        self.struct = struct
        self.sock = socket.create_connection((host, port), timeout=10)
        assert self.recv(18)[:16] == b"NBDMAGICIHAVEOPT"
        self.sock.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
        self.option(7, struct.pack(">I", len(name)) + name.encode() + struct.pack(">H", 0))
        while True:
            _, _, kind, length = struct.unpack(">QIII", self.recv(20))
            self.recv(length)
            if kind == 1:  # ACK: transmission starts
                break
            assert kind == 3, kind  # INFO

    def recv(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "server closed the connection"
            data += chunk
        return data

    def option(self, option, data):
        self.sock.sendall(b"IHAVEOPT" + self.struct.pack(">II", option, len(data)) + data)

    def request(self, kind, cookie, offset, length, payload=b""):
        self.sock.sendall(self.struct.pack(">IHHQQI", 0x25609513, 0, kind, cookie, offset, length) + payload)

    def simple_reply(self):
        magic, error, cookie = self.struct.unpack(">IIQ", self.recv(16))
        assert magic == 0x67446698
        return error, cookie


def test_bad_requests_get_nbd_errors_and_the_server_goes_on(volume):
    served, _, _ = volume
    host, port = served.uri[len("nbd://"):].split("/")[0].rsplit(":", 1)
    c = RawClient(host, int(port), "disk")
    size = 512 << 20
    c.request(0, 1, size - 10, 20)  # read past the end
    assert c.simple_reply() == (22, 1)  # EINVAL
    c.request(1, 2, size - 10, 20, b"x" * 20)  # write past the end
    assert c.simple_reply() == (28, 2)  # ENOSPC
    c.request(5, 3, 0, 4096)  # NBD_CMD_CACHE: not offered
    assert c.simple_reply() == (22, 3)
    c.request(99, 4, 0, 0)  # unknown command
    assert c.simple_reply() == (22, 4)
    c.request(0, 5, 0, 64 << 20)  # larger than the 32 MiB maximum
    assert c.simple_reply() == (22, 5)
    # Out of order is allowed; all answered, and the connection still works.
    c.request(1, 6, 4096, 4096, b"\x11" * 4096)
    c.request(0, 7, 4096, 4096)
    replies = {}
    for _ in range(2):
        error, cookie = c.simple_reply()
        assert error == 0
        if cookie == 7:
            replies[7] = c.recv(4096)
        else:
            replies[cookie] = None
    assert set(replies) == {6, 7}
    c.request(2, 8, 0, 0)  # DISC
    c.sock.close()
    # Another client is served normally.
    run("qemu-io", "-f", "raw", "-c", "read -P 0x11 4096 4096", served.uri)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_its_replies_holds_at_most_its_in_flight_limit(tmp_path):
    """32 pipelined 32 MiB READs whose replies are never read: the server stops reading that
    client's requests at its in-flight limit (64 MiB here) instead of buffering 1 GiB, and
    goes on serving others."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "slow", "--size", "1G")
    served = Served(data_dir, "slow", "--nbd-max-in-flight-mib", "64")
    try:
        host, port = served.uri[len("nbd://"):].split("/")[0].rsplit(":", 1)
        c = RawClient(host, int(port), "slow")
        before = rss_mib(served.proc.pid)
        for i in range(32):
            c.request(0, i, i * (32 << 20), 32 << 20)
        peak = before
        deadline = time.time() + 4
        while time.time() < deadline:
            peak = max(peak, rss_mib(served.proc.pid))
            time.sleep(0.05)
        print(f"\nslow reader: server RSS {before:.0f} MiB before, peak {peak:.0f} MiB with 1 GiB of READs pending")
        assert peak - before < 64 + 48, (before, peak)
        # Another client is served meanwhile.
        run("qemu-io", "-f", "raw", "-c", "read -P 0 0 4096", served.uri)
        # The slow client's replies all come once it reads them.
        for _ in range(32):
            error, _ = c.simple_reply()
            assert error == 0
            c.recv(32 << 20)
        c.sock.close()
    finally:
        served.stop()


def test_an_empty_export_name_with_several_volumes_lists_them(tmp_path):
    data_dir = tmp_path / "data"
    for name in ("alpha", "beta"):
        cli(data_dir, "volume", "create", name, "--size", "16M")
    with serve_with_nbd(data_dir) as base:
        # libnbd tools print only the error's errno; the server's message names the exports.
        out = subprocess.run(["nbdinfo", f"{base}/"], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "default export" in out.stderr, out.stderr
        import socket
        import struct

        host, port = base[len("nbd://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            def recv(n):
                data = b""
                while len(data) < n:
                    chunk = sock.recv(n - len(data))
                    assert chunk, "server closed the connection"
                    data += chunk
                return data

            assert recv(18)[:16] == b"NBDMAGICIHAVEOPT"
            sock.sendall(struct.pack(">I", 3))
            sock.sendall(b"IHAVEOPT" + struct.pack(">II", 7, 6) + struct.pack(">IH", 0, 0))  # GO ""
            _, option, kind, length = struct.unpack(">QIII", recv(20))
            message = recv(length).decode()
            assert option == 7 and kind == (1 << 31) + 6, kind  # NBD_REP_ERR_UNKNOWN
            assert "alpha" in message and "beta" in message, message


def test_volume_export_to_a_reader_that_stops_early_ends_quietly(tmp_path):
    """`sealstore volume export v - | head` ends like cat would: exit 0, no error."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "v", "--size", "64M")
    export = subprocess.Popen([str(BINARY), "volume", "export", "v", "-"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir)))
    assert len(export.stdout.read(10)) == 10
    export.stdout.close()
    stderr = export.stderr.read().decode()
    assert export.wait(timeout=60) == 0 and "Broken pipe" not in stderr, stderr


def test_fast_zero_is_refused_only_when_zeroing_would_be_slow(volume):
    served, _, _ = volume
    host, port = served.uri[len("nbd://"):].split("/")[0].rsplit(":", 1)
    c = RawClient(host, int(port), "disk")
    no_hole, fast_zero = 1 << 1, 1 << 4
    # WRITE_ZEROES (6) with NO_HOLE and FAST_ZERO: writing encrypted zeros is not fast: ENOTSUP.
    c.sock.sendall(c.struct.pack(">IHHQQI", 0x25609513, no_hole | fast_zero, 6, 1, 0, 1 << 20))
    assert c.simple_reply() == (95, 1)
    # FAST_ZERO alone: a punched hole is fast, and done.
    c.sock.sendall(c.struct.pack(">IHHQQI", 0x25609513, fast_zero, 6, 2, 0, 1 << 20))
    assert c.simple_reply() == (0, 2)
    c.request(2, 3, 0, 0)  # DISC
    c.sock.close()


def test_rotation_lazy_reencryption_and_sweep(tmp_path):
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "rot", "--size", "16M")
    image = tmp_path / "image.bin"
    image.write_bytes(os.urandom(16 << 20))
    served = Served(data_dir, "rot")
    run("nbdcopy", str(image), served.uri)
    served.stop()

    key_id = json.loads(cli(data_dir, "volume", "info", "rot", "--json"))["generations"][0]["keyId"]
    old_version = json.loads(cli(data_dir, "volume", "info", "rot", "--json"))["generations"][0]["keyVersionId"]
    cli(data_dir, "kms", "key", "rotate", key_id)

    # Serving notices the key's new version and adds a generation; writes to two extents
    # (3 and 10) move just those to it.
    served = Served(data_dir, "rot")
    run("qemu-io", "-f", "raw", "-c", "write -P 0x33 3M 4k", "-c", "write -P 0x44 10485761 100", "-c", "flush",
        served.uri)
    served.stop()
    info = json.loads(cli(data_dir, "volume", "info", "rot", "--json"))
    per_generation = {g["id"]: g["extents"] for g in info["generations"]}
    assert per_generation == {0: 14, 1: 2}, info
    assert info["generations"][1]["keyVersionId"] != old_version

    # The old key version is still needed: disabling it is refused.
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
    refused = subprocess.run([str(BINARY), "kms", "key", "disable-version", key_id, old_version],
                             env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "volume" in refused.stderr, refused.stderr

    out = cli(data_dir, "volume", "reencrypt", "rot", "--max-mib-per-sec", "200")
    assert "14 extent(s) re-encrypted" in out and "dropped generation 0" in out, out
    info = json.loads(cli(data_dir, "volume", "info", "rot", "--json"))
    assert [(g["id"], g["extents"]) for g in info["generations"]] == [(1, 16)]
    cli(data_dir, "kms", "key", "disable-version", key_id, old_version)
    assert "consistent" in cli(data_dir, "volume", "check", "rot")

    expected = bytearray(image.read_bytes())
    expected[3 << 20:(3 << 20) + 4096] = b"\x33" * 4096
    expected[10485761:10485761 + 100] = b"\x44" * 100
    back = tmp_path / "back.bin"
    cli(data_dir, "volume", "export", "rot", str(back))
    assert back.read_bytes() == bytes(expected)


def test_trim_and_write_zeroes_read_back_zeros_and_free_space(tmp_path):
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "thin", "--size", "16M")
    served = Served(data_dir, "thin")
    try:
        run("qemu-io", "-f", "raw", "-c", "write -P 0x77 0 16M", "-c", "flush", served.uri)
        full = json.loads(cli(data_dir, "volume", "info", "thin", "--json"))["allocated"]
        run("qemu-io", "-f", "raw", "-c", "discard 1M 4M", "-c", "write -z 8M 4M", "-c", "write -z -u 13M 1M",
            "-c", "flush", served.uri)
        run("qemu-io", "-f", "raw", "-c", "read -P 0x77 0 1M", "-c", "read -P 0 1M 4M", "-c", "read -P 0x77 5M 3M",
            "-c", "read -P 0 8M 4M", "-c", "read -P 0 13M 1M", "-c", "read -P 0x77 14M 2M", served.uri)
        after = json.loads(cli(data_dir, "volume", "info", "thin", "--json"))["allocated"]
        # qemu-io's `write -z` without -u asks for NO_HOLE (the zeros stay allocated); the
        # discard and `write -z -u` free their 5 MiB.
        print(f"\nallocated {full >> 20} MiB → {after >> 20} MiB after trimming 4 MiB and zeroing 5 MiB")
        assert full - after >= (5 << 20) - (16 << 10), (full, after)
    finally:
        served.stop()


def json_of(*args):
    return json.loads(subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=True).stdout)


def test_block_status_maps_holes_and_data(tmp_path):
    """base:allocation: `nbdinfo --map` and `qemu-img map` see exactly which ranges hold data;
    a discarded range becomes a hole again."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "sparse", "--size", "16M")
    served = Served(data_dir, "sparse")
    try:
        run("qemu-io", "-f", "raw", "-c", "write -P 0x61 4M 1M", "-c", "write -P 0x62 10M 64k", "-c", "flush",
            served.uri)
        mapped = json_of("nbdinfo", "--map", "--json", served.uri)
        data = [(e["offset"], e["length"]) for e in mapped if e["type"] == 0]
        holes = sum(e["length"] for e in mapped if e["type"] == 3)
        assert data == [(4 << 20, 1 << 20), (10 << 20, 64 << 10)], mapped
        assert holes == (16 << 20) - (1 << 20) - (64 << 10), mapped
        qemu = json_of("qemu-img", "map", "--output=json", "-f", "raw", served.uri)
        assert [(m["start"], m["length"]) for m in qemu if m["data"]] == data, qemu
        # A discarded range is a hole again.
        run("qemu-io", "-f", "raw", "-c", "discard 4M 1M", served.uri)
        mapped = json_of("nbdinfo", "--map", "--json", served.uri)
        assert [(e["offset"], e["length"]) for e in mapped if e["type"] == 0] == [(10 << 20, 64 << 10)], mapped
    finally:
        served.stop()


def test_a_master_key_rotation_reaches_a_running_server(tmp_path):
    """`kms key rotate` while `serve --nbd-listen` runs: the served volume gains a generation
    under the new key version without a restart."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "live", "--size", "8M")
    key_id = json.loads(cli(data_dir, "volume", "info", "live", "--json"))["generations"][0]["keyId"]
    with serve_with_nbd(data_dir) as base:
        rotated = json.loads(cli(data_dir, "--json", "kms", "key", "rotate", key_id))["id"]
        deadline = time.time() + 20
        while "2 generation(s)" not in cli(data_dir, "volume", "check", "live"):
            assert time.time() < deadline, "the running server did not follow the rotation"
            time.sleep(0.2)
        run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4k", "-c", "flush", f"{base}/live")
        # `volume rotate` goes through the running server, which owns the volume.
        out = cli(data_dir, "volume", "rotate", "live")
        assert out.startswith("live: generation 2 (key version " + rotated), out
        run("qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 4k", f"{base}/live")
    info = json.loads(cli(data_dir, "volume", "info", "live", "--json"))
    assert [g["id"] for g in info["generations"]] == [0, 1, 2], info
    assert info["generations"][-1]["keyVersionId"] == rotated, info


def test_killing_a_reencrypt_client_stops_the_sweep_it_started_in_the_server(tmp_path):
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "sweep", "--size", "64M")
    key_id = json.loads(cli(data_dir, "volume", "info", "sweep", "--json"))["generations"][0]["keyId"]

    def per_generation():
        info = json.loads(cli(data_dir, "volume", "info", "sweep", "--json"))
        return {g["id"]: g["extents"] for g in info["generations"]}

    with serve_with_nbd(data_dir):
        cli(data_dir, "kms", "key", "rotate", key_id)
        deadline = time.time() + 20
        while len(per_generation()) < 2:
            assert time.time() < deadline, "the running server did not follow the rotation"
            time.sleep(0.2)
        client = subprocess.Popen([str(BINARY), "volume", "reencrypt", "sweep", "--max-mib-per-sec", "4"],
                                  env=dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        client.kill()
        client.wait(timeout=10)
        time.sleep(1)
        stopped = per_generation()
        time.sleep(2)
        assert per_generation() == stopped, "the sweep went on after its client was killed"
        assert 0 < stopped[1] < 64 and stopped[0] > 0, stopped


def test_reencrypt_after_a_volume_rotation_names_the_key_version_still_in_use(tmp_path):
    """A `volume rotate` without a master-key rotation: the new generation is wrapped by the
    same key version, so dropping the old generation must not say the version is unneeded."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "same", "--size", "4M")
    version = json.loads(cli(data_dir, "volume", "info", "same", "--json"))["generations"][0]["keyVersionId"]
    cli(data_dir, "volume", "rotate", "same")
    out = cli(data_dir, "volume", "reencrypt", "same")
    assert f"dropped generation 0: no extent uses it any more (key version {version} still wraps generation 1)" in out, out


def test_kill_9_during_a_sweep_then_resume(tmp_path):
    data_dir = tmp_path / "data"
    image = volume_with_image(data_dir, tmp_path, "sweep", 64)
    cli(data_dir, "volume", "rotate", "sweep")
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
    sweep = subprocess.Popen(
        [str(BINARY), "volume", "reencrypt", "sweep", "--max-mib-per-sec", "40"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(0.8)
    sweep.kill()
    sweep.wait(timeout=10)
    info = json.loads(cli(data_dir, "volume", "info", "sweep", "--json"))
    moved = {g["id"]: g["extents"] for g in info["generations"]}
    assert 0 < moved[1] < 64, moved  # killed part-way
    assert "consistent" in cli(data_dir, "volume", "check", "sweep")
    out = cli(data_dir, "volume", "reencrypt", "sweep")
    # A kill between journalling an extent and updating the map leaves that extent to the
    # journal replay when the volume is next opened, not to the sweep; `info` reads the map
    # as it is.
    swept = int(re.search(r"(\d+) extent\(s\) re-encrypted", out).group(1))
    assert swept in (moved[0], moved[0] - 1), (moved, out)
    info = json.loads(cli(data_dir, "volume", "info", "sweep", "--json"))
    assert [g["id"] for g in info["generations"]] == [1], info
    back = tmp_path / "back.bin"
    cli(data_dir, "volume", "export", "sweep", str(back))
    assert back.read_bytes() == image.read_bytes()


def test_sweep_runs_in_the_server_while_clients_write(tmp_path):
    data_dir = tmp_path / "data"
    image = volume_with_image(data_dir, tmp_path, "live", 32)
    key_id = json.loads(cli(data_dir, "volume", "info", "live", "--json"))["generations"][0]["keyId"]
    cli(data_dir, "kms", "key", "rotate", key_id)
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
    with serve_with_nbd(data_dir) as base:
        uri = f"{base}/live"
        # The server followed the key rotation with a new generation.
        assert [g["id"] for g in json.loads(cli(data_dir, "volume", "info", "live", "--json"))["generations"]] == [0, 1]
        sweep = subprocess.Popen(
            [str(BINARY), "volume", "reencrypt", "live", "--max-mib-per-sec", "20"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # Clients keep writing while the sweep runs.
        for i in range(8):
            run("qemu-io", "-f", "raw", "-c", f"write -P {i + 1} {i * 4 + 1}M 64k", uri)
        out, err = sweep.communicate(timeout=120)
        assert sweep.returncode == 0, err
        assert "dropped generation 0" in out, out
        info = json.loads(cli(data_dir, "volume", "info", "live", "--json"))
        assert [(g["id"], g["extents"]) for g in info["generations"]] == [(1, 32)]
        expected = bytearray(image.read_bytes())
        for i in range(8):
            at = (i * 4 + 1) << 20
            expected[at:at + (64 << 10)] = bytes([i + 1]) * (64 << 10)
        back = tmp_path / "back.bin"
        run("nbdcopy", uri, str(back))
        assert back.read_bytes() == bytes(expected)


LIBNBD_PYTHON = "/usr/bin/python3"  # Debian's python3-libnbd is for the system interpreter


def libnbd(script, *args):
    """Runs `script` with libnbd's python bindings (python3-libnbd); returns its stdout."""
    return run(LIBNBD_PYTHON, "-c", script, *args, timeout=120)


def test_can_multi_conn_a_flush_on_one_connection_covers_writes_on_all(tmp_path):
    """The server advertises CAN_MULTI_CONN, which promises (NBD protocol) that a FLUSH on any
    connection makes durable every write acknowledged on any connection before it: writes
    on four connections, no FUA, one FLUSH on a fifth, then kill -9 — all survive. A process
    kill shows that no acknowledged write waits in per-connection state that another
    connection's FLUSH would miss; against power loss the FLUSH is an fdatasync of the one
    volume file every connection writes (src/block/nbd.rs)."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "multi", "--size", "64M")
    served = Served(data_dir, "multi")
    script = r"""
import sys, nbd
uri = sys.argv[1]
handles = []
for _ in range(5):
    h = nbd.NBD()
    h.connect_uri(uri)
    handles.append(h)
assert all(h.can_multi_conn() for h in handles), "CAN_MULTI_CONN not advertised"
for i, h in enumerate(handles[:4]):
    for j in range(64):
        h.pwrite(bytes([0x40 + i]) * 4096, (i * 64 + j) * 4096)
handles[4].flush()
print("flushed", flush=True)
sys.stdin.read()  # stay connected until the server is killed
"""
    holder = subprocess.Popen([LIBNBD_PYTHON, "-c", script, served.uri], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        assert line.strip() == "flushed", line + holder.stderr.read()
        served.proc.kill()
        served.proc.wait(timeout=10)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    served = Served(data_dir, "multi")
    try:
        back = libnbd(r"""
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
sys.stdout.write(h.pread(4 * 64 * 4096, 0).hex())
""", served.uri)
        data = bytes.fromhex(back.strip())
        for i in range(4):
            assert data[i * 64 * 4096:(i + 1) * 64 * 4096] == bytes([0x40 + i]) * (64 * 4096), f"connection {i}"
    finally:
        served.stop()


def kernel_nbd_unavailable():
    """Why the kernel's NBD client cannot be used here, or None."""
    if os.geteuid() != 0:
        return "the kernel NBD client needs root"
    if not pathlib.Path("/sys/module/nbd").exists() and shutil.which("modprobe"):
        subprocess.run(["modprobe", "nbd"], capture_output=True)
    if not pathlib.Path("/sys/module/nbd").exists():
        return "the nbd kernel module is not loaded and cannot be loaded on this machine (no /sys/module/nbd)"
    for tool in ("nbd-client", "mkfs.ext4", "e2fsck"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (./scripts/test installs nbd-client where the module exists)"
    return None


def free_nbd_device():
    for dev in sorted(pathlib.Path("/dev").glob("nbd[0-9]*"), key=lambda p: int(p.name[3:])):
        size = pathlib.Path(f"/sys/block/{dev.name}/size")
        if size.exists() and size.read_text().strip() == "0":
            return dev
    pytest.skip("no free /dev/nbdN device")


def test_kernel_nbd_client_mkfs_ext4_and_fsck(tmp_path):
    """The Linux kernel as the NBD client: `nbd-client` attaches a volume as /dev/nbdN,
    `mkfs.ext4` formats it and `e2fsck -f` finds it clean, again after the server restarts."""
    reason = kernel_nbd_unavailable()
    if reason:
        pytest.skip(reason)
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "kdisk", "--size", "256M")
    dev = free_nbd_device()
    for round_ in range(2):
        served = Served(data_dir, "kdisk")
        host, port = served.uri[len("nbd://"):].split("/")[0].rsplit(":", 1)
        try:
            run("nbd-client", host, port, str(dev), "-N", "kdisk", "-b", "4096")
            try:
                if round_ == 0:
                    run("mkfs.ext4", "-q", "-F", str(dev))
                out = run("e2fsck", "-f", "-n", str(dev))
                assert " files " in out, out  # e2fsck -n exits 0 only for a clean file system
            finally:
                run("nbd-client", "-d", str(dev))
        finally:
            served.stop()
    assert "consistent" in cli(data_dir, "volume", "check", "kdisk")


def test_a_sweep_in_the_server_streams_its_progress_to_the_client(tmp_path):
    """`volume reencrypt` through a running server: the admin socket answers with progress
    lines (extents done of the total, at most ten a second) before the result, which the CLI
    shows as a bar with rate and ETA (src/admin/server.rs)."""
    import socket

    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "swept", "--size", "32M")
    key_id = json.loads(cli(data_dir, "volume", "info", "swept", "--json"))["generations"][0]["keyId"]
    with serve_with_nbd(data_dir):
        cli(data_dir, "kms", "key", "rotate", key_id)
        deadline = time.time() + 20
        while len(json.loads(cli(data_dir, "volume", "info", "swept", "--json"))["generations"]) < 2:
            assert time.time() < deadline, "the running server did not follow the rotation"
            time.sleep(0.2)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(data_dir / "admin.sock"))
            s.sendall(json.dumps({"op": "volume-reencrypt", "name": "swept", "max_mib_per_sec": 16}).encode() + b"\n")
            lines = s.makefile().read().splitlines()
    answers = [json.loads(line) for line in lines]
    progress = [a["progress"] for a in answers if "progress" in a]
    assert "ok" in answers[-1], answers[-1]
    assert all("progress" in a for a in answers[:-1])
    assert len(progress) >= 5, progress  # 32 extents at 16 MiB/s: about two seconds
    assert all(p["total"] == 32 for p in progress), progress
    # Extents are fixed amounts of data: the client shows bytes and a byte rate.
    assert all(p["unitBytes"] == 1 << 20 for p in progress), progress
    done = [p["done"] for p in progress]
    assert done == sorted(done) and done[-1] <= 32
    assert answers[-1]["ok"]["reencrypted"] == 32


def test_sigterm_ends_the_server_while_clients_stay_connected(tmp_path):
    """Each connection is served on threads of its own (src/block/nbd.rs): SIGTERM must still
    end the server promptly, with a client connected and idle, and with a client whose
    replies are pending because it never reads them."""
    data_dir = tmp_path / "data"
    cli(data_dir, "volume", "create", "term", "--size", "256M")
    served = Served(data_dir, "term")
    script = r"""
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pread(4096, 0)
print("connected", flush=True)
sys.stdin.read()  # stay connected
"""
    holder = subprocess.Popen([LIBNBD_PYTHON, "-c", script, served.uri], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        assert line.strip() == "connected", line + holder.stderr.read()
        host, port = served.uri[len("nbd://"):].split("/")[0].rsplit(":", 1)
        slow = RawClient(host, int(port), "term")
        for i in range(8):
            slow.request(0, i, i * (16 << 20), 16 << 20)
        time.sleep(0.5)
        started = time.time()
        served.stop()
        assert time.time() - started < 10
        slow.sock.close()
    finally:
        holder.kill()
        holder.wait(timeout=10)
