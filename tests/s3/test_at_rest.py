"""Nothing of an object's body reaches the disk in the clear: a random marker uploaded in
every way the API writes (single PUT, multipart with its parts, copy, SSE-KMS, SSE-C) is
found in no file under the data directory, nor is an SSE-C key, while the objects read back
intact."""

import base64
import io
import os
import pathlib

from boto3.s3.transfer import TransferConfig


def files_containing(root, needles):
    hits = []
    for path in pathlib.Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [(str(path), n[:8]) for n in needles if n in data]
    return hits


def test_no_plaintext_marker_anywhere_under_the_data_dir(s3, server):
    _, _, data_dir = server
    marker = os.urandom(16).hex().encode()  # 32 ASCII bytes, never produced by chance
    # A marker crossing a segment boundary (65 520 plaintext bytes) is searched as well.
    body = (b"x" * 65500 + marker) * 40 + marker
    s3.create_bucket(Bucket="at-rest")
    s3.put_object(Bucket="at-rest", Key="single", Body=body)
    config = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    big = body * 5  # ~13 MiB: three parts
    s3.upload_fileobj(io.BytesIO(big), "at-rest", "multipart", Config=config)
    s3.copy_object(Bucket="at-rest", Key="copied", CopySource={"Bucket": "at-rest", "Key": "single"})
    s3.put_object(Bucket="at-rest", Key="kms", Body=body, ServerSideEncryption="aws:kms")
    customer = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(32)}
    s3.put_object(Bucket="at-rest", Key="customer", Body=body, **customer)
    # An upload left open keeps its parts on disk: those must be sealed too.
    upload = s3.create_multipart_upload(Bucket="at-rest", Key="open")
    s3.upload_part(Bucket="at-rest", Key="open", UploadId=upload["UploadId"], PartNumber=1, Body=body)

    assert s3.get_object(Bucket="at-rest", Key="single")["Body"].read() == body
    assert s3.get_object(Bucket="at-rest", Key="multipart")["Body"].read() == big
    assert s3.get_object(Bucket="at-rest", Key="copied")["Body"].read() == body
    assert s3.get_object(Bucket="at-rest", Key="kms")["Body"].read() == body
    assert s3.get_object(Bucket="at-rest", Key="customer", **customer)["Body"].read() == body

    # The check can fail: the marker is found where it is plainly written.
    (pathlib.Path(data_dir) / "canary.txt").write_bytes(b"." + marker + b".")
    assert files_containing(data_dir, [marker]) == [(str(pathlib.Path(data_dir) / "canary.txt"), marker[:8])]
    (pathlib.Path(data_dir) / "canary.txt").unlink()

    assert files_containing(data_dir, [marker, marker[:20], marker[12:]]) == []
    # Nor the customer's key, raw or base64.
    key = customer["SSECustomerKey"]
    assert files_containing(data_dir, [key, base64.b64encode(key)]) == []
    s3.abort_multipart_upload(Bucket="at-rest", Key="open", UploadId=upload["UploadId"])
