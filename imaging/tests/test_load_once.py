"""The model and the keys are loaded once per process, never per request or per image."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.crypto import envelope as crypto
from engine.detection import detector as detection
from imaging.vault import keys as vault_keys


def test_it_loads_the_detector_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = detection.load_onnx_runner

    def counting(path: Any) -> Any:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(detection, "_runners", {})
    monkeypatch.setattr(detection, "load_onnx_runner", counting)
    frame = np.zeros((96, 128), np.uint8)
    for _ in range(3):
        detection.detect(frame, backend="onnx")
    assert len(calls) == 1


def test_it_parses_the_key_encryption_keys_once(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = vault_keys.parse_keks

    def counting(raw: str, current: str | None) -> Any:
        calls.append(raw)
        return real(raw, current)

    settings.MEDIMG_KEKS = "perf1:" + "ab" * 32
    settings.MEDIMG_KEK_CURRENT = "perf1"
    monkeypatch.setattr(vault_keys, "_ring_cache", {})
    monkeypatch.setattr(vault_keys, "parse_keks", counting)
    for i in range(3):
        wrapped = vault_keys.wrap_data_key(crypto.new_data_key(), scan_ref=f"scan-{i}")
        assert wrapped is not None
    assert len(calls) == 1
