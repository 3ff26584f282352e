from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "DICOM gateway"

    def ready(self) -> None:
        # Forwarding starts from the audit log's post_save of a completion or a confirmed
        # review (gateway.signals), so imaging's processing code does not know the gateway.
        from gateway import signals  # noqa: F401

        # The scan page's send status and the statistics page's health card: pages may not
        # import gateway (sibling layers), so the cards go through imaging's panel registry.
        from gateway.panels import health_panel, scan_sends_panel
        from imaging.selectors.panels import scan_panel_register, statistics_panel_register

        scan_panel_register("gateway-sends", scan_sends_panel)
        statistics_panel_register("gateway-health", health_panel)
