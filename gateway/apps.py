from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "DICOM gateway"

    def ready(self) -> None:
        # Forwarding starts from the audit log's post_save of a completion or a confirmed
        # review (gateway.signals), so imaging's processing code does not know the gateway.
        from gateway import signals  # noqa: F401
