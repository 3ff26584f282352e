from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from audit.models import Action, AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_record

WRITERS = 8
EVENTS_EACH = 25


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_never_forks_the_chain_under_concurrent_writers(technician: Any) -> None:
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        # Each thread gets its own database connection from Django; close it when done.
        try:
            start.wait()
            for n in range(EVENTS_EACH):
                audit_record(
                    action=Action.PATIENT_VIEWED,
                    actor=technician,
                    target_id=f"{writer}-{n}",
                    details={"writer": writer},
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    total = WRITERS * EVENTS_EACH
    sequences = list(AuditEvent.objects.values_list("sequence", flat=True))
    prev_hashes = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert sequences == list(range(1, total + 1))
    assert len(set(prev_hashes)) == total
    # Every writer's events all landed, interleaved in one line.
    assert AuditEvent.objects.filter(details__writer=3).count() == EVENTS_EACH
    report = audit_chain_verify()
    assert (report.ok, report.events) == (True, total)
