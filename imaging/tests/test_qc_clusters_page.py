"""The QC cluster map page (issue 16): the map is laid out inside its card (never drawn over the
header), and frames are numbered from 1 as people count them."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from imaging.models import Scan
from medimg.tests.test_browser import CHROMIUM, Session


def test_it_counts_frames_from_one(client: Client, doctor: Any, completed_scan: Scan) -> None:
    client.force_login(doctor)
    html = client.get(f"/scans/{completed_scan.pk}/clusters/").content.decode()
    assert 'name="frame_number" type="number" min="1" value="1"' in html
    assert "(from 0)" not in html
    assert 'class="cluster-map"' in html and "viewer__image" not in html
    assert "clusters of frame 1," in html

    missing = client.get(f"/scans/{completed_scan.pk}/clusters/", {"frame_number": "2"})
    assert missing.status_code == 400
    assert "This image has no frame 2." in missing.content.decode()
    zero = client.get(f"/scans/{completed_scan.pk}/clusters/", {"frame_number": "0"})
    assert "The frame number is a whole number from 1." in zero.content.decode()
    # Links that use the API's 0-based ?frame= still work.
    assert client.get(f"/scans/{completed_scan.pk}/clusters/", {"frame": "0"}).status_code == 200


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
@pytest.mark.django_db(transaction=True)
def test_the_cluster_map_stays_below_the_header_in_chromium(
    serial_live_server: Any, chromium: Any, doctor: Any, password: str, completed_scan: Scan
) -> None:
    for width, height in ((1440, 900), (1920, 1080)):
        doc = Session(chromium, serial_live_server.url, viewport={"width": width, "height": height})
        page = doc.page
        doc.log_in(doctor.username, password)
        page.goto(f"/scans/{completed_scan.pk}/clusters/")
        image = page.locator("[data-cluster-map]")
        image.wait_for()
        page.wait_for_function("document.querySelector('[data-cluster-map]').complete")
        header = page.locator("header").first.bounding_box()
        box = image.bounding_box()
        card = page.locator("section", has=image).bounding_box()
        assert header is not None and box is not None and card is not None
        assert box["y"] >= header["y"] + header["height"]
        assert box["x"] >= card["x"] and box["x"] + box["width"] <= card["x"] + card["width"] + 1
        assert box["y"] >= card["y"] and box["y"] + box["height"] <= card["y"] + card["height"]
        doc.shot(f"i16-31-qc-cluster-map-{width}")
        assert doc.console_errors() == []
        doc.close()
