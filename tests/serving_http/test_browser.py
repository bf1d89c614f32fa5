"""The upload page in a real headless Chromium (Debian's, driven by Playwright through
``executable_path``; `.ci/run` installs it). Skipped where no Chromium is installed, unless
BASSRAY_REQUIRE_BROWSER=1 (CI sets it), where a missing browser fails."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from .conftest import wav

pytestmark = pytest.mark.slow
CHROMIUM = next((p for p in (os.environ.get("BASSRAY_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)


@pytest.fixture(scope="module")
def page(apps):
    if CHROMIUM is None:
        if os.environ.get("BASSRAY_REQUIRE_BROWSER") == "1":
            pytest.fail("no Chromium: install Debian's `chromium` package (or set BASSRAY_CHROMIUM)")
        pytest.skip("no Chromium installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(120_000)
        yield page
        browser.close()


def _upload(page, url: str, tmp_path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    page.goto(url + "/")
    page.wait_for_function("document.querySelector('input[name=steps]').value !== ''")  # /info loaded
    page.set_input_files("input[name=mix]", str(path))
    page.fill("input[name=steps]", "2")
    page.click("#go")


def test_page_generates_plays_and_downloads(apps, page, tmp_path):
    seconds, rate = 1.5, 22050
    mix = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)[None]
    page.goto(apps.url + "/")
    page.wait_for_function("document.querySelector('input[name=steps]').value !== ''")
    defaults = page.evaluate("fetch('info').then(r => r.json()).then(i => i.defaults)")
    page.select_option("select[name=sampler]", "dpmpp-2m")  # each sampler shows its own default steps
    assert page.input_value("input[name=steps]") == str(defaults["dpmpp_steps"])
    page.select_option("select[name=sampler]", "ddim")
    assert page.input_value("input[name=steps]") == str(defaults["steps"])
    assert float(page.input_value("input[name=harmony]")) == defaults["harmony_snap"]  # the bundle's width
    _upload(page, apps.url, tmp_path, "my song.wav", wav(mix, rate))
    page.wait_for_selector("#result:not([hidden])")
    assert "done in" in page.inner_text("#status")
    # The player's audio decodes in the browser, at the input's duration.
    duration = page.evaluate("""async () => {
        const bytes = await (await fetch(document.getElementById('player').src)).arrayBuffer();
        const audio = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(bytes);
        return audio.duration; }""")
    assert duration == pytest.approx(seconds, abs=0.01)
    # The download link hands over the same WAV under the server's file name.
    link = page.locator("#download")
    assert link.get_attribute("download") == "my song-bass.wav"
    with page.expect_download() as download_info:
        link.click()
    saved = download_info.value.path()
    with open(saved, "rb") as f:
        head = f.read(12)
    assert head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def test_page_shows_a_readable_error(apps, page, tmp_path):
    _upload(page, apps.url, tmp_path, "notes.wav", b"these are my lyrics, not a song\n" * 40)
    page.wait_for_selector("#status.error")
    message = page.inner_text("#status")
    assert message.startswith("400:") and "cannot read the mix file" in message
    assert page.locator("#result").is_hidden()


def test_page_sends_the_key_on_a_keyed_server(apps, page, tmp_path):
    from .conftest import KEYS
    page.goto(apps.keyed_url + "/")
    page.wait_for_selector("#status.error")  # /info needs the key
    assert "401" in page.inner_text("#status")
    page.fill("input[name=api_key]", KEYS["alice"])
    page.dispatch_event("input[name=api_key]", "change")
    page.wait_for_function("document.querySelector('input[name=steps]').value !== ''")
    mix = (0.3 * np.sin(2 * np.pi * 110 * np.arange(16000) / 16000)).astype(np.float32)[None]
    path = tmp_path / "keyed.wav"
    path.write_bytes(wav(mix, 16000))
    page.set_input_files("input[name=mix]", str(path))
    page.fill("input[name=steps]", "1")
    page.click("#go")
    page.wait_for_selector("#result:not([hidden])")
    assert "done in" in page.inner_text("#status")
