"""A TLS node with its web console on, and the two clients the console tests use: a plain HTTPS
client (http.client, trusting the node folder's development CA) and headless Chromium.

Chromium is Debian's ``chromium`` with ``chromium-driver`` (``make test`` installs them when
missing and it can; see the README). A machine without them fails the browser tests with the
command that installs them: the tests never skip.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import re
import shutil
import ssl
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from veil_server.api.server import RunningNode, run_server
from veil_server.cli.demo import init_node_folder
from veil_server.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "console-screenshots"
INSTALL_HINT = ("the browser tests need Debian's chromium and chromium-driver: `make browser` installs them "
                "(as root: apt-get install chromium chromium-driver), or point VEIL_CHROMIUM and "
                "VEIL_CHROMEDRIVER at a Chromium and its matching ChromeDriver")
# As root, without a sandbox; no background traffic (this machine's network is closed).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1800", "--force-device-scale-factor=1")


@dataclass
class ConsoleNode:
    folder: Path
    tokens: dict[str, str]
    running: RunningNode
    ca: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ca = self.folder / "tls" / "ca.pem"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.running.console.port}"

    @property
    def target(self) -> str:
        return self.running.target


def enable_console(folder: Path, extra: str = "") -> None:
    cfg = folder / "veil.toml"
    cfg.write_text(cfg.read_text() + f'\n[console]\nenabled = true\nlisten = "127.0.0.1:0"\n{extra}')


@contextlib.contextmanager
def console_node(folder: Path, *, rows: int = 2_000, extra: str = "") -> Iterator[ConsoleNode]:
    tokens = init_node_folder(folder, rows=rows, tls=True)
    enable_console(folder, extra)
    with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", mtls_listen="127.0.0.1:0",
                    grace=1.0) as running:
        yield ConsoleNode(folder, tokens, running)


# -- a plain HTTPS client ---------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def reason(self) -> str | None:
        return self.headers.get("X-Veil-Reason")

    def cookies(self) -> dict[str, str]:
        out = {}
        for c in self.headers.get_all("Set-Cookie") or []:
            name, _, rest = c.partition("=")
            out[name] = rest.split(";")[0]
        return out

    def field(self, name: str) -> str:
        m = re.search(rf'name="{name}" value="([^"]*)"', self.body)
        assert m, f"no field {name} in the page"
        return m.group(1)


class Client:
    """One browser-like client: keeps its cookies, sends forms the way a browser does."""

    def __init__(self, node: ConsoleNode, *, cert: tuple[Path, Path] | None = None) -> None:
        self.node = node
        self.ctx = ssl.create_default_context(cafile=str(node.ca))
        if cert is not None:
            self.ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        self.jar: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPSConnection("127.0.0.1", self.node.running.console.port, context=self.ctx, timeout=30)
        h = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.jar.items())} if self.jar else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        reply = Reply(r.status, r.headers, r.read().decode("utf-8", "replace"))
        conn.close()
        for k, v in reply.cookies().items():
            if v:
                self.jar[k] = v
            else:
                self.jar.pop(k, None)
        return reply

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str], **kw) -> Reply:
        return self.request("POST", path, form, **kw)

    def sign_in(self, who: str) -> Reply:
        page = self.get("/login")
        return self.post("/login", {"nonce": page.field("nonce"), "with": "token", "token": self.node.tokens[who]})

    def csrf(self, path: str = "/") -> str:
        return self.get(path).field("csrf")


# -- headless Chromium ------------------------------------------------------------------------

def chromium_paths() -> tuple[str, str]:
    browser = os.environ.get("VEIL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("VEIL_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return browser, driver


def spki_pin(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the node's certificate: Chromium trusts exactly
    this key for the test, instead of ignoring certificate errors wholesale."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextlib.contextmanager
def chromium(node: ConsoleNode) -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: `make install` installs the test tools", pytrace=False)
    browser, driver_path = chromium_paths()
    profile = tempfile.mkdtemp(prefix="veil-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--ignore-certificate-errors-spki-list={spki_pin(node.folder / 'tls' / 'node.pem')}")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
