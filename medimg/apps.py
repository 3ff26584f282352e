"""The project shell as an app (no models): its management commands (backup, restore_backup)
and the receivers that count metrics and send alerts."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class MedimgConfig(AppConfig):
    name = "medimg"
    verbose_name = "medimg"

    def ready(self) -> None:
        from celery.signals import worker_init
        from django.db.models.signals import post_save

        from audit.models import AuditEvent
        from medimg import mail, metrics

        post_save.connect(
            metrics.on_audit_event, sender=AuditEvent, dispatch_uid="medimg_metrics_audit"
        )

        post_save.connect(mail.on_audit_event, sender=AuditEvent, dispatch_uid="medimg_mail_audit")
        mail.connect_receivers()

        def _worker_exporter(**kwargs: Any) -> None:
            metrics.start_worker_exporter()

        worker_init.connect(_worker_exporter, weak=False, dispatch_uid="medimg_worker_metrics")
