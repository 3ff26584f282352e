"""One error vocabulary (issue 15 item 4): every refusal is built by a constructor in
engine/errors.py from a code in ErrorCode, and leaves as the same JSON it always did."""

from __future__ import annotations

import ast
import json
import subprocess
from http import HTTPStatus
from pathlib import Path

import pytest
from rest_framework.renderers import JSONRenderer

from engine import errors
from engine.errors import EngineError, ErrorCode, ImagingError
from medimg.errors import api_exception_handler

ROOT = Path(__file__).resolve().parents[2]
_REFUSAL_CLASSES = {"EngineError", "ImagingError"}


def _project_sources() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if "/tests/" not in name and (ROOT / name).exists()]


def _hand_built_refusals(path: Path, root: Path = ROOT) -> list[str]:
    """Calls that build an EngineError or ImagingError directly (not through a constructor)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in _REFUSAL_CLASSES:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_refusals_are_built_only_by_the_constructors_in_engine_errors() -> None:
    sources = [p for p in _project_sources() if p != ROOT / "engine" / "errors.py"]
    assert len(sources) > 100
    hand_built = [site for path in sources for site in _hand_built_refusals(path)]
    assert hand_built == []


def test_the_check_finds_a_hand_built_refusal(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from engine import errors\n"
        'A = errors.EngineError("invalid", "x")\n'
        "B = errors.invalid('x')\n"
        'C = ImagingError("corrupt_image")\n'
    )
    assert _hand_built_refusals(planted, tmp_path) == ["planted.py:2", "planted.py:4"]


def test_an_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError):
        EngineError("no_such_code", "message")
    with pytest.raises(ValueError):
        ImagingError("scan_not_ready")  # a code, but not a refused file's


@pytest.mark.parametrize(
    ("refusal", "status", "body"),
    [
        (
            errors.scan_not_ready(),
            409,
            '{"error":{"code":"scan_not_ready","message":"The scan has not finished processing."}}',
        ),
        (
            errors.invalid_frame(3),
            400,
            '{"error":{"code":"invalid_frame","message":"frame must be between 0 and 3."}}',
        ),
        (
            errors.file_too_large(),
            413,
            '{"error":{"code":"file_too_large",'
            '"message":"The file is larger than the upload limit."}}',
        ),
        (
            errors.storage_unavailable(),
            503,
            '{"error":{"code":"storage_unavailable","message":"The image could not be stored. '
            'Nothing was saved; please try again."}}',
        ),
    ],
)
def test_a_refusal_renders_as_the_same_json_bytes(
    refusal: EngineError, status: int, body: str
) -> None:
    response = api_exception_handler(refusal, {})
    assert response.status_code == status
    assert JSONRenderer().render(response.data) == body.encode()
    # The code is the plain string in any JSON encoder (audit details, manifests).
    assert json.dumps(refusal.code) == json.dumps(str(refusal.code))


def test_statuses_are_plain_ints() -> None:
    refusal = errors.no_dicom_seg()
    assert type(refusal.status_code) is int and refusal.status_code == HTTPStatus.NOT_FOUND
    assert {code.value for code in ErrorCode} >= {"scan_not_ready", "invalid_frame", "invalid"}
