from typing import Any

from django.apps import AppConfig


def reapply_erasures_after_restore(sender: Any, **kwargs: Any) -> None:
    # A restored backup may predate erasures: shred those scans again before files return.
    from imaging.jobs.erasure import erasures_reapply  # Models are not ready at import time.

    erasures_reapply()


class ImagingConfig(AppConfig):
    name = "imaging"
    verbose_name = "Imaging"

    def ready(self) -> None:
        from medimg.management.backups import database_restored

        database_restored.connect(
            reapply_erasures_after_restore, dispatch_uid="imaging_reapply_erasures"
        )
