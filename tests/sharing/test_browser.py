"""The share page in a real browser: grid, viewer, keyboard, paging, download, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.catalog.helpers import INLINE_HOST
from tests.sharing.conftest import (
    add_drive,
    deliver_events,
    give_renditions,
    png_bytes,
    serve,
    token_of,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ITEMS = 150


@pytest.fixture
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_share_page_in_browser(owner, services, sharing_app, drive_factory, browser, monkeypatch):
    import playwright.sync_api as playwright_api

    from core.settings import reset_settings
    from tests.sharing.conftest import Api

    monkeypatch.setenv("ARCHIVE_HOST", INLINE_HOST)
    reset_settings()
    files = {f"frame-{index:03d}.png": png_bytes(shade=index) for index in range(ITEMS - 1)}
    _source, online_ids = add_drive(owner, drive_factory, "SHOOT-01", files)
    offline_source, offline_ids = add_drive(owner, drive_factory, "VAULT-07", {"zz.png": png_bytes()})
    assert owner.post(f"/api/v1/sources/{offline_source['id']}/disconnect").status_code == 200
    ordered = [online_ids[name] for name in sorted(online_ids)] + [offline_ids["zz.png"]]
    api = Api(owner, sharing_app.test_client(), services["collections"])
    collection = api.create_collection("Launch", "Frames for the agency", ordered)
    deliver_events()
    give_renditions(ordered)
    link = api.create_link(collection["id"], allow_download=True, show_metadata=True)
    server, base = serve(sharing_app)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        external = []
        page.on("request", lambda request: external.append(request.url)
                if not request.url.startswith(base) else None)  # fmt: skip
        page.goto(f"{base}/s/{token_of(link)}")
        assert page.locator("h1").inner_text() == "Launch"
        tiles = page.locator("#grid li.tile")
        assert tiles.count() == 100
        assert page.locator("#grid img[loading=lazy]").count() == 100
        page.wait_for_load_state("networkidle")
        first_image = page.locator("#grid img").first
        assert first_image.evaluate("image => image.naturalWidth") > 0
        page.screenshot(path=str(ARTIFACTS / "share-grid.png"))

        page.locator("#grid li.tile button.open").nth(1).click()
        viewer = page.locator("#viewer")
        assert viewer.is_visible()
        assert page.locator("#viewer-name").inner_text() == "frame-001.png"
        page.keyboard.press("ArrowRight")
        assert page.locator("#viewer-name").inner_text() == "frame-002.png"
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        assert page.locator("#viewer-name").inner_text() == "frame-000.png"
        assert "/preview/" in page.locator("#viewer-image").get_attribute("src")
        assert page.locator("#viewer-meta").inner_text().strip() != ""
        page.screenshot(path=str(ARTIFACTS / "share-viewer.png"))
        page.keyboard.press("Escape")
        assert not viewer.is_visible()

        page.locator("#more").click()
        playwright_api.expect(tiles).to_have_count(ITEMS)
        assert page.locator("#more").count() == 0
        last = tiles.nth(ITEMS - 1)
        assert "Original offline — connect drive VAULT-07" in last.inner_text()
        assert last.locator("a.download").count() == 0
        last.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "share-offline.png"))

        with page.expect_download() as download_info:
            tiles.nth(0).locator("a.download").click()
        download = download_info.value
        assert download.suggested_filename == "frame-000.png"
        assert Path(download.path()).read_bytes().startswith(b"\x89PNG")

        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(f"{base}/s/{token_of(link)}")
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        phone.screenshot(path=str(ARTIFACTS / "share-phone.png"))
        assert external == []
    finally:
        server.shutdown()


def test_type_icons_for_files_without_thumbnails(
    owner, services, sharing_app, drive_factory, browser, monkeypatch
):
    import playwright.sync_api as playwright_api

    import services.sharing.public as public
    from core.settings import reset_settings
    from tests.media.test_rendition_worker import wav_bytes
    from tests.sharing.conftest import Api

    monkeypatch.setenv("ARCHIVE_HOST", INLINE_HOST)
    reset_settings()
    # One item a page: the first tile comes from the server's template and
    # the second from the page's script.
    monkeypatch.setattr(public, "PAGE_SIZE", 1)
    _source, ids = add_drive(
        owner, drive_factory, "NOTES", {"a-notes.txt": b"shot list", "b-take.wav": wav_bytes(0.5)}
    )
    api = Api(owner, sharing_app.test_client(), services["collections"])
    collection = api.create_collection("Sound", "", [ids["a-notes.txt"], ids["b-take.wav"]])
    deliver_events()
    link = api.create_link(collection["id"])
    server, base = serve(sharing_app)
    try:
        page = browser.new_page()
        page.goto(f"{base}/s/{token_of(link)}")
        page.locator("#more").click()
        icons = page.locator("#grid img.type-icon")
        playwright_api.expect(icons).to_have_count(2)
        page.wait_for_load_state("networkidle")
        sources = [icons.nth(index).get_attribute("src") for index in range(2)]
        assert sources[0].endswith("/icons/other.svg")
        assert sources[1].endswith("/icons/audio.svg")
        for index in range(2):
            assert icons.nth(index).evaluate("image => image.naturalWidth") > 0
    finally:
        server.shutdown()
