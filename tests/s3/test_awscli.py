"""The aws CLI against the real server: multipart cp of 100 MiB, sync both ways, ls, rm, SSE-C."""

import filecmp
import os

from conftest import aws, run_aws


def aws_fails(server, *args):
    """Runs an aws CLI command that must fail; returns its stderr."""
    out = run_aws(server, *args)
    assert out.returncode != 0, "aws %s should have failed" % " ".join(args)
    return out.stderr


def test_cp_100_mib_multipart_and_back(server, tmp_path):
    aws(server, "s3", "mb", "s3://awscli-big")
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    aws(server, "s3", "cp", str(src), "s3://awscli-big/big.bin")
    listing = aws(server, "s3", "ls", "s3://awscli-big/")
    assert "104857600 big.bin" in listing
    head = aws(server, "s3api", "head-object", "--bucket", "awscli-big", "--key", "big.bin")
    assert '-' in head.split('"ETag"')[1].split("\n")[0], "a 100 MiB cp is a multipart upload"
    dst = tmp_path / "back.bin"
    aws(server, "s3", "cp", "s3://awscli-big/big.bin", str(dst))
    assert filecmp.cmp(src, dst, shallow=False)


def test_sync_both_ways_ls_and_recursive_rm(server, tmp_path):
    src = tmp_path / "tree"
    for i in range(40):
        d = src / ("dir%d" % (i % 4))
        d.mkdir(parents=True, exist_ok=True)
        (d / ("file%02d.txt" % i)).write_bytes(os.urandom(i * 1000 + 1))
    aws(server, "s3", "mb", "s3://awscli-sync")
    aws(server, "s3", "sync", str(src), "s3://awscli-sync/backup")
    recursive = aws(server, "s3", "ls", "--recursive", "s3://awscli-sync/")
    assert len(recursive.strip().splitlines()) == 40
    top = aws(server, "s3", "ls", "s3://awscli-sync/backup/")
    assert sorted(line.split()[-1] for line in top.strip().splitlines()) == ["dir0/", "dir1/", "dir2/", "dir3/"]
    back = tmp_path / "back"
    aws(server, "s3", "sync", "s3://awscli-sync/backup", str(back))
    cmp = filecmp.dircmp(src, back)
    assert not cmp.left_only and not cmp.right_only
    for sub in cmp.common_dirs:
        d = filecmp.dircmp(src / sub, back / sub)
        assert not d.left_only and not d.right_only and not d.diff_files, sub
    # A second sync has nothing to do.
    assert aws(server, "s3", "sync", str(src), "s3://awscli-sync/backup").strip() == ""
    aws(server, "s3", "rm", "--recursive", "s3://awscli-sync/backup")
    assert aws(server, "s3", "ls", "--recursive", "s3://awscli-sync/").strip() == ""
    aws(server, "s3", "rb", "s3://awscli-sync")


def test_s3api_sse_customer_key(server, tmp_path):
    """`aws s3api put-object/get-object --sse-customer-*`: the CLI base64-encodes the raw key
    and adds its MD5; the object reads back only with that key."""
    key = "0123456789abcdef0123456789abcdef"  # 32 bytes, as the CLI takes it
    other = "fedcba9876543210fedcba9876543210"
    aws(server, "s3", "mb", "s3://awscli-ssec")
    src = tmp_path / "secret.bin"
    src.write_bytes(os.urandom(200_000))
    out = aws(
        server, "s3api", "put-object", "--bucket", "awscli-ssec", "--key", "secret.bin", "--body", str(src),
        "--sse-customer-algorithm", "AES256", "--sse-customer-key", key,
    )
    assert '"SSECustomerAlgorithm": "AES256"' in out
    dst = tmp_path / "back.bin"
    aws(
        server, "s3api", "get-object", "--bucket", "awscli-ssec", "--key", "secret.bin",
        "--sse-customer-algorithm", "AES256", "--sse-customer-key", key, str(dst),
    )
    assert filecmp.cmp(src, dst, shallow=False)
    err = aws_fails(
        server, "s3api", "get-object", "--bucket", "awscli-ssec", "--key", "secret.bin",
        "--sse-customer-algorithm", "AES256", "--sse-customer-key", other, str(tmp_path / "x"),
    )
    assert "AccessDenied" in err
    err = aws_fails(server, "s3api", "get-object", "--bucket", "awscli-ssec", "--key", "secret.bin", str(tmp_path / "y"))
    assert "InvalidRequest" in err
    # The high-level `aws s3 cp --sse-c` (multipart for a large file) works with the same key.
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 << 20))
    aws(server, "s3", "cp", str(big), "s3://awscli-ssec/big.bin", "--sse-c", "AES256", "--sse-c-key", key)
    back = tmp_path / "big-back.bin"
    aws(server, "s3", "cp", "s3://awscli-ssec/big.bin", str(back), "--sse-c", "AES256", "--sse-c-key", key)
    assert filecmp.cmp(big, back, shallow=False)
