"""A test detector whose second look finds more text: the pipeline's verification pass
flags the scan for review (imaging's `needs_review`)."""

from __future__ import annotations

import numpy as np

from imaging.tests.factories import Detection, bright_text_detector


def second_look_detector(frame: np.ndarray) -> list[Detection]:
    """The bright-text boxes; on a frame that already has filled (black) regions, that is
    the verification pass's redacted frame, also a box in the bottom right corner."""
    found = bright_text_detector(frame)
    grey = frame if frame.ndim == 2 else frame.max(axis=2)
    if np.count_nonzero(grey == 0) > 0.01 * grey.size:
        height, width = grey.shape[:2]
        found.append(
            Detection(box=(width - 40, height - 20, width - 4, height - 4), label="phi_text",
                      confidence=0.9)
        )  # fmt: skip
    return found
