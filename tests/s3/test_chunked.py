"""Flexible checksums and `aws-chunked` uploads, as the AWS SDKs stream them: signed chunks
(STREAMING-AWS4-HMAC-SHA256-PAYLOAD, each chunk signed after the previous one) and unsigned
chunks with a trailing checksum (STREAMING-UNSIGNED-PAYLOAD-TRAILER, what boto3 sends over
https). The seed request is signed by botocore; the chunk framing and chunk signatures follow
the SigV4 streaming specification."""

import base64
import datetime
import hashlib
import hmac
import os
import zlib

import pytest
from botocore.exceptions import ClientError

from conftest import send, signed_request

REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret, day):
    k = _hmac(("AWS4" + secret).encode(), day)
    k = _hmac(k, REGION)
    k = _hmac(k, "s3")
    return _hmac(k, "aws4_request")


def signed_chunks(data, chunk_size, seed_signature, amz_date, secret, tamper=False):
    day = amz_date[:8]
    scope = f"{day}/{REGION}/s3/aws4_request"
    key = signing_key(secret, day)
    previous = seed_signature
    out = b""
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for n, piece in enumerate(pieces):
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256, hashlib.sha256(piece).hexdigest()]
        )
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if tamper and n == 1:
            piece = bytes([piece[0] ^ 1]) + piece[1:]
        out += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + piece + b"\r\n"
        previous = signature
    return out


def signed_chunked_put(server, path, data, tamper=False):
    """Sends `data` to `path` as a signed aws-chunked PUT of 64 KiB chunks (with one chunk
    altered after signing when `tamper`); returns (status, reply body)."""
    endpoint, keys, _ = server
    amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # The encoded length must be known up front: frame once with a dummy seed to measure it.
    encoded_len = len(signed_chunks(data, 65536, "0" * 64, amz_date, keys["secretAccessKey"]))
    request = signed_request(
        endpoint,
        keys,
        "PUT",
        path,
        {
            "X-Amz-Date": amz_date,
            "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "Content-Length": str(encoded_len),
        },
    )
    seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    body = signed_chunks(data, 65536, seed, amz_date, keys["secretAccessKey"], tamper=tamper)
    assert len(body) == encoded_len
    return send(request, body)


@pytest.fixture(scope="module")
def bucket(s3):
    s3.create_bucket(Bucket="chunked")
    return "chunked"


@pytest.mark.parametrize("size", [0, 1, 65536, 1_000_000])
def test_signed_chunked_upload(server, s3, bucket, size):
    data = os.urandom(size)
    status, reply = signed_chunked_put(server, f"/{bucket}/signed-{size}", data)
    assert status == 200, reply
    got = s3.get_object(Bucket=bucket, Key=f"signed-{size}")
    assert got["Body"].read() == data
    assert got["ETag"].strip('"') == hashlib.md5(data).hexdigest()


def test_a_tampered_chunk_is_refused_and_nothing_is_stored(server, s3, bucket):
    status, reply = signed_chunked_put(server, f"/{bucket}/tampered", os.urandom(200_000), tamper=True)
    assert status in (400, 403), (status, reply)
    assert b"<Error>" in reply
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="tampered")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize("corrupt", [False, True], ids=["good-checksum", "bad-checksum"])
def test_unsigned_chunks_with_trailing_checksum(server, s3, bucket, corrupt):
    endpoint, keys, _ = server
    data = os.urandom(300_000)
    crc = zlib.crc32(data) ^ (1 if corrupt else 0)
    checksum = base64.b64encode(crc.to_bytes(4, "big")).decode()
    body = b""
    for i in range(0, len(data), 65536):
        piece = data[i : i + 65536]
        body += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    body += b"0\r\n" + f"x-amz-checksum-crc32:{checksum}\r\n\r\n".encode()
    key = f"trailer-{corrupt}"
    request = signed_request(
        endpoint,
        keys,
        "PUT",
        f"/{bucket}/{key}",
        {
            "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32",
            "Content-Length": str(len(body)),
        },
    )
    status, reply = send(request, body)
    if corrupt:
        assert status == 400, (status, reply)
        with pytest.raises(ClientError):
            s3.head_object(Bucket=bucket, Key=key)
    else:
        assert status == 200, reply
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


@pytest.mark.parametrize("algorithm", ["CRC32", "SHA1", "SHA256"])  # CRC32C needs botocore[crt]
def test_checksum_headers_are_verified(s3, bucket, algorithm):
    data = os.urandom(100_000)
    # boto3 computes the announced checksum itself.
    s3.put_object(Bucket=bucket, Key=f"sum-{algorithm}", Body=data, ChecksumAlgorithm=algorithm)
    assert s3.get_object(Bucket=bucket, Key=f"sum-{algorithm}")["Body"].read() == data
    # A wrong value is refused and the object stays as it was.
    wrong = base64.b64encode(b"\0" * {"CRC32": 4, "SHA1": 20, "SHA256": 32}[algorithm]).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key=f"sum-{algorithm}", Body=b"other", **{f"Checksum{algorithm}": wrong})
    assert e.value.response["Error"]["Code"] == "BadDigest"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert s3.get_object(Bucket=bucket, Key=f"sum-{algorithm}")["Body"].read() == data
