from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from patients.models import Patient, PatientNote

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/patients/patient/"


@pytest.fixture
def staff_client(client: Client, admin: Any) -> Client:
    client.force_login(admin)
    return client


@pytest.fixture
def records(make_patient: Callable[..., Patient], doctor: Any) -> list[Patient]:
    first = make_patient("MRN-314159", "Grace Hopper", age=54, note="Allergic to latex.")
    second = make_patient("MRN-271828", "Alan Turing", age=41)
    PatientNote.objects.create(patient=first, author=doctor, text="Doctors only.")
    return [first, second]


def _assert_no_patient_data(html: str, records: list[Patient]) -> None:
    for patient in records:
        for value in (patient.id, patient.name, patient.note, "Doctors only."):
            if value:
                assert value not in html


def test_it_lists_counts_and_dates_but_no_patient_data(
    staff_client: Client, records: list[Patient]
) -> None:
    response = staff_client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    _assert_no_patient_data(html, records)
    for patient in records:
        assert patient.reference in html
    assert "2 patients" in html
    assert "tina" in html  # The staff account that created them is not patient data.


@pytest.mark.parametrize(
    "query",
    [
        "?name__startswith=Gr",
        "?id__startswith=MRN-3",
        "?age__gte=50",
        "?note__icontains=latex",
        "?notes__text__icontains=doctor",
    ],
)
def test_it_refuses_lookups_that_would_leak_by_count(
    staff_client: Client, records: list[Patient], query: str
) -> None:
    response = staff_client.get(CHANGELIST + query)
    assert response.status_code == 400


def test_it_ignores_search_and_popup_tricks(staff_client: Client, records: list[Patient]) -> None:
    searched = staff_client.get(CHANGELIST + "?q=Grace")
    assert searched.status_code == 200
    assert "2 patients" in searched.content.decode()

    popup = staff_client.get(CHANGELIST + "?_to_field=id&_popup=1")
    assert popup.status_code == 200
    _assert_no_patient_data(popup.content.decode(), records)


def test_it_allows_the_date_drill_down(staff_client: Client, records: list[Patient]) -> None:
    year = records[0].created_at.year
    response = staff_client.get(CHANGELIST + f"?created_at__year={year}")
    assert response.status_code == 200
    assert "2 patients" in response.content.decode()


@pytest.mark.parametrize(
    "suffix", ["MRN-314159/change/", "MRN-314159/", "MRN-314159/history/", "MRN-314159/delete/"]
)
def test_it_routes_no_object_pages(
    staff_client: Client, records: list[Patient], suffix: str
) -> None:
    response = staff_client.get(CHANGELIST + suffix, follow=True)
    assert response.status_code == 404
    _assert_no_patient_data(response.content.decode(), records)


def test_it_offers_no_add_page_and_no_notes_admin(
    staff_client: Client, records: list[Patient]
) -> None:
    assert staff_client.get(CHANGELIST + "add/").status_code == 404
    assert staff_client.get("/admin/patients/patientnote/").status_code == 404
    index = staff_client.get("/admin/").content.decode()
    assert CHANGELIST in index
    assert "/admin/patients/patientnote/" not in index


def test_it_refuses_bulk_actions(staff_client: Client, records: list[Patient]) -> None:
    response = staff_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [records[0].pk]}
    )
    # With no actions the POST is just the list again; nothing is deleted.
    assert response.status_code == 200
    assert Patient.objects.count() == 2


@pytest.mark.parametrize("persona", ["technician", "doctor", "outsider"])
def test_it_sends_non_admins_to_the_admin_login(
    client: Client, request: pytest.FixtureRequest, persona: str
) -> None:
    client.force_login(request.getfixturevalue(persona))
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
