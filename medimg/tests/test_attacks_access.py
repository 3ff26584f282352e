"""Attacks on access control: IDOR on every object endpoint, and mass assignment.

IDOR. The object endpoints are not listed here: they are every route in the URL conf with a
path parameter (walked like the policy table does), so a new endpoint is attacked as soon as
it exists; a parameter name with no object below fails the test until one is added. Every
role asks for an existing object and for one that does not exist:
- a role that may not see patient data (anonymous, no role, admin) gets the same refusal for
  both, so it cannot even learn which ids exist, and never a byte of the patient's data;
- a clinical role gets a 404 (or its role refusal, the same for both) for the missing one,
  never a 2xx or a 5xx;
- a clinical role of another department (conftest: otto and olga; the objects belong to a
  Radiology patient) gets exactly what it gets for the missing object, 404 or its role
  refusal, never a byte of the patient's data, and finds the patient in no list or search.

Mass assignment. Fields a client must not set (uploaded_by, status, patient, role, staff
flags, created_by, author) are ignored or refused wherever they are posted.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse
from rest_framework.test import APIClient

from accounts.models import User
from gateway.models import DicomInstance
from imaging.models import (
    Classification,
    ClassifierModel,
    LeftoverDetection,
    Region,
    Scan,
    ScanStatus,
    SegmentationJob,
    SegmentationModel,
)
from imaging.tests import factories
from medimg.tests.test_url_policy import ADMIN_PREFIX, ROLES, view_methods, walk_urlconf
from patients.models import Patient, PatientNote

pytestmark = pytest.mark.django_db

PATIENT_NAME = "Grace Hopper"
MISSING = {
    "patient_id": "MRN-NO-SUCH",
    "scan_id": "987654",
    "region_id": "987654",
    "segmentation_id": "987654",
    "leftover_id": "987654",
    "classification_id": "987654",
    "study_uid": "1.2.826.0.1.999999",
    # DICOMweb (gateway.urls): study, series and instance UIDs, frame numbers.
    "study": "1.2.826.0.1.999999",
    "series": "1.2.826.0.1.999999.1",
    "instance": "1.2.826.0.1.999999.1.1",
    "numbers": "1",
    # DICOMweb bulk data: Pixel Data's tag.
    "tag": "7FE00010",
}
NOT_CLINICAL = ("anonymous", "outsider", "admin")
DICOM_SERIES = "1.2.826.0.1.424242.1"
DICOM_INSTANCE = "1.2.826.0.1.424242.1.1"
# Path parameters that name no patient data: the password-reset link's user and token
# (accounts; a reset link is answered the same to everyone and tested with the mail).
NOT_PATIENT_DATA = frozenset({"uidb64", "token"})


@pytest.fixture
def objects(technician: Any) -> dict[str, str]:
    patient = Patient.objects.create(
        id="MRN-IDOR", name=PATIENT_NAME, age=60, created_by=technician
    )
    scan = Scan.objects.create(
        patient=patient,
        original_filename="idor.png",
        format="png",
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        original_path="scans/idor/original.enc",
        wrapped_key=b"",
        key_id="dev",
        study_uid="1.2.826.0.1.424242",
    )
    region = Region.objects.create(
        scan=scan, index=0, label="phi_text", confidence=0.9, x1=0, y1=0, x2=4, y2=4,
        ciphertext=b"", dtype="uint8",
    )  # fmt: skip
    model = SegmentationModel.objects.create(name="idor-model")
    job = SegmentationJob.objects.create(scan=scan, model=model, requested_by=None)
    leftover = LeftoverDetection.objects.create(
        scan=scan, frame=0, label="phi_text", confidence=0.5, x1=4, y1=4, x2=8, y2=8
    )
    classifier = ClassifierModel.objects.create(
        name="idor-classifier", version="1", onnx_file="classifier-models/idor.onnx",
        config={}, intended_use="tests", weights_sha256="0" * 64,
    )  # fmt: skip
    classification = Classification.objects.create(scan=scan, classifier=classifier)
    return {
        "patient_id": patient.id,
        "scan_id": str(scan.pk),
        "region_id": str(region.pk),
        "segmentation_id": str(job.pk),
        "leftover_id": str(leftover.pk),
        "classification_id": str(classification.pk),
        "study_uid": scan.study_uid,
        # DICOMweb names the study as the scan does; `dicom_objects` adds an instance.
        "study": scan.study_uid,
        "series": DICOM_SERIES,
        "instance": DICOM_INSTANCE,
        "numbers": "1",
        "tag": "7FE00010",
    }


@pytest.fixture
def dicom_objects(objects: dict[str, str]) -> dict[str, str]:
    """The patient also has a completed DICOM scan whose de-identified instance DICOMweb
    lists (its stored files are not there: QIDO reads only the instance row)."""
    patient = Patient.objects.get(pk=objects["patient_id"])
    dicom_scan = Scan.objects.create(
        patient=patient,
        original_filename="idor.dcm",
        format="dicom",
        status=ScanStatus.COMPLETED,
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint8",
        pixels_sha256="1" * 64,
        original_path="scans/idor/dicom.enc",
        wrapped_key=b"",
        key_id="dev",
        study_uid=objects["study"],
    )
    DicomInstance.objects.create(
        scan=dicom_scan,
        study_uid=objects["study"],
        series_uid=DICOM_SERIES,
        sop_instance_uid=DICOM_INSTANCE,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        modality="OT",
    )
    return objects


def object_endpoints() -> list[tuple[str, str]]:
    """(route, method) for every route that names an object, pages and API alike."""
    found = []
    for route, view in walk_urlconf():
        if route.startswith(ADMIN_PREFIX) or "<" not in route:
            continue
        names = set(re.findall(r"<(?:[^>:]+:)?([^>]+)>", route))
        if names <= NOT_PATIENT_DATA:
            continue
        for method in sorted(view_methods(view)) or ["GET"]:
            found.append((route, method))
    return found


def _path(route: str, values: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"add an object for <{name}> to this file's fixtures"
        return quote(values[name], safe="")

    return "/" + re.sub(r"<(?:[^>:]+:)?([^>]+)>", fill, route)


def _client(request: pytest.FixtureRequest, role: str) -> APIClient:
    client = APIClient()
    if role != "anonymous":
        client.force_login(request.getfixturevalue(role))
    return client


def _send(client: APIClient, method: str, path: str) -> HttpResponse:
    return getattr(client, method.lower())(path, {}, format="json")


def test_it_finds_the_object_endpoints_to_attack() -> None:
    routes = {route for route, _ in object_endpoints()}
    # The walker must see the nested includes, or the attack below proves nothing.
    assert {"api/images/<int:scan_id>/restore/", "api/regions/<int:region_id>/"} <= routes
    assert "dicomweb/studies/<str:study>/metadata" in routes
    assert len(routes) >= 10


@pytest.mark.parametrize("role", ROLES)
def test_it_gives_no_object_to_a_role_that_may_not_see_it_nor_leaks_which_exist(
    request: pytest.FixtureRequest, objects: dict[str, str], role: str
) -> None:
    client = _client(request, role)
    problems = []
    for route, method in object_endpoints():
        existing = _send(client, method, _path(route, objects))
        missing = _send(client, method, _path(route, MISSING))
        where = f"{role} {method} /{route}: existing {existing.status_code}, missing "
        where += str(missing.status_code)
        # 204: a DICOMweb search under a missing study found nothing (no content, no data).
        empty_search = missing.status_code == 204
        if missing.status_code >= 500 or (200 <= missing.status_code < 300 and not empty_search):
            problems.append(where)
        if role in NOT_CLINICAL:
            body = existing.content.decode("utf-8", "replace")
            if existing.status_code not in {302, 401, 403} or PATIENT_NAME in body:
                problems.append(where + " (not refused)")
            if existing.status_code != missing.status_code:
                problems.append(where + " (existence oracle)")
        elif missing.status_code not in {403, 404} and missing.status_code != existing.status_code:
            problems.append(where + " (missing object not a 404)")
        if existing.status_code == 403 and missing.status_code != 403:
            problems.append(where + " (role refusal depends on the object)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("role", ["other_technician", "other_doctor"])
def test_another_department_gets_404_on_every_object_and_no_list_shows_it(
    request: pytest.FixtureRequest, dicom_objects: dict[str, str], role: str
) -> None:
    objects = dicom_objects
    # The walk means something: the same-department doctor finds the study over DICOMweb.
    colleague = _client(request, "doctor")
    found = colleague.get("/dicomweb/studies")
    assert found.status_code == 200 and objects["study"] in found.content.decode()

    client = _client(request, role)
    problems = []
    for route, method in object_endpoints():
        existing = _send(client, method, _path(route, objects))
        missing = _send(client, method, _path(route, MISSING))
        where = f"{role} {method} /{route}: existing {existing.status_code}, missing "
        where += str(missing.status_code)
        # 400: the body was refused before any object was looked up; 204: a DICOMweb search
        # found nothing (both the same as for the missing object).
        if existing.status_code not in {204, 400, 403, 404}:
            problems.append(where + " (reached another department's patient)")
        if existing.status_code != missing.status_code:
            problems.append(where + " (existence oracle)")
        if PATIENT_NAME in existing.content.decode("utf-8", "replace"):
            problems.append(where + " (patient name in the answer)")
    for path in ("/api/patients/", "/api/patients/?q=MRN-IDOR", "/api/patients/?q=Hopper"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.json()["count"] == 0, path
    studies = client.get("/dicomweb/studies")
    assert studies.status_code in {200, 204} and objects["study"] not in studies.content.decode()
    assert not problems, "\n".join(problems)


# --- Mass assignment ------------------------------------------------------------------------


def test_it_ignores_uploaded_by_status_and_patient_posted_with_an_upload(
    api: APIClient,
    technician: Any,
    doctor: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    patient = Patient.objects.create(id="MRN-MASS-1", name="Mass One", created_by=technician)
    other = Patient.objects.create(id="MRN-MASS-2", name="Mass Two", created_by=technician)
    png = factories.png_bytes(factories.text_image(64, 48))
    api.force_authenticate(technician)

    # Processing is not run: the status must be the one the server set, not the posted one.
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post(
            f"/api/patients/{patient.id}/images/",
            {
                "files": [SimpleUploadedFile("a.png", png, "image/png")],
                "uploaded_by": str(doctor.pk),
                "status": "completed",
                "patient": other.id,
                "role": "admin",
            },
        )

    assert response.status_code == 201, response.content
    scan = Scan.objects.get()
    assert scan.uploaded_by_id == technician.pk
    assert scan.patient_id == patient.id
    assert scan.status == ScanStatus.UPLOADED
    technician.refresh_from_db()
    assert technician.role == "technician"


def test_it_never_lets_registration_choose_staff_flags_activation_or_admin(
    api: APIClient,
) -> None:
    body = {"username": "mallory", "password": "plum-velvet-harbour-917", "role": "doctor"}
    flags = {"is_staff": True, "is_superuser": True, "is_active": True, "tokens_valid_after": None}

    admin_asked = api.post("/api/auth/register/", {**body, "role": "admin"}, format="json")
    registered = api.post("/api/auth/register/", {**body, **flags}, format="json")

    assert admin_asked.status_code == 400
    assert admin_asked.json()["error"]["code"] == "role_not_allowed"
    assert registered.status_code == 202
    user = User.objects.get(username="mallory")
    assert (user.role, user.is_active, user.is_staff, user.is_superuser) == (
        "doctor",
        False,
        False,
        False,
    )


def test_it_ignores_or_refuses_created_by_and_author_on_patients_and_notes(
    api: APIClient, technician: Any, doctor: Any
) -> None:
    api.force_authenticate(technician)
    created = api.post(
        "/api/patients/",
        {"id": "MRN-MASS-3", "name": "Mass Three", "created_by": doctor.pk},
        format="json",
    )
    patched = api.patch(
        "/api/patients/MRN-MASS-3/", {"created_by": doctor.pk, "id": "MRN-OTHER"}, format="json"
    )
    api.force_authenticate(doctor)
    note = api.post(
        "/api/patients/MRN-MASS-3/notes/", {"text": "Seen.", "author": technician.pk}, format="json"
    )

    assert created.status_code == 201
    # Refused outright (better than silently ignored), and nothing changed.
    assert patched.status_code == 400
    assert set(patched.json()["error"]["fields"]) == {"created_by", "id"}
    patient = Patient.objects.get()
    assert (patient.id, patient.created_by_id) == ("MRN-MASS-3", technician.pk)
    assert note.status_code == 201
    assert PatientNote.objects.get().author_id == doctor.pk


def test_it_ignores_a_role_posted_with_a_jwt_login(
    api: APIClient, technician: Any, password: str
) -> None:
    tokens = api.post(
        "/api/auth/token/",
        {"username": technician.username, "password": password, "role": "admin", "is_staff": 1},
        format="json",
    ).json()

    me = api.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    audit = api.get("/api/audit/events/", HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")

    assert me.json()["role"] == "technician"
    assert audit.status_code == 403
