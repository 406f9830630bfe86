"""The layout of a weight image: the one definition of its header, sections and trailer.

The image writer and reader (`firmware/image.py`), the gateware's image loader (`hw/host.py`),
the software device (`tools/transport.ModelTransport`) and the tests all take offsets, lengths
and the per-byte header checks from here. Standard library only (no Amaranth, no NumPy).
Byte by byte in `docs/image.md`.

    header   magic b"NSMI" | version u16 | n u8 | reserved u8 | identity u32 |
             body length u32 | data length u16 | layer sizes u16 * n
    body     the sections of `image_sections`, each word ceil(bits / 8) bytes little-endian
    data     the model's `DataSpec` as UTF-8 JSON (data length bytes; none when 0)
    trailer  CRC-32 (zlib / ISO-HDLC) of everything before it, u32 little-endian
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .frames import Status

__all__ = ["MAGIC", "FORMAT_VERSION", "HEADER_FORMAT", "HEADER_FIELDS", "HEADER_BYTES", "CRC_BYTES",
           "MAX_DATA_BYTES", "ImageHeader", "image_crc", "image_sections", "word_bytes",
           "body_length", "header_length", "section_words", "image_body", "image_length",
           "encode_header", "decode_header", "header_field", "header_status"]

MAGIC = b"NSMI"
FORMAT_VERSION = 2
#: The fixed part of the header; the layer sizes (u16 each) follow it.
HEADER_FORMAT = "<4sHBBIIH"
HEADER_FIELDS = ("magic", "version", "n", "reserved", "identity", "body_length", "data_length")
HEADER_BYTES = struct.calcsize(HEADER_FORMAT)
CRC_BYTES = 4
MAX_DATA_BYTES = 0xFFFF


def _field_offsets() -> dict[str, tuple[int, int]]:
    sizes = [struct.calcsize("<" + code) for code in ("4s", "H", "B", "B", "I", "I", "H")]
    offsets, at = {}, 0
    for name, size in zip(HEADER_FIELDS, sizes):
        offsets[name] = (at, size)
        at += size
    assert at == HEADER_BYTES
    return offsets


#: name -> (offset, bytes) of each fixed header field.
FIELD_OFFSETS = _field_offsets()


@dataclass(frozen=True)
class ImageHeader:
    magic: bytes
    version: int
    reserved: int
    identity: int
    body_length: int
    data_length: int
    layer_sizes: tuple[int, ...]

    @property
    def length(self) -> int:
        return HEADER_BYTES + 2 * len(self.layer_sizes)

    @property
    def total_length(self) -> int:
        """Bytes of the whole image that this header declares."""
        return self.length + self.body_length + self.data_length + CRC_BYTES


def image_crc(data: bytes) -> int:
    """CRC-32 of `hw.protocol.IMAGE_CRC` (zlib / ISO-HDLC); zlib computes the same, faster."""
    return zlib.crc32(data) & 0xFFFFFFFF


def image_sections(config) -> list[tuple[str, int, int]]:
    """The memory sections of a weight image body, in order: (name, words, bits per word).

    weights: word = weight_base(l) + g * chunks(l) + c; lane k, position p (P = inputs_per_cycle)
             holds w[g*lanes + k, c*P + p] in bits [(k*P + p)*weight_bits, ...), two's
             complement, zero for lanes past N_out and positions past N_in.
    a:       word = param_base(l) + g; lane k holds a[g*lanes + k] in bits [k*a_bits, ...).
    bias:    word = param_base(l) + g; lane k holds bias[g*lanes + k] in bits [k*bias_bits, ...).
    seeds:   word = generator index (slot * generators_per_slot + lane); the LFSR's initial
             state (non-zero).
    Each word is stored as ceil(bits / 8) bytes, little-endian, unused high bits zero.
    """
    return [
        ("weights", config.weight_words, config.weight_word_bits),
        ("a", config.param_words, config.lanes * config.a_bits),
        ("bias", config.param_words, config.lanes * config.bias_bits),
        ("seeds", config.n_generators, config.lfsr_width),
    ]


def word_bytes(bits: int) -> int:
    return -(-bits // 8)


def body_length(config) -> int:
    """Bytes of the body (the memory sections) that `config` implies."""
    return sum(words * word_bytes(bits) for _, words, bits in image_sections(config))


def section_words(config, body: bytes) -> dict[str, list[int]]:
    """The words of each section of an image body, as integers (what the engine's write ports
    take, in address order)."""
    out, at = {}, 0
    for name, words, bits in image_sections(config):
        n = word_bytes(bits)
        out[name] = [int.from_bytes(body[at + i * n:at + (i + 1) * n], "little")
                     for i in range(words)]
        at += words * n
    return out


def image_body(config, image: bytes) -> bytes:
    """The body (the sections) of a whole image of `config`."""
    start = header_length(config)
    return bytes(image[start:start + body_length(config)])


def header_length(config) -> int:
    return HEADER_BYTES + 2 * len(config.layer_sizes)


def image_length(config, data_length: int = 0) -> int:
    """Header, body, `data_length` bytes of data spec, CRC-32 trailer."""
    return header_length(config) + body_length(config) + data_length + CRC_BYTES


def encode_header(config, data_length: int = 0) -> bytes:
    if not 0 <= data_length <= MAX_DATA_BYTES:
        raise ValueError(f"data spec of {data_length} bytes, an image holds at most "
                         f"{MAX_DATA_BYTES}")
    return (struct.pack(HEADER_FORMAT, MAGIC, FORMAT_VERSION, len(config.layer_sizes), 0,
                        config.identity, body_length(config), data_length)
            + struct.pack(f"<{len(config.layer_sizes)}H", *config.layer_sizes))


def decode_header(data: bytes) -> ImageHeader | None:
    """The header at the start of `data`, or None when `data` is too short to hold it."""
    if len(data) < HEADER_BYTES:
        return None
    magic, version, n, reserved, identity, body, extra = struct.unpack_from(HEADER_FORMAT, data)
    if len(data) < HEADER_BYTES + 2 * n:
        return None
    sizes = struct.unpack_from(f"<{n}H", data, HEADER_BYTES)
    return ImageHeader(magic, version, reserved, identity, body, extra, tuple(sizes))


def header_field(position: int) -> str:
    """Name of the header field at byte `position` ("layer_sizes" past the fixed part)."""
    for name, (offset, size) in FIELD_OFFSETS.items():
        if offset <= position < offset + size:
            return name
    return "layer_sizes"


def header_status(position: int) -> Status | None:
    """The status a device reports for a header byte that differs from its configuration's, or
    None for a byte that is not compared (the data length, which varies)."""
    return {"magic": Status.IMAGE_MAGIC, "version": Status.IMAGE_MAGIC,
            "reserved": Status.IMAGE_MAGIC, "n": Status.IMAGE_CONFIG,
            "identity": Status.IMAGE_CONFIG, "layer_sizes": Status.IMAGE_CONFIG,
            "body_length": Status.IMAGE_LENGTH, "data_length": None}[header_field(position)]
