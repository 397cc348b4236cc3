"""Fetch the pinned MicroPython libraries named in mplibs.lock into build/mplibs/.

The archives are upip-style sdists that pip refuses to install, so they are taken from
the package index's simple page (PEP 691 JSON), checked against the pinned sha256 and
unpacked. The index is the one pip itself is configured with: $PIP_INDEX_URL, then
`pip config`, then pip's built-in default. No registry host is written in this repo.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request

from host_tools.paths import MPLIBS, REPO

LOCK = REPO / "mplibs.lock"


def index_url():
    url = os.environ.get("PIP_INDEX_URL")
    if url:
        return url.rstrip("/")
    for key in ("global.index-url", ":env:.index-url", "install.index-url"):
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key],
            capture_output=True, text=True, check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().rstrip("/")
    from pip._internal.models.index import PyPI  # pip's own default index

    return PyPI.simple_url.rstrip("/")


def read_lock():
    pins = []
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version, sha256 = line.split()
            pins.append((name, version, sha256))
    return pins


def normalise(name):
    return name.lower().replace("_", "-").replace(".", "-")


def find_file(index, name, version):
    req = urllib.request.Request(
        f"{index}/{normalise(name)}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        page = json.load(resp)
    wanted = f"{name}-{version}.tar.gz"
    for f in page["files"]:
        if f["filename"] == wanted:
            return f["url"]
    raise SystemExit(f"fetch_mplibs: {wanted} not listed on the index page for {name}")


def fetch(index, name, version, sha256):
    dest = MPLIBS / f"{name}-{version}"
    stamp = dest / ".sha256"
    if stamp.is_file() and stamp.read_text().strip() == sha256:
        return dest
    url = find_file(index, name, version)
    with urllib.request.urlopen(url, timeout=120) as resp:
        blob = resp.read()
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        raise SystemExit(f"fetch_mplibs: sha256 mismatch for {name} {version}: {got}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        top = f"{name}-{version}/"
        for member in tar.getmembers():
            if not member.isfile() or not member.name.endswith(".py"):
                continue
            rel = member.name[len(top):] if member.name.startswith(top) else member.name
            if rel in ("setup.py", "sdist_upip.py") or rel.startswith(("tests/", "examples/")):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    stamp.write_text(sha256 + "\n")
    return dest


def main():
    index = index_url()
    for name, version, sha256 in read_lock():
        dest = fetch(index, name, version, sha256)
        print(f"fetch_mplibs: {name} {version} -> {dest.relative_to(REPO)}")


if __name__ == "__main__":
    main()
