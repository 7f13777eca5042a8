"""The web console in a real browser (headless Chromium) against a real node over TLS.

One node and one browser for the module, the people of ``veil node init``'s folder: the owner
olivia registers nothing here (her dataset comes over gRPC, as an owner's tooling would send it),
the reviewer rita lists it in the console, olivia grants alice its use in the console, alice's SDK
submits a query that waits for review, olivia approves it in the console with a reason and the
SDK receives the result; the auditor audra finds that approval in the log and sees its inclusion
proof verified; an analyst's token is refused everywhere, so are pages outside one's role and a
forged CSRF token. Every page visited is saved as a screenshot under build/console-screenshots/
for a person to look at, and no page ever shows a value of the released result.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

import veil
from veil_server.cli.demo import patients_table, write_table

from .console_support import SCREENSHOTS, chromium, console_node

SPEC = {
    "name": "admissions", "source": "", "description": "Admissions of a second hospital",
    "purposes": ["research", "planning"], "classification": "sensitive", "rights": ["holding", "processing"],
    "auto_approve": False, "approvals_required": 1, "min_group_size": 20,
    "columns": [
        {"name": "patient_id", "type": "integer", "controls": ["hidden"]},
        {"name": "region", "type": "text", "controls": ["group", "filter"],
         "categories": ["North", "South", "East", "West", "Central", "Coast", "Highlands", "Islands"]},
        {"name": "age", "type": "integer", "controls": ["filter", "aggregate"], "range": [0, 110]},
        {"name": "cost", "type": "decimal", "controls": ["aggregate"], "range": [0, 500000], "scale": 2},
    ],
}
SQL = "SELECT region, COUNT(*) AS n, AVG(cost) AS avg_cost FROM admissions GROUP BY region"
OWNER_PAGES = ["/datasets", "/datasets/admissions", "/listings", "/reviews", "/grants", "/usage", "/usage.csv"]
AUDITOR_PAGES = ["/audit", "/audit/entries/0", "/audit/checkpoints", "/audit/key"]
# Controls a page may show without a visible label of their own (the hidden CSRF fields).
UNLABELLED = """
return Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(e => e.type !== 'hidden')
  .filter(e => !(e.id && document.querySelector('label[for="' + e.id + '"]')) && !e.getAttribute('aria-label'))
  .map(e => e.name || e.outerHTML.slice(0, 60));
"""


class Pages:
    """The browser, with a screenshot and the basic accessibility checks after every page."""

    def __init__(self, driver, base: str) -> None:
        self.d, self.base, self.n = driver, base, 0
        self.sources: list[str] = []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob("*.png"):
            old.unlink()

    def open(self, path: str) -> None:
        self.d.get(self.base + path)

    def shot(self, name: str) -> None:
        self.n += 1
        height = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(1280, max(900, min(int(height) + 40, 6000)))
        self.d.save_screenshot(str(SCREENSHOTS / f"{self.n:02d}-{name}.png"))
        self.sources.append(self.d.find_element("tag name", "body").text)
        assert self.d.execute_script(UNLABELLED) == [], f"controls without a label on {name}"

    def text(self) -> str:
        return self.d.find_element("tag name", "main").text

    def fill_and_submit(self, form_css: str, **fields: str) -> None:
        from selenium.webdriver.common.keys import Keys

        form = self.d.find_element("css selector", form_css)
        last = None
        for name, value in fields.items():
            last = form.find_element("name", name)
            if last.tag_name == "select":
                from selenium.webdriver.support.ui import Select

                Select(last).select_by_value(value)
            else:
                last.clear()
                last.send_keys(value)
        last.send_keys(Keys.ENTER)  # by keyboard, as a person without a mouse would

    def sign_in(self, token: str) -> None:
        self.open("/login")
        self.d.delete_all_cookies()
        self.open("/login")
        self.fill_and_submit("form.card", token=token)

    def sign_out(self) -> None:
        self.d.find_element("css selector", "form.signout button").click()


@pytest.fixture(scope="module")
def world(tmp_path_factory, analyst_home):
    folder = tmp_path_factory.mktemp("console")
    with console_node(folder / "node") as node:
        write_table(patients_table(4_000, seed=7), folder / "admissions.csv")
        SPEC["source"] = str(folder / "admissions.csv")
        with veil.connect(node.target, token=node.tokens["olivia"], ca=node.ca, home=analyst_home) as olivia:
            olivia.governance.register(SPEC)
            olivia.governance.submit("admissions", "ready for the committee")
        with chromium(node) as driver:
            yield node, Pages(driver, node.url), analyst_home


def test_keyboard_first_and_the_sign_in_page(world):
    node, pages, _ = world
    pages.open("/")
    assert "/login" in pages.d.current_url  # no session: the sign-in page
    from selenium.webdriver.common.keys import Keys

    pages.d.find_element("tag name", "body").send_keys(Keys.TAB)
    assert pages.d.switch_to.active_element.text == "Skip to content"
    pages.shot("sign-in")


def test_a_reviewer_lists_a_dataset(world):
    node, pages, _ = world
    pages.sign_in(node.tokens["rita"])
    pages.shot("reviewer-overview")
    pages.open("/listings")
    assert "admissions version 1" in pages.text()
    pages.shot("reviewer-listing-queue")
    pages.fill_and_submit("form[action='/datasets/admissions/approve']",
                          reason="schema, rules and purposes reviewed by the committee")
    assert "datasets/admissions version 1 listed: now LISTED" in pages.text()
    pages.open("/datasets/admissions")
    text = pages.text()
    assert "LISTED" in text and "listed by rita" in text and "differential privacy" in text
    assert re.search(r"Certificate [0-9a-f]{64}", text)
    pages.shot("reviewer-dataset-listed")
    pages.open("/datasets")
    pages.shot("reviewer-datasets")
    pages.sign_out()


def test_an_owner_grants_and_approves_and_the_analyst_receives_the_result(world):
    node, pages, home = world
    pages.sign_in(node.tokens["olivia"])
    pages.open("/grants")
    pages.fill_and_submit("form[action='/grants']", principal="alice", dataset="admissions", purpose="research",
                          max_queries="10")
    assert "may query datasets/admissions for research" in pages.text()
    pages.shot("owner-grants")

    with veil.connect(node.target, token=node.tokens["alice"], ca=node.ca, home=home) as alice:
        info = alice.submit(SQL, purpose="research")
        assert info.state == "PENDING_APPROVAL"
        result: dict = {}
        waiter = threading.Thread(target=lambda: result.setdefault("df", alice.wait(info.id, timeout=60)))
        waiter.start()

        pages.open("/reviews")
        assert info.id[:12] in pages.text() and "0 of 1" in pages.text()
        pages.shot("owner-pending-queries")
        pages.open(f"/reviews/{info.id}")
        text = pages.text()
        assert "GROUP BY" in text and "Expected groups" in text and "ε 0.5" in text
        assert "region" in text and "cost" in text  # columns touched
        pages.shot("owner-pending-query")
        pages.fill_and_submit(f"form[action='/reviews/{info.id}/approve']", reason="fits the research protocol")
        assert f"queries/{info.id} approved" in pages.text()
        pages.shot("owner-after-approval")
        waiter.join(60)
        df = result["df"]
    assert len(df) == 8 and set(df.columns) >= {"region", "n", "avg_cost"}  # decrypted by the SDK

    pages.open("/usage?period=1h")
    text = pages.text()
    assert "alice" in text and "admissions" in text and "0.5" in text
    assert pages.d.find_elements("css selector", "svg.chart")  # the charts, drawn server-side
    pages.shot("owner-usage-and-budgets")
    pages.open("/datasets/admissions")
    pages.shot("owner-dataset")

    # Roles are enforced by the node on every page: the owner has no auditor page.
    pages.open("/audit")
    assert "ROLE_NOT_ALLOWED" in pages.text()
    pages.shot("owner-refused-audit-log")

    # A forged CSRF token: the form is the console's own, the token in it is not the session's.
    pages.open("/grants")
    pages.d.execute_script("document.querySelector(\"form[action='/grants'] input[name=csrf]\").value = 'forged'")
    pages.fill_and_submit("form[action='/grants']", principal="bob", dataset="admissions", purpose="research")
    assert "CSRF_TOKEN_INVALID" in pages.text() and "HTTP 403" in pages.text()
    pages.shot("owner-forged-csrf-refused")
    pages.open("/grants")
    grants = [(r.find_element("css selector", "td:nth-child(2)").text, r.find_element("css selector", "td:nth-child(3)").text)
              for r in pages.d.find_elements("css selector", "main tbody tr")]
    assert ("alice", "admissions") in grants and ("bob", "admissions") not in grants
    pages.sign_out()
    pages.shot("signed-out")

    # Not one value of the released result on any page the owner or reviewer saw (the averages,
    # to the cent, as the SDK decrypted them; noisy counts are too short to tell from other figures,
    # and so is a noisy average below 1, which "0.00" of a quality profile's shares would match).
    avgs = [v for v in df["avg_cost"].dropna() if abs(v) >= 1]
    values = {f"{v:.2f}" for v in avgs} | {f"{v:,.2f}" for v in avgs}
    for source in pages.sources:
        assert not [v for v in values if v in source]
    world[1].released = values


def test_an_auditor_finds_the_approval_and_sees_its_proof_verified(world):
    node, pages, _ = world
    pages.sign_in(node.tokens["audra"])
    pages.open("/audit")
    pages.shot("auditor-log")
    # The approval entry names the query's analyst; the approvers and the reason are its details.
    pages.fill_and_submit("form.filters", kind="query.approve", dataset="admissions")
    rows = pages.d.find_elements("css selector", "main tbody tr")
    assert len(rows) == 1 and "query.approve" in rows[0].text
    assert '"olivia"' in rows[0].text and "fits the research protocol" in rows[0].text
    pages.shot("auditor-search-approval")
    rows[0].find_element("css selector", "th a").click()
    text = pages.text()
    assert "Inclusion proof verified" in text and "FAILED" not in text
    assert text.count("passed") == 4 and "fits the research protocol" in text
    pages.shot("auditor-entry-proof-verified")
    pages.open("/audit/checkpoints")
    assert "verified" in pages.text() and "NOT verified" not in pages.text()
    pages.shot("auditor-checkpoints")
    pages.open("/usage?period=1h")
    pages.shot("auditor-usage")
    for path in OWNER_PAGES[:5]:  # the auditor has no owner page either
        pages.open(path)
        assert "ROLE_NOT_ALLOWED" in pages.text(), path
    pages.sign_out()
    for source in pages.sources:
        assert not [v for v in getattr(pages, "released", set()) if v in source]


def test_an_analysts_token_is_refused_by_every_owner_and_auditor_page(world):
    node, pages, _ = world
    pages.sign_in(node.tokens["alice"])
    assert "ROLE_NOT_ALLOWED" in pages.text() and "HTTP 403" in pages.text()
    pages.shot("analyst-refused-at-sign-in")
    for path in OWNER_PAGES + AUDITOR_PAGES:
        pages.open(path)
        assert "NOT_SIGNED_IN" in pages.d.page_source, path
    pages.shot("analyst-refused-page")
