from django.core.management.base import BaseCommand, CommandError

from ._common import rules, scalar, worker_config, workers


class Command(BaseCommand):
    help = ("Print the workers: and invalidation: sections of the cachenode config file "
            "from the registered workers and automatic invalidation rules.")

    def add_arguments(self, parser):
        parser.add_argument("--origin-base", help="the URL of include('cachenode.django.urls') as the "
                                                  "nodes reach it (default: CACHENODE['ORIGIN_BASE'])")

    def handle(self, *args, origin_base=None, **options):
        ws = workers()
        if not ws:
            raise CommandError("no cache worker is registered (CacheWorker in an app's cache module, "
                               "or DJANGO_CACHE_WORKERS in settings)")
        lines = ["# written by manage.py cachenode_config: the workers and rules of the Django project",
                 "workers:"]
        for label, w in ws.items():
            lines.append(f"  {scalar(label)}:")
            for k, v in worker_config(w, origin_base):
                lines.append(f"    {k}: {scalar(v)}")
        rs = rules()
        if rs:
            lines.append("invalidation:")
            for model, by_label in rs.items():
                lines.append(f"  {scalar(model)}:")
                for label, r in by_label.items():
                    if label not in ws:
                        raise CommandError(f"automatic.register({model}): no worker {label!r} is registered")
                    lines.append(f"    {scalar(label)}: {r.yaml()}")
        self.stdout.write("\n".join(lines) + "\n")
