"""Who may call what: one table for every URL, checked against the URL conf. Deny by default.

`POLICY` has one row per URL pattern and HTTP method with the expected outcome for each role.
`test_it_has_a_policy_for_every_url` walks the whole URL conf and fails on any pattern (or any
method a class-based view answers) that has no row, so a new URL cannot ship without someone
deciding who may call it. `test_it_enforces_the_policy` then makes every request in the table
as every role and checks the outcome.

`test_other_departments_get_404` makes every request on a URL that names patient data (a
patient, scan, study, region or segmentation in its path) as the technician and the doctor
of another department (conftest: otto and olga, Cardiology; the policy patient is in
Radiology): where their role is let through, they must get 404, exactly as for an id that does
not exist; where their role is refused, the refusal is the same as for their colleagues.

TO ADD A URL: add a `Rule` per method to POLICY, in your app's section (the failure message
of the walker prints stubs to start from). If the route has a path parameter that is not in
`path_values` yet, add an object for it to that fixture. Give a `body` when the allowed
request needs one to succeed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import resolve_url
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from rest_framework.test import APIClient

from patients.models import Patient

# Outcome classes.
ALLOW = "allow"  # Let through: not 401/403, not 404/405 (a wrong row), not 5xx, not to a login.
UNAUTHENTICATED = "401"
FORBIDDEN = "403"
LOGIN = "redirect-login"  # A page: 302 to settings.LOGIN_URL.
ADMIN_LOGIN = "redirect-admin-login"  # Django admin: 302 to the admin login page.

ROLES = ("anonymous", "outsider", "technician", "doctor", "admin")
# The same roles in another department than the policy patient's, and the role each stands in
# for (see test_other_departments_get_404).
OTHER_DEPARTMENT_ROLES = {"other_technician": "technician", "other_doctor": "doctor"}
NOT_FOUND = "404"
# Path parameters that name patient data: a URL with one is out of reach of other departments.
PATIENT_DATA_PARAMS = (
    "patient_id",
    "scan_id",
    "study_uid",
    "region_id",
    "leftover_id",
    "segmentation_id",
    "classification_id",
    # DICOMweb (gateway.urls)
    "study",
    "series",
    "instance",
)

# Everything under this prefix is Django admin: one row group, sampled by the rows below
# whose route starts with it (admin_view guards every admin page the same way).
ADMIN_PREFIX = "admin/"

# The only outcomes an anonymous API caller, or a signed-in caller with no clinical role, may
# get on patient data.
_API_CLINICAL = (UNAUTHENTICATED, FORBIDDEN, ALLOW, ALLOW, FORBIDDEN)
_API_TECHNICIAN = (UNAUTHENTICATED, FORBIDDEN, ALLOW, FORBIDDEN, FORBIDDEN)
_API_DOCTOR = (UNAUTHENTICATED, FORBIDDEN, FORBIDDEN, ALLOW, FORBIDDEN)
_API_SIGNED_IN = (UNAUTHENTICATED, ALLOW, ALLOW, ALLOW, ALLOW)
_ADMIN_PAGE = (ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ALLOW)
_EVERYONE = (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW)
_DICOMWEB_STUDY = (UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN)
# Clinical pages: anonymous users to the login page; admins and outsiders refused.
_PAGE_CLINICAL = (LOGIN, FORBIDDEN, ALLOW, ALLOW, FORBIDDEN)
# Admin pages: anonymous users to the login page; every other role refused.
_PAGE_ADMIN = (LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN, ALLOW)


@dataclass(frozen=True)
class Rule:
    """Expected outcomes of one method on one URL pattern, in ROLES order."""

    route: str  # As the walker prints it, e.g. "api/patients/<str:patient_id>/".
    method: str
    outcomes: tuple[str, str, str, str, str]
    body: dict[str, Any] | None = None  # Sent as JSON (or as a form, see `form`).
    form: bool = False
    path: str | None = None  # A concrete path, for admin samples and regex routes.
    query: dict[str, str] = field(default_factory=dict)

    def outcome(self, role: str) -> str:
        return self.outcomes[ROLES.index(role)]

    @property
    def key(self) -> tuple[str, str]:
        return (self.route, self.method)


# fmt: off
POLICY: list[Rule] = [
    # ---- Django admin (row group; see ADMIN_PREFIX) ---------------------------------------
    Rule("admin/", "GET", _ADMIN_PAGE),
    Rule("admin/login/", "GET", _EVERYONE),
    Rule("admin/patients/patient/", "GET", _ADMIN_PAGE),
    Rule("admin/patients/breakglassgrant/", "GET", _ADMIN_PAGE,
         path="/admin/patients/breakglassgrant/"),
    Rule("admin/accounts/user/", "GET", _ADMIN_PAGE, path="/admin/accounts/user/"),
    Rule("admin/audit/auditevent/", "GET", _ADMIN_PAGE, path="/admin/audit/auditevent/"),

    # ---- API schema and docs: any signed-in user ------------------------------------------
    Rule("api/schema/", "GET", _API_SIGNED_IN),
    Rule("api/docs/", "GET", _API_SIGNED_IN),

    # ---- patients ------------------------------------------------------------------------
    Rule("api/patients/", "GET", _API_CLINICAL, query={"q": "MRN"}),
    Rule("api/patients/", "POST", _API_TECHNICIAN, body={"id": "MRN-POLICY", "name": "New"}),
    Rule("api/patients/<str:patient_id>/", "GET", _API_CLINICAL),
    Rule("api/patients/<str:patient_id>/", "PATCH", _API_TECHNICIAN, body={"age": 61}),
    Rule("api/patients/<str:patient_id>/notes/", "GET", _API_CLINICAL),
    Rule("api/patients/<str:patient_id>/notes/", "POST", _API_DOCTOR, body={"text": "Seen."}),
    # Emergency access (patients/emergency_api.py): clinical roles. The policy patient is in
    # the technician's and the doctor's department, so a request is let through to 409
    # access_not_needed; ending answers {"ended": 0}. Grants: patients/tests/test_emergency.py.
    Rule("api/emergency-access/", "GET", _API_CLINICAL),
    Rule("api/emergency-access/", "POST", _API_CLINICAL,
         body={"patient_id": "MRN-0001", "reason": "Policy check of the emergency path",
               "confirm": True}),
    Rule("api/emergency-access/end/", "POST", _API_CLINICAL, body={"patient_id": "MRN-0001"}),
    Rule("api/patients/<str:patient_id>/access/", "GET", _API_CLINICAL),
    Rule("api/patients/<str:patient_id>/access/", "PATCH", _API_CLINICAL, body={"care_team": []}),

    # ---- accounts: pages and /api/auth/* (added by the accounts engineer) ------------------
    # Home: one page per role (outsider: "no role yet"); only technicians create patients.
    Rule("", "GET", (LOGIN, ALLOW, ALLOW, ALLOW, ALLOW)),
    Rule("", "POST", (LOGIN, FORBIDDEN, ALLOW, FORBIDDEN, FORBIDDEN),
         body={"id": "MRN-HOME", "name": "New"}, form=True),
    Rule("login/", "GET", _EVERYONE),
    # ---- DICOMweb (gateway): clinical roles, scoped like the API ---------------------------
    # The policy scan is an unprocessed PNG, which DICOMweb never serves: a study-scoped
    # resource answers 404 to every clinical role here (access to a served study is tested
    # in gateway/tests/test_dicomweb.py).
    Rule("dicomweb/studies", "GET", _API_CLINICAL),
    Rule("dicomweb/series", "GET", _API_CLINICAL),
    Rule("dicomweb/instances", "GET", _API_CLINICAL),
    Rule("dicomweb/studies/<str:study>", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/metadata", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/instances", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/metadata", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/instances", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>",
         "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/metadata",
         "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/frames/<str:numbers>",
         "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/rendered",
         "GET", _DICOMWEB_STUDY),
    # OHIF's thumbnails (study, series, instance) and the metadata's BulkDataURI.
    Rule("dicomweb/studies/<str:study>/thumbnail", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/thumbnail", "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/thumbnail",
         "GET", _DICOMWEB_STUDY),
    Rule("dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/bulk/<str:tag>",
         "GET", _DICOMWEB_STUDY),
    Rule("healthz", "GET", _EVERYONE),
    Rule("healthz/ready", "GET", _EVERYONE),
    Rule("metrics", "GET", _EVERYONE),
    Rule("password-reset/", "GET", _EVERYONE),
    Rule("password-reset/", "POST", _EVERYONE, body={"email": "nobody@example.org"}, form=True),
    Rule("password-reset/sent/", "GET", _EVERYONE),
    Rule("password-reset/<uidb64>/<token>/", "GET", _EVERYONE, path="/password-reset/MQ/x-y/"),
    Rule("password-reset/<uidb64>/<token>/", "POST", _EVERYONE, path="/password-reset/MQ/x-y/",
         body={"new_password1": "x", "new_password2": "x"}, form=True),
    Rule("password-reset/done/", "GET", _EVERYONE),
    Rule("login/", "POST", _EVERYONE, body={"username": "nobody", "password": "x"}, form=True),
    # Logging out always lands on the login page, whoever asks.
    Rule("logout/", "POST", (LOGIN, LOGIN, LOGIN, LOGIN, LOGIN), body={}, form=True),
    # Two-factor login (accounts/otp_views.py): the code step answers anyone signed in or
    # half-way through the password step (a wrong code is a 400); enrolment is for the
    # signed-in user's own device. Anonymous visitors go back to the login page.
    Rule("login/otp/", "GET", (LOGIN, ALLOW, ALLOW, ALLOW, ALLOW)),
    Rule("login/otp/", "POST", (LOGIN, ALLOW, ALLOW, ALLOW, ALLOW), body={"code": "000000"},
         form=True),
    Rule("account/2fa/", "GET", (LOGIN, ALLOW, ALLOW, ALLOW, ALLOW)),
    Rule("account/2fa/", "POST", (LOGIN, ALLOW, ALLOW, ALLOW, ALLOW), body={"code": "000000"},
         form=True),
    Rule("api/auth/register/", "POST", _EVERYONE,
         body={"username": "policy-new", "password": "plum-velvet-harbour-917", "role": "doctor"}),
    # Credentials in the body are the only way in; a session changes nothing (tina: conftest).
    Rule("api/auth/token/", "POST", _EVERYONE,
         body={"username": "tina", "password": "correct-horse-battery-staple-42"}),
    # The refresh token is the credential: a session without one is refused. (The allowed
    # path is tested in accounts/tests/test_tokens.py: tokens cannot be written in a table.)
    Rule("api/auth/token/refresh/", "POST", (UNAUTHENTICATED,) * 5, body={"refresh": "none"}),
    Rule("api/auth/logout/", "POST", (UNAUTHENTICATED,) * 5, body={"refresh": "none"}),
    Rule("api/auth/me/", "GET", _API_SIGNED_IN),
    # Session keys seal patient data in transit: clinical roles only. The POST is let through
    # to a 400 (no live exchange); whole exchanges are in accounts/tests/test_keyexchange.py.
    Rule("api/auth/key-exchange/", "GET", _API_CLINICAL, query={"group": "x25519"}),
    Rule("api/auth/key-exchange/", "POST", _API_CLINICAL,
         body={"exchange_id": "x" * 32, "public_key": "AAAA"}),

    # ---- audit: /api/audit/* (added by the audit engineer) ---------------------------------
    Rule("api/audit/events/", "GET", (UNAUTHENTICATED, FORBIDDEN, FORBIDDEN, FORBIDDEN, ALLOW),
         query={"action": "login"}),
    Rule("api/audit/verify/", "GET", (UNAUTHENTICATED, FORBIDDEN, FORBIDDEN, FORBIDDEN, ALLOW)),
    Rule("api/audit/export/", "GET", (UNAUTHENTICATED, FORBIDDEN, FORBIDDEN, FORBIDDEN, ALLOW),
         query={"since": "2026-01-01"}),

    # ---- imaging: /api/images/* and friends (added by the imaging engineer) ----------------
    # The policy scan is not processed yet: image endpoints answer 409 scan_not_ready to the
    # roles let through, which is still "let through".
    Rule("api/patients/<str:patient_id>/images/", "GET", _API_CLINICAL),
    Rule("api/patients/<str:patient_id>/images/", "POST", _API_TECHNICIAN, body={}, form=True),
    Rule("api/images/<int:scan_id>/", "GET", _API_CLINICAL),
    Rule("api/images/<int:scan_id>/status/", "GET", _API_CLINICAL),
    Rule("api/images/<int:scan_id>/redacted/", "GET", _API_CLINICAL),
    Rule("api/images/<int:scan_id>/grid/", "GET", _API_CLINICAL),
    Rule("api/images/<int:scan_id>/thumbnail/", "GET", _API_CLINICAL),
    Rule("api/images/<int:scan_id>/regions/", "GET", _API_CLINICAL),
    # Review (imaging/apis/review.py): the policy scan is unprocessed, so allowed roles get 409.
    Rule("api/images/<int:scan_id>/regions/", "POST", _API_CLINICAL,
         body={"x1": 0, "y1": 0, "x2": 4, "y2": 4}),
    Rule("api/images/<int:scan_id>/review/", "POST", _API_TECHNICIAN, body={}),
    # Moving an image to another patient (imaging/apis/reassign.py): technicians; moving it to
    # its own patient is a 400, which is still "let through".
    Rule("api/images/<int:scan_id>/move/", "POST", _API_TECHNICIAN, body={"patient": "MRN-0001"}),
    Rule("api/regions/<int:region_id>/", "DELETE", _API_TECHNICIAN),
    Rule("api/regions/<int:region_id>/removal/", "POST", _API_DOCTOR, body={"approve": True}),
    # Undo a removal request before the review is confirmed (technicians only).
    Rule("api/regions/<int:region_id>/removal/", "DELETE", _API_TECHNICIAN),
    # Leftover detections of the verification pass: listed for clinical roles, dismissed
    # (with a reason) by technicians.
    Rule("api/images/<int:scan_id>/leftovers/", "GET", _API_CLINICAL),
    Rule("api/leftovers/<int:leftover_id>/dismissal/", "POST", _API_TECHNICIAN,
         body={"reason": "ruler markings"}),
    # The blurred teaching copy (a PNG built from the redacted frame): clinical roles.
    Rule("api/images/<int:scan_id>/blurred/", "GET", _API_CLINICAL),
    Rule("api/images/<int:scan_id>/similar/", "GET", _API_CLINICAL),
    # A POST with a JSON body; the policy scan is unprocessed, so a doctor gets 409.
    Rule("api/images/<int:scan_id>/restore/", "POST", _API_DOCTOR, body={}),
    # Viewer and QC (imaging/apis/viewing.py): frames, clusters and studies for clinical
    # roles; the QC outlier report (statistics, no images) for doctors and admins.
    Rule("api/images/<int:scan_id>/frames/", "GET", _API_CLINICAL),
    Rule("api/images/<int:scan_id>/region-groups/", "GET", _API_CLINICAL),
    Rule("api/images/<int:scan_id>/clusters/", "GET", _API_CLINICAL, query={"k": "3"}),
    Rule("api/images/<int:scan_id>/clusters/image/", "GET", _API_CLINICAL),
    Rule("api/patients/<str:patient_id>/studies/", "GET", _API_CLINICAL),
    Rule("api/qc/outliers/", "GET", (UNAUTHENTICATED, FORBIDDEN, FORBIDDEN, ALLOW, ALLOW)),
    # De-identified DICOM (imaging/apis/deid.py): identity and exports, doctors only.
    Rule("api/images/<int:scan_id>/identity/", "GET", _API_DOCTOR),
    Rule("api/images/<int:scan_id>/export/", "GET", _API_DOCTOR, query={"format": "dicom"}),
    Rule("api/patients/<str:patient_id>/export/", "GET", _API_DOCTOR),
    Rule("api/patients/<str:patient_id>/studies/<str:study_uid>/export/", "GET", _API_DOCTOR),
    Rule("api/regions/<int:region_id>/", "GET", _API_DOCTOR),
    Rule("api/stats/processing/", "GET", (UNAUTHENTICATED, FORBIDDEN, FORBIDDEN, FORBIDDEN, ALLOW)),
    # Segmentation (imaging/apis/segmentation.py): doctors only. The policy job is queued, so
    # overlay and SEG answer 409 segmentation_not_ready; the POST meets an unprocessed scan.
    Rule("api/segmentation/models/", "GET", _API_DOCTOR),
    Rule("api/images/<int:scan_id>/segmentations/", "GET", _API_DOCTOR),
    Rule("api/images/<int:scan_id>/segmentations/", "POST", _API_DOCTOR,
         body={"model": "policy-model"}),
    Rule("api/segmentations/<int:segmentation_id>/", "GET", _API_DOCTOR),
    Rule("api/segmentations/<int:segmentation_id>/overlay/", "GET", _API_DOCTOR),
    Rule("api/segmentations/<int:segmentation_id>/seg/", "GET", _API_DOCTOR),
    # The 3D view's volumes (imaging/apis/volume3d.py): doctors only; 409 for the queued job.
    Rule("api/segmentations/<int:segmentation_id>/volume.nii", "GET", _API_DOCTOR),
    Rule("api/segmentations/<int:segmentation_id>/labels.nii", "GET", _API_DOCTOR),
    Rule("admin/imaging/segmentationmodel/", "GET", _ADMIN_PAGE,
         path="/admin/imaging/segmentationmodel/"),
    # Classifier plug-ins (imaging/apis/classification.py): doctors only. The policy result is
    # queued; the POST meets an unprocessed scan (409 scan_not_ready).
    Rule("api/classifiers/", "GET", _API_DOCTOR),
    Rule("api/images/<int:scan_id>/classifications/", "GET", _API_DOCTOR),
    Rule("api/images/<int:scan_id>/classifications/", "POST", _API_DOCTOR, body={"model": 1}),
    Rule("api/classifications/<int:classification_id>/", "GET", _API_DOCTOR),
    Rule("admin/imaging/classifiermodel/", "GET", _ADMIN_PAGE,
         path="/admin/imaging/classifiermodel/"),
    Rule("admin/imaging/scan/", "GET", _ADMIN_PAGE, path="/admin/imaging/scan/"),

    # ---- clinical pages (pages/urls.py; added by the pages engineer) ----------------
    Rule("patients/<str:patient_id>/", "GET", _PAGE_CLINICAL),
    Rule("patients/<str:patient_id>/access/", "GET", _PAGE_CLINICAL),
    Rule("patients/<str:patient_id>/access/", "POST", _PAGE_CLINICAL,
         body={"action": "add_member", "member": "doris"}, form=True),
    Rule("scans/<int:scan_id>/", "GET", _PAGE_CLINICAL),
    Rule("scans/<int:scan_id>/clusters/", "GET", _PAGE_CLINICAL),
    # The 3D view (pages/views/volume3d.py): doctors only, like the segmentation it shows;
    # the policy job is queued, so the page answers 409 with the reason.
    Rule("segmentations/<int:segmentation_id>/3d/", "GET",
         (LOGIN, FORBIDDEN, FORBIDDEN, ALLOW, FORBIDDEN)),
    # Corrections (pages/views/corrections.py): technicians only. Saving the policy patient's
    # own name redirects to its page; moving the policy scan to its own patient is a 400.
    Rule("patients/<str:patient_id>/edit/", "GET", (LOGIN, FORBIDDEN, ALLOW, FORBIDDEN, FORBIDDEN)),
    Rule("patients/<str:patient_id>/edit/", "POST", (LOGIN, FORBIDDEN, ALLOW, FORBIDDEN, FORBIDDEN),
         body={"name": "Grace Hopper", "age": "60"}, form=True),
    Rule("scans/<int:scan_id>/move/", "GET", (LOGIN, FORBIDDEN, ALLOW, FORBIDDEN, FORBIDDEN)),
    Rule("scans/<int:scan_id>/move/", "POST", (LOGIN, FORBIDDEN, ALLOW, FORBIDDEN, FORBIDDEN),
         body={"patient": "MRN-0001"}, form=True),
    # Emergency access pages (pages/views/emergency.py): the form (a request for the policy
    # patient is a 409, already visible) and ending a grant (a redirect home).
    Rule("emergency-access/", "GET", _PAGE_CLINICAL),
    Rule("emergency-access/", "POST", _PAGE_CLINICAL,
         body={"patient_id": "MRN-0001", "reason": "Policy check of the emergency path",
               "confirm": "on"}, form=True),
    Rule("emergency-access/end/", "POST", _PAGE_CLINICAL, body={"patient_id": "MRN-0001"},
         form=True),
    # Quality control (pages/views/qc.py): doctors and admins.
    Rule("qc/", "GET", (LOGIN, FORBIDDEN, FORBIDDEN, ALLOW, ALLOW)),
    # Admin pages outside Django admin (pages/urls.py).
    Rule("manage/statistics/", "GET", _PAGE_ADMIN),
    Rule("manage/audit/", "GET", _PAGE_ADMIN, query={"action": "login"}),
    Rule("manage/audit/", "POST", _PAGE_ADMIN, body={}, form=True),
    # The audit page's CSV export of what its filters show (pages/views/audit.py): admins.
    Rule("manage/audit/export/", "GET", _PAGE_ADMIN, query={"action": "login"}),
    Rule("manage/audit/patient/", "GET", _PAGE_ADMIN),
    Rule("manage/audit/patient/", "POST", _PAGE_ADMIN, body={"hospital_id": "MRN-1"}, form=True),
    # Erasure (pages/views/erasure.py): admins only; an empty form is a 400, nothing erased.
    Rule("manage/erasure/", "GET", _PAGE_ADMIN),
    Rule("manage/erasure/", "POST", _PAGE_ADMIN, body={}, form=True),
]
# fmt: on


@pytest.fixture
def path_values(patient_for_policy: Patient, scan_for_policy: Any) -> dict[str, str]:
    """An existing object for each path parameter name used in POLICY routes."""
    return {
        "patient_id": patient_for_policy.id,
        "scan_id": str(scan_for_policy.pk),
        "study_uid": scan_for_policy.study_uid,
        "region_id": str(scan_for_policy.regions.get().pk),
        "leftover_id": str(scan_for_policy.leftovers.get().pk),
        "segmentation_id": str(_policy_segmentation(scan_for_policy).pk),
        "classification_id": str(_policy_classification(scan_for_policy).pk),
        # DICOMweb: the policy scan's study; series and instance as a DICOM scan would have.
        "study": scan_for_policy.study_uid,
        "series": "2.25.1234.1",
        "instance": "2.25.1234.1.1",
        "numbers": "1",
        "tag": "7FE00010",
    }


def _policy_segmentation(scan: Any) -> Any:
    """A queued segmentation job of the policy scan."""
    from imaging.models import SegmentationJob, SegmentationModel

    model = SegmentationModel.objects.create(name="policy-model", config={})
    return SegmentationJob.objects.create(scan=scan, model=model)


def _policy_classification(scan: Any) -> Any:
    """A queued classification of the policy scan (the file is never loaded here)."""
    from django.core.files.base import ContentFile

    from imaging.models import Classification, ClassifierModel

    model = ClassifierModel(name="policy-classifier", version="1", intended_use="policy")
    model.onnx_file.save("policy.onnx", ContentFile(b"not loaded"), save=False)
    model.save()
    return Classification.objects.create(scan=scan, classifier=model)


@pytest.fixture
def scan_for_policy(patient_for_policy: Patient) -> Any:
    """An uploaded (not yet processed) scan with one region row and one leftover detection."""
    from imaging.models import LeftoverDetection, Region, Scan

    scan = Scan.objects.create(
        patient=patient_for_policy,
        original_filename="policy.png",
        format="png",
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        original_path="scans/policy/original.enc",
        study_uid="2.25.1234",
        wrapped_key=b"",
        key_id="dev",
    )
    Region.objects.create(
        scan=scan,
        index=0,
        label="phi_text",
        confidence=0.9,
        x1=0,
        y1=0,
        x2=4,
        y2=4,
        ciphertext=b"",
        dtype="uint8",
    )
    LeftoverDetection.objects.create(
        scan=scan, label="phi_text", confidence=0.6, x1=4, y1=4, x2=8, y2=8
    )
    return scan


@pytest.fixture
def patient_for_policy(technician: Any) -> Patient:
    return Patient.objects.create(id="MRN-0001", name="Grace Hopper", age=60, created_by=technician)


# ---- Walking the URL conf ------------------------------------------------------------------


def _join(prefix: str, part: str) -> str:
    # Django strips the anchor of a nested regex when it joins routes; do the same.
    return prefix + (part[1:] if prefix and part.startswith("^") else part)


def walk_urlconf(
    resolver: URLResolver | None = None, prefix: str = ""
) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every (route, view) in the URL conf, included URL confs expanded."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = _join(prefix, str(entry.pattern))
        if isinstance(entry, URLResolver):
            yield from walk_urlconf(entry, route)
        elif isinstance(entry, URLPattern):
            yield route, entry.callback


def view_methods(view: Callable[..., Any]) -> set[str]:
    """The methods a class-based view answers (DRF or Django); empty for a function view."""
    view_class = getattr(view, "cls", None) or getattr(view, "view_class", None)
    if view_class is None:
        return set()
    return {
        method.upper()
        for method in view_class.http_method_names
        if method not in {"options", "head"} and hasattr(view_class, method)
    }


def _stub(route: str, method: str) -> str:
    return f'    Rule("{route}", "{method}", (UNAUTHENTICATED, FORBIDDEN, ..., ..., FORBIDDEN)),'


def test_it_has_a_policy_for_every_url() -> None:
    covered = {rule.key for rule in POLICY}
    covered_routes = {rule.route for rule in POLICY}
    missing: list[str] = []
    for route, view in walk_urlconf():
        if route.startswith(ADMIN_PREFIX):
            continue
        methods = view_methods(view)
        if not methods:
            # A function view does not say which methods it takes: it needs at least one row.
            if route not in covered_routes:
                missing.append(_stub(route, "GET"))
            continue
        missing.extend(_stub(route, m) for m in sorted(methods) if (route, m) not in covered)
    assert not missing, "URLs with no policy row; add to POLICY:\n" + "\n".join(missing)


def test_it_has_no_stale_or_duplicate_rows() -> None:
    routes = dict(walk_urlconf())
    seen: set[tuple[str, str]] = set()
    for rule in POLICY:
        assert rule.key not in seen, f"duplicate row {rule.key}"
        seen.add(rule.key)
        allowed = {ALLOW, UNAUTHENTICATED, FORBIDDEN, LOGIN, ADMIN_LOGIN}
        if rule.outcomes == _DICOMWEB_STUDY:
            allowed.add(NOT_FOUND)  # Only these rows: the policy scan is not a served study.
        assert set(rule.outcomes) <= allowed
        if rule.route.startswith(ADMIN_PREFIX):
            # Admin samples only need to reach a real admin page.
            match = resolve(rule.path or "/" + rule.route)
            assert match.route.startswith(ADMIN_PREFIX), rule
            continue
        assert rule.route in routes, f"row for a URL that does not exist: {rule.key}"
        methods = view_methods(routes[rule.route])
        assert not methods or rule.method in methods, f"the view does not answer {rule.key}"


def test_it_walks_included_url_confs() -> None:
    # The walker itself must see nested includes, or the coverage test above proves nothing.
    routes = {route for route, _ in walk_urlconf()}
    assert {"api/patients/<str:patient_id>/notes/", "api/schema/", "admin/"} <= routes


# ---- Calling every row as every role -------------------------------------------------------

_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def concrete_path(rule: Rule, values: dict[str, str]) -> str:
    if rule.path is not None:
        return rule.path
    assert "(?P" not in rule.route and "^" not in rule.route, f"give a `path` for {rule.key}"

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        assert name in values, f"add {name!r} to the path_values fixture for {rule.key}"
        return quote(str(values[name]), safe="")

    return "/" + _PARAM.sub(fill, rule.route)


def _is_redirect_to(response: HttpResponse, target: str) -> bool:
    return response.status_code == 302 and urlsplit(response["Location"]).path == target


def assert_outcome(response: HttpResponse, expected: str, context: str) -> None:
    status = response.status_code
    login_pages = {resolve_url(settings.LOGIN_URL), reverse("admin:login")}
    detail = f"{context}: got {status} {response.get('Location', '')}, expected {expected}"
    if expected == ALLOW:
        assert status < 500 and status not in {401, 403, 404, 405}, detail
        assert not any(_is_redirect_to(response, page) for page in login_pages), detail
    elif expected == UNAUTHENTICATED:
        assert status == 401, detail
    elif expected == FORBIDDEN:
        assert status == 403, detail
    elif expected == LOGIN:
        assert _is_redirect_to(response, resolve_url(settings.LOGIN_URL)), detail
    elif expected == ADMIN_LOGIN:
        assert _is_redirect_to(response, reverse("admin:login")), detail
    elif expected == NOT_FOUND:
        assert status == 404, detail
    else:
        raise AssertionError(f"unknown outcome {expected!r} in {context}")


def _send(client: APIClient, rule: Rule, path: str) -> HttpResponse:
    if rule.query:
        path += "?" + "&".join(f"{k}={quote(v)}" for k, v in rule.query.items())
    send = getattr(client, rule.method.lower())
    if rule.body is None:
        return send(path)
    if rule.form:
        return send(path, rule.body)
    return send(path, rule.body, format="json")


def _names_patient_data(rule: Rule) -> bool:
    return any(f":{name}>" in rule.route for name in PATIENT_DATA_PARAMS)


PATIENT_DATA_RULES = [rule for rule in POLICY if _names_patient_data(rule)]


def test_other_department_rows_cover_patient_data() -> None:
    # The walk below must not silently shrink to nothing.
    routes = {rule.route for rule in PATIENT_DATA_RULES}
    assert {"api/patients/<str:patient_id>/", "api/images/<int:scan_id>/restore/"} <= routes
    assert {"patients/<str:patient_id>/", "api/segmentations/<int:segmentation_id>/"} <= routes


@pytest.mark.django_db
@pytest.mark.parametrize("role", sorted(OTHER_DEPARTMENT_ROLES))
@pytest.mark.parametrize("rule", PATIENT_DATA_RULES, ids=lambda rule: f"{rule.method} {rule.route}")
def test_other_departments_get_404(
    request: pytest.FixtureRequest, path_values: dict[str, str], rule: Rule, role: str
) -> None:
    same_role = rule.outcome(OTHER_DEPARTMENT_ROLES[role])
    expected = NOT_FOUND if same_role == ALLOW else same_role
    client = APIClient()
    client.force_login(request.getfixturevalue(role))
    path = concrete_path(rule, path_values)

    response = _send(client, rule, path)

    assert_outcome(response, expected, f"{role} {rule.method} {path}")


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("rule", POLICY, ids=lambda rule: f"{rule.method} {rule.route}")
def test_it_enforces_the_policy(
    request: pytest.FixtureRequest, path_values: dict[str, str], rule: Rule, role: str
) -> None:
    client = APIClient()
    if role != "anonymous":
        # A real session, so pages, admin and the API all see the same signed-in user.
        client.force_login(request.getfixturevalue(role))
    path = concrete_path(rule, path_values)
    if rule.query:
        path += "?" + "&".join(f"{k}={quote(v)}" for k, v in rule.query.items())
    send = getattr(client, rule.method.lower())
    if rule.body is None:
        response = send(path)
    elif rule.form:
        response = send(path, rule.body)
    else:
        response = send(path, rule.body, format="json")

    assert_outcome(response, rule.outcome(role), f"{role} {rule.method} {path}")


# ---- Other departments on the URLs that name no patient ----------------------------------

# Lists, searches, the worklist, QIDO: let through for the role, but the policy patient (in
# the technician's and the doctor's department) must not be in what comes back.
ELSEWHERE_RULES = [
    rule
    for rule in POLICY
    if rule.method == "GET"
    and not _names_patient_data(rule)
    and not rule.route.startswith(ADMIN_PREFIX)
]


def _body(response: HttpResponse) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return response.content


@pytest.mark.django_db
@pytest.mark.parametrize("role", sorted(OTHER_DEPARTMENT_ROLES))
@pytest.mark.parametrize("rule", ELSEWHERE_RULES, ids=lambda rule: f"{rule.method} {rule.route}")
def test_other_departments_see_nothing_of_the_patient_elsewhere(
    request: pytest.FixtureRequest,
    path_values: dict[str, str],
    patient_for_policy: Patient,
    rule: Rule,
    role: str,
) -> None:
    client = APIClient()
    client.force_login(request.getfixturevalue(role))
    path = concrete_path(rule, path_values)
    # The lists search by part of the name (the page echoes the term it was given).
    search = {"q": "Grace"} if rule.route in {"", "api/patients/"} else {}

    response = _send(client, Rule(**{**rule.__dict__, "query": {**rule.query, **search}}), path)

    assert_outcome(response, rule.outcome(OTHER_DEPARTMENT_ROLES[role]), f"{role} GET {path}")
    body = _body(response)
    for value in (patient_for_policy.id, patient_for_policy.name, patient_for_policy.reference):
        assert value.encode() not in body, f"{role} GET {path} shows {value!r}"


@pytest.mark.django_db
@pytest.mark.parametrize("route", ["", "api/patients/"])
def test_the_patients_own_department_does_see_it_there(
    client: Any, doctor: Any, patient_for_policy: Patient, route: str
) -> None:
    # The walk above would prove nothing if these lists never showed the patient.
    client.force_login(doctor)

    response = client.get(f"/{route}", {"q": "Grace"})

    assert patient_for_policy.id.encode() in response.content
    assert patient_for_policy.name.encode() in response.content
