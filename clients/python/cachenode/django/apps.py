from django.apps import AppConfig


class CachenodeConfig(AppConfig):
    name = "cachenode.django"
    label = "cachenode"
    verbose_name = "cachenode"
    default_auto_field = "django.db.models.AutoField"

    def ready(self):
        from django.core.signals import setting_changed
        from django.utils.module_loading import autodiscover_modules

        from . import conf
        from .worker import workers_collection

        setting_changed.connect(conf.reset, dispatch_uid="cachenode.conf.reset")
        workers_collection.load_settings()
        # Workers declared in code live in modules that must be imported for
        # the origin view to know them (the library's note: "this module
        # must be received by application"): import each app's modules named
        # in CACHENODE["AUTODISCOVER"] (default: "cache").
        for name in conf.get("AUTODISCOVER"):
            autodiscover_modules(name)
