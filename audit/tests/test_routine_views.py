"""Routine views (thumbnails, the notes card) are summarised: one event per user, patient and
kind per window, still on the chain."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from audit.models import Action, AuditEvent
from audit.pseudonyms import patient_reference
from audit.selectors import audit_chain_verify
from audit.services import audit_record_routine


def _view(user: Any, patient_id: str = "MRN-1", kind: str = "thumbnails") -> AuditEvent | None:
    return audit_record_routine(
        action=Action.SCAN_VIEWED,
        actor=user,
        target_type="patient",
        target_id=patient_id,
        kind=kind,
        details={"view": kind},
    )


def test_it_records_one_event_per_user_patient_and_kind_in_a_window(
    doctor: Any, technician: Any
) -> None:
    first = _view(doctor)
    assert first is not None
    assert [_view(doctor) for _ in range(5)] == [None] * 5
    assert _view(doctor, kind="notes") is not None
    assert _view(doctor, patient_id="MRN-2") is not None
    assert _view(technician) is not None

    events = AuditEvent.objects.filter(action=Action.SCAN_VIEWED)
    assert events.count() == 4
    assert first.target_id == patient_reference("MRN-1")
    assert first.details["routine"] == "thumbnails"
    assert first.details["window_minutes"] == 15


def test_it_records_again_after_the_window(doctor: Any, settings: Any, monkeypatch: Any) -> None:
    settings.AUDIT_ROUTINE_VIEW_MINUTES = 10
    assert _view(doctor) is not None
    later = timezone.now() + timedelta(minutes=9)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert _view(doctor) is None
    later = later + timedelta(minutes=2)
    assert _view(doctor) is not None
    assert AuditEvent.objects.filter(action=Action.SCAN_VIEWED).count() == 2
    assert audit_chain_verify().ok


def test_it_records_every_view_when_the_window_is_zero(doctor: Any, settings: Any) -> None:
    settings.AUDIT_ROUTINE_VIEW_MINUTES = 0
    assert _view(doctor) is not None
    assert _view(doctor) is not None
    assert AuditEvent.objects.filter(action=Action.SCAN_VIEWED).count() == 2


def test_the_summarised_events_keep_the_chain(doctor: Any, technician: Any) -> None:
    for _ in range(3):
        _view(doctor)
        _view(technician, kind="notes")
    assert AuditEvent.objects.count() == 2
    assert audit_chain_verify().ok
