"""No N+1 queries in list endpoints: the query count does not grow with the rows listed.

Each list is requested with one row and with many; the counts must be equal, and below a
fixed ceiling (`django_assert_max_num_queries`) that is smaller than the number of rows, so
a per-row query fails either way.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import Action
from audit.services import audit_record
from imaging.models import Fingerprint, Region, Scan, ScanStatus
from patients.models import Patient, PatientNote

MANY = 12
# Auth, audit append (lock, head, insert), the count and the page, and a little slack.
CEILING = 10

pytestmark = pytest.mark.django_db


def _scan(patient: Patient, user: Any, n: int) -> Scan:
    return Scan.objects.create(
        patient=patient,
        uploaded_by=user,
        original_filename=f"scan-{n}.png",
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


def _regions(scan: Scan, count: int) -> None:
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
        )
        for i in range(count)
    )


def _count(api: Any, user: Any, url: str) -> int:
    api.force_authenticate(user)
    with CaptureQueriesContext(connection) as queries:
        response = api.get(url)
    assert response.status_code == 200, response.content
    return len(queries)


def _assert_flat(
    api: Any, user: Any, url: str, grow: Any, assert_max: Any, *, rows: Any = None
) -> None:
    one = _count(api, user, url)
    grow()
    api.force_authenticate(user)
    with assert_max(CEILING):
        response = api.get(url)
    assert response.status_code == 200, response.content
    body = response.json()
    listed = body["results"] if isinstance(body, dict) else body
    assert len(listed) >= (rows if rows is not None else MANY)
    assert _count(api, user, url) == one


def test_it_lists_patients_in_constant_queries(
    api: Any, doctor: Any, django_assert_max_num_queries: Any
) -> None:
    def grow() -> None:
        for n in range(MANY):
            patient = Patient.objects.create(id=f"P-{n:03d}", name=f"Name {n}", created_by=doctor)
            PatientNote.objects.create(patient=patient, author=doctor, text="seen")

    Patient.objects.create(id="P-FIRST", name="First", created_by=doctor)
    _assert_flat(api, doctor, "/api/patients/", grow, django_assert_max_num_queries)


def test_it_lists_patient_notes_in_constant_queries(
    api: Any,
    doctor: Any,
    django_user_model: Any,
    django_assert_max_num_queries: Any,
    settings: Any,
) -> None:
    # Every read audited, so each of the compared requests does the same work (by default only
    # the first read in a window writes its routine-view event).
    settings.AUDIT_ROUTINE_VIEW_MINUTES = 0
    patient = Patient.objects.create(id="P-NOTES", name="Noted")
    PatientNote.objects.create(patient=patient, author=doctor, text="first")

    def grow() -> None:
        for n in range(MANY):
            author = django_user_model.objects.create_user(
                username=f"doc{n}", password="x" * 20, role="doctor"
            )
            PatientNote.objects.create(patient=patient, author=author, text=f"note {n}")

    _assert_flat(
        api, doctor, f"/api/patients/{patient.pk}/notes/", grow, django_assert_max_num_queries
    )


def test_it_lists_a_patients_images_in_constant_queries(
    api: Any, technician: Any, django_user_model: Any, django_assert_max_num_queries: Any
) -> None:
    patient = Patient.objects.create(id="P-IMG", name="Imaged")
    _regions(_scan(patient, technician, 0), 2)

    def grow() -> None:
        for n in range(1, MANY + 1):
            uploader = django_user_model.objects.create_user(
                username=f"tech{n}", password="x" * 20, role="technician"
            )
            _regions(_scan(patient, uploader, n), 3)

    _assert_flat(
        api, technician, f"/api/patients/{patient.pk}/images/", grow, django_assert_max_num_queries
    )


def test_it_lists_regions_in_constant_queries(
    api: Any, technician: Any, django_assert_max_num_queries: Any
) -> None:
    scan = _scan(Patient.objects.create(id="P-REG", name="Regions"), technician, 0)
    _regions(scan, 1)

    def grow() -> None:
        Region.objects.filter(scan=scan).delete()
        _regions(scan, MANY)

    _assert_flat(
        api, technician, f"/api/images/{scan.pk}/regions/", grow, django_assert_max_num_queries
    )


def test_it_lists_similar_scans_in_constant_queries(
    api: Any, technician: Any, django_user_model: Any, django_assert_max_num_queries: Any
) -> None:
    patient = Patient.objects.create(id="P-SIM", name="Similar")
    scan = _scan(patient, technician, 0)
    Fingerprint.objects.create(scan=scan, average_hash="0" * 16, perceptual_hash="0" * 16)
    other = _scan(patient, technician, 1)
    Fingerprint.objects.create(scan=other, average_hash="0" * 16, perceptual_hash="0" * 15 + "1")

    def grow() -> None:
        for n in range(2, MANY + 2):
            uploader = django_user_model.objects.create_user(
                username=f"sim{n}", password="x" * 20, role="technician"
            )
            near = _scan(patient, uploader, n)
            Fingerprint.objects.create(
                scan=near, average_hash="0" * 16, perceptual_hash=f"{n:016x}"
            )

    # The similar list is capped at 10 by the selector.
    _assert_flat(
        api,
        technician,
        f"/api/images/{scan.pk}/similar/",
        grow,
        django_assert_max_num_queries,
        rows=10,
    )


def test_it_lists_audit_events_in_constant_queries(
    api: Any, admin: Any, doctor: Any, django_assert_max_num_queries: Any
) -> None:
    audit_record(action=Action.PATIENT_VIEWED, actor=doctor)

    def grow() -> None:
        for _ in range(MANY):
            audit_record(action=Action.PATIENT_VIEWED, actor=doctor)

    _assert_flat(api, admin, "/api/audit/events/", grow, django_assert_max_num_queries)


def test_it_lists_a_patients_studies_in_constant_queries(
    api: Any, doctor: Any, django_assert_max_num_queries: Any
) -> None:
    patient = Patient.objects.create(id="P-STUDY", name="Studied")
    _scan(patient, doctor, 0)

    def grow() -> None:
        for n in range(1, MANY + 1):
            scan = _scan(patient, doctor, n)
            Scan.objects.filter(pk=scan.pk).update(
                study_uid=f"1.2.3.{n % 3}", series_uid=f"1.2.3.{n % 3}.{n % 2}", modality="US"
            )

    _assert_flat(
        api,
        doctor,
        f"/api/patients/{patient.pk}/studies/",
        grow,
        django_assert_max_num_queries,
        rows=1,
    )


def test_it_lists_segmentation_jobs_in_constant_queries(
    api: Any, doctor: Any, django_user_model: Any, django_assert_max_num_queries: Any
) -> None:
    from imaging.models import SegmentationJob, SegmentationModel

    scan = _scan(Patient.objects.create(id="P-SEG", name="Segmented"), doctor, 0)
    models = [SegmentationModel.objects.create(name=f"perf-model-{i}") for i in range(MANY)]
    SegmentationJob.objects.create(scan=scan, model=models[0], requested_by=doctor)

    def grow() -> None:
        for n, model in enumerate(models):
            requester = django_user_model.objects.create_user(
                username=f"segdoc{n}", password="x" * 20, role="doctor"
            )
            SegmentationJob.objects.create(scan=scan, model=model, requested_by=requester)

    _assert_flat(
        api, doctor, f"/api/images/{scan.pk}/segmentations/", grow, django_assert_max_num_queries
    )
