#!/usr/bin/python3
"""Berth's Odoo stand-in, at image build time (offline): writes the tiny pure-Python wheel
berth_standin_dep-1.0-py3-none-any.whl into the directory given, so `pip3 install -r requirements.txt`
naming berth-standin-dep really installs something with no index (a stand-in for PyPI)."""
import base64
import hashlib
import os
import sys
import zipfile

NAME, VERSION = "berth_standin_dep", "1.0"
DIST = f"{NAME}-{VERSION}.dist-info"
files = {
    f"{NAME}/__init__.py": f'"""Berth test stand-in dependency."""\nVERSION = "{VERSION}"\n',
    f"{DIST}/METADATA": "Metadata-Version: 2.1\nName: berth-standin-dep\nVersion: 1.0\n"
    "Summary: Berth test stand-in dependency (offline pip tests)\n",
    f"{DIST}/WHEEL": "Wheel-Version: 1.0\nGenerator: berth-standin make-wheel.py\n"
    "Root-Is-Purelib: true\nTag: py3-none-any\n",
    f"{DIST}/top_level.txt": f"{NAME}\n",
}


def record_line(path, text):
    data = text.encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


files[f"{DIST}/RECORD"] = "".join(record_line(p, t) for p, t in files.items()) + f"{DIST}/RECORD,,\n"
os.makedirs(sys.argv[1], exist_ok=True)
wheel = os.path.join(sys.argv[1], f"{NAME}-{VERSION}-py3-none-any.whl")
with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
    for path, text in files.items():
        archive.writestr(path, text)
