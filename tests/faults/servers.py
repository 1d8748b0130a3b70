"""Servers of a fault test's own: a RabbitMQ node, a PostgreSQL cluster and a Redis server, each
on free loopback ports with its data in a scratch directory, that the test may kill -9 and
start again. The shared servers on 5672 / 5432 / 6379 are never touched: other tests use them.

Each server runs in a session of its own (start_new_session), so `kill()` SIGKILLs exactly its
process group -- the server and the children it forked (beam's erl_child_setup, PostgreSQL's
backends) -- by id, like a machine losing the process. `start()` on the same directory and
ports is the restart: RabbitMQ recovers its quorum queues and persistent messages from its
data dir, PostgreSQL replays its WAL, Redis (run without persistence, the harsher case) comes
back empty.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from fedmq.local import free_port  # below the ephemeral range: no connect() takes its ports

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
"""The Debian package's real scripts (/usr/sbin/rabbitmq-* are wrappers that insist on the
rabbitmq user and the system node's log files)."""


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class OwnServer:
    """A server process the test owns: start, kill -9, start again on the same data."""

    name = "server"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def user(self) -> str | None:
        return None

    def ready(self) -> bool:
        return _listening(self.port)

    def start(self, timeout: float = 120.0) -> None:
        """Start the server (again) and wait until it answers; a clear error with its log
        otherwise."""
        log = self.root / f"{self.name}.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user(),
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                self.kill()
                raise RuntimeError(
                    f"own {self.name} did not come up on port {self.port} "
                    f"(exit {self.proc.poll()}); {log}:\n" + "\n".join(tail)
                )
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server's whole process group and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        # Every process of the group gone, not only the one we started: PostgreSQL's backends
        # outlive a killed postmaster for a moment, and a restart while one still holds the
        # shared memory block refuses to start ("pre-existing shared memory block").
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        while _listening(self.port):  # a forked child may hold the socket a moment longer
            time.sleep(0.1)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRabbitMQ(OwnServer):
    """A RabbitMQ node `fedmqfault<port>@localhost`, run as the rabbitmq user (so that it and
    rabbitmqctl share the system's Erlang cookie) with its own config, ports, mnesia and logs.
    `fedmq local` reaches it through RABBITMQ_NODENAME (rabbitmqctl honours it)."""

    name = "rabbitmq"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.dist_port = free_port()
        self.node = f"fedmqfault{self.port}@localhost"
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nlog.console = true\nlog.file = false\n"
        )
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        uid = pwd.getpwnam("rabbitmq").pw_uid
        for path in (root, *root.iterdir()):
            os.chown(path, uid, -1)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def rabbitmqctl(self, *args: str) -> str:
        """rabbitmqctl on this node (each call boots an Erlang VM: seconds under load)."""
        env = {**os.environ, "RABBITMQ_NODENAME": self.node}
        done = subprocess.run(
            ["rabbitmqctl", *args], env=env, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args[0]} on {self.node}: {done.stderr[-500:]}")
        return done.stdout

    def import_definitions(
        self, vhosts: list[str], users: dict[str, tuple[str, str, dict[str, tuple[str, str, str]]]]
    ) -> None:
        """Create vhosts and users with their permissions in one rabbitmqctl call (instead of
        one per vhost, user and permission). `users`: name -> (password, tags, {vhost:
        (configure, write, read)})."""
        definitions = {
            "vhosts": [{"name": v} for v in vhosts],
            "users": [
                {
                    "name": name,
                    "password_hash": _rabbit_sha256(password),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": [tags] if tags else [],
                    "limits": {},
                }
                for name, (password, tags, _) in users.items()
            ],
            "permissions": [
                {"user": name, "vhost": vhost, "configure": c, "write": w, "read": r}
                for name, (_, _, grants) in users.items()
                for vhost, (c, w, r) in grants.items()
            ],
        }
        path = self.root / "definitions.json"
        path.write_text(json.dumps(definitions))
        os.chown(path, pwd.getpwnam("rabbitmq").pw_uid, -1)
        self.rabbitmqctl("import_definitions", str(path))

    def user(self) -> str | None:
        return "rabbitmq"

    def command(self) -> list[str]:
        return [str(RABBITMQ_BIN / "rabbitmq-server")]

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": pwd.getpwnam("rabbitmq").pw_dir,
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }


def _rabbit_sha256(password: str) -> str:
    """RabbitMQ's stored password form: base64(salt | sha256(salt | password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


class OwnPostgres(OwnServer):
    """A PostgreSQL cluster made by initdb (trust auth, user postgres) in the scratch dir, run
    as the postgres user on its own port and socket directory."""

    name = "postgres"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.data = root / "data"
        bindir = Path(subprocess.check_output(["pg_config", "--bindir"], text=True).strip())
        self.postgres = bindir / "postgres"
        uid = pwd.getpwnam("postgres").pw_uid
        os.chown(root, uid, -1)
        subprocess.run(
            [bindir / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"],
            user="postgres",
            cwd=root,
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def user(self) -> str | None:
        return "postgres"

    def command(self) -> list[str]:
        return [
            str(self.postgres),
            "-D", str(self.data),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.root}",
            "-c", "max_connections=200",
            "-c", "fsync=off",
        ]  # fmt: skip

    def ready(self) -> bool:
        if not _listening(self.port):
            return False
        probe = subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
        )
        return probe.returncode == 0


class OwnRedis(OwnServer):
    """A redis-server without persistence (a restart loses every key)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.root),
        ]  # fmt: skip


def scratch(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"fedmq-fault-{prefix}-"))
    path.chmod(0o755)
    return path
