"""The framed UART protocol between a host and the NSM accelerator.

Shared by the gateware (`hw/host.py`) and the host tool (`tools/`): opcodes and status codes are
Amaranth enums with a shape, so both sides use the same numbers; the frame checksum is an
`amaranth.lib.crc` parameter set, whose `compute()` the host uses and whose `create()` the
gateware instantiates. The byte-level definition is in `docs/protocol.md`.

Request:  SYNC_REQUEST, opcode, length (u16 little-endian), payload[length], crc8
Response: SYNC_RESPONSE, status, length (u16 little-endian), payload[length], crc8
crc8 covers every byte after the sync byte (opcode/status, length, payload).
"""

from amaranth.lib import enum
from amaranth.lib.crc import catalog

__all__ = ["Opcode", "Status", "DeviceState", "SYNC_REQUEST", "SYNC_RESPONSE", "FRAME_CRC",
           "IMAGE_CRC", "MAX_PAYLOAD", "PROTOCOL_VERSION", "frame_timeout_cycles"]

SYNC_REQUEST = 0x5A
SYNC_RESPONSE = 0xA5
PROTOCOL_VERSION = 1
# Largest payload of one frame, both directions; longer requests are refused with BAD_LENGTH.
MAX_PAYLOAD = 256
# Per-frame checksum, and the CRC over a whole weight image (the zlib / PNG CRC-32).
FRAME_CRC = catalog.CRC8_AUTOSAR(data_width=8)
IMAGE_CRC = catalog.CRC32_ISO_HDLC(data_width=8)
# A frame whose next byte does not arrive within this many bit times is dropped (TIMEOUT).
FRAME_TIMEOUT_BITS = 1024


def frame_timeout_cycles(baud_divisor: int) -> int:
    """Clock cycles of the inter-byte timeout for a UART running at clk / baud_divisor."""
    return FRAME_TIMEOUT_BITS * baud_divisor


class Opcode(enum.Enum, shape=8):
    #: payload none -> config identity (u32), protocol version (u8), layer count (u8),
    #: layer sizes (u16 each), lanes (u16), samples K (u16).
    IDENTIFY = 0x01
    #: payload none -> invalidates the loaded image and starts a new load.
    IMAGE_BEGIN = 0x02
    #: payload = the next bytes of the image -> OK, or an IMAGE_* error that aborts the load.
    IMAGE_DATA = 0x03
    #: payload none -> OK and the image becomes valid, or IMAGE_LENGTH / IMAGE_CRC.
    IMAGE_END = 0x04
    #: payload = ceil(N_0 / 8) bytes of input bits (bit j = input j, LSB first; 1 is +1).
    WRITE_INPUT = 0x05
    #: payload none -> OK when the inference starts; NO_IMAGE / NO_INPUT / BUSY otherwise.
    START = 0x06
    #: payload none -> BUSY while running, else class (u8), then per class: score (signed,
    #: ceil(score_bits / 8) bytes LE) and votes (u16), then cycles of the inference (u32).
    READ_RESULT = 0x07
    #: payload none -> state (DeviceState, u8), image valid (u8), last error (Status, u8),
    #: inferences run since reset (u32).
    READ_STATUS = 0x08


class Status(enum.Enum, shape=8):
    OK = 0x00
    BAD_CRC = 0x01          # frame checksum mismatch
    BAD_LENGTH = 0x02       # payload longer than MAX_PAYLOAD, or wrong for the opcode
    UNKNOWN_OPCODE = 0x03
    TIMEOUT = 0x04          # a frame stopped arriving half-way; it was dropped
    NO_IMAGE = 0x05         # START before a complete, verified image
    NO_INPUT = 0x06         # START before WRITE_INPUT
    BUSY = 0x07             # an inference is running
    IMAGE_NOT_BEGUN = 0x08  # IMAGE_DATA / IMAGE_END without IMAGE_BEGIN
    IMAGE_MAGIC = 0x09      # the image header has a wrong magic or format version
    IMAGE_CONFIG = 0x0A     # the image was made for another hardware configuration
    IMAGE_LENGTH = 0x0B     # the image has too many or too few bytes
    IMAGE_CRC = 0x0C        # the image CRC-32 does not match


class DeviceState(enum.Enum, shape=8):
    IDLE = 0
    LOADING = 1
    RUNNING = 2
