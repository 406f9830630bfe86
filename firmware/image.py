"""The binary weight image: what the host loads into the accelerator's memories.

Format (docs/contract.md "Weight image", byte by byte in docs/image.md), little-endian:

    magic b"NSMI" | version u16 | n u8 | reserved u8 | identity u32 | body length u32 |
    layer sizes u16 * n | body (sections of hw.interfaces.image_sections) | CRC-32 u32

The fixed header and the trailer are packed and parsed with `bitstring`; the sections, whose
lanes need not be byte aligned, are packed with NumPy bit arrays (LSB first), which is exact and
fast for the paper's network.

Order of the checks in `read_image` (so that every refusal names the right problem):
  - an image is *intact* when it is as long as its header declares and the CRC-32 over the
    declared bytes matches; an intact image is then checked field by field: magic, format
    version, reserved byte, configuration identity, layer sizes, body length, trailing bytes,
    then the contents (padding bits, value ranges);
  - an image that is not intact is *truncated* when shorter than its configuration (or, with
    none known, its header) implies, "not a weight image" when its magic differs from b"NSMI"
    in more than two bits, else *corrupted* (CRC): one flipped bit anywhere lands here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import bitstring
import numpy as np

from hw.interfaces import image_sections
from model.config import ConfigError, NSMConfig, digits_config, paper_config
from model.fixed import from_unsigned, to_unsigned
from model.params import QuantizedNSM

__all__ = ["ImageError", "ImageHeader", "MAGIC", "FORMAT_VERSION", "HEADER_BYTES", "CRC_BYTES",
           "write_image", "read_image", "read_header", "check_image", "body_bytes", "image_bytes",
           "known_configs", "image_crc"]

MAGIC = b"NSMI"
FORMAT_VERSION = 1
# magic, version, n, reserved, identity, body length; the layer sizes follow.
HEADER_FORMAT = "bytes:4, uintle:16, uint:8, uint:8, uintle:32, uintle:32"
HEADER_BYTES = 16
CRC_BYTES = 4
# A magic at most this many bits away from MAGIC is taken for damage (reported as a CRC error).
_MAGIC_DAMAGE_BITS = 2


class ImageError(ValueError):
    """A weight image that cannot be used; the message names the problem.

    `reason` is one of "truncated", "crc", "magic", "version", "config", "length", "content",
    so that a software model of the device can map it onto a protocol status.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    magic: bytes
    version: int
    reserved: int
    identity: int
    body_length: int
    layer_sizes: tuple[int, ...]

    @property
    def total_length(self) -> int:
        """Bytes of the whole image that this header declares."""
        return HEADER_BYTES + 2 * len(self.layer_sizes) + self.body_length + CRC_BYTES


def image_crc(data: bytes) -> int:
    """CRC-32 of `hw.protocol.IMAGE_CRC` (zlib / ISO-HDLC); zlib computes the same, faster."""
    return zlib.crc32(data) & 0xFFFFFFFF


def _word_bytes(bits: int) -> int:
    return -(-bits // 8)


def body_bytes(config: NSMConfig) -> int:
    """Length of the body (the memory sections) that `config` implies."""
    return sum(words * _word_bytes(bits) for _, words, bits in image_sections(config))


def image_bytes(config: NSMConfig) -> int:
    """Length of a whole image for `config`."""
    return HEADER_BYTES + 2 * len(config.layer_sizes) + body_bytes(config) + CRC_BYTES


def known_configs() -> list[NSMConfig]:
    """Configurations `read_image` recognizes by identity when none is given."""
    return [digits_config(), paper_config()]


# -- packing of lane words -------------------------------------------------------------------------

def _pack_words(values: np.ndarray, bits: int) -> bytes:
    """(words, lanes) signed integers -> words of lanes * bits bits, ceil(/8) bytes LE each."""
    words, lanes = values.shape
    unsigned = to_unsigned(values, bits).astype(np.uint64)
    shifts = np.arange(bits, dtype=np.uint64)
    bit_array = ((unsigned[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    bit_array = bit_array.reshape(words, lanes * bits)
    pad = _word_bytes(lanes * bits) * 8 - lanes * bits
    bit_array = np.pad(bit_array, ((0, 0), (0, pad)))
    return np.packbits(bit_array, axis=1, bitorder="little").tobytes()


def _unpack_words(raw: bytes, words: int, lanes: int, bits: int, section: str) -> np.ndarray:
    """Inverse of `_pack_words`; refuses set padding bits (they must be zero)."""
    nbytes = _word_bytes(lanes * bits)
    byte_array = np.frombuffer(raw, dtype=np.uint8).reshape(words, nbytes)
    bit_array = np.unpackbits(byte_array, axis=1, bitorder="little")
    padding = bit_array[:, lanes * bits:]
    if padding.any():
        word = int(np.nonzero(padding.any(axis=1))[0][0])
        raise ImageError("content", f"image section {section}, word {word}: unused high bits "
                                    f"are set (they must be zero)")
    lane_bits = bit_array[:, :lanes * bits].reshape(words, lanes, bits).astype(np.int64)
    unsigned = (lane_bits << np.arange(bits, dtype=np.int64)).sum(axis=2)
    return from_unsigned(unsigned, bits)


def _lane_groups(config: NSMConfig, layer: int, vector: np.ndarray) -> np.ndarray:
    """(N_out,) -> (groups, lanes), zero past N_out."""
    padded = np.zeros(config.groups(layer) * config.lanes, dtype=np.int64)
    padded[:vector.shape[0]] = vector
    return padded.reshape(config.groups(layer), config.lanes)


def _weight_words(config: NSMConfig, layer: int, w: np.ndarray) -> np.ndarray:
    """(N_out, N_in) -> (groups * N_in, lanes): word g * N_in + j, lane k = w[g*lanes + k, j]."""
    n_in = config.fan_in(layer)
    padded = np.zeros((config.groups(layer) * config.lanes, n_in), dtype=np.int64)
    padded[:w.shape[0]] = w
    grouped = padded.reshape(config.groups(layer), config.lanes, n_in).transpose(0, 2, 1)
    return grouped.reshape(config.groups(layer) * n_in, config.lanes)


# -- writing ---------------------------------------------------------------------------------------

def _header_bytes(config: NSMConfig, body_length: int) -> bytes:
    header = bitstring.pack(HEADER_FORMAT, MAGIC, FORMAT_VERSION, len(config.layer_sizes), 0,
                            config.identity, body_length)
    sizes = bitstring.Bits().join(bitstring.Bits(uintle=n, length=16)
                                  for n in config.layer_sizes)
    return header.bytes + sizes.bytes


def write_image(params: QuantizedNSM) -> bytes:
    """The weight image of `params` (validated again before it is written)."""
    params.validate()
    cfg = params.config
    sections = {
        "weights": np.concatenate([_weight_words(cfg, l, np.asarray(params.weights[l]))
                                   for l in range(cfg.n_layers)]),
        "a": np.concatenate([_lane_groups(cfg, l, np.asarray(params.a[l]))
                             for l in range(cfg.n_layers)]),
        "bias": np.concatenate([_lane_groups(cfg, l, np.asarray(params.bias[l]))
                                for l in range(cfg.n_layers)]),
        "seeds": np.asarray(params.seeds, dtype=np.int64).reshape(-1, 1),
    }
    body = b""
    for name, words, bits in image_sections(cfg):
        values = sections[name]
        assert values.shape[0] == words
        body += _pack_words(values, bits // values.shape[1])
    assert len(body) == body_bytes(cfg)
    image = _header_bytes(cfg, len(body)) + body
    return image + bitstring.pack("uintle:32", image_crc(image)).bytes


# -- reading ---------------------------------------------------------------------------------------

def read_header(data: bytes) -> ImageHeader:
    """The header of an image (not checked beyond its length)."""
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise ImageError("truncated", f"image truncated: {len(data)} bytes, the header alone "
                                      f"needs {HEADER_BYTES}")
    magic, version, n, reserved, identity, body_length = \
        bitstring.Bits(data[:HEADER_BYTES]).unpack(HEADER_FORMAT)
    end = HEADER_BYTES + 2 * n
    if len(data) < end:
        raise ImageError("truncated", f"image truncated: {len(data)} bytes, the header with its "
                                      f"{n} layer sizes needs {end}")
    sizes = tuple(bitstring.Bits(data[HEADER_BYTES:end]).unpack(f"{n}*uintle:16")) if n else ()
    return ImageHeader(magic, version, reserved, identity, body_length, sizes)


def _config_for(header: ImageHeader) -> NSMConfig | None:
    for cfg in known_configs():
        if cfg.identity == header.identity:
            return cfg
    return None


def _magic_distance(magic: bytes) -> int:
    return sum(bin(a ^ b).count("1") for a, b in zip(magic, MAGIC))


def _check_intact(data: bytes, header: ImageHeader, needed: int | None) -> int:
    """Refuse a truncated or damaged image (`needed`: the length its configuration implies,
    None if unknown); returns the declared length."""
    declared = header.total_length
    intact = (len(data) >= declared and image_crc(data[:declared - CRC_BYTES])
              == bitstring.Bits(data[declared - CRC_BYTES:declared]).uintle)
    if intact:
        return declared
    # Truncation is judged against the configuration where one is known, since a damaged
    # length field in the header must not pass for a short file.
    needed = declared if needed is None else needed
    if len(data) < needed:
        raise ImageError("truncated", f"image truncated: {len(data)} bytes, expected {needed}")
    if _magic_distance(header.magic) > _MAGIC_DAMAGE_BITS:
        raise ImageError("magic", f"not a weight image: magic {header.magic!r}, expected "
                                  f"{MAGIC!r}")
    # Damage anywhere, length fields of the header included.
    if len(data) < declared:
        raise ImageError("crc", f"image corrupted: its header declares {declared} bytes, the "
                                f"configuration {needed} (CRC-32 cannot match)")
    stored = bitstring.Bits(data[declared - CRC_BYTES:declared]).uintle
    computed = image_crc(data[:declared - CRC_BYTES])
    raise ImageError("crc", f"image corrupted: CRC-32 is {computed:08x}, the image says "
                            f"{stored:08x}")


def _check_format(data: bytes, header: ImageHeader) -> None:
    if header.magic != MAGIC:
        raise ImageError("magic", f"not a weight image: magic {header.magic!r}, expected "
                                  f"{MAGIC!r}")
    if header.version != FORMAT_VERSION:
        raise ImageError("version", f"image format version {header.version}, this tool reads "
                                    f"version {FORMAT_VERSION}")
    if header.reserved != 0:
        raise ImageError("magic", f"image header reserved byte is {header.reserved}, must be 0")
    if len(data) > header.total_length:
        raise ImageError("length", f"image has {len(data) - header.total_length} unexpected "
                                   f"bytes after its CRC ({len(data)} bytes, expected "
                                   f"{header.total_length})")


def check_image(data: bytes) -> ImageHeader:
    """Check what can be checked without the configuration: complete, intact (CRC-32), magic,
    format version, no trailing bytes. Returns the header (its identity names the
    configuration)."""
    data = bytes(data)
    header = read_header(data)
    _check_intact(data, header, None)
    _check_format(data, header)
    return header


def read_image(data: bytes, config: NSMConfig | None = None) -> QuantizedNSM:
    """Parse and check a weight image; returns the identical parameters that were written.

    `config`: the configuration the image must be made for; None accepts the known
    configurations (`known_configs`) by identity. Refusals raise `ImageError`.
    """
    data = bytes(data)
    if config is not None and HEADER_BYTES <= len(data) < image_bytes(config):
        try:
            header = read_header(data)
        except ImageError:
            raise ImageError("truncated", f"image truncated: {len(data)} bytes, expected "
                                          f"{image_bytes(config)}") from None
    else:
        header = read_header(data)
    if config is None:
        config = _config_for(header)
    declared = _check_intact(data, header, image_bytes(config) if config is not None else None)
    # An intact image: is it one this tool and this configuration can use?
    if header.magic != MAGIC or header.version != FORMAT_VERSION or header.reserved != 0:
        _check_format(data, header)
    if config is None:
        raise ImageError("config", f"image was made for configuration {header.identity:08x} "
                                   f"(layers {header.layer_sizes}), which is not a known "
                                   f"configuration: give its configuration (e.g. the quantized "
                                   f".npz)")
    if header.identity != config.identity:
        raise ImageError("config", f"image was made for another configuration: image identity "
                                   f"{header.identity:08x}, expected {config.identity:08x} "
                                   f"({config.describe()})")
    if header.layer_sizes != config.layer_sizes:
        raise ImageError("config", f"image layer sizes {header.layer_sizes} do not match the "
                                   f"configuration's {config.layer_sizes}")
    if header.body_length != body_bytes(config):
        raise ImageError("length", f"image body length {header.body_length} bytes, the "
                                   f"configuration needs {body_bytes(config)}")
    if len(data) > declared:
        raise ImageError("length", f"image has {len(data) - declared} unexpected bytes after "
                                   f"its CRC ({len(data)} bytes, expected {declared})")
    return _decode_body(config, data[HEADER_BYTES + 2 * len(header.layer_sizes):
                                     declared - CRC_BYTES])


def _decode_body(cfg: NSMConfig, body: bytes) -> QuantizedNSM:
    sections = {}
    offset = 0
    for name, words, bits in image_sections(cfg):
        nbytes = words * _word_bytes(bits)
        lanes = 1 if name == "seeds" else cfg.lanes
        sections[name] = _unpack_words(body[offset:offset + nbytes], words, lanes,
                                       bits // lanes, name)
        offset += nbytes
    weights, a, bias = [], [], []
    for l in range(cfg.n_layers):
        n_out, n_in, groups = cfg.fan_out(l), cfg.fan_in(l), cfg.groups(l)
        base = cfg.weight_base(l)
        w = sections["weights"][base:base + groups * n_in].reshape(groups, n_in, cfg.lanes)
        w = w.transpose(0, 2, 1).reshape(groups * cfg.lanes, n_in)
        p0 = cfg.param_base(l)
        a_l = sections["a"][p0:p0 + groups].reshape(-1)
        b_l = sections["bias"][p0:p0 + groups].reshape(-1)
        for name, full in (("weights", w), ("a", a_l), ("bias", b_l)):
            if np.any(full[n_out:]):
                raise ImageError("content", f"image section {name}, layer {l}: lanes past the "
                                            f"{n_out} neurons of the layer are not zero")
        weights.append(np.ascontiguousarray(w[:n_out]))
        a.append(a_l[:n_out].copy())
        bias.append(b_l[:n_out].copy())
    seeds = tuple(int(s) & ((1 << cfg.lfsr_width) - 1) for s in sections["seeds"][:, 0])
    try:
        return QuantizedNSM(cfg, tuple(weights), tuple(a), tuple(bias), seeds)
    except ConfigError as e:
        raise ImageError("content", f"image holds invalid parameters: {e}") from None
