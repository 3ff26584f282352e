"""train.py --select-by-real: the checkpoint kept is the one that scores best on the real sets
(PHI recall first, then false regions), not the one with the best generated-set mAP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model.detector import train

SHIPPED = Path(train.DETECTOR_DIR) / "best.pt"


def score(recall: float, false: float, name: str) -> dict:
    return {"weights": name, "phi_recall_text_pixels": recall, "false_regions_per_image": false}


def test_recall_comes_first_then_false_regions_then_the_latest() -> None:
    assert train.best_score([score(0.97, 0.1, "a"), score(0.99, 0.9, "b")])["weights"] == "b"
    assert train.best_score([score(0.99, 0.5, "a"), score(0.99, 0.2, "b")])["weights"] == "b"
    assert train.best_score([score(0.99, 0.2, "a"), score(0.99, 0.2, "b")])["weights"] == "b"
    assert train.best_score([score(0.99, 0.2, "a"), score(0.98, 0.0, "b")])["weights"] == "a"


@pytest.mark.slow
def test_it_scores_every_checkpoint_on_the_real_set_and_keeps_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not SHIPPED.exists():
        pytest.skip("no shipped weights")
    from model.detector import testset

    # The project's real set only: the leave-vendor-out set's 4,664 px mammogram takes 30 s.
    monkeypatch.setattr(testset, "corpus_available", lambda: False)
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy2(SHIPPED, weights / "epoch1.pt")
    shutil.copy2(SHIPPED, weights / "last.pt")
    chosen = train.select_by_real_set(weights, threads=2)
    assert chosen == weights / "best_real.pt" and chosen.exists()
    report = json.loads((weights / "real_set_selection.json").read_text())
    assert [Path(s["weights"]).name for s in report["scores"]] == ["epoch1.pt", "last.pt"]
    first, last = report["scores"]
    # The same weights score the same; the tie goes to the latest checkpoint.
    assert first["phi_recall_text_pixels"] == last["phi_recall_text_pixels"]
    assert first["phi_recall_text_pixels"] >= 0.9 and first["phi_boxes"] >= 20
    assert Path(report["chosen"]).name == "last.pt"
    assert set(first["sets"]) == {"real"}
