"""The injector codec against the literal bytes of the spec, and under hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_drivers.codec import (
    ETX,
    MAX_BUFFER,
    STX,
    Alarm,
    Command,
    Decoder,
    Frame,
    Prompt,
    ProtocolError,
    ReplyError,
    Role,
    crc16_xmodem,
    encode_basic_reply,
    encode_basic_request,
    encode_safe,
    format_number,
    format_reply,
    parse_command,
    parse_number,
    parse_reply,
)

# The worked frames of domain/injector-protocol.md §2, byte for byte.
WORKED_FRAMES = [
    (b"SAF0", "02 08 53 41 46 30 55 43 03"),
    (b"0SAF0", "02 09 30 53 41 46 30 59 ad 03"),
    (b"0", "02 05 30 36 53 03"),
    (b"0DIA", "02 08 30 44 49 41 02 35 03"),
    (b"00S26.59", "02 0c 30 30 53 32 36 2e 35 39 22 e5 03"),
    (b"00A?S", "02 09 30 30 41 3f 53 75 a7 03"),
    (b"0RAT300UM", "02 0d 30 52 41 54 33 30 30 55 4d c0 2b 03"),
]


@pytest.mark.parametrize(("data", "hexbytes"), WORKED_FRAMES)
def test_encode_worked_frame(data: bytes, hexbytes: str) -> None:
    assert encode_safe(data) == bytes.fromhex(hexbytes)


@pytest.mark.parametrize(("data", "hexbytes"), WORKED_FRAMES)
@pytest.mark.parametrize("role", list(Role))
def test_decode_worked_frame(data: bytes, hexbytes: str, role: Role) -> None:
    decoder = Decoder(role, safe=True)
    assert decoder.feed(bytes.fromhex(hexbytes)) == [Frame(data, safe=True)]
    assert decoder.pending == 0


@pytest.mark.parametrize(("data", "hexbytes"), WORKED_FRAMES)
def test_decode_worked_frame_byte_by_byte(data: bytes, hexbytes: str) -> None:
    decoder = Decoder(Role.HOST, safe=True)
    frames = [f for b in bytes.fromhex(hexbytes) for f in decoder.feed(bytes([b]))]
    assert frames == [Frame(data, safe=True)]


def test_crc_is_xmodem_check_value() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3


def test_stx_inside_crc_does_not_break_the_frame() -> None:
    frame = bytes.fromhex("02 08 30 44 49 41 02 35 03")
    decoder = Decoder(Role.PUMP, safe=True)
    assert decoder.feed(frame + frame) == [Frame(b"0DIA", True)] * 2


def test_command_grammar() -> None:
    assert Command("RAT", "300UM", address=0).encode_data() == b"0RAT300UM"
    assert Command(address=0).encode_data() == b"0"
    assert Command("SAF", "0").encode_data() == b"SAF0"
    assert parse_command(b"0RAT300UM") == Command("RAT", "300UM", 0)
    assert parse_command(b"12") == Command("", "", 12)
    assert parse_command(b"XPL70 100 170") == Command("XPL", "70 100 170", None)
    assert parse_command(b"") == Command()
    with pytest.raises(ProtocolError):
        parse_command(b"0rat")
    with pytest.raises(ProtocolError):
        Command("RAT", "1", address=100).encode_data()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"00S26.59", (0, Prompt.STOPPED, None, None, "26.59")),
        (b"00A?S", (0, None, Alarm.STALLED, None, "")),
        (b"07I", (7, Prompt.INFUSING, None, None, "")),
        (b"00S?NA", (0, Prompt.STOPPED, None, ReplyError.NOT_APPLICABLE, "")),
        (b"00S?", (0, Prompt.STOPPED, None, ReplyError.UNKNOWN_COMMAND, "")),
        (b"00S?OOR", (0, Prompt.STOPPED, None, ReplyError.OUT_OF_RANGE, "")),
        (b"00S?COM", (0, Prompt.STOPPED, None, ReplyError.INVALID_PACKET, "")),
        (b"00SNE1000V3.928", (0, Prompt.STOPPED, None, None, "NE1000V3.928")),
        (b"00A?P", (0, None, Alarm.OVER_PRESSURE, None, "")),
    ],
)
def test_reply_grammar(data: bytes, expected: tuple[object, ...]) -> None:
    reply = parse_reply(data)
    assert (reply.address, reply.prompt, reply.alarm, reply.error, reply.data) == expected
    assert (
        format_reply(
            reply.address,
            prompt=reply.prompt,
            alarm=reply.alarm,
            error=reply.error,
            data=reply.data,
        )
        == data
    )


@pytest.mark.parametrize("bad", [b"0S", b"00", b"00Q", b"00A?Z", b"00S?XYZ", b"\xff0S", b"ab"])
def test_reply_grammar_rejects(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_reply(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (4.699, "4.699"),
        (26.59, "26.59"),
        (1000, "1000"),
        (300, "300"),
        (0.5, "0.5"),
        (0.3, "0.3"),
        (0.0049, "0.005"),
        (9999.4, "9999"),
        (123.456, "123.5"),
        (0, "0"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text
    assert parse_number(text) == pytest.approx(float(text))


@pytest.mark.parametrize("value", [10000, 99999.0, -1, float("nan")])
def test_format_number_out_of_range(value: float) -> None:
    with pytest.raises(ProtocolError):
        format_number(value)


@pytest.mark.parametrize("text", ["12345", "1.2345", "", ".", "1..2", "a", "-1", "12.345"])
def test_parse_number_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_number(text)


def test_basic_mode_framing() -> None:
    assert encode_basic_request(b"0SAF2") == b"0SAF2\r"
    host = Decoder(Role.HOST, safe=False)
    assert host.feed(encode_basic_reply(b"00S") + b"\x02") == [Frame(b"00S", False)]
    pump = Decoder(Role.PUMP, safe=False)
    # Basic lines and a Safe-framed SAF are both accepted in Basic mode.
    frames = pump.feed(b"0VER\r" + encode_safe(b"0SAF2") + b"0DIA\r")
    assert frames == [Frame(b"0VER", False), Frame(b"0SAF2", True), Frame(b"0DIA", False)]


def test_host_accepts_safe_reply_while_still_in_basic_mode() -> None:
    host = Decoder(Role.HOST, safe=False)
    assert host.feed(encode_safe(b"00S2")) == [Frame(b"00S2", True)]


def test_wrong_length_byte_recovers_after_expiry() -> None:
    good = encode_safe(b"00S")
    decoder = Decoder(Role.HOST, safe=True)
    assert decoder.feed(bytes([STX, 200]) + good) == []
    assert decoder.expire() == [Frame(b"00S", True)]


def test_missing_etx_costs_one_frame_only() -> None:
    first = bytearray(encode_safe(b"00I"))
    first[-1] = 0x00
    decoder = Decoder(Role.HOST, safe=True)
    assert decoder.feed(bytes(first) + encode_safe(b"00S")) == [Frame(b"00S", True)]


def test_buffer_is_bounded() -> None:
    decoder = Decoder(Role.HOST, safe=True)
    decoder.feed(bytes([STX, 255]) + b"x" * 10_000)
    assert decoder.pending <= MAX_BUFFER


# ---- properties ---------------------------------------------------------------------------

frame_data = st.binary(min_size=1, max_size=40).filter(lambda d: True)
ascii_data = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30
).map(str.encode)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=300), data=ascii_data, role=st.sampled_from(list(Role)))
def test_valid_frame_after_any_garbage_is_recovered(
    garbage: bytes, data: bytes, role: Role
) -> None:
    decoder = Decoder(role, safe=True)
    frames = decoder.feed(garbage + encode_safe(data))
    frames += decoder.expire()
    assert Frame(data, True) in frames


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=600), safe=st.booleans(), role=st.sampled_from(list(Role)))
def test_decoder_never_crashes_on_garbage(stream: bytes, safe: bool, role: Role) -> None:
    decoder = Decoder(role, safe=safe)
    for chunk_start in range(0, len(stream), 7):
        for frame in decoder.feed(stream[chunk_start : chunk_start + 7]):
            assert isinstance(frame.data, bytes)
            if frame.safe:
                assert 1 <= len(frame.data) <= 251
    decoder.expire()
    assert decoder.pending == 0


@settings(max_examples=300, deadline=None)
@given(data=ascii_data, flip=st.integers(min_value=0), bit=st.integers(0, 7))
def test_bit_flip_never_yields_a_wrong_frame(data: bytes, flip: int, bit: int) -> None:
    raw = bytearray(encode_safe(data))
    index = flip % len(raw)
    raw[index] ^= 1 << bit
    decoder = Decoder(Role.HOST, safe=True)
    frames = decoder.feed(bytes(raw)) + decoder.expire()
    # CRC-16 detects every single-bit error: either nothing, or (never) a different frame.
    assert all(f.data == data for f in frames)
    after = decoder.feed(encode_safe(b"00S")) + decoder.expire()
    assert Frame(b"00S", True) in after


@settings(max_examples=200, deadline=None)
@given(data=ascii_data, cut=st.integers(min_value=1))
def test_truncated_frame_then_valid_frame(data: bytes, cut: int) -> None:
    raw = encode_safe(data)
    truncated = raw[: 1 + cut % (len(raw) - 1)]
    decoder = Decoder(Role.HOST, safe=True)
    frames = decoder.feed(truncated)
    frames += decoder.expire()  # the inter-byte gap
    frames += decoder.feed(encode_safe(b"00S"))
    assert frames[-1] == Frame(b"00S", True)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=60))
def test_any_payload_round_trips_including_stx_etx(data: bytes) -> None:
    decoder = Decoder(Role.PUMP, safe=True)
    assert decoder.feed(encode_safe(data)) == [Frame(data, True)]


@settings(max_examples=200, deadline=None)
@given(value=st.floats(min_value=0, max_value=9999.4, allow_nan=False))
def test_number_round_trip_is_within_format_precision(value: float) -> None:
    text = format_number(value)
    assert len(text.replace(".", "")) <= 4
    digits_before = len(text.split(".")[0])
    assert abs(parse_number(text) - value) <= 0.5 * 10 ** -(4 - digits_before) + 1e-9


def test_etx_constant() -> None:
    assert (STX, ETX) == (2, 3)
