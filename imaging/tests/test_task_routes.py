"""Celery queues: detection and segmentation go to their own queues, so each can have workers
of its own; the embedded mode (no broker) still runs every task in-process."""

from __future__ import annotations

from typing import Any

from medimg.celery import app


def _queue(task_name: str) -> str:
    route = app.amqp.router.route({}, task_name)
    return route["queue"].name


def test_it_routes_scan_processing_to_the_detect_queue() -> None:
    assert _queue("imaging.tasks.process_scan") == "detect"


def test_it_routes_segmentation_tasks_to_the_segment_queue() -> None:
    assert _queue("imaging.tasks.run_segmentation") == "segment"
    assert _queue("imaging.segmentation_tasks.segment_scan") == "segment"


def test_it_sends_everything_else_to_the_default_queue() -> None:
    assert _queue("imaging.tasks.requeue_stuck_scans") == "celery"


def test_it_still_processes_in_process_without_a_broker(
    completed_scan: Any,
) -> None:
    # completed_scan uploads through the API with tasks eager: routing must not get in the way.
    assert completed_scan.status == "completed"


def test_it_schedules_the_requeue_of_stuck_scans_for_beat(settings: Any) -> None:
    app.loader.import_default_modules()
    entry = settings.CELERY_BEAT_SCHEDULE["requeue-stuck-scans"]
    assert entry["task"] in app.tasks
    assert _queue(entry["task"]) == "celery"
