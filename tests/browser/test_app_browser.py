"""The app in a real browser: Debian Chromium through Playwright, the app server in a subprocess, a DICOM zip.

Tests skip cleanly when /usr/bin/chromium or playwright is missing. The browser runs with the network closed
(every host except 127.0.0.1 resolves to nothing), so a page that needs a CDN would visibly break.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, shared_path

pytestmark = [pytest.mark.browser, pytest.mark.server]

CHROMIUM = Path(os.environ.get("CTSCRIBE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
ARTIFACTS = ROOT / "test-artifacts"


# One server helper for every test and tool that drives the app: tools/load_test.py (not a package, loaded by path).
_spec = importlib.util.spec_from_file_location("ctscribe_load_test", ROOT / "tools" / "load_test.py")
_load_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_load_test)
stop_server = _load_test.stop_server


def start_server(pipeline: str | None, home: Path, timeout: float = 90.0):
    """Run ``ctscribe serve`` on a free loopback port; returns (process, base URL, log path)."""
    return _load_test.start_server(home, pipeline=pipeline, timeout=timeout)


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory):
    proc, url, _log = start_server("fake_pipeline:FakePipeline", tmp_path_factory.mktemp("fake-app"))
    yield url
    stop_server(proc)


@pytest.fixture(scope="session")
def dicom_zip(tmp_path_factory) -> Path:
    """The TotalSegmentator 20-slice DICOM series, zipped the way a user would (one folder inside the zip)."""
    src = shared_path("ct-volumes_totalsegmentator-tests", "example_ct_dicom")
    z = tmp_path_factory.mktemp("upload") / "example_ct_dicom.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"example_ct_dicom/{f.name}")
    return z


def external_requests(page, base: str) -> list[str]:
    """Attach a recorder; returns the (live) list of requests that left the app's origin."""
    out: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else out.append(r.url))
    return out


# ----------------------------------------------------------------------------------------------------------- flows
def open_app(browser, url: str, viewport=(1500, 1300)):
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    ext = external_requests(page, url.rstrip("/"))
    page.goto(url)
    page.wait_for_selector("#cts-upload")
    return ctx, page, ext


def upload(page, path: Path, expect: str, timeout: float = 60_000) -> None:
    page.set_input_files("#cts-upload input[type=file]", str(path))
    page.locator("#cts-sentences").get_by_text(expect).first.wait_for(timeout=timeout)


def study_tag(page) -> str:
    return page.locator("#cts-status code").first.inner_text().strip()[:8]


def ask(page, question: str, expect: str, timeout: float = 60_000) -> None:
    page.fill("#cts-question textarea", question)
    page.click("#cts-ask")
    page.locator("#cts-chat").get_by_text(expect).first.wait_for(timeout=timeout)


def test_full_review_flow_with_fake_pipeline(browser, fake_server, dicom_zip):
    ctx, page, ext = open_app(browser, fake_server)
    try:
        assert page.locator("#cts-draft-notice").is_visible()
        page.screenshot(path=str(ARTIFACTS / "app-0-empty.png"), full_page=True)
        upload(page, dicom_zip, "solid nodule")
        assert page.locator("#cts-demo-banner").is_visible()
        assert "Demo weights in use" in page.locator("#cts-demo-banner").inner_text()
        assert page.locator("#cts-img-axial img").count() == 1
        before = page.locator("#cts-slider-axial input[type=number]").input_value()
        page.screenshot(path=str(ARTIFACTS / "app-1-draft.png"), full_page=True)

        # click a sentence: evidence appears, the viewer jumps to the nodule and its overlay is switched on
        page.locator("#cts-sentences").get_by_text("solid nodule").first.click()
        page.locator("#cts-evidence").get_by_text("nodule diameter = 4.0 mm").wait_for()
        page.locator("#cts-overlays input[type=checkbox]:checked").first.wait_for()
        after = page.locator("#cts-slider-axial input[type=number]").input_value()
        assert after != before and "findings/lung_nodule_1" in page.locator(".cts-legend").first.inner_text()

        # ask a question: streamed answer, citation that opens its passage
        ask(page, "Is there a lung nodule?", "Sources:")
        tag = study_tag(page)
        assert tag in page.locator("#cts-chat").inner_text()
        page.locator("#cts-cites summary").first.click()
        passage = page.locator("#cts-cites blockquote").first
        passage.wait_for(state="visible")
        assert "follow-up" in passage.inner_text()
        page.screenshot(path=str(ARTIFACTS / "app-2-chat-citation.png"), full_page=True)

        # edit the selected sentence, remove another
        page.fill("#cts-editor textarea", "A 4 mm solid nodule in the right lower lobe, reviewed.")
        page.click("#cts-save-edit")
        page.locator("#cts-preview").get_by_text("right lower lobe, reviewed.").wait_for()
        page.locator("#cts-sentences").get_by_text("No emphysema.").first.click()
        from playwright.sync_api import expect

        expect(page.locator("#cts-editor textarea")).to_have_value("No emphysema.")
        page.click("#cts-remove")
        expect(page.locator("#cts-preview")).not_to_contain_text("No emphysema")
        expect(page.locator("#cts-sentences")).to_contain_text("removed")

        # export and download the text file: it holds the edit, not the removed sentence, and the notice
        page.click("#cts-export")
        page.locator("#cts-exported").get_by_text(".txt").first.wait_for()
        link = page.locator("#cts-exported tr").filter(has_text=".txt").locator("a").first
        with page.expect_download() as dl:
            link.click()
        text = Path(dl.value.path()).read_text()
        assert "right lower lobe, reviewed." in text and "No emphysema" not in text
        assert "drafting aid, not a diagnosis" in text
        page.locator("#cts-exported").get_by_text(".pdf").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "app-3-edited-exported.png"), full_page=True)
        assert ext == [], f"the page tried to reach the network: {ext}"
    finally:
        ctx.close()


def test_two_users_at_once_never_see_each_others_study(browser, fake_server, dicom_zip):
    nifti = shared_path("ct-volumes_totalsegmentator-tests", "example_ct_sm.nii.gz")
    (ca, a, _), (cbx, b, _) = open_app(browser, fake_server), open_app(browser, fake_server)
    try:
        a.set_input_files("#cts-upload input[type=file]", str(dicom_zip))  # both analyses queued together
        b.set_input_files("#cts-upload input[type=file]", str(nifti))
        for page in (a, b):
            page.locator("#cts-sentences").get_by_text("solid nodule").first.wait_for(timeout=60_000)
        tag_a, tag_b = study_tag(a), study_tag(b)
        assert tag_a != tag_b
        ask(a, "Is there a nodule?", "Sources:")
        ask(b, "Anything in the lungs?", "Sources:")
        page_a = a.locator("body").inner_text()
        page_b = b.locator("body").inner_text()
        assert tag_a in page_a and tag_b not in page_a
        assert tag_b in page_b and tag_a not in page_b
        assert "Is there a nodule?" not in page_b and "Anything in the lungs?" not in page_a
        a.screenshot(path=str(ARTIFACTS / "app-isolation-user-a.png"), full_page=True)
        b.screenshot(path=str(ARTIFACTS / "app-isolation-user-b.png"), full_page=True)
    finally:
        ca.close()
        cbx.close()


def test_bad_upload_shows_a_message_not_a_crash(browser, fake_server, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a CT")
    ctx, page, _ = open_app(browser, fake_server)
    try:
        page.set_input_files("#cts-upload input[type=file]", str(bad))
        page.locator("#cts-status").get_by_text("Could not load the study").wait_for()
        assert "DICOM zip" in page.locator("#cts-status").inner_text()
        page.screenshot(path=str(ARTIFACTS / "app-bad-upload.png"), full_page=True)
    finally:
        ctx.close()


@pytest.mark.slow
def test_real_pipeline_on_the_dicom_series(browser, dicom_zip, tmp_path_factory):
    """The same flow on the real Pipeline (measurement-only when the demo weights are absent)."""
    proc, url, _log = start_server(None, tmp_path_factory.mktemp("real-app"))
    ctx = None
    try:
        ctx, page, ext = open_app(browser, url)
        page.set_input_files("#cts-upload input[type=file]", str(dicom_zip))
        page.locator("#cts-sentences").get_by_text("Impression").first.wait_for(timeout=300_000)
        assert "512x512x20" in page.locator("#cts-status").inner_text()
        page.screenshot(path=str(ARTIFACTS / "app-real-1-draft.png"), full_page=True)
        first = page.locator("#cts-sentences").get_by_text("The lungs").first
        first.click()
        page.locator("#cts-evidence .cts-ev-text").wait_for()
        ask(page, "Is there a lung nodule?", "nodule", timeout=300_000)
        page.fill("#cts-editor textarea", "Lungs reviewed by the radiologist.")
        page.click("#cts-save-edit")
        page.locator("#cts-preview").get_by_text("Lungs reviewed by the radiologist.").wait_for()
        page.click("#cts-export")
        page.locator("#cts-exported").get_by_text(".pdf").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "app-real-2-reviewed.png"), full_page=True)
        assert ext == [], f"the page tried to reach the network: {ext}"
    finally:
        if ctx is not None:
            ctx.close()
        stop_server(proc)
