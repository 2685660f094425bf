"""Starts what the tests run against: the Django project's origin (a threaded
WSGI server on a free loopback port) and three real cachenode processes whose
config file is the output of manage.py cachenode_config."""

import io
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler

from django.core.management import call_command
from django.core.servers.basehttp import ThreadedWSGIServer
from django.core.wsgi import get_wsgi_application

SERVING = re.compile(r'msg="cachenode serving".* http=(\S+) gossip=(\S+)')

NODE = """# test node {name}
name: {name}
gossip: 127.0.0.1:0
peer: 127.0.0.1:0
http: 127.0.0.1:0
join: [{join}]
memory: 64MiB
log_level: info
membership:
  preset: local
  probe_interval: 1s
  probe_timeout: 500ms
  suspicion_mult: 6
"""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Origin:
    def __init__(self):
        self.server = ThreadedWSGIServer(("127.0.0.1", 0), _QuietHandler, allow_reuse_address=False)
        self.server.daemon_threads = True
        self.server.set_app(get_wsgi_application())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}/cachenode/"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Node:
    def __init__(self, binary, workdir, name, join, body):
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            f.write(NODE.format(name=name, join=", ".join(join)) + body)
        self.log = []
        self.proc = subprocess.Popen([binary, "serve", "--config", self.config, "--data", os.path.join(self.dir, "data")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._serving = threading.Event()
        self.http = self.gossip = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(30):
            self.stop()
            raise RuntimeError(f"{name} did not start:\n" + "".join(self.log[-30:]))

    def _read(self):
        for line in self.proc.stderr:
            self.log.append(line)
            m = SERVING.search(line)
            if m and not self._serving.is_set():
                self.http, self.gossip = m.group(1).split("://")[-1], m.group(2)
                self._serving.set()
        self._serving.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_until(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def cachenode_config(origin_base):
    out = io.StringIO()
    call_command("cachenode_config", origin_base=origin_base, stdout=out)
    return out.getvalue()


class Cluster:
    def __init__(self, binary, workdir, body, size=3):
        self.nodes = []
        try:
            first = Node(binary, workdir, "n1", [], body)
            self.nodes.append(first)
            for i in range(2, size + 1):
                self.nodes.append(Node(binary, workdir, f"n{i}", [first.gossip], body))
            for n in self.nodes:
                if n.proc.poll() is not None:
                    raise RuntimeError(f"{n.name} exited:\n" + "".join(n.log[-30:]))

            def ready():
                for n in self.nodes:
                    try:
                        ring = _get_json(f"http://{n.http}/admin/ring")
                    except OSError:
                        return False
                    alive = [m for m in ring["members"] if m["state"] == "alive"]
                    if not ring.get("ready") or len(alive) != size:
                        return False
                return True

            wait_until(ready, 60, f"{size} nodes to see each other alive and ready")
        except BaseException:
            self.stop()
            raise

    @property
    def http(self):
        return [n.http for n in self.nodes]

    def stop(self):
        for n in self.nodes:
            n.stop()

    def logs(self):
        return "\n".join(f"--- {n.name}\n" + "".join(n.log[-40:]) for n in self.nodes)
