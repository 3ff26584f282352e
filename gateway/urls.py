"""DICOMweb routes (gateway.dicomweb), included at /dicomweb/ by medimg.urls."""

from django.urls import path

from gateway import dicomweb

UID = "<str:study>"
SE = "<str:series>"
IN = "<str:instance>"

app_name = "dicomweb"
urlpatterns = [
    path("studies", dicomweb.studies, name="studies"),
    path("series", dicomweb.series, name="series"),
    path("instances", dicomweb.instances, name="instances"),
    path(f"studies/{UID}", dicomweb.retrieve, name="study"),
    path(f"studies/{UID}/metadata", dicomweb.metadata, name="study-metadata"),
    path(f"studies/{UID}/series", dicomweb.series, name="study-series"),
    path(f"studies/{UID}/instances", dicomweb.instances, name="study-instances"),
    path(f"studies/{UID}/series/{SE}", dicomweb.retrieve, name="series-retrieve"),
    path(f"studies/{UID}/series/{SE}/metadata", dicomweb.metadata, name="series-metadata"),
    path(f"studies/{UID}/series/{SE}/instances", dicomweb.instances, name="series-instances"),
    path(f"studies/{UID}/series/{SE}/instances/{IN}", dicomweb.retrieve, name="instance"),
    path(
        f"studies/{UID}/series/{SE}/instances/{IN}/metadata",
        dicomweb.metadata,
        name="instance-metadata",
    ),
    path(
        f"studies/{UID}/series/{SE}/instances/{IN}/frames/<str:numbers>",
        dicomweb.frames,
        name="frames",
    ),
    path(
        f"studies/{UID}/series/{SE}/instances/{IN}/rendered",
        dicomweb.rendered,
        name="rendered",
    ),
    path(f"studies/{UID}/thumbnail", dicomweb.thumbnail, name="study-thumbnail"),
    path(f"studies/{UID}/series/{SE}/thumbnail", dicomweb.thumbnail, name="series-thumbnail"),
    path(
        f"studies/{UID}/series/{SE}/instances/{IN}/thumbnail",
        dicomweb.thumbnail,
        name="instance-thumbnail",
    ),
    path(
        f"studies/{UID}/series/{SE}/instances/{IN}/bulk/<str:tag>",
        dicomweb.bulk,
        name="bulk",
    ),
]
