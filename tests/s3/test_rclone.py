"""rclone (Debian's package) against the real server: copy a tree of mixed-size files
(multipart for the large one), check it, copy it back, then purge."""

import filecmp
import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is installed by scripts/test")


def rclone(server, tmp_path, *args):
    endpoint, keys, _ = server
    env = dict(
        os.environ,
        RCLONE_CONFIG=str(tmp_path / "rclone.conf"),  # never the user's configuration
        RCLONE_CONFIG_SEAL_TYPE="s3",
        RCLONE_CONFIG_SEAL_PROVIDER="Other",
        RCLONE_CONFIG_SEAL_ENDPOINT=endpoint,
        RCLONE_CONFIG_SEAL_ACCESS_KEY_ID=keys["accessKeyId"],
        RCLONE_CONFIG_SEAL_SECRET_ACCESS_KEY=keys["secretAccessKey"],
        RCLONE_CONFIG_SEAL_REGION="us-east-1",
        RCLONE_CONFIG_SEAL_FORCE_PATH_STYLE="true",
    )
    # The AWS SDK inside rclone rejects AWS_CA_BUNDLE with its own HTTP transport.
    env.pop("AWS_CA_BUNDLE", None)
    (tmp_path / "rclone.conf").touch()
    out = subprocess.run(["rclone", *args], env=env, capture_output=True, text=True, timeout=600)
    return out


def make_tree(root):
    files = {
        "empty.txt": b"",
        "one.bin": b"\x01",
        "small/notes.txt": os.urandom(3000),
        "small/nested/deeper/data.bin": os.urandom(70_000),
        "with space/caf\u00e9 \u00fcber.txt": os.urandom(5000),
        "medium.bin": os.urandom(1 << 20),
        "large.bin": os.urandom(30 << 20),
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_copy_check_copy_back_and_purge(server, s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src)
    mk = rclone(server, tmp_path, "mkdir", "seal:rclone-tree")
    assert mk.returncode == 0, mk.stderr
    # A 16 MiB cutoff and 5 MiB chunks make the 30 MiB file a multipart upload.
    up = rclone(
        server, tmp_path, "copy", str(src), "seal:rclone-tree", "--s3-upload-cutoff", "16M", "--s3-chunk-size", "5M"
    )
    assert up.returncode == 0, up.stderr

    assert s3.head_object(Bucket="rclone-tree", Key="large.bin")["ETag"].endswith('-6"'), "30 MiB in 5 MiB parts"

    check = rclone(server, tmp_path, "check", str(src), "seal:rclone-tree")
    assert check.returncode == 0, check.stderr
    assert f"{len(files)} matching files" in check.stderr, check.stderr

    listing = rclone(server, tmp_path, "lsf", "-R", "--files-only", "seal:rclone-tree")
    assert sorted(listing.stdout.split("\n")[:-1]) == sorted(files)

    back = tmp_path / "back"
    down = rclone(server, tmp_path, "copy", "seal:rclone-tree", str(back))
    assert down.returncode == 0, down.stderr
    for name in files:
        assert filecmp.cmp(src / name, back / name, shallow=False), name

    # A changed file is noticed by check.
    (src / "one.bin").write_bytes(b"\x02")
    changed = rclone(server, tmp_path, "check", str(src), "seal:rclone-tree")
    assert changed.returncode != 0 and "1 differences found" in changed.stderr, changed.stderr

    purge = rclone(server, tmp_path, "purge", "seal:rclone-tree")
    assert purge.returncode == 0, purge.stderr
    gone = rclone(server, tmp_path, "lsf", "seal:")
    assert "rclone-tree" not in gone.stdout
