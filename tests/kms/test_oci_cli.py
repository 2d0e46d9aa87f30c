"""The KMS API driven by the real `oci` CLI (oci-cli from PyPI, in the venv scripts/test
makes), unmodified except for --endpoint, against a real `sealstore serve`.

Users sign with RSA keys made by openssl; `sealstore iam …` (through the running server's
admin socket) creates them, their groups and policies."""

import base64
import datetime
import hashlib
import http.client
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "s3"))
from conftest import BINARY, ROOT, running_server  # noqa: E402

OCI = pathlib.Path(os.environ.get("OCI_CLI", ROOT / "target" / "oci-venv" / "bin" / "oci"))


def cli(data_dir, *args):
    """Runs `sealstore --json ARGS` against the server's data directory."""
    out = subprocess.run(
        [str(BINARY), "--json", *args],
        env=dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else None


def sealstore(data_dir, *args, check=True, timeout=120):
    """Runs `sealstore --data-dir DATA_DIR ARGS`; fails the test on a non-zero exit unless
    `check` is false."""
    out = subprocess.run([str(BINARY), "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def self_signed_cert(directory):
    """A self-signed certificate for 127.0.0.1 and its key (PEM files in `directory`)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def make_key_pair(directory, name):
    private = directory / f"{name}.pem"
    public = directory / f"{name}.pub.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-out", str(public)], check=True, capture_output=True
    )
    private.chmod(0o600)
    return private, public


class OciFailed(Exception):
    """A failed `oci` call: exit code and the ServiceError it printed."""

    def __init__(self, returncode, stderr):
        super().__init__(stderr)
        self.returncode = returncode
        self.stderr = stderr
        start = stderr.find("{")
        self.error = json.loads(stderr[start : stderr.rfind("}") + 1]) if start >= 0 else {}


class Env:
    """A server, its users and a config file with one profile per user."""

    def __init__(self, kms_url, data_dir, tmp):
        self.url = kms_url
        self.data_dir = data_dir
        self.tmp = tmp
        status = cli(data_dir, "kms", "status")
        self.tenancy = status["tenancyId"]
        self.vault = status["defaultVaultId"]
        self.key = status["defaultKeyId"]
        self.config = tmp / "oci-config"
        self.config.write_text("")
        self.config.chmod(0o600)
        self.users = {}

    def add_user(self, name, groups=(), key_file=None):
        private, public = make_key_pair(self.tmp, name)
        args = ["iam", "user", "add", name, "--public-key", str(public)]
        for g in groups:
            args += ["--group", g]
        user = cli(self.data_dir, *args)
        fingerprint = user["apiKeys"][0]["fingerprint"]
        with self.config.open("a") as f:
            f.write(
                f"[{name}]\nuser={user['id']}\nfingerprint={fingerprint}\ntenancy={self.tenancy}\n"
                f"region=us-ashburn-1\nkey_file={key_file or private}\n\n"
            )
        self.users[name] = (user, private)
        return user

    def oci(self, profile, *args, endpoint=None):
        """Runs the oci CLI as `profile`; returns its parsed JSON output (None when it prints
        nothing), or raises OciFailed."""
        env = dict(
            os.environ,
            OCI_CLI_SUPPRESS_FILE_PERMISSIONS_WARNING="True",
            SUPPRESS_LABEL_WARNING="True",
        )
        # requests lets these override --cert-bundle (psf/requests#3829).
        env.pop("REQUESTS_CA_BUNDLE", None)
        env.pop("CURL_CA_BUNDLE", None)
        cmd = [str(OCI), "--config-file", str(self.config), "--profile", profile, "--no-retry"]
        cmd += ["--endpoint", endpoint or self.url, *args]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise OciFailed(out.returncode, out.stderr)
        return json.loads(out.stdout) if out.stdout.strip() else None

    def endpoints(self, vault):
        data = self.oci("admin", "kms", "management", "vault", "get", "--vault-id", vault)["data"]
        return data["management-endpoint"], data["crypto-endpoint"]


@pytest.fixture(scope="module")
def env():
    with running_server() as (_, _, data_dir):
        kms_url = json.loads((data_dir / "serve.json").read_text())["kms"]
        with tempfile.TemporaryDirectory() as tmp:
            e = Env(kms_url, data_dir, pathlib.Path(tmp))
            e.add_user("admin", groups=["Administrators"])
            yield e


def b64(data):
    return base64.b64encode(data).decode()


def test_cli_is_installed():
    out = subprocess.run([str(OCI), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("3."), out


def test_seed_audit_flow_and_remediation(env):
    ids = env.oci("admin", "iam", "compartment", "list", "--all", "--include-root", "--query", 'data[]."id"')
    assert env.tenancy in ids
    active = env.oci(
        "admin", "kms", "management", "vault", "list", "--compartment-id", env.tenancy, "--all",
        "--query", "data[?\"lifecycle-state\"=='ACTIVE'].id",
    )
    assert env.vault in active
    management = env.oci(
        "admin", "kms", "management", "vault", "get", "--vault-id", env.vault, "--query", 'data."management-endpoint"'
    )
    assert management.startswith(env.url) and env.vault in management
    keys = env.oci(
        "admin", "kms", "management", "key", "list", "--compartment-id", env.tenancy, "--all",
        "--query", 'data[].["id","lifecycle-state"]', endpoint=management,
    )
    assert [env.key, "ENABLED"] in keys

    key = env.oci("admin", "kms", "management", "key", "get", "--key-id", env.key, "--query", "data", endpoint=management)
    assert key["id"] == env.key
    assert key["lifecycle-state"] == "ENABLED"
    assert key["key-shape"]["algorithm"] == "AES" and key["key-shape"]["length"] == 32
    assert key["protection-mode"] == "SOFTWARE"
    assert key["is-auto-rotation-enabled"] is False
    assert key["vault-id"] == env.vault
    assert key["compartment-id"] == env.tenancy
    assert key["display-name"] == "default"
    created = datetime.datetime.fromisoformat(key["time-created"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()) < 600
    assert key["current-key-version"].startswith("ocid1.keyversion.")

    # Remediation: rotate; the new version is returned and becomes current.
    version = env.oci("admin", "kms", "management", "key-version", "create", "--key-id", env.key, endpoint=management)
    assert version["data"]["key-id"] == env.key
    assert version["data"]["lifecycle-state"] == "ENABLED"
    assert version["etag"]
    after = env.oci("admin", "kms", "management", "key", "get", "--key-id", env.key, endpoint=management)["data"]
    assert after["current-key-version"] == version["data"]["id"] != key["current-key-version"]
    versions = env.oci(
        "admin", "kms", "management", "key-version", "list", "--key-id", env.key, "--all", endpoint=management
    )["data"]
    assert {v["id"] for v in versions} >= {version["data"]["id"], key["current-key-version"]}


def test_vault_create_schedule_and_cancel_deletion(env):
    vault = env.oci(
        "admin", "kms", "management", "vault", "create", "-c", env.tenancy, "--display-name", "apps",
        "--vault-type", "DEFAULT", "--wait-for-state", "ACTIVE",
    )["data"]
    assert vault["display-name"] == "apps" and vault["lifecycle-state"] == "ACTIVE"
    assert vault["vault-type"] == "DEFAULT"

    too_soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with pytest.raises(OciFailed) as refused:
        env.oci("admin", "kms", "management", "vault", "schedule-deletion", "--vault-id", vault["id"],
                "--time-of-deletion", too_soon)
    assert refused.value.error["status"] == 400 and refused.value.error["code"] == "InvalidParameter"

    when = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    scheduled = env.oci(
        "admin", "kms", "management", "vault", "schedule-deletion", "--vault-id", vault["id"],
        "--time-of-deletion", when, "--wait-for-state", "PENDING_DELETION",
    )["data"]
    assert scheduled["lifecycle-state"] == "PENDING_DELETION"
    assert scheduled["time-of-deletion"].startswith(when[:16])
    cancelled = env.oci(
        "admin", "kms", "management", "vault", "cancel-deletion", "--vault-id", vault["id"], "--wait-for-state", "ACTIVE"
    )["data"]
    assert cancelled["lifecycle-state"] == "ACTIVE" and cancelled["time-of-deletion"] is None


def test_key_create_disable_enable_and_crypto_round_trip(env):
    management, crypto = env.endpoints(env.vault)
    key = env.oci(
        "admin", "kms", "management", "key", "create", "-c", env.tenancy, "--display-name", "orders",
        "--key-shape", '{"algorithm":"AES","length":32}', "--wait-for-state", "ENABLED", endpoint=management,
    )["data"]
    assert key["vault-id"] == env.vault and key["protection-mode"] == "SOFTWARE"

    plaintext = b"card 4111-1111-1111-1111"
    encrypted = env.oci(
        "admin", "kms", "crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(plaintext),
        "--associated-data", '{"table":"orders","row":"7"}', endpoint=crypto,
    )["data"]
    assert encrypted["key-version-id"] == key["current-key-version"]
    assert base64.b64decode(encrypted["ciphertext"]).find(plaintext) == -1
    # Associated data is canonical: key order does not matter; a different value fails.
    decrypted = env.oci(
        "admin", "kms", "crypto", "decrypt", "--key-id", key["id"], "--ciphertext", encrypted["ciphertext"],
        "--associated-data", '{"row":"7","table":"orders"}', endpoint=crypto,
    )["data"]
    assert base64.b64decode(decrypted["plaintext"]) == plaintext
    assert decrypted["plaintext-checksum"].isdigit()
    with pytest.raises(OciFailed) as wrong_aad:
        env.oci("admin", "kms", "crypto", "decrypt", "--key-id", key["id"], "--ciphertext", encrypted["ciphertext"],
                "--associated-data", '{"row":"8","table":"orders"}', endpoint=crypto)
    assert wrong_aad.value.error["status"] == 400

    # A data key: its plaintext comes back, and its ciphertext decrypts to the same bytes.
    dek = env.oci(
        "admin", "kms", "crypto", "generate-data-encryption-key", "--key-id", key["id"],
        "--include-plaintext-key", "true", "--key-shape", '{"algorithm":"AES","length":32}', endpoint=crypto,
    )["data"]
    assert len(base64.b64decode(dek["plaintext"])) == 32
    unwrapped = env.oci("admin", "kms", "crypto", "decrypt", "--key-id", key["id"], "--ciphertext", dek["ciphertext"],
                        endpoint=crypto)["data"]
    assert unwrapped["plaintext"] == dek["plaintext"]

    # Rotation: old ciphertexts still decrypt (naming the old version); new ones use the new.
    new_version = env.oci("admin", "kms", "management", "key-version", "create", "--key-id", key["id"],
                          endpoint=management)["data"]["id"]
    old = env.oci("admin", "kms", "crypto", "decrypt", "--key-id", key["id"], "--ciphertext", encrypted["ciphertext"],
                  "--associated-data", '{"table":"orders","row":"7"}', endpoint=crypto)["data"]
    assert old["key-version-id"] == key["current-key-version"]
    fresh = env.oci("admin", "kms", "crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"x"),
                    endpoint=crypto)["data"]
    assert fresh["key-version-id"] == new_version

    disabled = env.oci("admin", "kms", "management", "key", "disable", "--key-id", key["id"],
                       "--wait-for-state", "DISABLED", endpoint=management)["data"]
    assert disabled["lifecycle-state"] == "DISABLED"
    with pytest.raises(OciFailed) as denied:
        env.oci("admin", "kms", "crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"x"), endpoint=crypto)
    assert denied.value.error["status"] == 403 and "disabled" in denied.value.error["message"]
    enabled = env.oci("admin", "kms", "management", "key", "enable", "--key-id", key["id"],
                      "--wait-for-state", "ENABLED", endpoint=management)["data"]
    assert enabled["lifecycle-state"] == "ENABLED"
    env.oci("admin", "kms", "crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"x"), endpoint=crypto)


def kebab(name):
    """The oci CLI's name for an API field: camelCase to kebab-case."""
    return "".join("-" + c.lower() if c.isupper() else c for c in name)


def test_sealstore_cli_and_oci_cli_are_answered_by_one_handler(env):
    """`sealstore kms …` calls the same API handlers as the oci CLI (through the admin socket,
    as the local administrator): same resources, same fields, same refusals."""
    management, crypto = env.endpoints(env.vault)
    made = cli(env.data_dir, "kms", "key", "create", "--vault", env.vault, "--name", "one-handler")
    seen = env.oci("admin", "kms", "management", "key", "get", "--key-id", made["id"], endpoint=management)["data"]
    ours = cli(env.data_dir, "kms", "key", "get", made["id"])
    assert {kebab(k) for k in ours} == set(seen), (sorted(ours), sorted(seen))
    for field in ["id", "displayName", "lifecycleState", "currentKeyVersion", "vaultId", "compartmentId",
                  "protectionMode", "isPrimary"]:
        assert ours[field] == seen[kebab(field)], field
    # (the oci CLI prints times in Python's format)
    assert datetime.datetime.fromisoformat(ours["timeCreated"]) == datetime.datetime.fromisoformat(seen["time-created"])
    assert ours["compartmentId"] == env.tenancy  # the vault's compartment, by default

    # sealstore's key-version disable/enable: the CLI's commands are API actions, visible to oci.
    v1 = made["currentKeyVersion"]
    cli(env.data_dir, "kms", "key", "rotate", made["id"])
    disabled = cli(env.data_dir, "kms", "key", "disable-version", made["id"], v1)
    assert disabled["lifecycleState"] == "DISABLED"
    again = env.oci("admin", "kms", "management", "key-version", "get", "--key-id", made["id"],
                    "--key-version-id", v1, endpoint=management)["data"]
    assert again["lifecycle-state"] == "DISABLED"
    cli(env.data_dir, "kms", "key", "enable-version", made["id"], v1)

    # Lists: every page, oldest first.
    versions = cli(env.data_dir, "kms", "key", "versions", made["id"])
    assert [v["id"] for v in versions][0] == v1 and len(versions) == 2

    # The audit log names the local administrator for what the CLI did.
    entries = cli(env.data_dir, "kms", "audit", "list", "--limit", "10000")
    mine = [e for e in entries if e.get("keyId") == made["id"]]
    assert mine and all(e["principal"] == "local-admin" for e in mine), mine

    # Crypto through the CLI and the oci CLI interoperate.
    ct = cli(env.data_dir, "kms", "encrypt", "--key", made["id"], "--plaintext", "both ways")["ciphertext"]
    out = env.oci("admin", "kms", "crypto", "decrypt", "--key-id", made["id"], "--ciphertext", ct,
                  endpoint=crypto)["data"]
    assert base64.b64decode(out["plaintext"]) == b"both ways"


def test_regional_endpoint_finds_the_vault_of_a_key(env):
    """sealstore extension: key and crypto calls on the regional endpoint go to the vault of the
    key they name; CreateKey, which names no vault, is refused there with a pointer."""
    key = env.oci("admin", "kms", "management", "key", "get", "--key-id", env.key, endpoint=env.url)["data"]
    assert key["id"] == env.key and key["vault-id"] == env.vault
    ct = env.oci("admin", "kms", "crypto", "encrypt", "--key-id", env.key, "--plaintext", b64(b"regional"),
                 endpoint=env.url)["data"]["ciphertext"]
    out = env.oci("admin", "kms", "crypto", "decrypt", "--key-id", env.key, "--ciphertext", ct,
                  endpoint=env.url)["data"]
    assert base64.b64decode(out["plaintext"]) == b"regional"
    with pytest.raises(OciFailed) as refused:
        env.oci("admin", "kms", "management", "key", "create", "-c", env.tenancy, "--display-name", "nowhere",
                "--key-shape", '{"algorithm":"AES","length":32}', endpoint=env.url)
    assert refused.value.error["status"] == 400 and "managementEndpoint" in refused.value.error["message"]
    # IAM still applies: a user without a policy sees no key there either.
    env.add_user("regional-nobody")
    with pytest.raises(OciFailed) as hidden:
        env.oci("regional-nobody", "kms", "management", "key", "get", "--key-id", env.key, endpoint=env.url)
    assert hidden.value.error["status"] == 404


def test_key_version_deletion_scheduled_and_cancelled(env):
    management, crypto = env.endpoints(env.vault)
    key = env.oci("admin", "kms", "management", "key", "create", "-c", env.tenancy, "--display-name", "versions",
                  "--key-shape", '{"algorithm":"AES","length":32}', endpoint=management)["data"]
    old_version = key["current-key-version"]
    old = env.oci("admin", "kms", "crypto", "encrypt", "--key-id", key["id"], "--plaintext", b64(b"old"),
                  endpoint=crypto)["data"]["ciphertext"]
    new_version = env.oci("admin", "kms", "management", "key-version", "create", "--key-id", key["id"],
                          endpoint=management)["data"]["id"]
    with pytest.raises(OciFailed) as current:
        env.oci("admin", "kms", "management", "key-version", "schedule-deletion", "--key-id", key["id"],
                "--key-version-id", new_version, endpoint=management)
    assert current.value.error["status"] == 409 and "primary" in current.value.error["message"]

    scheduled = env.oci("admin", "kms", "management", "key-version", "schedule-deletion", "--key-id", key["id"],
                        "--key-version-id", old_version, endpoint=management)["data"]
    assert scheduled["lifecycle-state"] == "PENDING_DELETION" and scheduled["time-of-deletion"]
    with pytest.raises(OciFailed) as refused:
        env.oci("admin", "kms", "crypto", "decrypt", "--key-id", key["id"], "--ciphertext", old, endpoint=crypto)
    assert refused.value.error["status"] == 403
    # oci-cli 3.95.1 prints nothing for this command (its override never renders the answer).
    env.oci("admin", "kms", "management", "key-version", "cancel-deletion", "--key-id", key["id"],
            "--key-version-id", old_version, endpoint=management)
    cancelled = env.oci("admin", "kms", "management", "key-version", "get", "--key-id", key["id"],
                        "--key-version-id", old_version, endpoint=management)["data"]
    assert cancelled["lifecycle-state"] == "ENABLED" and cancelled["time-of-deletion"] is None
    back = env.oci("admin", "kms", "crypto", "decrypt", "--key-id", key["id"], "--ciphertext", old,
                   endpoint=crypto)["data"]
    assert base64.b64decode(back["plaintext"]) == b"old"


def test_pagination_over_120_keys(env):
    vault = env.oci("admin", "kms", "management", "vault", "create", "-c", env.tenancy, "--display-name", "many",
                    "--vault-type", "DEFAULT")["data"]
    for i in range(120):
        cli(env.data_dir, "kms", "key", "create", "--vault", vault["id"], "--name", f"k{i:03}")
    management = vault["management-endpoint"]
    everything = env.oci("admin", "kms", "management", "key", "list", "-c", env.tenancy, "--all",
                         endpoint=management)["data"]
    names = [k["display-name"] for k in everything]
    assert sorted(names) == [f"k{i:03}" for i in range(120)]
    small_pages = env.oci("admin", "kms", "management", "key", "list", "-c", env.tenancy, "--all", "--page-size", "7",
                          "--sort-by", "DISPLAYNAME", "--sort-order", "ASC", endpoint=management)["data"]
    assert [k["display-name"] for k in small_pages] == [f"k{i:03}" for i in range(120)]
    limited = env.oci("admin", "kms", "management", "key", "list", "-c", env.tenancy, "--limit", "5",
                      endpoint=management)
    assert len(limited["data"]) == 5 and limited["opc-next-page"]
    # Keys of another vault do not show through this vault's endpoint.
    assert env.key not in {k["id"] for k in everything}


def test_user_without_policy_sees_nothing(env):
    env.add_user("nobody")
    with pytest.raises(OciFailed) as hidden:
        env.oci("nobody", "kms", "management", "vault", "get", "--vault-id", env.vault)
    assert hidden.value.error["status"] == 404
    assert hidden.value.error["code"] == "NotAuthorizedOrNotFound"
    assert env.oci("nobody", "kms", "management", "vault", "list", "-c", env.tenancy, "--all") is None
    management, crypto = env.endpoints(env.vault)
    with pytest.raises(OciFailed) as no_crypto:
        env.oci("nobody", "kms", "crypto", "encrypt", "--key-id", env.key, "--plaintext", b64(b"x"), endpoint=crypto)
    assert no_crypto.value.error["status"] == 404


def test_use_keys_may_encrypt_but_not_rotate(env):
    cli(env.data_dir, "iam", "group", "create", "KeyUsers")
    cli(env.data_dir, "iam", "policy", "create", "key-users", "--statement",
        "Allow group KeyUsers to use keys in tenancy")
    env.add_user("app", groups=["KeyUsers"])
    management, crypto = env.endpoints(env.vault)
    out = env.oci("app", "kms", "crypto", "encrypt", "--key-id", env.key, "--plaintext", b64(b"ok"), endpoint=crypto)
    assert out["data"]["key-id"] == env.key
    before = env.oci("admin", "kms", "management", "key", "get", "--key-id", env.key, endpoint=management)["data"]
    with pytest.raises(OciFailed) as refused:
        env.oci("app", "kms", "management", "key-version", "create", "--key-id", env.key, endpoint=management)
    assert refused.value.error["status"] == 404
    after = env.oci("admin", "kms", "management", "key", "get", "--key-id", env.key, endpoint=management)["data"]
    assert after["current-key-version"] == before["current-key-version"]


def test_policy_limited_to_one_key_and_to_a_compartment(env):
    cli(env.data_dir, "iam", "compartment", "create", "apps")
    cli(env.data_dir, "iam", "group", "create", "AppAdmins")
    management, crypto = env.endpoints(env.vault)
    other = env.oci("admin", "kms", "management", "key", "create", "-c", env.tenancy, "--display-name", "one",
                    "--key-shape", '{"algorithm":"AES","length":32}', endpoint=management)["data"]
    cli(env.data_dir, "iam", "policy", "create", "app-admins",
        "--statement", "Allow group AppAdmins to manage key-family in compartment apps",
        "--statement", f"Allow group AppAdmins to use keys in tenancy where target.key.id = '{other['id']}'")
    env.add_user("appadmin", groups=["AppAdmins"])
    env.oci("appadmin", "kms", "crypto", "encrypt", "--key-id", other["id"], "--plaintext", b64(b"x"), endpoint=crypto)
    with pytest.raises(OciFailed) as not_this_key:
        env.oci("appadmin", "kms", "crypto", "encrypt", "--key-id", env.key, "--plaintext", b64(b"x"), endpoint=crypto)
    assert not_this_key.value.error["status"] == 404

    apps = [c for c in env.oci("admin", "iam", "compartment", "list", "-c", env.tenancy, "--all")["data"]
            if c["name"] == "apps"]
    assert len(apps) == 1
    vault = env.oci("appadmin", "kms", "management", "vault", "create", "-c", apps[0]["id"], "--display-name", "app",
                    "--vault-type", "DEFAULT")["data"]
    assert vault["compartment-id"] == apps[0]["id"]
    with pytest.raises(OciFailed) as outside:
        env.oci("appadmin", "kms", "management", "vault", "create", "-c", env.tenancy, "--display-name", "nope",
                "--vault-type", "DEFAULT")
    assert outside.value.error["status"] == 404
    # The tenancy's vaults stay invisible; the compartment's are listed.
    assert env.oci("appadmin", "kms", "management", "vault", "list", "-c", env.tenancy, "--all") is None
    listed = env.oci("appadmin", "kms", "management", "vault", "list", "-c", apps[0]["id"], "--all")["data"]
    assert [v["id"] for v in listed] == [vault["id"]]


# ----- signatures, checked below the CLI -----


def sign(env, method, path, body=b"", private_key=None, date=None, user="admin", tamper=None, send_path=None,
         send=True):
    """A request signed the way the SDK signs it (openssl does the RSA part); `tamper` may
    change headers and body after signing, `send_path` the target."""
    user_record, own_key = env.users[user]
    host = env.url.removeprefix("http://")
    date = date or datetime.datetime.now(datetime.timezone.utc)
    headers = {
        "date": date.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "host": host,
        "content-type": "application/json",
    }
    names = ["date", "(request-target)", "host"]
    if method in ("POST", "PUT"):
        headers["content-length"] = str(len(body))
        headers["x-content-sha256"] = base64.b64encode(hashlib.sha256(body).digest()).decode()
        names += ["content-length", "content-type", "x-content-sha256"]
    lines = [
        f"(request-target): {method.lower()} {path}" if n == "(request-target)" else f"{n}: {headers[n]}"
        for n in names
    ]
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(private_key or own_key)],
        input="\n".join(lines).encode(),
        capture_output=True,
        check=True,
    ).stdout
    key_id = f"{env.tenancy}/{user_record['id']}/{user_record['apiKeys'][0]['fingerprint']}"
    headers["authorization"] = (
        f'Signature algorithm="rsa-sha256",headers="{" ".join(names)}",keyId="{key_id}",'
        f'signature="{base64.b64encode(signature).decode()}",version="1"'
    )
    if tamper:
        body = tamper(headers, body)
    request = urllib.request.Request(env.url + (send_path or path), data=body if method in ("POST", "PUT") else None,
                                     method=method, headers=headers)
    if not send:
        return request
    return send_request(request)


def send_request(request):
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_signed_requests_and_every_kind_of_bad_signature(env):
    path = f"/20180608/vaults?compartmentId={env.tenancy}"
    status, body = sign(env, "GET", path)
    assert status == 200 and any(v["id"] == env.vault for v in body)

    status, body = sign(env, "GET", path, tamper=lambda h, b: h.update(authorization=h["authorization"].replace(
        'signature="', 'signature="A')) or b)
    assert (status, body["code"]) == (401, "NotAuthenticated")
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    status, body = sign(env, "GET", path, date=stale)
    assert (status, body["code"]) == (401, "NotAuthenticated") and "minutes" in body["message"]
    other_private, _ = make_key_pair(env.tmp, "impostor")
    status, body = sign(env, "GET", path, private_key=other_private)
    assert status == 401
    status, body = sign(env, "GET", path, send_path=path + "&limit=1")
    assert status == 401

    # A body changed after signing is refused, and nothing is created.
    create = json.dumps({"compartmentId": env.tenancy, "displayName": "forged", "vaultType": "DEFAULT"}).encode()
    before = cli(env.data_dir, "kms", "vault", "list")
    status, body = sign(env, "POST", "/20180608/vaults", body=create,
                        tamper=lambda h, b: b.replace(b"forged", b"FORGED"))
    assert (status, body["code"]) == (401, "NotAuthenticated")
    assert cli(env.data_dir, "kms", "vault", "list") == before

    status, body = sign(env, "POST", "/20180608/vaults", body=create)
    assert status == 200 and body["displayName"] == "forged"

    unsigned = urllib.request.Request(env.url + path)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(unsigned, timeout=30)
    assert e.value.code == 401


def test_refused_requests_are_audited_with_who_from_where_and_why(env):
    """401s (a bad signature, no signature) and authorization refusals (404s) leave DENIED
    entries in the audit chain: the user they claimed or were, by id and name, the client's
    address, the request, the reason; the chain still verifies."""
    path = f"/20180608/vaults?compartmentId={env.tenancy}"
    status, _ = sign(env, "GET", path, tamper=lambda h, b: h.update(authorization=h["authorization"].replace(
        'signature="', 'signature="A')) or b)
    assert status == 401
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(env.url + "/20180608/vaults"), timeout=30)
    cli(env.data_dir, "iam", "group", "create", "Lookers")
    cli(env.data_dir, "iam", "policy", "create", "lookers", "--statement", "Allow group Lookers to read keys in tenancy")
    looker = env.add_user("looker", groups=["Lookers"])
    management, _ = env.endpoints(env.vault)
    with pytest.raises(OciFailed) as refused:
        env.oci("looker", "kms", "management", "key-version", "create", "--key-id", env.key, endpoint=management)
    assert refused.value.error["status"] == 404

    log = cli(env.data_dir, "kms", "audit", "list", "--limit", "100000")
    denied = [e for e in log if e["result"] == "DENIED"]
    admin = env.users["admin"][0]
    bad_signature = [e for e in denied if e["operation"] == "GET /20180608/vaults" and e["principal"] == admin["id"]]
    assert bad_signature and bad_signature[-1]["principalName"] == "admin", denied
    assert bad_signature[-1]["message"].startswith("not authenticated")
    assert bad_signature[-1]["source"].startswith("127.0.0.1:")
    assert any(e["principal"] == "anonymous" and e["operation"] == "GET /20180608/vaults" for e in denied), denied
    rotate = [e for e in denied if e["principal"] == looker["id"]]
    assert rotate and rotate[-1]["principalName"] == "looker"
    assert rotate[-1]["operation"] == f"POST /kms/{env.vault}/management/20180608/keys/{env.key}/keyVersions"
    assert rotate[-1]["keyId"] == env.key and "needs manage keys" in rotate[-1]["message"]
    assert cli(env.data_dir, "kms", "audit", "verify")["failure"] is None


def test_tls_with_the_oci_cli(tmp_path):
    """--kms-tls-cert/--kms-tls-key: the CLI verifies the server against the certificate,
    the endpoints the server hands out are https, and plain HTTP is not answered."""
    cert, key = self_signed_cert(tmp_path)
    with running_server("--kms-tls-cert", str(cert), "--kms-tls-key", str(key)) as (_, _, data_dir):
        url = json.loads((data_dir / "serve.json").read_text())["kms"]
        assert url.startswith("https://127.0.0.1:")
        e = Env(url, data_dir, tmp_path)
        e.add_user("admin", groups=["Administrators"])
        vault = e.oci("admin", "--cert-bundle", str(cert), "kms", "management", "vault", "get", "--vault-id", e.vault)
        assert vault["data"]["management-endpoint"].startswith(url + "/kms/")
        with pytest.raises(OciFailed):  # without the certificate, the CLI refuses the server
            e.oci("admin", "kms", "management", "vault", "get", "--vault-id", e.vault)
        # A TLS alert (or a closed connection) comes back, never an HTTP answer.
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(url.replace("https://", "http://") + "/20180608/vaults", timeout=10)


def test_overload_gets_429_and_the_rest_is_served(tmp_path):
    """--kms-max-in-flight 1 and 32 simultaneous (fsyncing) creates: some are turned away with
    429 TooManyRequests, which the SDKs retry, and every other one succeeds."""
    import threading

    with running_server("--kms-max-in-flight", "1") as (_, _, data_dir):
        e = Env(json.loads((data_dir / "serve.json").read_text())["kms"], data_dir, tmp_path)
        e.add_user("admin", groups=["Administrators"])
        requests = [
            sign(e, "POST", "/20180608/vaults", send=False, body=json.dumps(
                {"compartmentId": e.tenancy, "displayName": f"v{i}", "vaultType": "DEFAULT"}).encode())
            for i in range(32)
        ]
        start = threading.Barrier(len(requests))
        results = [None] * len(requests)

        def run(i):
            start.wait()
            results[i] = send_request(requests[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(status for status, _ in results)
        assert set(statuses) <= {200, 429}, statuses
        assert 429 in statuses and 200 in statuses, statuses
        assert all(body["code"] == "TooManyRequests" for status, body in results if status == 429)
        created = {v["displayName"] for v in cli(data_dir, "kms", "vault", "list")}
        assert created >= {f"v{i}" for i, (status, _) in enumerate(results) if status == 200}
