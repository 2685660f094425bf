from django.urls import include, path

urlpatterns = [
    path("cachenode/", include("cachenode.django.urls")),
]
