"""Schemathesis against the API's own OpenAPI schema (/api/schema/), in-process over WSGI:
every operation, called as every role with generated (valid and invalid) input, answers with
no 5xx, a status code the schema lists, the content type it lists and a body that matches
its schema. Time-boxed: a few examples per operation and role in the suite; `make fuzz`
runs SCHEMA_EXAMPLES per operation and role (MEDIMG_FUZZ=1)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.tokens import token_pair_for
from imaging.models import Region, Scan
from patients.models import Patient

pytestmark = pytest.mark.django_db

# The long runs are for `make fuzz` (MEDIMG_FUZZ=1), not for every `make test`.
LONG = pytest.mark.skipif(not os.environ.get("MEDIMG_FUZZ"), reason="long run: make fuzz")
SMOKE_EXAMPLES = 2
LONG_EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations whose generated calls would end the caller's own login or mint real accounts
# are still called; none is skipped.
SKIP: set[str] = set()


@pytest.fixture
def world(technician: Any, doctor: Any, admin: Any, outsider: Any) -> dict[str, Any]:
    """Users for every role, and a patient with a scan and a region for the ids to hit."""
    patient = Patient.objects.create(id="MRN-0001", name="Schema Patient", created_by=technician)
    scan = Scan.objects.create(
        patient=patient,
        original_filename="schema.png",
        format="png",
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        original_path="scans/schema/original.enc",
        wrapped_key=b"",
        key_id="dev",
    )
    Region.objects.create(
        scan=scan, index=0, label="phi_text", confidence=0.9, x1=0, y1=0, x2=4, y2=4,
        ciphertext=b"", dtype="uint8",
    )  # fmt: skip
    return {"technician": technician, "doctor": doctor, "admin": admin, "outsider": outsider}


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """The real WSGI app, called in this thread inside the test's transaction. Like Django's
    test client, keep the request signals from closing the test's database connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _bearer(user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_pair_for(user).access_token}"}


def _run(world: dict[str, Any], app: Any, examples: int) -> None:
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", app, headers=_bearer(world["doctor"])
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for role in ("anonymous", "outsider", "technician", "doctor", "admin"):
        headers = {} if role == "anonymous" else _bearer(world[role])
        for operation in operations:
            if operation.label in SKIP:
                continue
            test = _operation_test(operation, headers, examples)
            try:
                test()
            # Hypothesis raises an exception group; collect every operation's, not the first.
            except BaseExceptionGroup as group:
                failures.append(f"{role} {operation.label}: {_summary(group)}")
    assert not failures, "\n".join(failures)


def _summary(group: BaseExceptionGroup) -> str:
    lines = [line.strip() for line in str(group).splitlines() if line.strip()]
    detail = [line for line in lines if line.startswith(("-", "Received", "Documented"))]
    return " | ".join(detail[:6]) or " | ".join(lines[:4])


def _operation_test(operation: Any, headers: dict[str, str], examples: int) -> Callable[[], None]:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)

    return run


def test_it_answers_every_operation_within_its_schema_smoke(
    world: dict[str, Any], wsgi_app: Any
) -> None:
    _run(world, wsgi_app, SMOKE_EXAMPLES)


@LONG
def test_it_answers_every_operation_within_its_schema_long(
    world: dict[str, Any], wsgi_app: Any
) -> None:
    _run(world, wsgi_app, LONG_EXAMPLES)
