"""The clinical pages in a real headless Chromium: a technician uploads through the page and
watches it finish; a doctor opens the viewer, restores the original, zooms and adds a note.

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian packages chromium and
chromium-driver); skipped with that reason when either is missing. Processing runs
in-process (eager Celery) with the classical test detector, so no worker or model is needed.
Set MEDIMG_SCREENSHOT_DIR to keep screenshots of each step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from imaging.models import Scan, ScanStatus
from imaging.tests import factories
from medimg.celery import app as celery_app
from patients.models import Patient

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 20

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs /usr/bin/chromium and /usr/bin/chromedriver "
        "(apt-get install chromium chromium-driver)",
    ),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="needs the selenium package")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="medimg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    # An explicit driver path: selenium-manager must not try to download anything.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def in_process(settings: Any) -> Iterator[None]:
    """Eager tasks (even with REDIS_URL set) and the classical detector for synthetic text."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    before = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before


@pytest.fixture
def server(live_server: Any) -> Iterator[Any]:
    """pytest-django's live server, one request at a time on SQLite.

    The in-memory SQLite test database is one connection that the live server's threads
    share; two requests at once (parallel uploads, a thumbnail beside the notes) would
    interleave their transactions on it. PostgreSQL needs no such lock."""
    if connection.vendor != "sqlite":
        yield live_server
        return
    httpd = live_server.thread.httpd
    app = httpd.get_app()
    lock = threading.Lock()

    def one_at_a_time(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            result = app(environ, start_response)
            try:
                return list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()

    httpd.set_app(one_at_a_time)
    try:
        yield live_server
    finally:
        httpd.set_app(app)


# Draws a small PNG on a canvas and drops it on the upload area as a file.
DROP_PNG = """
const [name, done] = arguments;
const canvas = document.createElement("canvas");
canvas.width = 64;
canvas.height = 48;
const context = canvas.getContext("2d");
context.fillStyle = "#333";
context.fillRect(0, 0, 64, 48);
canvas.toBlob((blob) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, { type: "image/png" }));
  const zone = document.querySelector("[data-dropzone]");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(
      new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true })
    );
  }
  done();
}, "image/png");
"""


class Shots:
    def __init__(self, driver: Any, folder: Path) -> None:
        self.driver = driver
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        self.driver.save_screenshot(str(self.folder / f"{name}.png"))


def wait(driver: Any) -> WebDriverWait:
    return WebDriverWait(driver, WAIT_SECONDS)


def log_in(driver: Any, base: str, username: str, password: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/login/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "patients-title")))


def js_errors(driver: Any, *expected: str) -> list[str]:
    """Console errors, less the favicon and the `expected` ones (a refused upload's 400)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and "favicon" not in entry["message"]
        and not any(text in entry["message"] for text in expected)
    ]


@pytest.mark.django_db(transaction=True)
def test_it_uploads_as_technician_and_restores_as_doctor(
    server: Any,
    browser: Any,
    in_process: None,
    technician: Any,
    doctor: Any,
    password: str,
    tmp_path: Path,
) -> None:
    shots = Shots(browser, Path(os.environ.get("MEDIMG_SCREENSHOT_DIR") or tmp_path / "shots"))
    patient = Patient.objects.create(id="MRN-4242", name="Ada Lovelace", age=36)
    png_path = tmp_path / "chest.png"
    png_path.write_bytes(factories.png_bytes(factories.text_image(480, 360)))
    jpeg_path = tmp_path / "knee.jpg"
    jpeg_path.write_bytes(factories.jpeg_bytes(factories.text_image(400, 300, seed=3)))
    bad_path = tmp_path / "notes.txt"
    bad_path.write_bytes(b"not an image at all")
    base = server.url

    # --- Technician: list -> patient page -> upload three files through the file input ---
    log_in(browser, base, technician.username, password)
    browser.find_element(By.LINK_TEXT, patient.name).click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "upload-title")))
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-restore]")
    file_input = browser.find_element(By.CSS_SELECTOR, "input[type=file]")
    file_input.send_keys("\n".join(str(p) for p in (png_path, jpeg_path, bad_path)))

    # One row, one progress bar and one request per file.
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-upload]")) == 3)
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-upload] progress")) == 3
    wait(browser).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-upload][data-scan-id]")) == 2
    )
    wait(browser).until(
        lambda d: (
            [e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-status-label]")]
            == ["Completed", "Completed"]
        )
    )
    refused = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-upload].upload--failed"))
    )
    assert "notes.txt" in refused.text and "Refused" in refused.text

    # Drag and drop: a file dropped on the area (a DataTransfer, as a real drop carries).
    browser.execute_async_script(DROP_PNG, "dropped.png")
    wait(browser).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-upload][data-scan-id]")) == 3
    )
    wait(browser).until(
        lambda d: (
            [e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-status-label]")]
            == ["Completed"] * 3
        )
    )
    assert browser.find_element(By.CSS_SELECTOR, "[data-refresh-list]").is_displayed()
    shots("1-technician-uploaded")
    scans = {scan.original_filename: scan for scan in Scan.objects.filter(patient=patient)}
    assert set(scans) == {"chest.png", "knee.jpg", "dropped.png"}
    assert all(scan.status == ScanStatus.COMPLETED for scan in scans.values())
    scan = scans["chest.png"]
    row = browser.find_element(By.CSS_SELECTOR, f'[data-upload][data-scan-id="{scan.id}"]')
    assert row.find_element(By.CSS_SELECTOR, "progress").get_attribute("value") == "100"
    link = row.find_element(By.LINK_TEXT, "Open image")
    assert link.get_attribute("href") == f"{base}/scans/{scan.id}/"

    # A scan still processing: its page polls the status API and reloads when it is done.
    Scan.objects.filter(pk=scan.pk).update(status=ScanStatus.PROCESSING)
    browser.get(f"{base}/scans/{scan.id}/")
    wait(browser).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-status-label]"), "Processing")
    )
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-viewer-image]")
    Scan.objects.filter(pk=scan.pk).update(status=ScanStatus.COMPLETED)
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-viewer-image]")))

    # The patient's image list now has both; open the scan page from it.
    browser.get(f"{base}/patients/{patient.id}/")
    browser.find_element(By.LINK_TEXT, "chest.png").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "grid-title")))
    grid = browser.find_element(By.CSS_SELECTOR, "[data-viewer-image]")
    wait(browser).until(lambda d: d.execute_script("return arguments[0].naturalWidth", grid) > 0)
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-region]")) == scan.regions.count()
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-restore]")
    shots("2-technician-scan")
    refused_upload = f"/api/patients/{patient.id}/images/ - Failed to load resource: " + (
        "the server responded with a status of 400"
    )
    assert js_errors(browser, refused_upload) == []

    # --- Doctor: patient page -> viewer -> restore, zoom, note --------------------------
    log_in(browser, base, doctor.username, password)
    browser.find_element(By.LINK_TEXT, patient.name).click()
    thumb = wait(browser).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, f'a[href="/scans/{scan.id}/"] .thumb__image')
        )
    )
    wait(browser).until(lambda d: d.execute_script("return arguments[0].naturalWidth", thumb) > 0)
    shots("3-doctor-patient")
    thumb.click()

    restore = wait(browser).until(ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-restore]")))
    image = browser.find_element(By.CSS_SELECTOR, "[data-viewer-image]")
    redacted_src = image.get_attribute("src")
    restore.click()
    wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-viewer-image][data-restored]"))
    )
    assert image.get_attribute("src").startswith("blob:")
    assert image.get_attribute("src") != redacted_src
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 480
    assert browser.find_element(By.CSS_SELECTOR, "[data-view-mode]").text == "Original (restored)"
    browser.execute_script("window.scrollTo(0, 0)")
    shots("4-doctor-viewer-restored")

    level = browser.find_element(By.CSS_SELECTOR, "[data-zoom-level]")
    before = level.text
    viewport = browser.find_element(By.CSS_SELECTOR, "[data-viewport]")
    viewport.send_keys("+")
    assert level.text != before
    before_transform = image.get_attribute("style")
    viewport.send_keys(Keys.ARROW_RIGHT)
    assert image.get_attribute("style") != before_transform
    # Pointer drag pans; the wheel zooms.
    before_transform = image.get_attribute("style")
    ActionChains(browser).click_and_hold(viewport).move_by_offset(50, 0).release().perform()
    assert image.get_attribute("style") != before_transform
    before = level.text
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(viewport), 0, -300).perform()
    wait(browser).until(lambda d: level.text != before)

    note = browser.find_element(By.ID, "note-text")
    note.send_keys("Restored for review; text matches the requisition.")
    browser.find_element(By.CSS_SELECTOR, "[data-notes-form] button[type=submit]").click()
    wait(browser).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-note]"), "requisition")
    )
    shots("5-doctor-note-added")
    assert patient.notes.get().text.startswith("Restored for review")
    assert js_errors(browser) == []

    browser.set_window_size(820, 1180)  # A tablet in portrait.
    shots("6-doctor-tablet")
