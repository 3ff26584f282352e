"""The admins' statistics page (role refusals are in medimg/tests/test_url_policy.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_it_shows_statistics_with_chart_data_and_tables(
    client: Client, admin: Any, completed_scan: Any
) -> None:
    client.force_login(admin)
    response = client.get("/manage/statistics/")
    assert response.status_code == 200
    html = response.content.decode()
    data = json.loads(re.search(r'id="chart-data"[^>]*>(.*?)</script>', html, re.S)[1])
    regions = completed_scan.regions.count()
    assert data["classes"] == {"labels": ["phi_text"], "data": [regions]}
    assert sum(data["daily"]["series"][2]["data"]) == 1  # completed, today
    assert data["regions"]["data"][min(regions, 10) if regions < 10 else -1] == 1
    assert "vendor/chartjs/chart.umd.min.js" in html
    assert "No failures" in html
    assert "{&quot;" not in html and '{"' not in html.split('id="chart-data"')[0]


def test_it_shows_an_empty_state_without_uploads(client: Client, admin: Any) -> None:
    client.force_login(admin)
    html = client.get("/manage/statistics/").content.decode()
    assert "No images have been uploaded yet" in html
    assert "data-chart=" not in html
