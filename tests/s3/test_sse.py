"""Server-side encryption through boto3: SSE-S3, SSE-KMS (keys made with the sealstore CLI),
SSE-C, bucket default encryption, and the errors AWS gives for each misuse."""

import base64
import hashlib
import io
import json
import os
import subprocess

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from conftest import BINARY, make_client, running_server


def kms(data_dir, *args):
    """Runs `sealstore kms …` against the running server (through its admin socket)."""
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
    out = subprocess.run([str(BINARY), "kms", *args, "--json"], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip() else None


def new_key(data_dir, name):
    vault = json.loads((data_dir / "serve.json").read_text())["defaultVaultId"]
    return kms(data_dir, "key", "create", "--vault", vault, "--name", name)["id"]


def error_of(excinfo):
    err = excinfo.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]


@pytest.fixture(scope="module")
def bucket(s3):
    name = "sse-tests"
    s3.create_bucket(Bucket=name)
    return name


CUSTOMER_KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def sse_c(key=CUSTOMER_KEY, prefix=""):
    return {f"{prefix}SSECustomerAlgorithm": "AES256", f"{prefix}SSECustomerKey": key}


def test_default_is_sse_s3(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="plain", Body=b"hello")
    assert put["ServerSideEncryption"] == "AES256"
    assert "SSEKMSKeyId" not in put
    head = s3.head_object(Bucket=bucket, Key="plain")
    assert head["ServerSideEncryption"] == "AES256"
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_sse_kms_with_named_key_and_alias(s3, bucket, server):
    _, _, data_dir = server
    key_id = new_key(data_dir, "sse-kms-named")
    put = s3.put_object(Bucket=bucket, Key="kms", Body=b"under a named key", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_id)
    assert put["ServerSideEncryption"] == "aws:kms"
    assert put["SSEKMSKeyId"] == key_id
    got = s3.get_object(Bucket=bucket, Key="kms")
    assert got["Body"].read() == b"under a named key"
    assert (got["ServerSideEncryption"], got["SSEKMSKeyId"]) == ("aws:kms", key_id)
    head = s3.head_object(Bucket=bucket, Key="kms")
    assert head["SSEKMSKeyId"] == key_id

    by_alias = s3.put_object(
        Bucket=bucket, Key="kms-alias", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/sse-kms-named"
    )
    assert by_alias["SSEKMSKeyId"] == key_id

    # aws:kms without a key id: the default key, reported as SSE-KMS.
    default = s3.put_object(Bucket=bucket, Key="kms-default", Body=b"x", ServerSideEncryption="aws:kms")
    assert default["ServerSideEncryption"] == "aws:kms"
    assert default["SSEKMSKeyId"] == json.loads((data_dir / "serve.json").read_text())["defaultKeyId"]


def test_sse_kms_unknown_and_disabled_keys(s3, bucket, server):
    _, _, data_dir = server
    missing = "ocid1.key.oc1.local-1." + "a" * 32
    for key in (missing, "alias/no-such-key", "not-an-ocid"):
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=bucket, Key="nope", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
        assert error_of(e) == (400, "KMS.NotFoundException"), key

    key_id = new_key(data_dir, "sse-kms-disabled")
    s3.put_object(Bucket=bucket, Key="soon-disabled", Body=b"secret", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_id)
    kms(data_dir, "key", "disable", key_id)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="nope", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_id)
    assert error_of(e) == (400, "KMS.DisabledException")
    # Data under a disabled key cannot be read: access denied, not an internal error.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="soon-disabled")
    assert error_of(e) == (403, "AccessDenied")
    assert "disabled" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="soon-disabled")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    kms(data_dir, "key", "enable", key_id)
    assert s3.get_object(Bucket=bucket, Key="soon-disabled")["Body"].read() == b"secret"


def test_sse_c_round_trip_and_wrong_keys(s3, bucket):
    body = os.urandom(300_000)
    put = s3.put_object(Bucket=bucket, Key="customer", Body=body, **sse_c())
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert put["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(CUSTOMER_KEY).digest()).decode()
    assert "ServerSideEncryption" not in put

    got = s3.get_object(Bucket=bucket, Key="customer", **sse_c())
    assert got["Body"].read() == body
    assert got["SSECustomerKeyMD5"] == put["SSECustomerKeyMD5"]
    ranged = s3.get_object(Bucket=bucket, Key="customer", Range="bytes=70000-200000", **sse_c())
    assert ranged["Body"].read() == body[70000:200001]
    assert s3.head_object(Bucket=bucket, Key="customer", **sse_c())["ContentLength"] == len(body)

    # Without the key: 400, as AWS; with another key: 403; HEAD answers the same statuses.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="customer")
    assert error_of(e) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="customer", **sse_c(OTHER_KEY))
    assert error_of(e) == (403, "AccessDenied")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="customer", **sse_c(OTHER_KEY))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="customer")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # A customer key for an object that has none is refused too.
    s3.put_object(Bucket=bucket, Key="not-customer", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="not-customer", **sse_c())
    assert error_of(e) == (400, "InvalidRequest")


def test_sse_c_copy_changes_encryption(s3, bucket):
    s3.put_object(Bucket=bucket, Key="c-src", Body=b"copy me", **sse_c())
    # SSE-C source to SSE-S3 destination: the copy-source key reads it.
    out = s3.copy_object(
        Bucket=bucket, Key="c-to-s3", CopySource={"Bucket": bucket, "Key": "c-src"}, **sse_c(prefix="CopySource")
    )
    assert out["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="c-to-s3")["Body"].read() == b"copy me"
    # Without the source key the copy is refused.
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "c-src"})
    assert error_of(e) == (400, "InvalidRequest")
    # Copy onto itself under another customer key (key rotation by the customer).
    s3.copy_object(
        Bucket=bucket,
        Key="c-src",
        CopySource={"Bucket": bucket, "Key": "c-src"},
        **sse_c(prefix="CopySource"),
        **sse_c(OTHER_KEY),
    )
    assert s3.get_object(Bucket=bucket, Key="c-src", **sse_c(OTHER_KEY))["Body"].read() == b"copy me"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c-src", **sse_c())
    assert error_of(e) == (403, "AccessDenied")


def test_sse_c_multipart_upload(s3, bucket):
    body = os.urandom(12 * 1024 * 1024 + 123)
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    # s3transfer sends the key with CreateMultipartUpload, every UploadPart and the completion.
    s3.upload_fileobj(io.BytesIO(body), bucket, "c-multi", ExtraArgs=sse_c(), Config=config)
    head = s3.head_object(Bucket=bucket, Key="c-multi", **sse_c())
    assert head["ContentLength"] == len(body)
    assert head["ETag"].endswith('-3"')
    got = s3.get_object(Bucket=bucket, Key="c-multi", Range="bytes=5242000-10486000", **sse_c())
    assert got["Body"].read() == body[5242000:10486001]

    # A part sent with another key is refused.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="c-multi-2", **sse_c())
    assert upload["SSECustomerAlgorithm"] == "AES256"
    with pytest.raises(ClientError) as e:
        s3.upload_part(
            Bucket=bucket, Key="c-multi-2", UploadId=upload["UploadId"], PartNumber=1, Body=b"x", **sse_c(OTHER_KEY)
        )
    assert error_of(e) == (403, "AccessDenied")
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="c-multi-2", UploadId=upload["UploadId"], PartNumber=1, Body=b"x")
    assert error_of(e) == (400, "InvalidRequest")
    s3.abort_multipart_upload(Bucket=bucket, Key="c-multi-2", UploadId=upload["UploadId"])


@pytest.mark.parametrize(
    "args",
    [
        # ceph s3-tests test_put_obj_enc_conflict_c_s3, _c_kms, _s3_kms, _bad_enc_kms
        dict(sse_c(), ServerSideEncryption="AES256"),
        dict(sse_c(), ServerSideEncryption="aws:kms"),
        dict(ServerSideEncryption="AES256", SSEKMSKeyId="alias/sse-kms-named"),
        dict(ServerSideEncryption="aes:kms"),
        dict(SSECustomerAlgorithm="AES128", SSECustomerKey=CUSTOMER_KEY),
        dict(SSECustomerAlgorithm="AES256", SSECustomerKey=CUSTOMER_KEY[:16]),
        # With an MD5 given, botocore sends the key as it is: base64 already.
        dict(
            SSECustomerAlgorithm="AES256",
            SSECustomerKey=base64.b64encode(CUSTOMER_KEY).decode(),
            SSECustomerKeyMD5=base64.b64encode(hashlib.md5(OTHER_KEY).digest()).decode(),
        ),
    ],
    ids=["c+s3", "c+kms", "s3+kms-key", "bad-algorithm", "c-aes128", "c-short-key", "c-wrong-md5"],
)
def test_conflicting_or_invalid_headers_are_400(s3, bucket, args):
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="conflict", Body=b"x", **args)
    status, code = error_of(e)
    assert status == 400
    assert code in ("InvalidArgument", "InvalidEncryptionAlgorithmError")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="conflict")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_bucket_default_encryption(s3, server):
    _, _, data_dir = server
    name = "sse-bucket-default"
    s3.create_bucket(Bucket=name)
    key_id = new_key(data_dir, "bucket-default")
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}}]
        },
    )
    rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}
    put = s3.put_object(Bucket=name, Key="a", Body=b"x")
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", key_id)
    # A request's own choice wins over the bucket's.
    assert s3.put_object(Bucket=name, Key="b", Body=b"x", ServerSideEncryption="AES256")["ServerSideEncryption"] == "AES256"
    # Multipart uploads follow the default too.
    upload = s3.create_multipart_upload(Bucket=name, Key="m")
    assert upload["SSEKMSKeyId"] == key_id
    s3.abort_multipart_upload(Bucket=name, Key="m", UploadId=upload["UploadId"])

    with pytest.raises(ClientError) as e:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/nope"}}
                ]
            },
        )
    assert error_of(e) == (400, "KMS.NotFoundException")

    s3.delete_bucket_encryption(Bucket=name)
    rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.put_object(Bucket=name, Key="c", Body=b"x")["ServerSideEncryption"] == "AES256"
    # Objects written under the old default keep their key.
    assert s3.head_object(Bucket=name, Key="a")["SSEKMSKeyId"] == key_id


def test_upload_part_copy(s3, bucket):
    source = os.urandom(7 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="upc-src", Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="upc")
    uid = upload["UploadId"]
    p1 = s3.upload_part_copy(
        Bucket=bucket,
        Key="upc",
        UploadId=uid,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "upc-src"},
        CopySourceRange="bytes=0-5242879",
    )
    p2 = s3.upload_part(Bucket=bucket, Key="upc", UploadId=uid, PartNumber=2, Body=b"tail")
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="upc",
        UploadId=uid,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]},
                {"PartNumber": 2, "ETag": p2["ETag"]},
            ]
        },
    )
    assert s3.get_object(Bucket=bucket, Key="upc")["Body"].read() == source[:5242880] + b"tail"

    upload = s3.create_multipart_upload(Bucket=bucket, Key="upc-bad")
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="upc-bad",
            UploadId=upload["UploadId"],
            PartNumber=1,
            CopySource={"Bucket": bucket, "Key": "upc-src"},
            CopySourceRange=f"bytes=0-{len(source)}",
        )
    assert error_of(e) == (416, "InvalidRange")
    s3.abort_multipart_upload(Bucket=bucket, Key="upc-bad", UploadId=upload["UploadId"])


def non_loopback_address():
    """This machine's address on its default route (no packet is sent), or None."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 9))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


@pytest.mark.parametrize("allow", [False, True], ids=["refused", "allowed-by-flag"])
def test_sse_c_from_a_non_loopback_client(allow):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    with running_server(*(["--allow-insecure-sse-c"] if allow else []), listen=f"{address}:0") as (endpoint, keys, _):
        client = make_client(endpoint, keys["accessKeyId"], keys["secretAccessKey"])
        client.create_bucket(Bucket="remote")
        # SSE-S3 is fine from anywhere.
        client.put_object(Bucket="remote", Key="s3", Body=b"x")
        if allow:
            client.put_object(Bucket="remote", Key="c", Body=b"x", **sse_c())
            assert client.get_object(Bucket="remote", Key="c", **sse_c())["Body"].read() == b"x"
        else:
            with pytest.raises(ClientError) as e:
                client.put_object(Bucket="remote", Key="c", Body=b"x", **sse_c())
            assert error_of(e) == (400, "InvalidRequest")
            assert "secure connection" in e.value.response["Error"]["Message"]


def test_rotation_is_lazy_and_copy_onto_itself_moves_objects_to_the_new_version(s3, bucket, server):
    _, _, data_dir = server
    key_id = new_key(data_dir, "rotating")
    old_version = kms(data_dir, "key", "get", key_id)["currentKeyVersion"]
    for name in ("r1", "r2"):
        s3.put_object(Bucket=bucket, Key=name, Body=name.encode(), ServerSideEncryption="aws:kms", SSEKMSKeyId=key_id)
    kms(data_dir, "key", "rotate", key_id)
    assert kms(data_dir, "key", "get", key_id)["currentKeyVersion"] != old_version

    def disable_old():
        env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir))
        return subprocess.run(
            [str(BINARY), "kms", "key", "disable-version", key_id, old_version], env=env, capture_output=True, text=True
        )

    # Reads keep working with the old version; the server knows two objects still need it.
    assert s3.get_object(Bucket=bucket, Key="r1")["Body"].read() == b"r1"
    refused = disable_old()
    assert refused.returncode != 0 and "2 object" in refused.stderr, refused.stderr
    # An overwrite and a copy onto itself use the current version.
    s3.put_object(Bucket=bucket, Key="r1", Body=b"r1", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_id)
    s3.copy_object(
        Bucket=bucket,
        Key="r2",
        CopySource={"Bucket": bucket, "Key": "r2"},
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_id,
    )
    done = disable_old()
    assert done.returncode == 0, done.stderr
    assert s3.get_object(Bucket=bucket, Key="r2")["Body"].read() == b"r2"
