import re
import sys
import urllib.parse

from django.core.management.base import BaseCommand, CommandError

from cachenode import CachenodeError
from cachenode.django import conf

from ._common import DURATIONS, worker_config, workers

_DUR = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def go_seconds(s):
    """Seconds of a Go duration string ("1h0m0s", "100ms", "0s")."""
    if isinstance(s, (int, float)):
        return float(s)
    s = s.strip()
    neg = s.startswith("-")
    s = s.lstrip("-+")
    total, pos = 0.0, 0
    for m in _DUR.finditer(s):
        if m.start() != pos:
            raise ValueError(f"bad duration {s!r}")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"bad duration {s!r}")
    return -total if neg else total


def _origin_shape(u):
    p = urllib.parse.urlsplit(u)
    return (p.scheme, p.netloc.rsplit("@", 1)[-1], p.path.rstrip("/"))


class Command(BaseCommand):
    help = ("Read /admin/workers of a cachenode node and report how its workers differ "
            "from the Django project's (exit status 1 when they do).")

    def add_arguments(self, parser):
        parser.add_argument("--node", help="host:port of the node (default: each of CACHENODE['NODES'])")
        parser.add_argument("--origin-base", help="as for cachenode_config")

    def handle(self, *args, node=None, origin_base=None, **options):
        c = conf.client()
        targets = [node] if node else c.nodes
        ours = workers()
        problems = 0
        for n in targets:
            try:
                theirs = c.workers(node=n)
            except CachenodeError as e:
                raise CommandError(f"{n}: {e}")
            diffs = []
            for label, w in ours.items():
                if label not in theirs:
                    diffs.append(f"{label}: missing on the node")
                    continue
                cfg = theirs[label].get("config", {})
                for k, v in worker_config(w, origin_base):
                    have = cfg.get(k)
                    if k == "origin":
                        if have is None or _origin_shape(have) != _origin_shape(v):
                            diffs.append(f"{label}.origin: node has {have!r}, Django says {v!r}")
                        continue
                    if have is None:
                        continue
                    if k in DURATIONS:
                        same = abs(go_seconds(have) - float(v)) < 1e-6
                    else:
                        same = have == v
                    if not same:
                        diffs.append(f"{label}.{k}: node has {have!r}, Django says {v!r}")
            for label in sorted(set(theirs) - set(ours)):
                diffs.append(f"{label}: on the node, not in Django")
            if diffs:
                problems += len(diffs)
                self.stdout.write(f"{n}: {len(diffs)} difference(s)")
                for d in diffs:
                    self.stdout.write(f"  {d}")
            else:
                self.stdout.write(f"{n}: {len(ours)} workers, as in Django")
        self.stdout.write("(the invalidation rules are not served by the node: compare "
                          "manage.py cachenode_config with its config file)")
        if problems:
            sys.exit(1)
