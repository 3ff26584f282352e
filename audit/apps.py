from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        # Login, logout and admin-change events come from Django's own signals.
        from audit import receivers  # noqa: F401
