from django.apps import AppConfig


class PagesConfig(AppConfig):
    """Every HTML page of the app; it has no models and sits on top of the other apps."""

    name = "pages"
