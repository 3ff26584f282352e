"""The restore reason: recorded in the audit log, and required when the setting says so."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import Action, AuditEvent, Outcome
from imaging.models import Scan
from medimg.tests.log_hygiene import plant

pytestmark = pytest.mark.django_db


def _restore(api: Any, scan: Scan, **body: Any) -> Any:
    return api.post(f"/api/images/{scan.pk}/restore/", body, format="json")


def test_it_records_the_reason_in_the_audit_log(
    api: Any, doctor: Any, completed_scan: Scan
) -> None:
    # The reason is in the audit log and in no log line of the run (medimg/tests/log_hygiene.py).
    plant("Tumour board")
    api.force_authenticate(doctor)
    response = _restore(api, completed_scan, reason="Tumour board")
    assert response.status_code == 200
    event = AuditEvent.objects.get(action=Action.SCAN_RESTORED)
    assert event.outcome == Outcome.SUCCESS and event.details["reason"] == "Tumour board"


def test_it_refuses_a_restore_without_a_reason_when_required(
    api: Any, doctor: Any, completed_scan: Scan, settings: Any
) -> None:
    settings.MEDIMG_RESTORE_REASON_REQUIRED = True
    api.force_authenticate(doctor)

    refused = _restore(api, completed_scan, reason="  ")
    allowed = _restore(api, completed_scan, reason="Check the label")

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "reason_required"
    assert allowed.status_code == 200
    events = AuditEvent.objects.filter(action=Action.SCAN_RESTORED).order_by("sequence")
    assert [(e.outcome, e.details.get("error")) for e in events] == [
        (Outcome.REFUSED, "reason_required"),
        (Outcome.SUCCESS, None),
    ]


def test_a_reason_is_optional_by_default(api: Any, doctor: Any, completed_scan: Scan) -> None:
    api.force_authenticate(doctor)
    assert _restore(api, completed_scan).status_code == 200
    assert "reason" not in AuditEvent.objects.get(action=Action.SCAN_RESTORED).details
