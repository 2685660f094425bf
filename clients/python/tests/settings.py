import os

BASE = os.environ.get("CACHENODE_TEST_DIR", "/tmp")

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "cachenode.django",
    "tests.foo",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(BASE, "db.sqlite3"),
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
ROOT_URLCONF = "tests.urls"
MIDDLEWARE = ["tests.counting.CountOrigin"]
LOGGING_CONFIG = None

CACHENODE = {
    "NODES": os.environ.get("CACHENODE_TEST_NODES", "127.0.0.1:8080"),
    "ORIGIN_BASE": os.environ.get("CACHENODE_TEST_ORIGIN", "http://127.0.0.1:8000/cachenode/"),
    "TIMEOUT": 30,
    "RAISE_ON_INVALIDATION_ERROR": True,
}

# The library's names of the global defaults.
DJANGO_CACHE_DEFAULT_TICK_AMOUNT = 50   # a generous wait budget on a loaded test machine (5 s)
DJANGO_CACHE_DEFAULT_DELAY_COUNTDOWN = 1

# A worker declared in settings, as in the seed README (a dict by label,
# "label" left empty, the getter as a dotted path).
DJANGO_CACHE_WORKERS = {
    "settings_foos": {
        "label": "",
        "structure_getter": "tests.foo.getters.count_foos",
        "expires": 100000,
        "delay_invalidation": True,
    },
}
