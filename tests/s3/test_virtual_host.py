"""`serve --domain`: boto3 in virtual-hosted style (`bucket.s3.test`), beside path-style
clients of the same server. Names under s3.test resolve to loopback in this process only."""

import socket

import boto3
import pytest
from botocore.config import Config

from conftest import make_client, running_server

DOMAIN = "s3.test"


@pytest.fixture
def resolve_test_domain(monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and (host == DOMAIN or host.endswith("." + DOMAIN)):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_virtual_hosted_and_path_style_side_by_side(resolve_test_domain):
    with running_server("--domain", DOMAIN) as (endpoint, keys, _):
        port = endpoint.rsplit(":", 1)[1]
        virtual = boto3.client(
            "s3",
            endpoint_url=f"http://{DOMAIN}:{port}",
            aws_access_key_id=keys["accessKeyId"],
            aws_secret_access_key=keys["secretAccessKey"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "virtual"}, signature_version="s3v4", retries={"max_attempts": 1}),
        )
        seen_hosts = []
        virtual.meta.events.register("before-send.s3.*", lambda request, **kw: seen_hosts.append(request.url))
        virtual.create_bucket(Bucket="vhost")
        virtual.put_object(Bucket="vhost", Key="dir/a.txt", Body=b"virtually")
        assert virtual.get_object(Bucket="vhost", Key="dir/a.txt")["Body"].read() == b"virtually"
        listed = virtual.list_objects_v2(Bucket="vhost", Prefix="dir/")
        assert [o["Key"] for o in listed["Contents"]] == ["dir/a.txt"]
        assert all(url.startswith(f"http://vhost.{DOMAIN}:{port}/") for url in seen_hosts[1:]), seen_hosts

        # The same bucket, path-style, by IP address and by the bare domain.
        path = make_client(endpoint, keys["accessKeyId"], keys["secretAccessKey"])
        assert path.get_object(Bucket="vhost", Key="dir/a.txt")["Body"].read() == b"virtually"
        bare = make_client(f"http://{DOMAIN}:{port}", keys["accessKeyId"], keys["secretAccessKey"])
        assert [b["Name"] for b in bare.list_buckets()["Buckets"]] == ["vhost"]
        assert bare.get_object(Bucket="vhost", Key="dir/a.txt")["Body"].read() == b"virtually"
