"""The framed UART protocol between a host and the NSM accelerator: the one definition.

Every side builds on this module: the gateware (`hw/protocol.py`, `hw/host.py`) takes its
constants, enums and payload layouts from it, the host client (`tools/client.py`), the software
device (`tools/transport.ModelTransport`), the cocotb BFM and scoreboard (`sim/`) and the tests
encode and decode with its functions. It imports neither Amaranth nor NumPy. The byte-level
description is `docs/protocol.md` (its examples are regenerated from here by a test).

Request:  SYNC_REQUEST, opcode, length (u16 LE), payload[length], crc8
Response: SYNC_RESPONSE, status, length (u16 LE), payload[length], crc8
crc8 (CRC-8/AUTOSAR) covers every byte after the sync byte.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = ["SYNC_REQUEST", "SYNC_RESPONSE", "PROTOCOL_VERSION", "MAX_PAYLOAD", "FRAME_TIMEOUT_BITS",
           "FRAME_CRC_PARAMETERS", "HEAD_BYTES", "NO_PAYLOAD", "Opcode", "Status", "DeviceState",
           "FrameError", "Response", "ResponseParser", "Identity", "InferenceResult",
           "DeviceStatus", "crc8", "frame_timeout_cycles", "encode_request", "encode_response",
           "response_length", "decode_response", "parse_responses", "parse_responses_prefix",
           "no_payload", "identify_format", "encode_identify", "decode_identify", "STATUS_FORMAT",
           "encode_status", "decode_status", "score_bytes", "result_format", "result_length",
           "encode_result", "decode_result", "input_length", "pack_input", "unpack_input",
           "config_problems", "DEFAULT_BAUD", "RX_BUFFER_BYTES", "CompactResult", "compact_format",
           "compact_length", "encode_compact", "decode_compact", "stream_window", "PayloadRule",
           "Precondition", "STATE_CHECKS", "PRECONDITIONS", "refusal"]

SYNC_REQUEST = 0x5A
SYNC_RESPONSE = 0xA5
PROTOCOL_VERSION = 2
# Largest payload of one frame, both directions; longer requests are refused with BAD_LENGTH.
MAX_PAYLOAD = 256
# A frame whose next byte does not arrive within this many bit times is dropped (TIMEOUT).
FRAME_TIMEOUT_BITS = 1024
# CRC-8/AUTOSAR, in the terms of `amaranth.lib.crc.Algorithm` (the gateware's CRC unit).
FRAME_CRC_PARAMETERS = dict(crc_width=8, polynomial=0x2F, initial_crc=0xFF,
                            reflect_input=False, reflect_output=False, xor_output=0xFF)
# Bytes before the payload of a frame (sync, opcode/status, length), and after it (crc8).
HEAD_BYTES = 4
# The link's default rate, boards and host tool alike: both boards' USB UARTs (FT2232H,
# FT231X) run it, and it divides their 12 and 25 MHz clocks exactly.
DEFAULT_BAUD = 1_000_000
# The device's receive buffer: request bytes it holds while it executes an earlier request.
RX_BUFFER_BYTES = 512


class Opcode(enum.IntEnum):
    #: payload none -> `identify_format`: identity u32, protocol version u8, score bytes u8,
    #: layer count u8, layer sizes u16 each, lanes u16, samples K u16.
    IDENTIFY = 0x01
    #: payload none -> invalidates the loaded image and starts a new load.
    IMAGE_BEGIN = 0x02
    #: payload = the next bytes of the image -> OK, or an IMAGE_* error that aborts the load.
    IMAGE_DATA = 0x03
    #: payload none -> OK and the image becomes valid, or IMAGE_LENGTH / IMAGE_CRC.
    IMAGE_END = 0x04
    #: payload = `input_length` bytes of input bits (bit j = input j, LSB first; 1 is +1).
    WRITE_INPUT = 0x05
    #: payload none -> OK when the inference starts; NO_IMAGE / NO_INPUT / BUSY otherwise.
    START = 0x06
    #: payload none -> BUSY while running, else `result_format`.
    READ_RESULT = 0x07
    #: payload none -> `STATUS_FORMAT`.
    READ_STATUS = 0x08
    #: payload = `input_length` bytes of input bits -> when that inference has finished,
    #: `compact_format` (class, votes). Streaming: the device buffers the next requests
    #: (`RX_BUFFER_BYTES`) while it computes, so a host keeps `stream_window` of them in flight.
    INFER = 0x09


class Status(enum.IntEnum):
    OK = 0x00
    BAD_CRC = 0x01          # frame checksum mismatch
    BAD_LENGTH = 0x02       # payload longer than MAX_PAYLOAD, or wrong for the opcode
    UNKNOWN_OPCODE = 0x03
    TIMEOUT = 0x04          # a frame stopped arriving half-way; it was dropped
    NO_IMAGE = 0x05         # START before a complete, verified image
    NO_INPUT = 0x06         # START before WRITE_INPUT
    BUSY = 0x07             # an inference is running
    IMAGE_NOT_BEGUN = 0x08  # IMAGE_DATA / IMAGE_END without IMAGE_BEGIN
    IMAGE_MAGIC = 0x09      # the image header has a wrong magic, format version or reserved byte
    IMAGE_CONFIG = 0x0A     # the image was made for another hardware configuration
    IMAGE_LENGTH = 0x0B     # the image has too many or too few bytes
    IMAGE_CRC = 0x0C        # the image CRC-32 does not match
    IMAGE_CONTENT = 0x0D    # a value the hardware cannot use (zero LFSR seed, weight -2^(w-1))


class DeviceState(enum.IntEnum):
    IDLE = 0
    LOADING = 1
    RUNNING = 2




class PayloadRule(enum.Enum):
    """What a request's payload length must be."""
    NONE = "none"      # no payload
    INPUT = "input"    # `input_length(n_inputs)` bytes
    SOME = "some"      # 1..MAX_PAYLOAD bytes


@dataclass(frozen=True)
class Precondition:
    """What a request needs before it acts, checked in this order: its payload length
    (BAD_LENGTH), an idle engine (`idle`: BUSY while an inference runs), then the device state
    of each flag set, in `STATE_CHECKS` order."""
    payload: PayloadRule
    idle: bool = False
    loading: bool = False      # an image load begun
    image: bool = False        # a complete, verified image
    input: bool = False        # an input written
    result: bool = False       # an inference finished


#: The device-state flags of `Precondition` and the status that refuses a request lacking one.
STATE_CHECKS = (("loading", Status.IMAGE_NOT_BEGUN), ("image", Status.NO_IMAGE),
                ("input", Status.NO_INPUT), ("result", Status.NO_INPUT))

#: Every opcode's preconditions: the device (`hw/host.py`) and its software model
#: (`tools/transport.ModelTransport`) refuse requests from this table; other opcodes are
#: UNKNOWN_OPCODE. Whatever would change what a running inference reads is refused while busy.
PRECONDITIONS = {
    Opcode.IDENTIFY: Precondition(PayloadRule.NONE),
    Opcode.READ_STATUS: Precondition(PayloadRule.NONE),
    Opcode.IMAGE_BEGIN: Precondition(PayloadRule.NONE, idle=True),
    Opcode.IMAGE_DATA: Precondition(PayloadRule.SOME, idle=True, loading=True),
    Opcode.IMAGE_END: Precondition(PayloadRule.NONE, idle=True, loading=True),
    Opcode.WRITE_INPUT: Precondition(PayloadRule.INPUT, idle=True),
    Opcode.START: Precondition(PayloadRule.NONE, idle=True, image=True, input=True),
    Opcode.READ_RESULT: Precondition(PayloadRule.NONE, idle=True, result=True),
    Opcode.INFER: Precondition(PayloadRule.INPUT, idle=True, image=True),
}


def refusal(opcode: int, length: int, n_inputs: int, *, busy: bool, **state: bool) -> Status:
    """The status that refuses this request by `PRECONDITIONS` (OK: none does). `state` holds
    each flag of `STATE_CHECKS` (loading, image, input, result) as the device has it now."""
    try:
        pre = PRECONDITIONS[Opcode(opcode)]
    except ValueError:
        return Status.UNKNOWN_OPCODE
    fits = {PayloadRule.NONE: length == 0, PayloadRule.INPUT: length == input_length(n_inputs),
            PayloadRule.SOME: 0 < length <= MAX_PAYLOAD}[pre.payload]
    if not fits:
        return Status.BAD_LENGTH
    if pre.idle and busy:
        return Status.BUSY
    for flag, status in STATE_CHECKS:
        if getattr(pre, flag) and not state[flag]:
            return status
    return Status.OK


#: Opcodes whose request has no payload.
NO_PAYLOAD = tuple(op for op, pre in PRECONDITIONS.items() if pre.payload == PayloadRule.NONE)


def no_payload(opcode: int) -> bool:
    return opcode in tuple(int(o) for o in NO_PAYLOAD)


def frame_timeout_cycles(baud_divisor: int) -> int:
    """Clock cycles of the inter-byte timeout for a UART running at clk / baud_divisor."""
    return FRAME_TIMEOUT_BITS * baud_divisor


# -- the frame checksum ----------------------------------------------------------------------------

def _crc8_table() -> tuple[int, ...]:
    poly = FRAME_CRC_PARAMETERS["polynomial"]
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8_TABLE = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8/AUTOSAR of `data` (equal to `hw.protocol.FRAME_CRC.compute`, tested)."""
    crc = FRAME_CRC_PARAMETERS["initial_crc"]
    for byte in bytes(data):
        crc = _CRC8_TABLE[crc ^ byte]
    return crc ^ FRAME_CRC_PARAMETERS["xor_output"]


# -- frames ----------------------------------------------------------------------------------------

class FrameError(ValueError):
    """Bytes that are not a well-formed frame; the message says why."""


def _frame(sync: int, code: int, payload: bytes) -> bytes:
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = bytes([int(code)]) + struct.pack("<H", len(payload)) + payload
    return bytes([sync]) + body + bytes([crc8(body)])


def encode_request(opcode: int, payload: bytes = b"") -> bytes:
    """One request frame (`opcode` may be any byte, for tests of unknown opcodes)."""
    return _frame(SYNC_REQUEST, opcode, payload)


def encode_response(status: int, payload: bytes = b"") -> bytes:
    return _frame(SYNC_RESPONSE, status, payload)


def response_length(head: bytes) -> int:
    """Whole length of the response frame that starts with these HEAD_BYTES bytes."""
    if head[0] != SYNC_RESPONSE:
        raise FrameError(f"byte 0x{head[0]:02x} where a response sync (0x{SYNC_RESPONSE:02x}) "
                         f"was expected")
    length = struct.unpack_from("<H", head, 2)[0]
    if length > MAX_PAYLOAD:
        raise FrameError(f"response length {length} exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    return HEAD_BYTES + length + 1


@dataclass(frozen=True)
class Response:
    status: int
    payload: bytes

    @property
    def status_name(self) -> str:
        try:
            return Status(self.status).name
        except ValueError:
            return f"0x{self.status:02x}"

    def expect(self, status: Status = Status.OK) -> bytes:
        if self.status != status:
            raise FrameError(f"expected status {status.name}, got {self.status_name} "
                             f"(payload {self.payload.hex()})")
        return self.payload


def decode_response(frame: bytes) -> Response:
    """One whole response frame, checked (sync, length, crc8)."""
    frame = bytes(frame)
    if len(frame) < HEAD_BYTES + 1 or len(frame) != response_length(frame[:HEAD_BYTES]):
        raise FrameError(f"response frame of {len(frame)} bytes is malformed")
    body = frame[1:-1]
    if crc8(body) != frame[-1]:
        raise FrameError(f"response checksum 0x{frame[-1]:02x}, computed 0x{crc8(body):02x}")
    return Response(body[0], body[3:])


class ResponseParser:
    """Incremental parser: feed bytes, take complete `Response`s; bad frames raise."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Response]:
        self.buffer += data
        out = []
        while len(self.buffer) >= HEAD_BYTES:
            end = response_length(self.buffer[:HEAD_BYTES])
            if len(self.buffer) < end:
                break
            out.append(decode_response(self.buffer[:end]))
            del self.buffer[:end]
        if self.buffer and self.buffer[0] != SYNC_RESPONSE:
            raise FrameError(f"byte 0x{self.buffer[0]:02x} where a response sync "
                             f"(0x{SYNC_RESPONSE:02x}) was expected")
        return out


def parse_responses_prefix(data: bytes) -> list[Response]:
    """The complete responses at the start of `data` (an unfinished one at the end is left)."""
    return ResponseParser().feed(bytes(data))


def parse_responses(data: bytes) -> list[Response]:
    """All responses in `data`, which must end on a frame boundary."""
    p = ResponseParser()
    out = p.feed(data)
    if p.buffer:
        raise FrameError(f"{len(p.buffer)} bytes of an unfinished response frame")
    return out


# -- payloads --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    identity: int
    protocol_version: int
    score_bytes: int
    layer_sizes: tuple[int, ...]
    lanes: int
    samples: int

    def describe(self) -> str:
        sizes = "-".join(str(n) for n in self.layer_sizes)
        return (f"{sizes} lanes={self.lanes} K={self.samples} id={self.identity:08x} "
                f"protocol v{self.protocol_version}")


def identify_format(n_layer_sizes: int) -> str:
    """identity u32, protocol version u8, score bytes u8, n u8, n sizes u16, lanes u16, K u16."""
    return f"<IBBB{n_layer_sizes}HHH"


def encode_identify(config) -> bytes:
    return struct.pack(identify_format(len(config.layer_sizes)), config.identity,
                       PROTOCOL_VERSION, score_bytes(config), len(config.layer_sizes),
                       *config.layer_sizes, config.lanes, config.samples)


def decode_identify(payload: bytes) -> Identity:
    payload = bytes(payload)
    if len(payload) < 7:
        raise FrameError(f"IDENTIFY: payload of {len(payload)} bytes is malformed")
    fmt = identify_format(payload[6])
    if len(payload) != struct.calcsize(fmt):
        raise FrameError(f"IDENTIFY: payload of {len(payload)} bytes, {payload[6]} layer sizes "
                         f"need {struct.calcsize(fmt)}")
    identity, version, nscore, n, *rest = struct.unpack(fmt, payload)
    if version != PROTOCOL_VERSION:
        raise FrameError(f"IDENTIFY: the device speaks protocol version {version}, this tool "
                         f"version {PROTOCOL_VERSION}")
    return Identity(identity, version, nscore, tuple(rest[:n]), rest[n], rest[n + 1])


@dataclass(frozen=True)
class DeviceStatus:
    state: DeviceState
    image_valid: bool
    last_error: Status
    inferences: int


#: READ_STATUS: state (DeviceState) u8, image valid u8, last error (Status) u8, inferences u32.
STATUS_FORMAT = "<BBBI"


def encode_status(state: int, image_valid: bool, last_error: int, inferences: int) -> bytes:
    return struct.pack(STATUS_FORMAT, int(state), int(image_valid), int(last_error), inferences)


def decode_status(payload: bytes) -> DeviceStatus:
    if len(payload) != struct.calcsize(STATUS_FORMAT):
        raise FrameError(f"READ_STATUS: payload of {len(payload)} bytes, expected "
                         f"{struct.calcsize(STATUS_FORMAT)}")
    state, valid, error, inferences = struct.unpack(STATUS_FORMAT, payload)
    try:
        return DeviceStatus(DeviceState(state), bool(valid), Status(error), inferences)
    except ValueError as e:
        raise FrameError(f"READ_STATUS: {e}") from None


@dataclass(frozen=True)
class InferenceResult:
    cls: int
    scores: tuple[int, ...]
    votes: tuple[int, ...]
    cycles: int


def score_bytes(config) -> int:
    """Bytes of one signed score in READ_RESULT: ceil(score_bits / 8)."""
    return -(-config.score_bits // 8)


def result_format(n_classes: int, nscore: int) -> list[tuple[str, int, bool]]:
    """READ_RESULT, field by field: (name, bytes, signed). Class u8; per class c a signed score
    of `nscore` bytes and votes u16; cycles of the inference u32."""
    fields = [("cls", 1, False)]
    for c in range(n_classes):
        fields += [(f"score{c}", nscore, True), (f"votes{c}", 2, False)]
    return fields + [("cycles", 4, False)]


def result_length(config) -> int:
    return sum(n for _, n, _ in result_format(config.n_classes, score_bytes(config)))


def encode_result(n_classes: int, nscore: int, result: InferenceResult) -> bytes:
    values = {"cls": result.cls, "cycles": result.cycles}
    for c in range(n_classes):
        values[f"score{c}"], values[f"votes{c}"] = result.scores[c], result.votes[c]
    return b"".join(int(values[name]).to_bytes(n, "little", signed=signed)
                    for name, n, signed in result_format(n_classes, nscore))


def decode_result(n_classes: int, nscore: int, payload: bytes) -> InferenceResult:
    fields = result_format(n_classes, nscore)
    expected = sum(n for _, n, _ in fields)
    if len(payload) != expected:
        raise FrameError(f"READ_RESULT: payload of {len(payload)} bytes, {n_classes} classes "
                         f"with {nscore}-byte scores need {expected}")
    values, at = {}, 0
    for name, n, signed in fields:
        values[name] = int.from_bytes(payload[at:at + n], "little", signed=signed)
        at += n
    return InferenceResult(values["cls"], tuple(values[f"score{c}"] for c in range(n_classes)),
                           tuple(values[f"votes{c}"] for c in range(n_classes)),
                           values["cycles"])


@dataclass(frozen=True)
class CompactResult:
    """What INFER returns: the class and the votes per class."""
    cls: int
    votes: tuple[int, ...]


def compact_format(n_classes: int) -> str:
    """INFER's response: class u8, votes u16 per class."""
    return f"<B{n_classes}H"


def compact_length(n_classes: int) -> int:
    return struct.calcsize(compact_format(n_classes))


def encode_compact(n_classes: int, result) -> bytes:
    return struct.pack(compact_format(n_classes), result.cls, *result.votes)


def decode_compact(n_classes: int, payload: bytes) -> CompactResult:
    if len(payload) != compact_length(n_classes):
        raise FrameError(f"INFER: payload of {len(payload)} bytes, {n_classes} classes need "
                         f"{compact_length(n_classes)}")
    cls, *votes = struct.unpack(compact_format(n_classes), payload)
    return CompactResult(cls, tuple(votes))


def stream_window(n_inputs: int) -> int:
    """INFER requests a host may have in flight: the one executing, and as many more as the
    device's receive buffer holds whole."""
    return 1 + RX_BUFFER_BYTES // (input_length(n_inputs) + HEAD_BYTES + 1)


def input_length(n_inputs: int) -> int:
    """WRITE_INPUT payload bytes: ceil(N_0 / 8)."""
    return -(-n_inputs // 8)


def pack_input(values, n_inputs: int) -> bytes:
    """±1 inputs -> WRITE_INPUT payload: input j is bit j % 8 of byte j // 8, 1 is +1."""
    values = [int(v) for v in _flat(values)]
    if len(values) != n_inputs:
        raise ValueError(f"input has {len(values)} values, the device takes {n_inputs}")
    if any(v not in (1, -1) for v in values):
        raise ValueError("input values must be -1 or +1")
    out = bytearray(input_length(n_inputs))
    for j, v in enumerate(values):
        if v == 1:
            out[j // 8] |= 1 << (j % 8)
    return bytes(out)


def unpack_input(payload: bytes, n_inputs: int) -> list[int]:
    """Inverse of `pack_input`: the ±1 inputs."""
    return [1 if payload[j // 8] >> (j % 8) & 1 else -1 for j in range(n_inputs)]


def _flat(values):
    if hasattr(values, "reshape"):          # a NumPy array, without importing NumPy
        return values.reshape(-1).tolist()
    return list(values)


# -- what a configuration needs of the protocol ----------------------------------------------------

def config_problems(config) -> list[tuple[str, str]]:
    """(field, message) for each payload of `config` that would not fit in one frame."""
    problems = []
    n_in, n_cls = config.layer_sizes[0], config.layer_sizes[-1]
    if input_length(n_in) > MAX_PAYLOAD:
        problems.append(("layer_sizes", f"{n_in} inputs need a WRITE_INPUT payload of "
                                        f"{input_length(n_in)} bytes, a frame holds "
                                        f"{MAX_PAYLOAD} (at most {8 * MAX_PAYLOAD} inputs)"))
    ident = struct.calcsize(identify_format(len(config.layer_sizes)))
    if ident > MAX_PAYLOAD:
        problems.append(("layer_sizes", f"{len(config.layer_sizes)} layer sizes need an "
                                        f"IDENTIFY payload of {ident} bytes, a frame holds "
                                        f"{MAX_PAYLOAD}"))
    result = result_length(config)
    if result > MAX_PAYLOAD:
        problems.append(("layer_sizes", f"{n_cls} classes need a READ_RESULT payload of "
                                        f"{result} bytes, a frame holds {MAX_PAYLOAD}"))
    return problems
