"""A throwaway ``redis-server`` for tests and benchmarks: loopback only, a free port, its own
directory, no persistence, stopped by pid.

    with RedisServer(tmp_path) as server:
        coord = Coordination.from_url(server.url)
        server.pause()    # SIGSTOP: it hangs   server.resume()   # SIGCONT
        server.kill()     # SIGKILL: it is gone  server.start()    # again, same port
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

__all__ = ["RedisServer", "find_redis_server"]

START_TIMEOUT = 10.0


def find_redis_server() -> str | None:
    """The path of ``redis-server`` (PATH, then /usr/sbin and /usr/bin), or None."""
    found = shutil.which("redis-server")
    if found:
        return found
    for path in ("/usr/sbin/redis-server", "/usr/bin/redis-server"):
        if os.access(path, os.X_OK):
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1.

    Args:
        directory: where it keeps its files (default: a new temporary directory).
        password: ``requirepass`` (then :attr:`url` carries it).
        executable: the redis-server binary (default: :func:`find_redis_server`).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *,
                 password: str | None = None, executable: str | None = None) -> None:
        exe = executable or find_redis_server()
        if exe is None:
            raise FileNotFoundError("redis-server not found (apt-get install redis-server)")
        self.executable = exe
        self.directory = os.fspath(directory) if directory else tempfile.mkdtemp(prefix="redis-")
        self.password = password
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> RedisServer:
        """Start it (again, on the same port after :meth:`kill`) and wait until it answers."""
        args = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.directory, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--logfile", os.path.join(self.directory, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see "
                                   f"{self.directory}/redis.log")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: gone at once, its data with it."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)

    def stop(self) -> None:
        """Stop it by pid (continued first if paused; killed if it will not exit)."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
