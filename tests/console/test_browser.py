"""The console in a real browser: Debian's ``chromium`` and ``chromium-driver``, driven by
``selenium``, against the app served by the ``live_server`` fixture.

Covers signing in through the e-mailed link, every page with seeded data, a deactivate round
trip, a revoke, a CSRF refusal and the unauthenticated redirect, and saves a full-page
screenshot of every page under the run's artefacts: ``$CUELINE_TEST_ARTIFACTS`` when set, else a
directory under pytest's tmp.

``make console-screenshots`` remakes the docs' images: ``CUELINE_CONSOLE_DOCS=1`` takes 1280x800
viewport shots on one backend and writes them as ``<page>.png``.  The directory used is named in
the run's summary.

``make system-deps`` installs the two Debian packages; where they are missing (and cannot be
installed) the tests skip saying so.  Chromium runs headless with no network of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from app.console import auth
from tests.console.conftest import ADMIN, ADMINS, SCREENSHOTS, seed_showcase
from tests.helpers import SERVICE_TOKEN, key_headers

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[test]')")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# CUELINE_CHROMIUM / CUELINE_CHROMEDRIVER point at other binaries (default: Debian's, on PATH).
CHROMIUM = (os.environ.get("CUELINE_CHROMIUM") or shutil.which("chromium")
            or "/usr/bin/chromium")
CHROMEDRIVER = (os.environ.get("CUELINE_CHROMEDRIVER") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1280,800", "--lang=en-US", "--hide-scrollbars",
                  "--force-device-scale-factor=1")
# CUELINE_CONSOLE_DOCS=1 (``make console-screenshots``): viewport-sized 1280x800 shots meant for
# docs/images/console/; otherwise each shot is the whole page, for looking at a failed run.
DOCS_MODE = os.environ.get("CUELINE_CONSOLE_DOCS") == "1"
WINDOW = (1280, 800)
LINK = re.compile(r"https?://\S+?(/console/login/link\?token=[0-9a-f]{64})")

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="Debian's chromium and chromium-driver are not installed; `make system-deps` "
           "installs them (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, with a fresh profile; cookies cleared per test."""
    profile = tempfile.mkdtemp(prefix="cueline-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # Selenium Manager must not look for drivers online: both binaries are given.
    os.environ.setdefault("SE_OFFLINE", "true")
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                                  options=options)
    except Exception as exc:  # noqa: BLE001 - a broken browser install is a skip, said plainly
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"chromium could not be started: {type(exc).__name__}: {exc}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, request) -> Path:
    """Where the screenshots go: ``$CUELINE_TEST_ARTIFACTS`` or a directory under pytest's tmp,
    said in the run's summary either way."""
    configured = os.environ.get("CUELINE_TEST_ARTIFACTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    request.config.stash.setdefault(SCREENSHOTS, set()).add(str(path.resolve()))
    return path


def _across_navigation(condition):
    """``condition``, answering "not yet" while a form post replaces the page: chromedriver then
    reports the element found a moment earlier as a node that "does not belong to the
    document" (a plain WebDriverException, not a stale-element one)."""
    def check(driver):
        try:
            return condition(driver)
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return False
            raise
    return check


class Console:
    """The browser pointed at one live server, with the helpers the tests share."""

    def __init__(self, driver, url: str, artefacts: Path, backend: str):
        self.driver, self.url, self.artefacts, self.backend = driver, url, artefacts, backend

    def open(self, path: str):
        self.driver.get(self.url + path)

    def wait_for(self, css: str, text: str | None = None, timeout: float = 10):
        wait = WebDriverWait(self.driver, timeout)
        if text is None:
            return wait.until(_across_navigation(
                ec.visibility_of_element_located((By.CSS_SELECTOR, css))))
        wait.until(_across_navigation(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)))
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def click(self, css: str):
        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def accept_confirmation(self):
        WebDriverWait(self.driver, 5).until(ec.alert_is_present())
        self.driver.switch_to.alert.accept()

    def screenshot(self, name: str) -> Path:
        """A PNG of the page as ``<artefacts>/<name>.png`` (``<name>-<backend>.png`` outside
        docs mode, so the two backends' runs do not overwrite each other): the whole page, or
        the 1280x800 viewport in docs mode."""
        driver = self.driver
        path = self.artefacts / (f"{name}.png" if DOCS_MODE else f"{name}-{self.backend}.png")
        if DOCS_MODE:
            # Make the viewport (not the window, which includes no-longer-visible chrome) 1280x800.
            inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
            outer = driver.get_window_size()
            driver.set_window_size(outer["width"] + WINDOW[0] - inner[0],
                                   outer["height"] + WINDOW[1] - inner[1])
            assert driver.save_screenshot(str(path)), path
        else:
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(WINDOW[0], max(WINDOW[1], min(int(height) + 40, 4000)))
            assert driver.save_screenshot(str(path)), path
            driver.set_window_size(*WINDOW)
        assert path.stat().st_size > 5000  # a rendered page, not an empty canvas
        return path

    def sign_in(self, mailbox: list, email: str = ADMIN, screenshots: bool = False):
        """Sign in through the pages, following the link from the (captured) e-mail."""
        self.open("/console/login")
        self.wait_for("#email").send_keys(email)
        if screenshots:
            self.screenshot("login")
        self.click("form button[type=submit]")
        self.wait_for("main h1", "Check your inbox")
        link = LINK.search(mailbox[-1][1]).group(1)
        self.open(link)
        self.wait_for("#confirm-sign-in")
        if screenshots:
            self.screenshot("login-confirm")
        self.click("#confirm-sign-in")
        self.wait_for("main h1", "Overview")


@pytest.fixture
def console(browser, make_app, live_server, artefacts, backend, monkeypatch):
    mailbox: list = []
    monkeypatch.setattr(auth, "send_mail", lambda to, subject, text: mailbox.append((to, text)))
    app = make_app(CONSOLE_ENABLED=True, CONSOLE_ADMINS=ADMINS, EXTERNAL_AUTH_BACKEND=True,
                   INTERNAL_AUTH_TOKEN=SERVICE_TOKEN, BASE_URL="http://127.0.0.1")
    server = live_server(app)
    browser.delete_all_cookies()
    helper = Console(browser, server.url, artefacts, backend)
    helper.app, helper.mailbox = app, mailbox
    helper.seed = seed_showcase(app, app.test_client())
    yield helper
    try:
        browser.delete_all_cookies()
    except Exception:  # noqa: BLE001 - the page may be gone already
        pass


def test_unauthenticated_visitors_are_sent_to_sign_in(console):
    console.open("/console/users")
    console.wait_for("main h1", "Sign in to the console")
    assert console.driver.current_url.endswith("/console/login")
    assert "Users" not in console.driver.find_element(By.TAG_NAME, "header").text


def test_sign_in_and_every_page_renders_with_seeded_data(console):
    seed = console.seed
    console.sign_in(console.mailbox, screenshots=True)
    pages = [
        ("overview", "/console/", ["Database", "Background worker", "Queue depths",
                                   "Delivery outcomes, last 24 hours"]),
        ("users", "/console/users", [seed.email, "deactivated"]),
        ("user", f"/console/users/{seed.user_id}", [seed.user_id, "Deactivate"]),
        ("principals", "/console/principals", [seed.principal, "Rotate (add a key)", "Revoke"]),
        ("cues", "/console/cues", ["nightly-report", "hourly-sync"]),
        ("cue", f"/console/cues/{seed.cue_id}", ["Execution timeline", seed.failure_error,
                                                 "Pause", "Fire now"]),
        ("failures", "/console/failures", [seed.failure_error, "missed"]),
        ("messages", "/console/messages", [seed.message_subject, "queued"]),
        ("audit", "/console/audit", ["console:" + ADMIN, "billing-backend"]),
    ]
    for name, path, expected in pages:
        console.open(path)
        console.wait_for("main h1")
        body = console.text()
        for text in expected:
            assert text in body, (name, text)
        console.screenshot(name)
    # The charts are inline SVG with a bar per outcome.
    console.open("/console/")
    console.driver.execute_script("document.getElementById('outcomes-h').scrollIntoView()")
    console.screenshot("overview-charts")
    bars = console.driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert len(bars) >= 10


def test_deactivate_round_trip(console):
    seed = console.seed
    client = console.app.test_client()
    console.sign_in(console.mailbox)
    console.open(f"/console/users/{seed.user_id}")
    console.click(".actions button.danger")
    console.accept_confirmation()
    console.wait_for(".notice", "The user is deactivated")
    assert "deactivated" in console.driver.find_element(By.CSS_SELECTOR, "main h1").text
    me = client.get("/v1/auth/me", headers=key_headers(seed.api_key))
    assert me.get_json()["error"]["code"] == "user_inactive"
    console.click(".actions button")
    console.wait_for(".notice", "The user is active again")
    assert client.get("/v1/auth/me", headers=key_headers(seed.api_key)).status_code == 200


def test_revoke_a_service_principal(console):
    seed = console.seed
    client = console.app.test_client()
    internal = f"/v1/internal/users/{seed.user_id}"
    assert client.get(internal, headers={"X-Service-Key": seed.principal_key}).status_code == 200
    console.sign_in(console.mailbox)
    console.open("/console/principals")
    section = f"section[aria-labelledby='p-{seed.principal}']"
    console.click(f"{section} form[action$='/rotate'] button")
    key = console.wait_for("#new-key").text
    assert key.startswith("svc_")
    console.screenshot("principal-key")
    console.open("/console/principals")
    console.click(f"{section} button.danger")
    console.accept_confirmation()
    console.wait_for(".notice", "revoked")
    for token in (seed.principal_key, key):
        assert client.get(internal, headers={"X-Service-Key": token}).status_code == 401


def test_a_forged_form_is_refused(console):
    seed = console.seed
    client = console.app.test_client()
    console.sign_in(console.mailbox)
    console.open(f"/console/users/{seed.user_id}")
    console.wait_for(".actions button.danger")
    console.driver.execute_script(
        "document.querySelectorAll('input[name=csrf_token]')"
        ".forEach(function (i) { i.value = '0'.repeat(64); });")
    console.click(".actions button.danger")
    console.accept_confirmation()
    console.wait_for("main h1", "Refused")
    assert "csrf_failed" in console.text()
    console.screenshot("csrf-refused")
    assert client.get("/v1/auth/me", headers=key_headers(seed.api_key)).status_code == 200


def test_pages_work_without_javascript(console, browser):
    """The console's one script only adds confirmations: with scripts blocked by the page's own
    policy a form still submits (no confirmation), and every page still renders."""
    console.sign_in(console.mailbox)
    try:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        console.open(f"/console/users/{console.seed.user_id}")
        console.click(".actions button.danger")
        console.wait_for(".notice", "The user is deactivated")
        console.open("/console/")
        assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_chromium_binaries_are_debians():
    """The suite drives the distribution's browser, not a downloaded build."""
    if os.environ.get("CUELINE_CHROMEDRIVER"):
        pytest.skip("CUELINE_CHROMEDRIVER names another chromedriver on purpose")
    output = subprocess.run(["dpkg", "-S", os.path.realpath(CHROMEDRIVER)], capture_output=True,
                            text=True, check=False).stdout
    if not output:
        pytest.skip("dpkg is not available to tell where chromedriver comes from")
    assert "chromium-driver" in output

