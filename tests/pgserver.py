"""A real PostgreSQL server for the tests: Debian's package, started by the test.

    with PgServer() as pg:             # initdb in a temporary directory, pg_ctl start
        url = pg.create_db("t1")       # postgresql://postgres@127.0.0.1:<port>/t1

initdb and postgres refuse to run as root: as root the server runs as the `postgres` user
(Debian's package creates it), else as `nobody`, through runuser. Its data directory is a
fresh temporary directory owned by that user, its socket directory the same, it listens on
127.0.0.1 on a free port with trust authentication for loopback only, and it is stopped
(pg_ctl stop -m fast) and removed at the end. Skips when PostgreSQL is not installed
(`apt-get install postgresql`; .ci/run installs it).
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from tests.brokers import free_port


def pg_bin(name):
    """The path of a PostgreSQL server program (Debian keeps them off PATH)."""
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return cands[-1] if cands else None


def require_postgresql():
    if not (pg_bin("initdb") and pg_bin("pg_ctl")):
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")


def _run_as():
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return user
        except KeyError:
            continue
    pytest.skip("running as root and no unprivileged user (postgres, nobody) to run "
                "PostgreSQL as")


class PgServer:
    def __init__(self):
        require_postgresql()
        self.user = _run_as()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="heatgw-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)

    def _cmd(self, *argv):
        argv = list(argv)
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n"
                               f"{r.stderr}\n{self.log_text()[-2000:]}")
        return r.stdout

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self):
        self._cmd(pg_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=40")
        self._cmd(pg_bin("pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts, "-w",
                  "-t", "60", "start")
        return self

    def url(self, db="postgres"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name):
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self):
        try:
            self._cmd(pg_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture(scope="module")
def pg_server():
    """One PostgreSQL server for a test module (each test makes its own database)."""
    with PgServer() as pg:
        yield pg
