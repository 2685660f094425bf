"""``path("cachenode/", include("cachenode.django.urls"))``: the origin of every worker."""

from django.urls import re_path

from . import views

app_name = "cachenode"

urlpatterns = [
    re_path(r"^(?P<label>[A-Za-z0-9_.:-]+)$", views.origin, name="origin"),
]
