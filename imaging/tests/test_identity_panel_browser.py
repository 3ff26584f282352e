"""The doctor's identity panel (issue 16): long header values wrap inside the card, in
Chromium at 1440 and 1920 wide, instead of being cut off."""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest

from imaging.models import Scan
from imaging.tests import factories
from medimg.tests.test_browser import CHROMIUM, Session

LONG_ADDRESS = "Flat-12-Building-C-" * 8
LONG_INSTITUTION = "Saint Bartholomew's Hospital Department of Interventional Neuroradiology Annex"
LONG_IDS = "OTHER" + "0123456789" * 7

CLIPPED = """(panel) => {
  const card = panel.getBoundingClientRect();
  const selector = '[data-identity-patient] dd, [data-identity-values] td';
  const cells = [...panel.querySelectorAll(selector)];
  return cells.filter((cell) => {
    const box = cell.getBoundingClientRect();
    return cell.scrollWidth > cell.clientWidth + 1 || box.right > card.right + 1;
  }).map((cell) => cell.textContent.slice(0, 40));
}"""


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
@pytest.mark.django_db(transaction=True)
def test_long_identity_values_wrap_inside_the_panel(
    serial_live_server: Any, chromium: Any, doctor: Any, password: str, upload: Any
) -> None:
    data, _ = factories.dicom16_text(frames=1)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientAddress = LONG_ADDRESS
    ds.InstitutionName = LONG_INSTITUTION
    ds.OtherPatientIDs = LONG_IDS
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = upload(("long.dcm", buffer.getvalue()))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])

    for width, height in ((1440, 900), (1920, 1080)):
        doc = Session(chromium, serial_live_server.url, viewport={"width": width, "height": height})
        page = doc.page
        doc.log_in(doctor.username, password)
        page.goto(f"/scans/{scan.pk}/")
        panel = page.locator("[data-identity]")
        panel.get_by_role("button", name="Show identity").click()
        panel.locator("[data-identity-patient] dd").get_by_text(LONG_ADDRESS).wait_for()
        panel.locator("details summary").click()
        panel.scroll_into_view_if_needed()
        assert panel.evaluate(CLIPPED) == []
        panel.screenshot(path=str(_shot_dir() / f"i16-33-identity-panel-{width}.png"))
        assert doc.console_errors() == []
        doc.close()


def _shot_dir() -> Any:
    from medimg.tests.test_browser import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
