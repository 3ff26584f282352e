"""The home-page worklists page through every item instead of showing "the first 10"."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client
from django.utils import timezone

from audit.models import Action, AuditEvent
from imaging.models import Region, Scan, ScanStatus
from imaging.selectors.worklist import (
    WORKLIST_SIZE,
    page_number,
    region_removal_worklist,
    scan_review_worklist,
)
from patients.models import Patient

COUNT = WORKLIST_SIZE * 2 + 3  # three pages: 10, 10, 3


def completed_scans(technician: Any, count: int = COUNT) -> list[Scan]:
    patient = Patient.objects.create(id="MRN-WL", name="Worklist Patient", age=50)
    return [
        Scan.objects.create(
            patient=patient,
            uploaded_by=technician,
            original_filename=f"scan-{n:02d}.png",
            format="png",
            size_bytes=1000 + n,
            width=64,
            height=48,
            pixel_dtype="uint8",
            pixels_sha256=f"{n:064x}",
            status=ScanStatus.COMPLETED,
            original_path=f"scans/{n}.bin",
            wrapped_key=b"k" * 60,
            key_id="test",
        )
        for n in range(count)
    ]


def _names(html: str) -> list[str]:
    return re.findall(r">(scan-\d\d\.png)</a>", html)


def test_it_pages_the_review_worklist(technician: Any) -> None:
    scans = completed_scans(technician)
    pages = [scan_review_worklist(user=technician, page=n) for n in (1, 2, 3)]
    assert [len(p.items) for p in pages] == [10, 10, 3]
    assert [p.num_pages for p in pages] == [3, 3, 3]
    seen = [scan.pk for p in pages for scan in p.items]
    assert seen == [scan.pk for scan in scans]  # the oldest first, each once
    assert (pages[0].has_previous, pages[0].has_next) == (False, True)
    assert (pages[2].has_previous, pages[2].has_next, pages[2].start, pages[2].end) == (
        True,
        False,
        21,
        23,
    )
    # A page past the end (the list shrank) shows the last one.
    assert scan_review_worklist(user=technician, page=9).number == 3
    listed = AuditEvent.objects.filter(action=Action.PATIENT_LISTED).order_by("sequence")
    assert [e.details["page"] for e in listed] == [1, 2, 3, 3]
    assert listed[2].details["scans"] == seen[20:]


def test_it_reads_a_page_number_leniently() -> None:
    assert [page_number(v) for v in (None, "", "x", "-3", "0", "2", "2.5")] == [
        1,
        1,
        1,
        1,
        1,
        2,
        1,
    ]


def test_the_technicians_home_has_a_pager_that_keeps_the_search(
    client: Client, technician: Any
) -> None:
    completed_scans(technician)
    client.force_login(technician)
    first = client.get("/").content.decode()
    assert "Showing 1–10 of 23" in first
    assert "Showing the first" not in first
    assert _names(first) == [f"scan-{n:02d}.png" for n in range(10)]
    assert 'href="?worklist=2" rel="next"' in first

    last = client.get("/", {"worklist": "3", "q": "Work"}).content.decode()
    assert _names(last) == [f"scan-{n:02d}.png" for n in range(20, 23)]
    assert "Page 3 of 3" in last
    assert 'href="?q=Work&amp;worklist=2" rel="prev"' in last
    assert 'rel="next">Next</a>' not in last.split("data-worklist-pager")[1].split("</nav>")[0]


def test_the_doctors_home_pages_the_removal_requests(
    client: Client, technician: Any, doctor: Any
) -> None:
    scan = completed_scans(technician, 1)[0]
    now = timezone.now()
    Region.objects.bulk_create(
        Region(
            scan=scan,
            index=i,
            label="phi_text",
            confidence=0.9,
            x1=i,
            y1=0,
            x2=i + 4,
            y2=4,
            ciphertext=b"c" * 32,
            dtype="uint8",
            removal_requested_at=now,
            removal_requested_by=technician,
        )
        for i in range(12)
    )
    second = region_removal_worklist(user=doctor, page=2)
    assert (len(second.items), second.total, second.num_pages) == (2, 12, 2)

    client.force_login(doctor)
    html = client.get("/", {"worklist": "2"}).content.decode()
    assert html.count("data-removal-item") == 2
    assert "Showing 11–12 of 12" in html
    assert 'href="?worklist=1" rel="prev"' in html
