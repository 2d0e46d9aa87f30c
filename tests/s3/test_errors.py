"""Malformed and unknown requests get S3 XML errors, and the server goes on serving (bad
credentials: test_basic.py)."""

import base64
import hashlib
import xml.etree.ElementTree as ET

import pytest

from conftest import send, signed_request


def raw(server, method, path, body=b"", headers=None):
    endpoint, keys, _ = server
    headers = dict(headers or {})
    headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    headers["Content-Length"] = str(len(body))
    return send(signed_request(endpoint, keys, method, path, headers), body)


def error_code(reply):
    root = ET.fromstring(reply)
    assert root.tag == "Error", reply
    return root.findtext("Code"), root.findtext("Message")


@pytest.fixture(scope="module")
def bucket(s3):
    s3.create_bucket(Bucket="errors")
    s3.put_object(Bucket="errors", Key="keep", Body=b"still here")
    return "errors"


@pytest.mark.parametrize(
    "body",
    [b"<Delete><Object><Key>keep</Key>", b"not xml at all", b"<Delete><Object><Key>keep</Key></Object></Nope>"],
    ids=["truncated", "not-xml", "mismatched-tags"],
)
def test_malformed_delete_objects_xml(server, s3, bucket, body):
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    status, reply = raw(server, "POST", f"/{bucket}?delete", body, {"Content-MD5": md5, "Content-Type": "application/xml"})
    assert status == 400, reply
    code, _ = error_code(reply)
    assert code == "MalformedXML"
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"still here"


def test_malformed_complete_multipart_xml(server, s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    uid = upload["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=b"part")
    status, reply = raw(
        server,
        "POST",
        f"/{bucket}/mp?uploadId={uid}",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>",
        {"Content-Type": "application/xml"},
    )
    assert status == 400, reply
    assert error_code(reply)[0] == "MalformedXML"
    # The upload is still there and can be completed properly.
    parts = s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)["Parts"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": parts[0]["ETag"]}]},
    )
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"part"


def test_unknown_operation_gets_an_error_and_the_server_goes_on(server, s3, bucket):
    # An IAM call sent to the S3 endpoint, as some tools probe.
    body = b"Action=ListRoles&Version=2010-05-08"
    status, reply = raw(server, "POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert 400 <= status < 500 or status == 501, (status, reply)
    assert error_code(reply)[0] in ("NotImplemented", "MethodNotAllowed", "InvalidRequest", "InvalidArgument")
    # A bucket sub-resource sealstore does not implement.
    status, reply = raw(server, "GET", f"/{bucket}?lifecycle")
    assert status == 501, reply
    assert error_code(reply)[0] == "NotImplemented"
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"still here"
