"""An independent weight-image packer, written from docs/contract.md ("Weight image").

The testbenches use it to load parameters through the UART, and cross-check it against the
firmware engineer's `firmware/image.py` where that exists (two implementations of one contract
agreeing byte for byte).
"""

from __future__ import annotations

import struct
import zlib

from hw.interfaces import image_sections
from model.params import QuantizedNSM

__all__ = ["IMAGE_MAGIC", "IMAGE_VERSION", "section_words", "image_body", "pack_image",
           "header_length"]

IMAGE_MAGIC = b"NSMI"
IMAGE_VERSION = 1


def _lane_words(values_by_group, lanes: int, bits: int):
    """Pack per-lane values (lists of up to `lanes` ints) into words, lane k at bits k*bits."""
    mask = (1 << bits) - 1
    for lane_values in values_by_group:
        word = 0
        for k, v in enumerate(lane_values):
            word |= (int(v) & mask) << (k * bits)
        yield word


def section_words(params: QuantizedNSM, name: str):
    """The words of one image section (`image_sections` order), as Python ints."""
    cfg = params.config
    lanes = cfg.lanes
    if name == "seeds":
        yield from (int(s) for s in params.seeds)
        return
    for l in range(cfg.n_layers):
        n_out = cfg.fan_out(l)
        for g in range(cfg.groups(l)):
            rows = range(g * lanes, min((g + 1) * lanes, n_out))
            if name == "weights":
                w = params.weights[l]
                for j in range(cfg.fan_in(l)):
                    yield from _lane_words([[w[i, j] for i in rows]], lanes, cfg.weight_bits)
            elif name == "a":
                yield from _lane_words([[params.a[l][i] for i in rows]], lanes, cfg.a_bits)
            elif name == "bias":
                yield from _lane_words([[params.bias[l][i] for i in rows]], lanes,
                                       cfg.bias_bits)


def image_body(params: QuantizedNSM) -> bytes:
    """The sections of `image_sections(config)`, each word ceil(bits/8) bytes little-endian."""
    out = bytearray()
    for name, words, bits in image_sections(params.config):
        nbytes = -(-bits // 8)
        count = 0
        for word in section_words(params, name):
            out += word.to_bytes(nbytes, "little")
            count += 1
        assert count == words, f"{name}: packed {count} words, the layout has {words}"
    return bytes(out)


def header_length(config) -> int:
    return 16 + 2 * len(config.layer_sizes)


def pack_image(params: QuantizedNSM) -> bytes:
    """The whole image: header, body, CRC-32 of everything before it."""
    cfg = params.config
    body = image_body(params)
    head = IMAGE_MAGIC + struct.pack("<HBBII", IMAGE_VERSION, len(cfg.layer_sizes), 0,
                                     cfg.identity, len(body))
    head += b"".join(struct.pack("<H", n) for n in cfg.layer_sizes)
    data = head + body
    return data + struct.pack("<I", zlib.crc32(data))
