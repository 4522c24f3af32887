"""Operator commands for the standalone PLC simulator, read one per line from its stdin.

``python -m firmware_bridges.simulators.plc`` runs the PLC in its own process, where a test or a
person cannot call :meth:`PlcSimulator.set_ready` as the in-process simulator (and ``serve
--demo``) can; these commands do the same from the keyboard or from a parent process's pipe::

    ready on | ready off        set or drop the ready bit (discrete input 0)
    fail PROGRAM CODE           from the next cycle on, PROGRAM ends with the error bit and CODE
                                (also PROGRAM=CODE, as --fail takes it)
    pass PROGRAM                PROGRAM ends with done again
    error [CODE]                end the running cycle now with the error bit and CODE (default 1)
    temperature TENTHS          input register 1, in tenths of a degree (0..65535)
    status                      one line: ready, mode, cycles, the failing programs
    help                        the commands
    quit                        stop the simulator

Each command is answered by exactly one line on stdout, ``ok: ...`` or ``error: ...`` (a wrong
command changes nothing), so a parent process can wait for the answer instead of sleeping: once
``ok`` is printed, the next Modbus read already sees the change. Lines longer than
:data:`MAX_LINE` bytes are refused whole. When stdin ends (started with ``< /dev/null``, or in
the background) the simulator keeps serving until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

from typing import BinaryIO, TextIO

from .plc import MODE_DONE, MODE_ERROR, MODE_IDLE, MODE_PAUSED, MODE_RUNNING, PlcSimulator

__all__ = ["COMMANDS", "MAX_LINE", "PlcConsole"]

#: the longest command line, in bytes; a longer one is refused (memory stays bounded)
MAX_LINE = 200
_WORD = 0xFFFF  # programs, codes and the temperature are 16-bit registers
_MODES = {MODE_IDLE: "idle", MODE_RUNNING: "running", MODE_DONE: "done", MODE_ERROR: "error",
          MODE_PAUSED: "paused"}
_ON = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
COMMANDS = ("ready on|off", "fail PROGRAM CODE", "pass PROGRAM", "error [CODE]",
            "temperature TENTHS", "status", "help", "quit")


class _Refused(ValueError):
    """A command that changes nothing; its text is the answer."""


def _word(text: str, what: str) -> int:
    """A register value 0..65535 from decimal digits (no signs, floats, NaN or 1e9)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > _WORD:
        raise _Refused(f"{what} must be a whole number 0..{_WORD}, got {text!r}")
    return int(text)


class PlcConsole:
    """Reads commands for ``plc`` from a byte stream and answers each on a text stream."""

    def __init__(self, plc: PlcSimulator, out: TextIO) -> None:
        self.plc = plc
        self.out = out

    def run(self, source: BinaryIO) -> bool:
        """Answer commands until ``quit`` (True) or the end of ``source`` (False)."""
        while True:
            line = source.readline(MAX_LINE + 1)
            if not line:
                return False
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                while (rest := source.readline(MAX_LINE + 1)) and not rest.endswith(b"\n"):
                    pass  # drop the rest of the over-long line, a bounded piece at a time
                self._answer(f"error: a command line is at most {MAX_LINE} bytes")
                continue
            answer = self.handle(line.decode("utf-8", errors="replace"))
            if answer is None:
                self._answer("ok: quitting")
                return True
            self._answer(answer)

    def handle(self, line: str) -> str | None:
        """The answer to one command line; None for ``quit``."""
        words = line.split()
        if not words:
            return "error: an empty line; try 'help'"
        command, args = words[0].lower(), words[1:]
        if command == "quit" and not args:
            return None
        try:
            return self._do(command, args)
        except _Refused as exc:
            return f"error: {exc}"

    def _do(self, command: str, args: list[str]) -> str:
        plc = self.plc
        if command == "ready" and len(args) == 1 and args[0].lower() in _ON:
            plc.set_ready(_ON[args[0].lower()])
            return f"ok: ready {'on' if plc.ready else 'off'}"
        if command == "fail" and len(args) in (1, 2):
            program, _, code = (args[0].partition("=") if len(args) == 1 else (args[0], "", args[1]))
            number = _word(program, "PROGRAM")
            error_code = _word(code, "CODE")
            plc.fail_program(number, error_code)
            return f"ok: program {number} ends with the error bit and code {error_code}"
        if command == "pass" and len(args) == 1:
            number = _word(args[0], "PROGRAM")
            plc.fail_program(number, None)
            return f"ok: program {number} ends with done"
        if command == "error" and len(args) <= 1:
            error_code = _word(args[0], "CODE") if args else 1
            if not plc.fail_cycle(error_code):
                raise _Refused("no cycle is running")
            return f"ok: the running cycle ended with the error bit and code {error_code}"
        if command == "temperature" and len(args) == 1:
            plc.set_temperature(_word(args[0], "TENTHS"))
            return f"ok: temperature {int(args[0]) / 10:.1f}"
        if command == "status" and not args:
            failing = ",".join(f"{p}={c}" for p, c in sorted(plc.failing.items())) or "none"
            return (f"ok: ready={'on' if plc.ready else 'off'} mode={_MODES[plc.mode]} "
                    f"cycles={plc.cycles} failing={failing}")
        if command == "help" and not args:
            return "ok: commands: " + "; ".join(COMMANDS)
        raise _Refused(f"unknown command {' '.join([command, *args])[:60]!r}; the commands: "
                       + "; ".join(COMMANDS))

    def _answer(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
