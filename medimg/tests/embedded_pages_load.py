"""32 Chromium page loads at once against the embedded install (issue 16 item 6).

Run as a program (`python -m medimg.tests.embedded_pages_load [PAGES] [ROUNDS]`) so that it gets
the settings `make run` gets: a SQLite file in WAL mode, no Redis, tasks in-process, and the
server `runserver` uses (Django's threaded WSGI server with the static-files handler, one thread
and one database connection per request). A technician's patient with one processed image;
PAGES people (half doctors, half technicians, each signed in with their own session) each open a
real page in their own headless Chromium context at the same moment: the home page with its
worklists, the patient's page (thumbnails, notes) and the scan page (the Cornerstone viewer, its
bundle, the image, the regions), and wait until the page has loaded everything it asks for
(network idle). Every response of every page is counted: documents, static files, images and the
API calls the pages' scripts make. Prints one JSON line: status counts, the 5xx responses, the
requests that failed outright, how many pages loaded, the slowest load, whether the audit chain
verifies.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")


def _server() -> tuple[Any, str]:
    """Django's threaded WSGI server with the static-files handler, as `runserver` runs it."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    httpd = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
    httpd.daemon_threads = True
    httpd.set_app(StaticFilesHandler(get_wsgi_application()))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


async def _load_all(
    base: str, cookie_name: str, visits: list[tuple[str, str]], rounds: int
) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    statuses: collections.Counter[int] = collections.Counter()
    server_errors: list[str] = []
    failed: list[str] = []
    loads: list[float] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        contexts = []
        for cookie, path in visits:
            context = await browser.new_context(
                base_url=base, viewport={"width": 1440, "height": 900}
            )
            context.set_default_timeout(120_000)
            await context.add_cookies(
                [{"name": cookie_name, "value": cookie, "url": base, "httpOnly": True}]
            )

            def on_response(response: Any) -> None:
                statuses[response.status] += 1
                if response.status >= 500:
                    server_errors.append(f"{response.status} {response.url}")

            context.on("response", on_response)
            context.on(
                "requestfailed",
                lambda request: failed.append(f"{request.failure} {request.url}"),
            )
            contexts.append((context, await context.new_page(), path))

        async def visit(page: Any, path: str) -> None:
            started = time.monotonic()
            response = await page.goto(path, wait_until="load")
            assert response is not None and response.status == 200, (path, response)
            await page.wait_for_load_state("networkidle")
            loads.append(time.monotonic() - started)

        for _ in range(rounds):
            await asyncio.gather(*(visit(page, path) for _, page, path in contexts))
        for context, _, _ in contexts:
            await context.close()
        await browser.close()
    return {
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "server_errors": server_errors[:20],
        "failed_requests": failed[:20],
        "pages_loaded": len(loads),
        "slowest_load_s": round(max(loads), 2) if loads else None,
    }


def main(pages: int, rounds: int) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="medimg-embedded-pages-")
    os.environ["SQLITE_PATH"] = os.path.join(folder, "db.sqlite3")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medimg.settings")
    # Playwright's event loop runs in this thread; the setup's ORM calls are synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    import django

    django.setup()
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from accounts.models import Department, Role, User
    from imaging.models import ScanStatus
    from imaging.services.upload import scan_upload
    from imaging.tests import factories
    from patients.models import Patient

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.MEDIA_ROOT = os.path.join(folder, "media")
    settings.KEY_DIR = os.path.join(folder, "keys")
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    call_command("migrate", verbosity=0)
    journal = connection.cursor().execute("PRAGMA journal_mode").fetchone()[0]

    password = "load-test-password-42"
    radiology = Department.objects.create(name="Radiology", slug="radiology")
    people = []
    for i in range(pages):
        role = Role.DOCTOR if i % 2 == 0 else Role.TECHNICIAN
        user = User.objects.create_user(username=f"user{i}", password=password, role=role)
        user.departments.add(radiology)
        people.append(user)
    technician = people[1]
    patient = Patient.objects.create(id="H-2000", name="Load Person", age=40, created_by=technician)
    patient.departments.add(radiology)
    uploads = [
        SimpleUploadedFile(
            f"scan-{n}.png",
            factories.png_bytes(factories.text_image(640, 480, seed=n)),
            "image/png",
        )
        for n in range(3)
    ]
    scans = scan_upload(patient=patient, uploads=uploads, uploaded_by=technician)
    for scan in scans:
        scan.refresh_from_db()
        assert scan.status == ScanStatus.COMPLETED, scan.processing_error
    paths = ["/", f"/patients/{patient.pk}/", f"/scans/{scans[0].pk}/"]
    visits = []
    for i, user in enumerate(people):
        client = Client()
        client.force_login(user)
        visits.append((client.cookies[settings.SESSION_COOKIE_NAME].value, paths[i % 3]))

    httpd, base = _server()
    try:
        result = asyncio.run(_load_all(base, settings.SESSION_COOKIE_NAME, visits, rounds))
    finally:
        httpd.shutdown()

    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out, stderr=out)
        chain_ok = True
    except SystemExit as exc:
        chain_ok = exc.code in (0, None)
    return {**result, "journal_mode": journal, "chain_ok": chain_ok, "pages": pages}


if __name__ == "__main__":
    result = main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 32,
        int(sys.argv[2]) if len(sys.argv) > 2 else 1,
    )
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)
