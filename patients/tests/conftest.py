"""Patient fixtures. Records are made through the ORM so each test audits only what it does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from patients.models import Patient


@pytest.fixture
def make_patient(technician: Any) -> Callable[..., Patient]:
    def make(id: str, name: str = "Ada Lovelace", **fields: Any) -> Patient:
        return Patient.objects.create(id=id, name=name, created_by=technician, **fields)

    return make


@pytest.fixture
def patient(make_patient: Callable[..., Patient]) -> Patient:
    return make_patient("MRN-0001", "Grace Hopper", age=54, note="Allergic to latex.")
