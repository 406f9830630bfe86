"""The layout of a weight image: the one definition of its header, sections and trailer.

The image writer and reader (`firmware/image.py`), the gateware's image loader (`hw/host.py`),
the software device (`tools/transport.ModelTransport`) and the tests all take offsets, lengths
and the per-byte header checks from here. Standard library only (no Amaranth, no NumPy).
Byte by byte in `docs/image.md`.

    header   magic b"NSMI" | version u16 | n u8 | reserved u8 | identity u32 |
             body length u32 | data length u16 | layer sizes u16 * n |
             input shape (height, width, channels) u16 * 3 (zeros: none given) |
             conv count u8 | conv layers (out_channels u16, kernel u8, pool u8) * count
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
           "MAX_DATA_BYTES", "SIZE_FORMAT", "INPUT_SHAPE_FORMAT", "CONV_COUNT_FORMAT",
           "CONV_LAYER_FORMAT", "NETWORK_FIELDS", "network_length", "network_fields",
           "ImageHeader", "image_crc", "image_sections", "word_bytes",
           "body_length", "header_length", "section_words", "image_body", "image_length",
           "encode_header", "decode_header", "header_field", "header_status"]

MAGIC = b"NSMI"
FORMAT_VERSION = 3
#: The fixed part of the header; the network description (`NETWORK_FIELDS`) follows it.
HEADER_FORMAT = "<4sHBBIIH"
HEADER_FIELDS = ("magic", "version", "n", "reserved", "identity", "body_length", "data_length")
HEADER_BYTES = struct.calcsize(HEADER_FORMAT)
CRC_BYTES = 4
MAX_DATA_BYTES = 0xFFFF
#: The network description, so that an image says what network it holds: each of the n layer
#: sizes, the input shape (height, width, channels; zeros for a configuration without one), the
#: number of conv layers, then each conv layer (out_channels, kernel, pool).
SIZE_FORMAT = "<H"
INPUT_SHAPE_FORMAT = "<3H"
CONV_COUNT_FORMAT = "<B"
CONV_LAYER_FORMAT = "<HBB"
#: The network description's fields in order (what `header_field` names them).
NETWORK_FIELDS = ("layer_sizes", "input_shape", "conv_layers")


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


def network_length(n_sizes: int, n_conv: int) -> int:
    """Bytes of the network description of n_sizes layer sizes and n_conv conv layers."""
    return (n_sizes * struct.calcsize(SIZE_FORMAT) + struct.calcsize(INPUT_SHAPE_FORMAT)
            + struct.calcsize(CONV_COUNT_FORMAT) + n_conv * struct.calcsize(CONV_LAYER_FORMAT))


def network_fields(n_sizes: int, n_conv: int) -> dict[str, tuple[int, int]]:
    """name -> (offset, bytes) of each field of the network description (the conv count is
    part of "conv_layers"), offsets from the start of the header."""
    sizes = n_sizes * struct.calcsize(SIZE_FORMAT)
    shape = struct.calcsize(INPUT_SHAPE_FORMAT)
    lengths = (sizes, shape, network_length(n_sizes, n_conv) - sizes - shape)
    fields, at = {}, HEADER_BYTES
    for name, length in zip(NETWORK_FIELDS, lengths):
        fields[name] = (at, length)
        at += length
    return fields


@dataclass(frozen=True)
class ImageHeader:
    magic: bytes
    version: int
    reserved: int
    identity: int
    body_length: int
    data_length: int
    layer_sizes: tuple[int, ...]
    # (height, width, channels), () when the image gives none (zeros).
    input_shape: tuple[int, ...] = ()
    # Each (out_channels, kernel, pool).
    conv_layers: tuple[tuple[int, int, int], ...] = ()

    @property
    def length(self) -> int:
        return HEADER_BYTES + network_length(len(self.layer_sizes), len(self.conv_layers))

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
             complement, zero for lanes past N_out and positions past N_in. A conv layer's
             chunk c = tap * ceil(C_in / P) + h: position p holds w[g*lanes + k, tap * C_in +
             h*P + p], zero for channels past C_in.
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
    return HEADER_BYTES + network_length(len(config.layer_sizes), config.n_conv)


def image_length(config, data_length: int = 0) -> int:
    """Header, body, `data_length` bytes of data spec, CRC-32 trailer."""
    return header_length(config) + body_length(config) + data_length + CRC_BYTES


def encode_header(config, data_length: int = 0) -> bytes:
    if not 0 <= data_length <= MAX_DATA_BYTES:
        raise ValueError(f"data spec of {data_length} bytes, an image holds at most "
                         f"{MAX_DATA_BYTES}")
    shape = tuple(config.input_shape) or (0, 0, 0)
    return (struct.pack(HEADER_FORMAT, MAGIC, FORMAT_VERSION, len(config.layer_sizes), 0,
                        config.identity, body_length(config), data_length)
            + b"".join(struct.pack(SIZE_FORMAT, n) for n in config.layer_sizes)
            + struct.pack(INPUT_SHAPE_FORMAT, *shape)
            + struct.pack(CONV_COUNT_FORMAT, config.n_conv)
            + b"".join(struct.pack(CONV_LAYER_FORMAT, *spec) for spec in config.conv_layers))


def decode_header(data: bytes) -> ImageHeader | None:
    """The header at the start of `data`, or None when `data` is too short to hold it."""
    if len(data) < HEADER_BYTES:
        return None
    magic, version, n, reserved, identity, body, extra = struct.unpack_from(HEADER_FORMAT, data)
    fields = network_fields(n, 0)
    count_at = fields["conv_layers"][0]
    if len(data) < count_at + struct.calcsize(CONV_COUNT_FORMAT):
        return None
    (n_conv,) = struct.unpack_from(CONV_COUNT_FORMAT, data, count_at)
    if len(data) < HEADER_BYTES + network_length(n, n_conv):
        return None
    sizes = tuple(struct.unpack_from(SIZE_FORMAT, data,
                                     HEADER_BYTES + i * struct.calcsize(SIZE_FORMAT))[0]
                  for i in range(n))
    shape = struct.unpack_from(INPUT_SHAPE_FORMAT, data, fields["input_shape"][0])
    layer_at = count_at + struct.calcsize(CONV_COUNT_FORMAT)
    conv = tuple(struct.unpack_from(CONV_LAYER_FORMAT, data,
                                    layer_at + i * struct.calcsize(CONV_LAYER_FORMAT))
                 for i in range(n_conv))
    return ImageHeader(magic, version, reserved, identity, body, extra, sizes,
                       () if shape == (0, 0, 0) else tuple(shape), conv)


def header_field(position: int, config=None) -> str:
    """Name of the header field at byte `position`; past the fixed part, the field of
    `config`'s network description (`NETWORK_FIELDS`), or "network" without a configuration."""
    for name, (offset, size) in FIELD_OFFSETS.items():
        if offset <= position < offset + size:
            return name
    if config is None:
        return "network"
    for name, (offset, size) in network_fields(len(config.layer_sizes), config.n_conv).items():
        if offset <= position < offset + size:
            return name
    raise ValueError(f"header byte {position}: past the {header_length(config)}-byte header")


def header_status(position: int) -> Status | None:
    """The status a device reports for a header byte that differs from its configuration's, or
    None for a byte that is not compared (the data length, which varies). Every byte of the
    network description (past the fixed part) is the configuration's: IMAGE_CONFIG."""
    return {"magic": Status.IMAGE_MAGIC, "version": Status.IMAGE_MAGIC,
            "reserved": Status.IMAGE_MAGIC, "n": Status.IMAGE_CONFIG,
            "identity": Status.IMAGE_CONFIG, "network": Status.IMAGE_CONFIG,
            "body_length": Status.IMAGE_LENGTH, "data_length": None}[header_field(position)]
