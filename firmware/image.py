"""The binary weight image: what the host loads into the accelerator's memories.

The layout (header, sections, data spec, CRC-32 trailer) is defined in `firmware/image_format.py`
and byte by byte in docs/image.md. The sections, whose lanes need not be byte aligned, are packed
with NumPy bit arrays (LSB first), which is exact and fast for the paper's network. An image
carries the model's `DataSpec` (data set, input encoding, class names) when it has one.

Order of the checks in `read_image` (so that every refusal names the right problem):
  - an image with the magic, another format version and a CRC-32 trailer that matches the
    whole file is an image of another format version (whatever its header layout), refused as
    such;
  - an image is *intact* when it is as long as its header declares and the CRC-32 over the
    declared bytes matches; an intact image is then checked field by field: magic, format
    version, reserved byte, configuration identity, layer sizes, input shape, conv layers, body
    length, trailing bytes, then the contents (padding bits, value ranges, data spec);
  - an image that is not intact is *truncated* when shorter than its header declares and no
    length field of the header looks damaged, "not a weight image" when its magic differs from
    b"NSMI" in more than two bits, else *corrupted* (CRC): one flipped bit anywhere lands here.
"""

from __future__ import annotations

import numpy as np

from model.config import ConfigError, NSMConfig, digits_config, digits_conv_config, paper_config
from model.fixed import from_unsigned, to_unsigned
from model.meta import DataSpec, DataSpecError
from model.params import QuantizedNSM

from .image_format import (CRC_BYTES, FIELD_OFFSETS, FORMAT_VERSION, HEADER_BYTES, MAGIC,
                           ImageHeader, body_length, decode_header, encode_header, image_crc,
                           image_length, image_sections, network_fields, network_length,
                           word_bytes)

__all__ = ["ImageError", "ImageHeader", "MAGIC", "FORMAT_VERSION", "HEADER_BYTES", "CRC_BYTES",
           "write_image", "read_image", "read_header", "check_image", "body_bytes", "image_bytes",
           "known_configs", "image_crc", "decode_body"]

# A magic at most this many bits away from MAGIC is taken for damage (reported as a CRC error).
_DAMAGE_BITS = 2


class ImageError(ValueError):
    """A weight image that cannot be used; the message names the problem.

    `reason` is one of "truncated", "crc", "magic", "version", "config", "length", "content".
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def body_bytes(config: NSMConfig) -> int:
    """Length of the body (the memory sections) that `config` implies."""
    return body_length(config)


def image_bytes(config: NSMConfig, data_length: int = 0) -> int:
    """Length of a whole image for `config` with `data_length` bytes of data spec."""
    return image_length(config, data_length)


def known_configs() -> list[NSMConfig]:
    """Configurations `read_image` recognizes by identity when none is given."""
    return [digits_config(), digits_conv_config(), paper_config()]


# -- packing of lane words -------------------------------------------------------------------------

def _pack_words(values: np.ndarray, bits: int) -> bytes:
    """(words, lanes) signed integers -> words of lanes * bits bits, ceil(/8) bytes LE each."""
    words, lanes = values.shape
    unsigned = to_unsigned(values, bits).astype(np.uint64)
    shifts = np.arange(bits, dtype=np.uint64)
    bit_array = ((unsigned[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    bit_array = bit_array.reshape(words, lanes * bits)
    pad = word_bytes(lanes * bits) * 8 - lanes * bits
    bit_array = np.pad(bit_array, ((0, 0), (0, pad)))
    return np.packbits(bit_array, axis=1, bitorder="little").tobytes()


def _unpack_words(raw: bytes, words: int, lanes: int, bits: int, section: str) -> np.ndarray:
    """Inverse of `_pack_words`; refuses set padding bits (they must be zero)."""
    nbytes = word_bytes(lanes * bits)
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


def _chunk_columns(config: NSMConfig, layer: int, w: np.ndarray) -> np.ndarray:
    """(rows, fan_in) -> (rows, chunks * P): column c * P + p is what chunk c, position p
    reads, zero where it reads nothing (a zero weight adds nothing). Dense: input c * P + p,
    zero past N_in. Conv (chunk c = tap * ceil(C_in / P) + h): channel h * P + p of the tap,
    zero past C_in."""
    P, chunks = config.inputs_per_cycle, config.chunks(layer)
    out = np.zeros((w.shape[0], chunks * P), dtype=np.int64)
    if config.is_conv(layer):
        shape = config.conv_shape(layer)
        taps, c_in = shape.kernel ** 2, shape.in_channels
        out.reshape(w.shape[0], taps, -1)[:, :, :c_in] = w.reshape(w.shape[0], taps, c_in)
    else:
        out[:, :w.shape[1]] = w
    return out


def _fan_in_columns(config: NSMConfig, layer: int, w: np.ndarray):
    """Inverse of `_chunk_columns`: (the (rows, fan_in) weights, whether any column that reads
    nothing is non-zero)."""
    if config.is_conv(layer):
        shape = config.conv_shape(layer)
        taps, c_in = shape.kernel ** 2, shape.in_channels
        by_tap = w.reshape(w.shape[0], taps, -1)
        return (np.ascontiguousarray(by_tap[:, :, :c_in]).reshape(w.shape[0], taps * c_in),
                bool(np.any(by_tap[:, :, c_in:])))
    n_in = config.fan_in(layer)
    return w[:, :n_in], bool(np.any(w[:, n_in:]))


def _weight_words(config: NSMConfig, layer: int, w: np.ndarray) -> np.ndarray:
    """(N_out, fan_in) -> (groups * chunks, lanes * P): word g * chunks + c, lane k and position
    p = row g*lanes + k, column c * P + p of `_chunk_columns`; zero past N_out."""
    P, chunks, groups, lanes = (config.inputs_per_cycle, config.chunks(layer),
                                config.groups(layer), config.lanes)
    padded = np.zeros((groups * lanes, chunks * P), dtype=np.int64)
    padded[:w.shape[0]] = _chunk_columns(config, layer, w)
    grouped = padded.reshape(groups, lanes, chunks, P).transpose(0, 2, 1, 3)
    return grouped.reshape(groups * chunks, lanes * P)


# -- writing ---------------------------------------------------------------------------------------

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
    data = b"" if params.data is None else params.data.to_json().encode()
    image = encode_header(cfg, len(data)) + body + data
    return image + image_crc(image).to_bytes(CRC_BYTES, "little")


# -- reading ---------------------------------------------------------------------------------------

def read_header(data: bytes) -> ImageHeader:
    """The header of an image (not checked beyond its length)."""
    data = bytes(data)
    header = decode_header(data)
    if header is not None:
        return header
    if len(data) < HEADER_BYTES:
        raise ImageError("truncated", f"image truncated: {len(data)} bytes, the header alone "
                                      f"needs {HEADER_BYTES}")
    n = data[FIELD_OFFSETS["n"][0]]
    if _count_damaged(data, n):
        raise ImageError("crc", f"image corrupted: its header's network description does not "
                                f"fit its {len(data)} bytes (a damaged layer or conv layer "
                                f"count; the CRC-32 cannot match)")
    raise ImageError("truncated", f"image truncated: {len(data)} bytes, the header with its "
                                  f"{n} layer sizes needs at least "
                                  f"{HEADER_BYTES + network_length(n, 0)}")


def _count_damaged(data: bytes, n: int) -> bool:
    """Whether one flipped bit of the layer count or of the conv count, rather than a short
    file, explains a header that does not fit the file: undone, the CRC-32 at the file's end
    matches."""
    if len(data) < HEADER_BYTES + CRC_BYTES:
        return False
    stored = _stored_crc(data, len(data))
    counts = [FIELD_OFFSETS["n"][0], network_fields(n, 0)["conv_layers"][0]]
    for offset in (at for at in counts if at < len(data) - CRC_BYTES):
        for bit in range(8):
            repaired = bytearray(data[:-CRC_BYTES])
            repaired[offset] ^= 1 << bit
            if image_crc(bytes(repaired)) == stored:
                return True
    return False


def _config_for(header: ImageHeader) -> NSMConfig | None:
    for cfg in known_configs():
        if cfg.identity == header.identity:
            return cfg
    return None


def _distance(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b))


def _stored_crc(data: bytes, declared: int) -> int:
    return int.from_bytes(data[declared - CRC_BYTES:declared], "little")


def _network_differs(header: ImageHeader, config: NSMConfig) -> bool:
    return (header.layer_sizes, header.input_shape, header.conv_layers) != (
        config.layer_sizes, config.input_shape, config.conv_layers)


def _version_error(version: int) -> ImageError:
    return ImageError("version", f"image format version {version}, this tool reads version "
                                 f"{FORMAT_VERSION} (export the image again from its quantized "
                                 f"model)")


def _length_damaged(data: bytes, header: ImageHeader, config: NSMConfig | None) -> bool:
    """Whether a damaged length field of the header, rather than a short file, explains that
    the file is shorter than the header declares: the body length disagrees with the
    configuration, or putting into one length field the value that fits the file's length
    makes the CRC-32 at the file's end match."""
    if config is not None and (header.body_length != body_bytes(config)
                               or _network_differs(header, config)):
        return True
    missing = header.total_length - len(data)
    if len(data) < header.length + CRC_BYTES:
        return False
    stored = int.from_bytes(data[-CRC_BYTES:], "little")
    for field in ("body_length", "data_length"):
        fitting = getattr(header, field) - missing
        if fitting < 0:
            continue
        offset, size = FIELD_OFFSETS[field]
        repaired = (data[:offset] + fitting.to_bytes(size, "little")
                    + data[offset + size:len(data) - CRC_BYTES])
        if image_crc(repaired) == stored:
            return True
    return False


def _check_intact(data: bytes, header: ImageHeader, config: NSMConfig | None) -> int:
    """Refuse a truncated or damaged image; returns the declared length."""
    if (data[:4] == MAGIC and header.version != FORMAT_VERSION and len(data) > CRC_BYTES
            and image_crc(data[:-CRC_BYTES]) == _stored_crc(data, len(data))):
        # A whole image of another version: its header layout may differ, so its lengths are
        # not read. A flipped bit of the version field leaves the CRC-32 unmatched: damage.
        raise _version_error(header.version)
    declared = header.total_length
    if len(data) >= declared and (image_crc(data[:declared - CRC_BYTES])
                                  == _stored_crc(data, declared)):
        return declared
    if len(data) < declared and not _length_damaged(data, header, config):
        expected = declared if config is None else image_bytes(config, header.data_length)
        raise ImageError("truncated", f"image truncated: {len(data)} bytes, expected {expected}")
    if _distance(header.magic, MAGIC) > _DAMAGE_BITS:
        raise ImageError("magic", f"not a weight image: magic {header.magic!r}, expected "
                                  f"{MAGIC!r}")
    if len(data) < declared:
        raise ImageError("crc", f"image corrupted: its header declares {declared} bytes, the "
                                f"file has {len(data)} (a damaged length field; the CRC-32 "
                                f"cannot match)")
    raise ImageError("crc", f"image corrupted: CRC-32 is "
                            f"{image_crc(data[:declared - CRC_BYTES]):08x}, the image says "
                            f"{_stored_crc(data, declared):08x}")


def _check_format(data: bytes, header: ImageHeader) -> None:
    if header.magic != MAGIC:
        raise ImageError("magic", f"not a weight image: magic {header.magic!r}, expected "
                                  f"{MAGIC!r}")
    if header.version != FORMAT_VERSION:
        raise _version_error(header.version)
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
    _check_intact(data, header, _config_for(header))
    _check_format(data, header)
    return header


def read_image(data: bytes, config: NSMConfig | None = None) -> QuantizedNSM:
    """Parse and check a weight image; returns the identical parameters (and data spec) that
    were written.

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
    declared = _check_intact(data, header, config)
    # An intact image: is it one this tool and this configuration can use?
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
    if header.input_shape != config.input_shape:
        raise ImageError("config", f"image input shape {header.input_shape} does not match the "
                                   f"configuration's {config.input_shape}")
    if header.conv_layers != config.conv_layers:
        raise ImageError("config", f"image conv layers {header.conv_layers} do not match the "
                                   f"configuration's {config.conv_layers}")
    if header.body_length != body_bytes(config):
        raise ImageError("length", f"image body length {header.body_length} bytes, the "
                                   f"configuration needs {body_bytes(config)}")
    body_at = header.length
    data_at = body_at + header.body_length
    spec = None
    if header.data_length:
        try:
            spec = DataSpec.from_json(data[data_at:data_at + header.data_length].decode())
        except (UnicodeDecodeError, DataSpecError) as e:
            raise ImageError("content", f"image data spec is not readable: {e}") from None
    return decode_body(config, data[body_at:data_at], spec)


def decode_body(cfg: NSMConfig, body: bytes, spec: DataSpec | None, *,
                unused_lanes: str = "refuse") -> QuantizedNSM:
    """The parameters in an image body of `cfg`. `unused_lanes`: "refuse" non-zero values in
    lanes past a layer's neurons, or "ignore" them (what the device does with them)."""
    sections = {}
    offset = 0
    for name, words, bits in image_sections(cfg):
        nbytes = words * word_bytes(bits)
        lanes = {"seeds": 1, "weights": cfg.lanes * cfg.inputs_per_cycle}.get(name, cfg.lanes)
        sections[name] = _unpack_words(body[offset:offset + nbytes], words, lanes,
                                       bits // lanes, name)
        offset += nbytes
    weights, a, bias = [], [], []
    for l in range(cfg.n_layers):
        n_out, n_in, groups = cfg.fan_out(l), cfg.fan_in(l), cfg.groups(l)
        base, chunks, P = cfg.weight_base(l), cfg.chunks(l), cfg.inputs_per_cycle
        w = sections["weights"][base:base + groups * chunks].reshape(groups, chunks, cfg.lanes, P)
        w = w.transpose(0, 2, 1, 3).reshape(groups * cfg.lanes, chunks * P)
        w, past = _fan_in_columns(cfg, l, w)
        if unused_lanes == "refuse" and past:
            reads = (f"channels past the {cfg.conv_shape(l).in_channels} input channels"
                     if cfg.is_conv(l) else f"positions past the {n_in} inputs")
            raise ImageError("content", f"image section weights, layer {l}: {reads} of the "
                                        f"layer are not zero")
        p0 = cfg.param_base(l)
        a_l = sections["a"][p0:p0 + groups].reshape(-1)
        b_l = sections["bias"][p0:p0 + groups].reshape(-1)
        for name, full in (("weights", w), ("a", a_l), ("bias", b_l)):
            if unused_lanes == "refuse" and np.any(full[n_out:]):
                raise ImageError("content", f"image section {name}, layer {l}: lanes past the "
                                            f"{n_out} neurons of the layer are not zero")
        weights.append(np.ascontiguousarray(w[:n_out]))
        a.append(a_l[:n_out].copy())
        bias.append(b_l[:n_out].copy())
    seeds = tuple(int(s) & ((1 << cfg.lfsr_width) - 1) for s in sections["seeds"][:, 0])
    try:
        return QuantizedNSM(cfg, tuple(weights), tuple(a), tuple(bias), seeds, spec)
    except ConfigError as e:
        raise ImageError("content", f"image holds invalid parameters: {e}") from None
