"""The web console in a real browser: Debian's headless chromium driven through chromedriver
(Selenium), against a real `sealstore serve`. ./scripts/test installs chromium,
chromium-driver and selenium.

Walks the seed's console audit path (vault → Master Encryption Keys → key → Key Information →
Created), rotates from the key page and from the Compliance page (the server's clock moved
400 days ahead), disables and enables, schedules and cancels vault deletion, and checks what
a read-only user, a wrong password and a form without its CSRF token get. Screenshots of the
main pages at 1280 and 390 px (README's) go to $SEALSTORE_SCREENSHOTS, by default
target/console-screenshots/."""

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "kms"))
from test_oci_cli import cli  # noqa: E402  (puts tests/s3 on sys.path too)
from conftest import BINARY, ROOT  # noqa: E402

SCREENSHOTS = pathlib.Path(os.environ.get("SEALSTORE_SCREENSHOTS", ROOT / "target" / "console-screenshots"))
PASSWORD = "correct horse battery staple"


@contextlib.contextmanager
def serving(data_dir, clock_offset_days=0, args=()):
    """`sealstore serve ARGS` on `data_dir`; yields the KMS API's URL."""
    env = dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir), SEALSTORE_CLOCK_OFFSET_DAYS=str(clock_offset_days))
    env.pop("SEALSTORE_OBJECT_BACKEND", None)
    serve_json = data_dir / "serve.json"
    serve_json.unlink(missing_ok=True)
    proc = subprocess.Popen([str(BINARY), "serve", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while not serve_json.exists():
            assert proc.poll() is None, "sealstore serve exited"
            assert time.time() < deadline, "sealstore serve did not become ready"
            time.sleep(0.05)
        yield json.loads(serve_json.read_text())["kms"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def set_password(data_dir, user, password=PASSWORD):
    out = subprocess.run([str(BINARY), "iam", "user", "set-password", user], input=password + "\n",
                         env=dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir)), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def add_console_user(data_dir, name, groups=()):
    args = ["iam", "user", "add", name]
    for g in groups:
        args += ["--group", g]
    cli(data_dir, *args)
    set_password(data_dir, name)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
                              options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = pathlib.Path(tmp) / "data"
        with serving(data_dir) as url:
            add_console_user(data_dir, "admin", groups=["Administrators"])
            yield url, data_dir


@pytest.fixture
def page(browser, server):
    """The browser, signed out, at the server."""
    url, _ = server
    browser.delete_all_cookies()
    browser.get(url + "/console/login")
    browser.delete_all_cookies()
    return browser


def sign_in(browser, url, user="admin", password=PASSWORD):
    browser.get(url + "/console/login")
    browser.find_element(By.ID, "username").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    click(browser.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def navigating(browser, action):
    """Runs `action`, which leads to another page, and waits until that page has loaded."""
    old = browser.find_element(By.TAG_NAME, "html")
    action()

    def left_old_page(_):
        try:
            old.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException:
            return False  # asked in the middle of the navigation: ask again

    def loaded(driver):
        try:
            return driver.execute_script("return document.readyState") == "complete"
        except WebDriverException:
            return False

    WebDriverWait(browser, 15).until(left_old_page)
    WebDriverWait(browser, 15).until(loaded)


def click(element):
    """Clicks a link or button that leads to another page, and waits for it."""
    navigating(element.parent, element.click)


def submit_script(browser, script, *args):
    """Runs a script that submits a form, and waits for the answer page."""
    navigating(browser, lambda: browser.execute_script(script, *args))


def post_with_own_csrf(browser, action):
    """Posts a forged form to `action` carrying the page's own (valid) CSRF token, as a user
    could from their browser's console, and waits for the answer."""
    submit_script(browser, """
        const f = document.createElement('form');
        f.method = 'post';
        f.action = arguments[0];
        const t = document.createElement('input');
        t.name = 'csrf';
        t.value = document.querySelector('input[name=csrf]').value;
        f.appendChild(t);
        document.body.appendChild(f);
        f.submit();""", action)


def heading(browser):
    return browser.find_element(By.TAG_NAME, "h1").text


def field(browser, name):
    """The value shown for `name` on a Key Information or vault details list."""
    for dt in browser.find_elements(By.TAG_NAME, "dt"):
        if dt.text == name:
            return dt.find_element(By.XPATH, "following-sibling::dd[1]").text
    raise AssertionError(f"no field {name} on {browser.current_url}")


def ids_in(element):
    """The OCIDs a table row shows: shortened on the page, whole in each one's title."""
    return [c.get_attribute("title") for c in element.find_elements(By.TAG_NAME, "code")]


def screenshot(browser, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_screenshots_of_the_main_pages_at_1280_and_390_px(browser, tmp_path):
    """README's screenshots: vaults, a vault's keys, Key Information, Audit and Compliance
    (a year and more after the keys were made, so that it lists them), at each width."""
    data_dir = tmp_path / "data"
    with serving(data_dir):
        add_console_user(data_dir, "admin", groups=["Administrators"])
        s = status(data_dir)
        cli(data_dir, "kms", "key", "create", "--vault", s["defaultVaultId"], "--name", "payments-db")
    with serving(data_dir, clock_offset_days=400) as url:
        browser.delete_all_cookies()
        sign_in(browser, url)
        vault = f"/console/vaults/{s['defaultVaultId']}"
        pages = {"vaults": "/console/vaults", "vault-keys": vault,
                 "key-information": f"{vault}/keys/{s['defaultKeyId']}", "audit": "/console/audit",
                 "compliance": "/console/compliance"}
        try:
            for width in (1280, 390):
                browser.set_window_size(width, 900 if width > 390 else 844)
                for name, path in pages.items():
                    browser.get(url + path)
                    assert not page_is_an_error(browser), (path, browser.page_source[:500])
                    screenshot(browser, f"{name}-{width}")
                    assert (SCREENSHOTS / f"{name}-{width}.png").stat().st_size < 200_000
        finally:
            browser.set_window_size(1280, 900)


def page_is_an_error(browser):
    return heading(browser).lower().startswith(("not found", "error", "forbidden"))


def key_get(data_dir, key):
    return cli(data_dir, "kms", "key", "get", key)


def status(data_dir):
    return cli(data_dir, "kms", "status")


def test_wrong_password_is_refused_without_a_session(page, server):
    url, _ = server
    sign_in(page, url, password="not the password at all")
    assert "Wrong user name or password" in page.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert page.get_cookie("sealstore_console") is None
    sign_in(page, url, user="nobody-here")
    assert "Wrong user name or password" in page.page_source
    page.get(url + "/console/vaults")
    assert page.current_url.endswith("/console/login"), page.current_url


def test_audit_path_to_created_then_rotate_from_the_key_page(page, server):
    url, data_dir = server
    s = status(data_dir)
    key = key_get(data_dir, s["defaultKeyId"])
    sign_in(page, url)
    # Choose Vault, select a compartment, open the vault.
    assert heading(page) == "Vaults"
    compartment = page.find_element(By.ID, "compartment")
    assert compartment.get_attribute("value") == s["tenancyId"]
    click(page.find_element(By.CSS_SELECTOR, "form[action='/console/vaults'] button"))
    click(page.find_element(By.LINK_TEXT, "default"))
    assert heading(page).startswith("Vault default")
    # Where we are, and the keys before anything destructive.
    assert page.find_element(By.CSS_SELECTOR, "nav[aria-label=breadcrumb]").text.startswith("Vaults")
    sections = [h.text for h in page.find_elements(By.TAG_NAME, "h2")]
    assert sections.index("Master Encryption Keys") < sections.index("Deletion"), sections
    # Master Encryption Keys: the key, its Created and last rotated.
    table = page.find_element(By.XPATH, "//h2[.='Master Encryption Keys']/following::table[1]")
    assert "ENABLED" in table.text and "SOFTWARE" in table.text
    click(table.find_element(By.LINK_TEXT, key["displayName"]))
    # Key Information → Created (timeCreated), as `key get` reports it.
    assert heading(page) == f"Key {key['displayName']}"
    created = field(page, "Created")
    assert created == key["timeCreated"][:19].replace("T", " ") + " UTC", (created, key["timeCreated"])
    assert field(page, "Current Key Version") == key["currentKeyVersion"]
    # The labels OCI's console uses, not the API's field names.
    assert field(page, "Protection Mode") == "SOFTWARE"
    assert field(page, "Algorithm / Length") == "AES / 256 bits"
    assert field(page, "Auto-rotation") == "Disabled"
    assert field(page, "Tags") == "None"
    assert not page.find_elements(By.XPATH, "//dt[.='keyShape' or .='freeformTags' or .='isPrimary']")
    # Actions → Rotate Key, confirmed.
    click(page.find_element(By.LINK_TEXT, "Rotate Key"))
    assert heading(page).startswith("Rotate Key")
    click(page.find_element(By.CSS_SELECTOR, "button.primary"))
    assert "Key rotated." in page.find_element(By.CSS_SELECTOR, "[role=status]").text
    after = key_get(data_dir, s["defaultKeyId"])
    assert after["currentKeyVersion"] != key["currentKeyVersion"]
    assert field(page, "Current Key Version") == after["currentKeyVersion"]
    # Versions: both, the new one current; what each protects.
    click(page.find_element(By.LINK_TEXT, "Versions"))
    rows = page.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 2
    current = [r for r in rows if "current" in r.text]
    assert len(current) == 1 and after["currentKeyVersion"] in ids_in(current[0])


def test_a_phone_width_screen_needs_no_sideways_scrolling(page, server):
    url, data_dir = server
    sign_in(page, url)
    s = status(data_dir)
    try:
        page.set_window_size(390, 844)
        for target in (f"/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}",
                       f"/console/vaults/{s['defaultVaultId']}", "/console/vaults", "/console/audit",
                       "/console/compliance", f"/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}?tab=versions"):
            page.get(url + target)
            width = page.execute_script("return document.documentElement.scrollWidth")
            inner = page.execute_script("return window.innerWidth")
            assert width <= inner, (target, width, inner)
        # The vault page's keys table fits without its own sideways scrolling, and a page of
        # 50 audit entries is not tens of screens tall (OCIDs are shortened in tables).
        page.get(f"{url}/console/vaults/{s['defaultVaultId']}")
        table = page.find_element(By.XPATH, "//h2[.='Master Encryption Keys']/following::div[1]")
        assert page.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", table)
        page.get(url + "/console/audit")
        rows = len(page.find_elements(By.CSS_SELECTOR, "tbody tr"))
        height = page.execute_script("return document.documentElement.scrollHeight")
        assert height <= 300 + rows * 140, (height, rows)
    finally:
        page.set_window_size(1280, 900)


def test_disable_and_enable_with_confirmation(page, server):
    url, data_dir = server
    key = cli(data_dir, "kms", "key", "create", "--name", "toggled", "--vault", status(data_dir)["defaultVaultId"])
    sign_in(page, url)
    page.get(f"{url}/console/vaults/{key['vaultId']}/keys/{key['id']}")
    click(page.find_element(By.LINK_TEXT, "Disable Key"))
    click(page.find_element(By.LINK_TEXT, "Cancel"))
    assert key_get(data_dir, key["id"])["lifecycleState"] == "ENABLED"
    click(page.find_element(By.LINK_TEXT, "Disable Key"))
    click(page.find_element(By.CSS_SELECTOR, "button.primary"))
    assert "Key disabled." in page.page_source
    assert field(page, "State") == "DISABLED"
    assert key_get(data_dir, key["id"])["lifecycleState"] == "DISABLED"
    click(page.find_element(By.LINK_TEXT, "Enable Key"))
    click(page.find_element(By.CSS_SELECTOR, "button.primary"))
    assert field(page, "State") == "ENABLED"


def test_vault_deletion_scheduled_and_cancelled_and_out_of_range_refused(page, server):
    url, data_dir = server
    vault = cli(data_dir, "kms", "vault", "create", "--name", "doomed")
    sign_in(page, url)
    page.get(f"{url}/console/vaults/{vault['id']}")
    days = page.find_element(By.ID, "days")
    # The form itself refuses 3 days...
    days.clear()
    days.send_keys("3")
    page.find_element(By.XPATH, "//button[.='Schedule deletion']").click()
    assert page.execute_script("return arguments[0].validity.valid", days) is False
    # ...and so does the server, for a browser that does not check.
    page.execute_script("arguments[0].removeAttribute('min'); arguments[0].removeAttribute('max')", days)
    click(page.find_element(By.XPATH, "//button[.='Schedule deletion']"))
    assert "7 to 30 days" in page.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert cli(data_dir, "kms", "vault", "get", vault["id"])["lifecycleState"] == "ACTIVE"
    page.get(f"{url}/console/vaults/{vault['id']}")
    days = page.find_element(By.ID, "days")
    days.clear()
    days.send_keys("10")
    click(page.find_element(By.XPATH, "//button[.='Schedule deletion']"))
    assert heading(page) == "Schedule deletion of vault doomed?"
    assert "In 10 days" in page.page_source
    click(page.find_element(By.LINK_TEXT, "Back"))
    assert cli(data_dir, "kms", "vault", "get", vault["id"])["lifecycleState"] == "ACTIVE"
    days = page.find_element(By.ID, "days")
    days.clear()
    days.send_keys("10")
    click(page.find_element(By.XPATH, "//button[.='Schedule deletion']"))
    click(page.find_element(By.CSS_SELECTOR, "button.primary"))
    assert field(page, "State") == "PENDING_DELETION"
    assert cli(data_dir, "kms", "vault", "get", vault["id"])["lifecycleState"] == "PENDING_DELETION"
    click(page.find_element(By.XPATH, "//button[.='Cancel deletion']"))
    assert heading(page) == "Cancel the deletion of vault doomed?"
    click(page.find_element(By.CSS_SELECTOR, "button.primary"))
    assert field(page, "State") == "ACTIVE"


def test_read_only_users_see_but_cannot_act(page, server):
    url, data_dir = server
    s = status(data_dir)
    cli(data_dir, "iam", "group", "create", "Readers")
    cli(data_dir, "iam", "policy", "create", "readers", "--statement", "Allow group Readers to read vaults in tenancy",
        "--statement", "Allow group Readers to read keys in tenancy")
    add_console_user(data_dir, "reader", groups=["Readers"])
    before = key_get(data_dir, s["defaultKeyId"])["currentKeyVersion"]
    sign_in(page, url, user="reader")
    click(page.find_element(By.LINK_TEXT, "default"))
    assert page.find_elements(By.XPATH, "//button[.='Schedule deletion']") == []
    page.get(f"{url}/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}")
    assert field(page, "Current Key Version") == before
    assert page.find_elements(By.LINK_TEXT, "Rotate Key") == []
    # A forged rotation, with the reader's own valid CSRF token, is refused by the API's rules.
    post_with_own_csrf(page, f"/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}/rotate")
    assert heading(page) == "Read only"
    assert "may read key" in page.find_element(By.TAG_NAME, "main").text
    assert key_get(data_dir, s["defaultKeyId"])["currentKeyVersion"] == before
    # The confirmation pages say so too, with no button to press.
    for target in (f"/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}/confirm?action=rotate",
                   f"/console/vaults/{s['defaultVaultId']}/confirm-deletion?action=schedule&days=30"):
        page.get(url + target)
        assert heading(page) == "Read only", target
        assert page.find_elements(By.CSS_SELECTOR, "button.primary") == [], target
    # Only inspect: the lists, nothing more.
    cli(data_dir, "iam", "group", "create", "Inspectors")
    cli(data_dir, "iam", "policy", "create", "inspectors", "--statement",
        "Allow group Inspectors to inspect vaults in tenancy")
    add_console_user(data_dir, "inspector", groups=["Inspectors"])
    page.delete_all_cookies()
    sign_in(page, url, user="inspector")
    click(page.find_element(By.LINK_TEXT, "default"))
    assert heading(page) == "Not found"


def test_a_form_without_its_csrf_token_is_refused(page, server):
    url, data_dir = server
    s = status(data_dir)
    before = key_get(data_dir, s["defaultKeyId"])["currentKeyVersion"]
    sign_in(page, url)
    submit_script(page, """
        const f = document.createElement('form');
        f.method = 'post';
        f.action = arguments[0];
        document.body.appendChild(f);
        f.submit();""", f"/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}/rotate")
    assert heading(page) == "Refused"
    assert "CSRF" in page.page_source
    assert key_get(data_dir, s["defaultKeyId"])["currentKeyVersion"] == before


def test_sign_out_ends_the_session(page, server):
    url, _ = server
    sign_in(page, url)
    cookie = page.get_cookie("sealstore_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    click(page.find_element(By.XPATH, "//button[.='Sign out']"))
    assert page.current_url.endswith("/console/login")
    page.add_cookie({"name": "sealstore_console", "value": cookie["value"], "path": "/console"})
    page.get(url + "/console/vaults")
    assert page.current_url.endswith("/console/login"), "the old session must not work after sign-out"


def test_compliance_lists_keys_not_rotated_for_a_year_and_rotates_them(browser, tmp_path):
    data_dir = tmp_path / "data"
    with serving(data_dir):
        add_console_user(data_dir, "admin", groups=["Administrators"])
        s = status(data_dir)
    # 400 days later.
    with serving(data_dir, clock_offset_days=400) as url:
        browser.delete_all_cookies()
        sign_in(browser, url)
        click(browser.find_element(By.LINK_TEXT, "Compliance"))
        rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == 1, [r.text for r in rows]
        key = key_get(data_dir, s["defaultKeyId"])
        assert key["displayName"] in rows[0].text and "400" in rows[0].text
        click(rows[0].find_element(By.LINK_TEXT, "Rotate"))
        click(browser.find_element(By.CSS_SELECTOR, "button.primary"))
        assert "Key rotated." in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
        assert browser.find_elements(By.CSS_SELECTOR, "tbody tr") == []
        assert key_get(data_dir, s["defaultKeyId"])["currentKeyVersion"] != key["currentKeyVersion"]
        # A shorter limit than the default finds nothing either: the new version is new.
        browser.get(url + "/console/compliance?days=30")
        assert browser.find_elements(By.CSS_SELECTOR, "tbody tr") == []


def test_audit_page_shows_the_chain_verifies_and_pages_through_it(page, server):
    url, data_dir = server
    s = status(data_dir)
    cli(data_dir, "kms", "key", "rotate", s["defaultKeyId"])
    sign_in(page, url)
    click(page.find_element(By.LINK_TEXT, "Audit"))  # shown to who may read it
    assert heading(page) == "Audit log"
    assert "The hash chain verifies" in page.find_element(By.CSS_SELECTOR, "[role=status]").text
    rows = page.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert rows, "the newest page has entries"
    assert any("CreateKeyVersion" in r.text and s["defaultKeyId"] in ids_in(r) for r in rows), [r.text for r in rows][-5:]
    newest_first_seq = int(rows[0].find_element(By.TAG_NAME, "td").text)
    if newest_first_seq > 1:
        click(page.find_element(By.LINK_TEXT, "Older"))
        older = page.find_elements(By.CSS_SELECTOR, "tbody tr")
        seqs = [int(r.find_element(By.TAG_NAME, "td").text) for r in older]
        assert newest_first_seq - 1 in seqs and max(seqs) < newest_first_seq + 50
    # A user whose policies do not grant `read audit-events` sees nothing of it.
    cli(data_dir, "iam", "group", "create", "KeyReaders")
    cli(data_dir, "iam", "policy", "create", "key-readers", "--statement", "Allow group KeyReaders to read keys in tenancy")
    add_console_user(data_dir, "keyreader", groups=["KeyReaders"])
    page.delete_all_cookies()
    sign_in(page, url, user="keyreader")
    assert page.find_elements(By.LINK_TEXT, "Audit") == [], "no Audit link for who may not read it"
    page.get(url + "/console/audit")
    assert heading(page) == "Not found"


def test_console_listen_moves_the_console_to_its_own_address(tmp_path):
    data_dir = tmp_path / "data"
    with serving(data_dir, args=["--console-listen", "127.0.0.1:0"]) as kms_url:
        console_url = json.loads((data_dir / "serve.json").read_text())["console"]
        assert console_url.endswith("/console/") and not console_url.startswith(kms_url)

        def status_of(url):
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert status_of(console_url + "login") == 200
        assert status_of(kms_url + "/console/login") == 404
        base = console_url.removesuffix("/console/")
        assert status_of(base + "/20180608/vaults?compartmentId=x") == 404
        # The API still answers on its own address (401: unsigned).
        assert status_of(kms_url + "/20180608/vaults?compartmentId=x") == 401


def test_the_vault_page_shows_replication_in_both_regions(browser, tmp_path):
    from test_replication import Region, register, replicated_vault  # tests/kms

    r1, r2 = Region(tmp_path, "r1"), Region(tmp_path, "r2")
    try:
        register(r1, r2)
        register(r2, r1)
        vault, _ = replicated_vault(r1, r2)
        for region in (r1, r2):
            add_console_user(region.dir, "admin", groups=["Administrators"])
        browser.delete_all_cookies()
        sign_in(browser, r1.url)
        browser.get(f"{r1.url}/console/vaults/{vault}")
        table = browser.find_element(By.XPATH, "//h2[.='Replicas']/following::table[1]")
        assert "r2" in table.text and "CREATED" in table.text, table.text
        browser.delete_all_cookies()
        sign_in(browser, r2.url)
        browser.get(f"{r2.url}/console/vaults/{vault}")
        replication = field(browser, "Replication")
        assert replication.startswith("A replica of the vault in region r1"), replication
    finally:
        r1.stop()
        r2.stop()


def test_five_wrong_passwords_lock_the_name_out_even_for_the_right_one(server):
    url, data_dir = server
    add_console_user(data_dir, "guessed")
    add_console_user(data_dir, "bystander")
    for _ in range(5):
        assert sign_in_status(url, "guessed", "a wrong guess!!")[0] == 401
    status, page = sign_in_status(url, "guessed", PASSWORD)
    assert status == 429 and "Too many failed sign-ins" in page
    # Other names are not affected.
    assert sign_in_status(url, "bystander", PASSWORD)[0] == 303


def test_a_lockout_outlives_a_restart_of_the_server(tmp_path):
    data_dir = tmp_path / "data"
    with serving(data_dir) as url:
        add_console_user(data_dir, "guessed")
        for _ in range(5):
            assert sign_in_status(url, "guessed", "a wrong guess!!")[0] == 401
    with serving(data_dir) as url:
        status, page = sign_in_status(url, "guessed", PASSWORD)
        assert status == 429 and "Too many failed sign-ins" in page


def sign_in_status(url, user, password):
    """The status and page of a sign-in POST from the sign-in page, not following the redirect
    of a success (303)."""
    cookie, token = sign_in_form(url)
    body = urllib.parse.urlencode({"username": user, "password": password, "signin": token}).encode()
    request = urllib.request.Request(url + "/console/login", data=body, method="POST", headers={"cookie": cookie})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sign_in_form(url):
    """What a browser gets from the sign-in page: its sign-in cookie and the form's token."""
    with urllib.request.urlopen(url + "/console/login", timeout=30) as r:
        cookie = r.headers["set-cookie"].split(";")[0]
        page = r.read().decode()
    token = page.split('name="signin" value="')[1].split('"')[0]
    return cookie, token


def test_a_sign_in_form_from_elsewhere_is_refused_and_audited(server):
    """Login CSRF: a sign-in POST without the token of this console's sign-in page (a form on
    another site, submitted with the victim's browser) is refused, even with the right password,
    and audited; with the page's token and cookie it works."""
    url, data_dir = server
    add_console_user(data_dir, "csrf-target")

    def post(fields, cookie=None):
        request = urllib.request.Request(url + "/console/login", data=urllib.parse.urlencode(fields).encode(),
                                         method="POST", headers={"cookie": cookie} if cookie else {})
        try:
            with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    credentials = {"username": "csrf-target", "password": PASSWORD}
    assert post(credentials) == 403
    cookie, token = sign_in_form(url)
    assert post({**credentials, "signin": "0" * len(token)}, cookie) == 403
    assert post({**credentials, "signin": token}) == 403  # the token without its cookie
    assert post({**credentials, "signin": token}, cookie) == 303
    log = cli(data_dir, "kms", "audit", "list", "--limit", "100000")
    refused = [e for e in log if e["operation"] == "ConsoleSignIn" and e.get("principalName") == "csrf-target"]
    assert len(refused) == 3 and all("sign-in token" in e["message"] for e in refused), refused


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Lets a 303 through as the answer (its Set-Cookie is what counts)."""

    def redirect_request(self, *args, **kwargs):
        return None


def test_import_a_key_shows_its_shape_public_key_and_origin(page, server):
    """Bring your own key from the console: the wrapping key is on the import page, material
    wrapped under it here becomes a key whose shape, public key and origin the key page shows;
    material that does not unwrap is refused on the form and creates nothing."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
    from selenium.webdriver.support.ui import Select
    import base64

    url, data_dir = server
    vault = status(data_dir)["defaultVaultId"]
    sign_in(page, url)
    page.get(f"{url}/console/vaults/{vault}")
    click(page.find_element(By.LINK_TEXT, "Import a key"))
    assert heading(page).startswith("Import a key")
    wrapping = serialization.load_pem_public_key(page.find_element(By.CSS_SELECTOR, "pre.pem").text.encode())
    assert wrapping.key_size == 4096
    ours = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    material = ours.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    temporary = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = wrapping.encrypt(temporary, oaep) + aes_key_wrap_with_padding(temporary, material)

    def fill(name, blob):
        page.find_element(By.ID, "name").send_keys(name)
        Select(page.find_element(By.ID, "shape")).select_by_value("RSA-2048")
        Select(page.find_element(By.ID, "algorithm")).select_by_value("RSA_OAEP_AES_SHA256")
        page.execute_script("document.getElementById('material').value = arguments[0]", base64.b64encode(blob).decode())
        click(page.find_element(By.CSS_SELECTOR, "button.primary"))

    before = cli(data_dir, "kms", "key", "list")
    bad = bytearray(wrapped)
    bad[-1] ^= 1
    fill("console-bad", bytes(bad))
    assert "does not unwrap" in page.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert len(cli(data_dir, "kms", "key", "list")) == len(before)

    page.get(f"{url}/console/vaults/{vault}/import")
    fill("console-byok", wrapped)
    assert "Key imported." in page.find_element(By.CSS_SELECTOR, "[role=status]").text
    assert field(page, "Shape") == "RSA-2048"
    assert field(page, "Current version origin") == "Imported (EXTERNAL)"
    shown = page.find_element(By.XPATH, "//h2[.='Public key (current version)']/following::pre[1]").text
    ours_pem = ours.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert shown.strip() == ours_pem.strip()
    click(page.find_element(By.LINK_TEXT, "Versions"))
    assert "EXTERNAL" in page.find_element(By.CSS_SELECTOR, "tbody tr").text
    page.get(f"{url}/console/vaults/{vault}")
    table = page.find_element(By.XPATH, "//h2[.='Master Encryption Keys']/following::table[1]")
    assert "RSA-2048" in table.text and "AES-256" in table.text


def test_refused_actions_and_sign_ins_are_audited_and_the_audit_page_shows_only_them(page, server):
    """A read-only user's forged rotation, a wrong password and a sign-in as nobody each leave a
    DENIED entry in the hash chain — who by name and id, from where, what, why — and the Audit
    page's Denied view lists exactly such entries."""
    url, data_dir = server
    s = status(data_dir)
    cli(data_dir, "iam", "group", "create", "Auditees")
    cli(data_dir, "iam", "policy", "create", "auditees", "--statement", "Allow group Auditees to read keys in tenancy",
        "--statement", "Allow group Auditees to read vaults in tenancy")
    add_console_user(data_dir, "auditee", groups=["Auditees"])
    auditee = next(u for u in cli(data_dir, "iam", "user", "list") if u["name"] == "auditee")
    sign_in(page, url, user="auditee", password="not the password")
    sign_in(page, url, user="nobody-at-all", password="guess")
    sign_in(page, url, user="auditee")
    page.get(f"{url}/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}")
    post_with_own_csrf(page, f"/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}/rotate")
    assert heading(page) == "Read only"

    log = cli(data_dir, "kms", "audit", "list", "--limit", "100000")
    denied = [e for e in log if e["result"] == "DENIED"]
    rotate = [e for e in denied if e["operation"].endswith(f"/keys/{s['defaultKeyId']}/keyVersions")]
    assert rotate, denied
    assert rotate[-1]["principal"] == auditee["id"] and rotate[-1]["principalName"] == "auditee"
    assert rotate[-1]["source"].startswith("console 127.0.0.1:")
    assert "needs manage keys" in rotate[-1]["message"]
    assert rotate[-1]["keyId"] == s["defaultKeyId"]
    sign_ins = [e for e in denied if e["operation"] == "ConsoleSignIn"]
    assert any(e["principal"] == auditee["id"] and e["message"] == "wrong password" for e in sign_ins), sign_ins
    assert any(e["principal"] == "anonymous" and e["principalName"] == "nobody-at-all" for e in sign_ins), sign_ins
    assert cli(data_dir, "kms", "audit", "verify")["failure"] is None
    # IAM administration names what it changed.
    on = {(e["operation"], e.get("resource")) for e in log}
    assert {("CreateUser", "user auditee"), ("CreateGroup", "group Auditees"), ("CreatePolicy", "policy auditees"),
            ("SetConsolePassword", "user auditee")} <= on, on

    page.delete_all_cookies()
    sign_in(page, url)
    created = next(e["seq"] for e in log if e["operation"] == "CreateUser" and e.get("resource") == "user auditee")
    page.get(f"{url}/console/audit?result=SUCCEEDED&start={created}")
    assert any("CreateUser" in r.text and "user auditee" in r.text
               for r in page.find_elements(By.CSS_SELECTOR, "tbody tr"))
    page.get(f"{url}/console/audit")
    click(page.find_element(By.LINK_TEXT, "Denied"))
    rows = page.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert rows and all("DENIED" in r.text for r in rows)
    text = "\n".join(r.text for r in rows)
    assert "auditee" in text and "nobody-at-all" in text and "needs manage keys" in text
    # Who is named in every entry, not only in refusals: the admin's rotation from the console.
    page.get(f"{url}/console/vaults/{s['defaultVaultId']}/keys/{s['defaultKeyId']}/confirm?action=rotate")
    click(page.find_element(By.CSS_SELECTOR, "button.primary"))
    page.get(f"{url}/console/audit?result=SUCCEEDED&start={len(log)}")
    rotated = [r.text for r in page.find_elements(By.CSS_SELECTOR, "tbody tr") if "CreateKeyVersion" in r.text]
    assert rotated and "admin" in rotated[-1], rotated


def test_compliance_refuses_a_maximum_age_it_cannot_use(page, server):
    url, _ = server
    sign_in(page, url)
    for bad in ("0", "-5", "many"):
        page.get(f"{url}/console/compliance?days={bad}")
        assert heading(page) == "Refused", bad
        assert "days must be a whole number" in page.find_element(By.TAG_NAME, "main").text
    page.get(f"{url}/console/compliance?days=30")
    assert heading(page) != "Refused"


def test_many_names_guessed_from_one_address_lock_that_address_out(tmp_path):
    """Per-address lockout: a guesser spraying user names from one address (20 failures) is
    refused for a minute, whatever name and password it tries next; audited."""
    data_dir = tmp_path / "data"
    with serving(data_dir) as url:
        add_console_user(data_dir, "sprayed")

        def attempt(user, password):
            cookie, token = sign_in_form(url)
            body = urllib.parse.urlencode({"username": user, "password": password, "signin": token}).encode()
            request = urllib.request.Request(url + "/console/login", data=body, method="POST",
                                             headers={"cookie": cookie})
            try:
                with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        for i in range(20):
            assert attempt(f"guess-{i}", "wrong") == 401
        assert attempt("sprayed", PASSWORD) == 429
        log = cli(data_dir, "kms", "audit", "list", "--limit", "100000")
        assert any("from this address" in (e.get("message") or "") for e in log if e["result"] == "DENIED")


def test_every_page_passes_axe_with_no_serious_or_critical_finding(page, server):
    """axe-core (4.9, bundled by selenium-axe-python) on every console page, at desktop and
    phone width: no finding of impact serious or critical."""
    from selenium_axe_python import Axe

    url, data_dir = server
    s = status(data_dir)
    vault, key = s["defaultVaultId"], s["defaultKeyId"]
    pages = ["/console/vaults", f"/console/vaults/{vault}", f"/console/vaults/{vault}/keys/{key}",
             f"/console/vaults/{vault}/keys/{key}?tab=versions", f"/console/vaults/{vault}/import",
             f"/console/vaults/{vault}/keys/{key}/confirm?action=rotate",
             f"/console/vaults/{vault}/confirm-deletion?action=schedule&days=30",
             "/console/compliance", "/console/audit", "/console/audit?result=DENIED"]
    findings = []
    try:
        for width in (1280, 390):
            page.set_window_size(width, 900)
            page.delete_all_cookies()
            page.get(url + "/console/login")
            targets = ["/console/login"]
            for target in targets + pages:
                if target == pages[0]:
                    sign_in(page, url)
                page.get(url + target)
                axe = Axe(page)
                axe.inject()
                result = axe.run()
                findings += [(width, target, v["id"], v["impact"], v["help"]) for v in result["violations"]
                             if v["impact"] in ("serious", "critical")]
    finally:
        page.set_window_size(1280, 900)
    assert not findings, findings


def test_set_password_says_what_it_did_and_a_redirected_log_has_no_colour_codes(tmp_path):
    data_dir = tmp_path / "data"
    cli(data_dir, "iam", "user", "add", "pw-user")
    out = subprocess.run([str(BINARY), "iam", "user", "set-password", "pw-user"], input=PASSWORD + "\n",
                         env=dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir)), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "console password set for user pw-user", out.stdout
    log = tmp_path / "serve.log"
    with log.open("w") as f:
        proc = subprocess.Popen([str(BINARY), "serve", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0"],
                                env=dict(os.environ, SEALSTORE_DATA_DIR=str(data_dir)), stdout=subprocess.DEVNULL,
                                stderr=f)
        try:
            deadline = time.time() + 30
            while not (data_dir / "serve.json").exists():
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    text = log.read_text()
    assert "INFO" in text and "\x1b[" not in text, text[:300]
