"""The serial line protocol: parsing, formatting, checksums and framing (pure functions)."""

from __future__ import annotations

import pytest

from firmware_bridges import serial_protocol as proto
from firmware_bridges.serial_protocol import (
    DeviceMessage,
    HostMessage,
    LineFramer,
    MalformedLine,
    Overlong,
)


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("SIG ready=true", True),
        ("SIG ready=false", False),
        ("SIG count=42", 42),
        ("SIG temp=-21.5", -21.5),
        ("SIG gone=null", None),
        ("SIG mode=auto", "auto"),
        ('SIG label="42"', "42"),
        ("SIG list=[1,2]", [1, 2]),
        ("SIG odd=NaN", "NaN"),  # not JSON: kept as text, never a NaN that equals nothing
        ("SIG text=two words", "two words"),
        ("SIG empty=", ""),
    ],
)
def test_sig_values_are_json_when_they_parse(line: str, value: object) -> None:
    msg = proto.parse_device_line(line)
    assert msg.kind == "SIG"
    assert msg.value == value and type(msg.value) is type(value)



@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("9" * 4301, "an integer of more than 4300 digits"),
        ("-" + "9" * 4301, "an integer of more than 4300 digits"),
        ("[" * 5000 + "]" * 5000, "nested deeper than 64 levels"),
        ("[" * 5000, "nested deeper than 64 levels"),  # the stack runs out before the end
    ],
)
def test_sig_json_no_reader_takes_is_a_malformed_line_not_text(value: str, reason: str) -> None:
    """The shared strict reader's refusals (as HTTP and MQTT refuse them): a number the device
    meant never becomes text, and deep nesting never escapes as a RecursionError."""
    with pytest.raises(MalformedLine) as info:
        proto.parse_device_line(f"SIG n={value}")
    assert info.value.reason == f"SIG value refused: {reason}"


def test_sig_integers_up_to_the_limit_are_numbers() -> None:
    assert proto.parse_device_line("SIG n=-" + "9" * 4300).value == -(10**4300 - 1)


def test_text_that_would_read_as_refused_json_is_sent_quoted() -> None:
    digits = "9" * 4301
    assert proto.format_value(digits) == f'"{digits}"'
    assert proto.parse_device_line(f"SIG n={proto.format_value(digits)}").value == digits

def test_device_messages() -> None:
    assert proto.parse_device_line("SIG ready=true\n") == DeviceMessage("SIG", "ready", True)
    assert proto.parse_device_line(b"DONE op-1\r\n") == DeviceMessage("DONE", operation_id="op-1")
    assert proto.parse_device_line("ERR op-1 E42 nozzle blocked") == DeviceMessage(
        "ERR", operation_id="op-1", reason="E42 nozzle blocked"
    )
    assert proto.parse_device_line("ERR op-1") == DeviceMessage("ERR", operation_id="op-1", reason="")
    assert proto.parse_device_line("ACK") == DeviceMessage("ACK")
    assert proto.parse_device_line("NAK") == DeviceMessage("NAK")


@pytest.mark.parametrize(
    "line",
    [
        "", "   ", "HELLO", "sig ready=true", "SIG ready", "SIG =1", "SIG two words=1",
        "DONE", "DONE a b", "ERR", "ACK extra", b"\xff\xfeDONE 1", "DONE 1\x00",
    ],
)
def test_malformed_device_lines(line: str | bytes) -> None:
    with pytest.raises(MalformedLine) as info:
        proto.parse_device_line(line)
    assert info.value.line == line
    assert isinstance(info.value, ValueError)


def test_host_messages_round_trip() -> None:
    cases = [
        (proto.format_run("op-1", "weld seam=3"), HostMessage("RUN", "op-1", "weld seam=3")),
        (proto.format_run("op-1", ""), HostMessage("RUN", "op-1", "")),
        (proto.format_pause(), HostMessage("PAUSE")),
        (proto.format_resume(), HostMessage("RESUME")),
        (proto.format_cancel("op-1"), HostMessage("CANCEL", "op-1")),
    ]
    for line, expected in cases:
        assert proto.parse_host_line(line) == expected
        assert proto.parse_host_line(line + "*" + proto.checksum(line), use_checksum=True) == expected
    for bad in ("RUN", "CANCEL", "PAUSE now", "STOP"):
        with pytest.raises(MalformedLine):
            proto.parse_host_line(bad)


def test_device_lines_round_trip() -> None:
    for value in (True, False, 0, 3.5, None, "auto", "true", "42", [1, "a"]):
        msg = proto.parse_device_line(proto.format_signal("x", value))
        assert msg.value == value and type(msg.value) is type(value)
    assert proto.parse_device_line(proto.format_done("op-9")).operation_id == "op-9"
    assert proto.parse_device_line(proto.format_error("op-9", "jam")).reason == "jam"


def test_formatting_refuses_what_would_break_the_framing() -> None:
    with pytest.raises(ValueError):
        proto.format_run("op-1", "two\nlines")
    with pytest.raises(ValueError):
        proto.format_run("op 1", "x")
    with pytest.raises(ValueError):
        proto.format_signal("a=b", 1)
    with pytest.raises(ValueError):
        proto.format_signal("x", float("nan"))


def test_checksum_is_the_xor_of_the_bytes_before_the_star() -> None:
    assert proto.checksum("") == "00"
    assert proto.checksum("A") == "41"
    assert proto.checksum("AB") == f"{0x41 ^ 0x42:02X}"
    line = proto.add_checksum("SIG ready=true")
    assert line == "SIG ready=true*3D"
    assert proto.parse_device_line(line, use_checksum=True).value is True
    assert proto.strip_checksum("SIG ready=true*3d") == "SIG ready=true"  # hex in either case
    for bad in ("SIG ready=true", "SIG ready=true*00", "SIG ready=true*3", "SIG ready=true*ZZ"):
        with pytest.raises(MalformedLine):
            proto.parse_device_line(bad, use_checksum=True)


def test_encode_line() -> None:
    assert proto.encode_line("ACK") == b"ACK\n"
    assert proto.encode_line("ACK", terminator="\r\n", use_checksum=True) == b"ACK*" + (
        proto.checksum("ACK").encode() + b"\r\n"
    )


def test_framer_buffers_partial_lines() -> None:
    framer = LineFramer()
    assert framer.feed(b"SIG a") == []
    assert framer.pending == 5
    assert framer.feed(b"=1\nDONE x\nAC") == [b"SIG a=1", b"DONE x"]
    assert framer.feed(b"K\n") == [b"ACK"]
    assert framer.pending == 0


def test_framer_with_a_multi_byte_terminator_split_across_reads() -> None:
    framer = LineFramer("\r\n", max_line=8)
    assert framer.feed(b"ACK\r") == []
    assert framer.feed(b"\nNAK\r\n") == [b"ACK", b"NAK"]


def test_framer_drops_overlong_lines_whole_and_recovers() -> None:
    framer = LineFramer(max_line=8)
    assert framer.feed(b"12345678\n") == [b"12345678"]
    assert framer.feed(b"123456789\n") == [Overlong(9)]
    out = []
    for _ in range(100):  # a line far longer than the buffer, in pieces
        out += framer.feed(b"x" * 7)
    assert out == [] and framer.pending <= 9
    assert framer.feed(b"x\nACK\n") == [Overlong(701), b"ACK"]
    framer.feed(b"partial")
    framer.reset()
    assert framer.feed(b"NAK\n") == [b"NAK"]


def test_framer_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        LineFramer("")
    with pytest.raises(ValueError):
        LineFramer(max_line=0)
