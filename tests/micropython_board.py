"""Runs ``examples/firmware/main.py`` unchanged on CPython, as if on a board.

    python tests/micropython_board.py FIRMWARE PINS_FILE    # stdin/stdout: the serial line

Only what CPython lacks is stood in: MicroPython's ``machine.Pin`` (an input pin reads its level
from ``PINS_FILE``, a JSON object ``{"14": 0}``; an output pin writes its level there too, as
``"out25"``) and ``time.ticks_ms`` / ``time.ticks_diff``. The USB console becomes unbuffered
``sys.stdin`` / ``sys.stdout`` objects on the given file descriptors, as MicroPython's are, so
``select.poll`` on stdin says exactly whether a byte is waiting.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any


class Console:
    """Unbuffered text I/O on a file descriptor, like MicroPython's ``sys.stdin``/``stdout``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def read(self, n: int) -> str:
        return os.read(self._fd, n).decode("utf-8", "replace")

    def write(self, text: str) -> int:
        return os.write(self._fd, text.encode())

    def flush(self) -> None:
        pass


def replace_json(path: Path, value: Any) -> None:
    """Write ``path`` atomically: a reader in the other process never sees half a file."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def board(pins_file: Path) -> types.ModuleType:
    """A ``machine`` module whose pins live in ``pins_file``."""

    class Pin:
        IN, OUT, PULL_UP = 0, 1, 2

        def __init__(self, number: int, mode: int, pull: int | None = None, value: int | None = None) -> None:
            self.number, self.mode = number, mode
            if value is not None:
                self.value(value)

        def value(self, level: int | None = None) -> Any:
            pins = json.loads(pins_file.read_text()) if pins_file.exists() else {}
            key = str(self.number) if self.mode == Pin.IN else f"out{self.number}"
            if level is None:
                return int(pins.get(key, 1))  # pulled up: 1 unless driven low
            pins[key] = int(level)
            replace_json(pins_file, pins)
            return None

    machine = types.ModuleType("machine")
    machine.Pin = Pin  # type: ignore[attr-defined]
    return machine


def main() -> None:
    firmware, pins_file = Path(sys.argv[1]), Path(sys.argv[2])
    sys.modules["machine"] = board(pins_file)
    time.ticks_ms = lambda: int(time.monotonic() * 1000)  # type: ignore[attr-defined]
    time.ticks_diff = lambda a, b: a - b  # type: ignore[attr-defined]
    sys.stdin = Console(0)  # type: ignore[assignment]
    sys.stdout = Console(1)  # type: ignore[assignment]
    code = compile(firmware.read_text(), str(firmware), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(firmware)})


if __name__ == "__main__":
    main()
