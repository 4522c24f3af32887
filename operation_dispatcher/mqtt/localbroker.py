"""LocalBroker: a mosquitto process on a loopback port, for the fleet demo, tests and benchmarks.

Like the simulated PLC of ``firmware_bridges/simulators``: a real broker (the Debian package
``mosquitto``), started with a config generated in a folder of the caller's choosing (a temp
folder), on a free port of 127.0.0.1, and stopped by its pid. Stdlib only.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: Where Debian puts the broker (it is not on a normal user's PATH).
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str:
    """The mosquitto executable, or FileNotFoundError saying how to install it."""
    for path in (shutil.which("mosquitto"), *MOSQUITTO_PATHS):
        if path and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "mosquitto is not installed: apt-get install mosquitto (Debian/Ubuntu)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalBroker:
    """One mosquitto on 127.0.0.1:``port`` with its config, log and data in ``folder``.

    :param persistence: keep sessions and retained messages across :meth:`restart`.
    :param tls: ``(ca, cert, key)`` file paths: the listener speaks TLS only; with
        ``require_certificate`` a client must present a certificate signed by ``ca``.
    :param own_session: run mosquitto in a session of its own, so that a Ctrl-C at the
        terminal does not stop it before the controllers have said OFFLINE (the fleet demo);
        :meth:`stop` ends it either way.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        port: int | None = None,
        persistence: bool = False,
        tls: tuple[str, str, str] | None = None,
        require_certificate: bool = False,
        password_file: str | None = None,
        own_session: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.persistence = persistence
        self.tls = tls
        self.require_certificate = require_certificate
        self.password_file = password_file
        self.own_session = own_session
        self.config = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous " + ("false" if self.password_file else "true"),
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.folder}/",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            # as root, mosquitto would drop to user "mosquitto", who cannot write the folder
            f"user {getpass.getuser()}",
        ]
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.tls is not None:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
            if self.require_certificate:
                lines.append("require_certificate true")
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float = 10.0) -> LocalBroker:
        """Start mosquitto and wait until it accepts connections."""
        if self._proc is not None:
            raise RuntimeError("the broker is already running")
        self._write_config()
        self._proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=self.own_session,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                self._proc = None
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {log.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen on {self.port} "
                                       f"within {timeout} s") from None
                time.sleep(0.02)  # nothing to wait on: the port opens when it opens

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalBroker", "find_mosquitto", "free_port"]
