"""Plain stored derivatives (redacted and grid PNG frames) are bound to their scan: a file
copied in from another scan, or from another kind of the same scan, is refused on read with a
500 and an audited failure, never shown as this scan's image (imaging/vault/derivatives.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from audit.models import Action, AuditEvent, Outcome
from engine.crypto import envelope as crypto
from imaging.models import Scan, ScanStatus
from imaging.tests import factories


@pytest.fixture
def other_scan(upload: Any, other_patient: Any, completed_scan: Scan) -> Scan:
    """A second completed scan, of another patient, with other text burned in."""
    pixels = factories.text_image(320, 240, lines=("ROE^JOHN  MRN 0099999", "DOB 1961-02-03"))
    response = upload(("other.png", factories.png_bytes(pixels)), patient_id=other_patient.id)
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    return scan


def _file(settings: Any, scan: Scan, kind: str, frame: int = 0) -> Path:
    return Path(settings.MEDIA_ROOT) / scan.frame_paths[kind][frame]


def _failures(scan: Scan) -> int:
    return AuditEvent.objects.filter(
        action=Action.SCAN_VIEWED, outcome=Outcome.FAILURE, target_id=str(scan.pk)
    ).count()


def test_it_keeps_a_keyed_digest_for_every_stored_frame(completed_scan: Scan) -> None:
    digests = completed_scan.frame_digests
    assert set(digests) == {"redacted", "grid"}
    for kind in ("redacted", "grid"):
        assert len(digests[kind]) == len(completed_scan.frame_paths[kind]) == 1
    # Keyed: a plain hash of the bytes is not what is stored.
    assert digests["redacted"][0] != digests["grid"][0]


@pytest.mark.parametrize("kind", ["redacted", "grid"])
def test_it_refuses_a_frame_copied_over_from_another_scan(
    api: Any, technician: Any, settings: Any, completed_scan: Scan, other_scan: Scan, kind: str
) -> None:
    api.force_authenticate(technician)
    genuine = api.get(f"/api/images/{other_scan.pk}/{kind}/")
    assert genuine.status_code == 200
    shutil.copyfile(_file(settings, other_scan, kind), _file(settings, completed_scan, kind))

    response = api.get(f"/api/images/{completed_scan.pk}/{kind}/")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "restore_failed"
    assert genuine.content not in response.content
    assert _failures(completed_scan) == 1
    # The scan the file came from still reads.
    assert api.get(f"/api/images/{other_scan.pk}/{kind}/").content == genuine.content


def test_it_refuses_the_grid_copied_over_the_same_scans_redacted_frame(
    api: Any, technician: Any, settings: Any, completed_scan: Scan
) -> None:
    shutil.copyfile(
        _file(settings, completed_scan, "grid"), _file(settings, completed_scan, "redacted")
    )
    api.force_authenticate(technician)
    response = api.get(f"/api/images/{completed_scan.pk}/redacted/")
    assert response.status_code == 500
    assert _failures(completed_scan) == 1


def test_it_refuses_a_swapped_frame_in_thumbnails_and_exports(
    api: Any, doctor: Any, settings: Any, completed_scan: Scan, other_scan: Scan
) -> None:
    Scan.objects.filter(pk=completed_scan.pk).update(needs_review=False)  # cleared for export
    shutil.copyfile(
        _file(settings, other_scan, "redacted"), _file(settings, completed_scan, "redacted")
    )
    api.force_authenticate(doctor)

    thumbnail = api.get(f"/api/images/{completed_scan.pk}/thumbnail/")
    assert thumbnail.status_code == 500
    export = api.get(f"/api/patients/{completed_scan.patient_id}/export/")
    assert export.status_code == 500
    assert not export.streaming
    assert export.json()["error"]["code"] == "restore_failed"


def test_it_still_reads_frames_stored_before_digests_were_kept(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(technician)
    before = api.get(f"/api/images/{completed_scan.pk}/redacted/").content
    Scan.objects.filter(pk=completed_scan.pk).update(frame_digests={})

    response = api.get(f"/api/images/{completed_scan.pk}/redacted/")

    assert response.status_code == 200
    assert response.content == before


def test_it_binds_the_digest_to_scan_kind_frame_and_bytes() -> None:
    key, other_key = crypto.new_data_key(), crypto.new_data_key()
    data = b"\x89PNG not really"
    digest = crypto.derivative_digest(key, data, scan_ref="a", kind="redacted", frame=0)
    crypto.derivative_check(key, data, digest, scan_ref="a", kind="redacted", frame=0)
    for key_, data_, ref, kind, frame in (
        (other_key, data, "a", "redacted", 0),
        (key, data + b"x", "a", "redacted", 0),
        (key, data, "b", "redacted", 0),
        (key, data, "a", "grid", 0),
        (key, data, "a", "redacted", 1),
    ):
        with pytest.raises(crypto.CryptoError):
            crypto.derivative_check(key_, data_, digest, scan_ref=ref, kind=kind, frame=frame)


def test_the_frame_digests_command_binds_a_legacy_scan_and_then_refuses_a_swap(
    api: Any, technician: Any, settings: Any, completed_scan: Scan, other_scan: Scan
) -> None:
    from io import StringIO

    from django.core.management import call_command

    expected = Scan.objects.get(pk=completed_scan.pk).frame_digests
    Scan.objects.filter(pk=completed_scan.pk).update(frame_digests={})
    out = StringIO()

    call_command("frame_digests", stdout=out)

    assert f"{completed_scan.pk} bound" in out.getvalue()
    assert f"{other_scan.pk} bound" not in out.getvalue()  # already had its digests
    assert Scan.objects.get(pk=completed_scan.pk).frame_digests == expected
    shutil.copyfile(
        _file(settings, other_scan, "redacted"), _file(settings, completed_scan, "redacted")
    )
    api.force_authenticate(technician)
    assert api.get(f"/api/images/{completed_scan.pk}/redacted/").status_code == 500
