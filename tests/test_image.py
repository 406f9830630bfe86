"""The weight image: round trips, the exact layout, and every refusal with its message."""

import numpy as np
import pytest

from firmware.image import (CRC_BYTES, FORMAT_VERSION, HEADER_BYTES, ImageError, body_bytes,
                            check_image, image_bytes, image_crc, read_header, read_image,
                            write_image)
from firmware.image_format import (FIELD_OFFSETS, header_length, image_body, image_sections,
                                   section_words)
from hw.protocol import IMAGE_CRC
from model.meta import DataSpec
from model.config import NSMConfig, conv_layer_sizes, digits_config, paper_config
from model.params import QuantizedNSM

SEED = 20261122

CONFIGS = {
    "digits": digits_config(),
    "paper": paper_config(),
    "odd-lanes-wide": NSMConfig((10, 7, 5, 3), lanes=3, weight_bits=3, a_bits=5, a_frac=2,
                                bias_bits=7, lfsr_layout="wide", lfsr_width=17),
    "input-noise": NSMConfig((20, 9, 2), lanes=4, weight_bits=5, a_bits=13, a_frac=4,
                             bias_bits=11, noise="input", p_bits=3, p_keep=5),
    "one-lane": NSMConfig((3, 2, 2), lanes=1, weight_bits=16, a_bits=24, a_frac=8,
                          bias_bits=32, lfsr_width=32),
    "P3-M2": NSMConfig((10, 7, 5, 3), lanes=3, weight_bits=5, inputs_per_cycle=3,
                       parallel_samples=2, samples=3, lfsr_width=13),
    # P = 2 does not divide the 3 input channels: the weight words hold zero channels.
    "conv-P2": NSMConfig(conv_layer_sizes((4, 4, 3), ((5, 3, 2), (4, 1, 1)), (6, 3)),
                         conv_layers=((5, 3, 2), (4, 1, 1)), input_shape=(4, 4, 3), lanes=3,
                         weight_bits=6, inputs_per_cycle=2, lfsr_width=13),
    "digits-conv": digits_config(layer_sizes=conv_layer_sizes((8, 8, 4), ((8, 3, 2),
                                                                          (16, 3, 2)), (64, 10)),
                                 conv_layers=((8, 3, 2), (16, 3, 2)), input_shape=(8, 8, 4)),
}


def _params(config, seed=SEED):
    return QuantizedNSM.random(config, np.random.default_rng(seed))


def _equal(p, q):
    return (p.config == q.config and p.seeds == q.seeds and all(
        x.shape == y.shape and bool(np.all(x == y))
        for x, y in zip(p.weights + p.a + p.bias, q.weights + q.a + q.bias)))


def _recrc(image: bytes) -> bytes:
    body = image[:-CRC_BYTES]
    return body + image_crc(body).to_bytes(4, "little")


@pytest.fixture(scope="module")
def digits_image():
    params = _params(digits_config())
    return params, write_image(params)


@pytest.mark.parametrize("name", CONFIGS)
def test_round_trip(name):
    config = CONFIGS[name]
    params = _params(config)
    image = write_image(params)
    assert len(image) == image_bytes(config)
    assert _equal(read_image(image, config), params), f"seed {SEED}"
    # Without a configuration, the known ones are recognized by identity.
    if name in ("digits", "paper"):
        assert _equal(read_image(image), params)


def test_extreme_values_round_trip():
    config = CONFIGS["odd-lanes-wide"]
    params = _params(config)
    weights = tuple(np.full_like(w, config.w_min) for w in params.weights)
    a = tuple(np.full_like(x, -(1 << (config.a_bits - 1))) for x in params.a[:-1]) + params.a[-1:]
    bias = tuple(np.full_like(b, (1 << (config.bias_bits - 1)) - 1) for b in params.bias)
    seeds = tuple((1 << config.lfsr_width) - 1 for _ in params.seeds)
    extreme = params.replace(weights=weights, a=a, bias=bias, seeds=seeds)
    assert _equal(read_image(write_image(extreme), config), extreme)


def test_layout_header_and_first_words():
    """Byte positions of docs/image.md, checked by hand on a tiny configuration."""
    config = NSMConfig((3, 2, 2), lanes=2, weight_bits=4, a_bits=6, a_frac=2, bias_bits=8,
                       lfsr_width=9)
    w0 = np.array([[1, -2, 3], [-7, 0, 7]])
    params = QuantizedNSM(config, (w0, np.array([[1, 2], [3, -4]])),
                          (np.array([-32, 31]), np.zeros(2, np.int64)),
                          (np.array([-128, 127]), np.array([5, -6])), (0x1FF, 3))
    image = write_image(params)
    assert image[:4] == b"NSMI"
    assert image[4:6] == FORMAT_VERSION.to_bytes(2, "little")
    assert image[6] == 3 and image[7] == 0
    assert image[8:12] == config.identity.to_bytes(4, "little")
    assert image[12:16] == body_bytes(config).to_bytes(4, "little")
    assert image[16:18] == bytes([0, 0])          # no data spec
    assert HEADER_BYTES == 18
    assert image[18:24] == bytes([3, 0, 2, 0, 2, 0])
    assert image[24:30] == bytes(6)                 # no input shape
    assert image[30] == 0                           # no conv layers
    assert header_length(config) == 31
    body = image[31:-4]
    # weights: word j of layer 0 = lane 0 w[0, j] in bits 0..3, lane 1 w[1, j] in bits 4..7.
    assert body[0] == (1 & 15) | ((-7 & 15) << 4)
    assert body[1] == (-2 & 15) | (0 << 4)
    assert body[2] == 3 | ((7 & 15) << 4)
    # a: one 12-bit word per group, 2 bytes; lane 0 = -32, lane 1 = 31.
    a_at = config.weight_words * 1
    assert int.from_bytes(body[a_at:a_at + 2], "little") == (-32 & 63) | (31 << 6)
    # seeds: the last two 9-bit words, 2 bytes each.
    assert body[-4:] == (0x1FF).to_bytes(2, "little") + (3).to_bytes(2, "little")
    assert image[-4:] == IMAGE_CRC.compute(image[:-4]).to_bytes(4, "little")
    assert [s[0] for s in image_sections(config)] == ["weights", "a", "bias", "seeds"]


def test_weight_words_of_several_inputs_per_cycle():
    """Word g * chunks + c, lane k, position p holds w[g*lanes + k, c*P + p]; positions past N_in
    are zero; one seed per (slot, lane)."""
    config = NSMConfig((3, 2, 2), lanes=2, weight_bits=4, inputs_per_cycle=2,
                       parallel_samples=2, samples=2, lfsr_width=9)
    w0 = np.array([[1, -2, 3], [-7, 0, 7]])
    params = QuantizedNSM(config, (w0, np.array([[1, 2], [3, -4]])),
                          (np.zeros(2, np.int64), np.zeros(2, np.int64)),
                          (np.zeros(2, np.int64), np.zeros(2, np.int64)), (1, 2, 3, 4))
    body = image_body(config, write_image(params))
    # 16-bit words: nibbles (lane 0 p 0, lane 0 p 1, lane 1 p 0, lane 1 p 1).
    word0 = 1 | (-2 & 15) << 4 | (-7 & 15) << 8 | 0 << 12
    word1 = 3 | 0 << 4 | 7 << 8 | 0 << 12
    assert body[:4] == word0.to_bytes(2, "little") + word1.to_bytes(2, "little")
    assert config.weight_words == 3 and len(params.seeds) == config.n_generators == 4
    assert _equal(read_image(write_image(params), config), params)
    raw = bytearray(write_image(params))
    raw[header_length(config) + 3] |= 0x10       # lane 1, c = 1, p = 1: input 3 of 3
    with pytest.raises(ImageError, match="positions past the 3 inputs"):
        read_image(_recrc(bytes(raw)), config)


def _conv_tiny():
    """One 3x3 conv layer of 2 channels on 2x2x3 inputs, P = 2: chunks of channels (0, 1) and
    (2, none) per tap."""
    shape, conv = (2, 2, 3), ((2, 3, 1),)
    return NSMConfig(conv_layer_sizes(shape, conv, (2,)), conv_layers=conv, input_shape=shape,
                     lanes=2, weight_bits=6, inputs_per_cycle=2, lfsr_width=9)


def test_conv_header_describes_the_network():
    config = _conv_tiny()
    image = write_image(_params(config))
    at = HEADER_BYTES + 2 * len(config.layer_sizes)
    assert image[at:at + 6] == bytes([2, 0, 2, 0, 3, 0])          # input shape 2x2x3
    assert image[at + 6] == 1                                      # one conv layer
    assert image[at + 7:at + 11] == bytes([2, 0, 3, 1])            # 2 channels, 3x3, no pool
    assert header_length(config) == at + 11
    header = read_header(image)
    assert (header.input_shape, header.conv_layers) == ((2, 2, 3), ((2, 3, 1),))
    assert read_header(write_image(_params(digits_config()))).conv_layers == ()


def test_conv_weight_words_follow_the_contract():
    """Word weight_base + g * chunks + c, c = tap * ceil(C_in / P) + h, lane k, position p holds
    w[g * lanes + k, tap * C_in + h * P + p], 0 for channels past C_in: written out by loops."""
    config = _conv_tiny()
    params = _params(config)
    words = section_words(config, image_body(config, write_image(params)))["weights"]
    P, lanes, bits = config.inputs_per_cycle, config.lanes, config.weight_bits
    c_in, cc = 3, config.channel_chunks(0)
    assert (cc, config.chunks(0)) == (2, 18)
    for g in range(config.groups(0)):
        for c in range(config.chunks(0)):
            tap, h = divmod(c, cc)
            word = words[config.weight_base(0) + g * config.chunks(0) + c]
            for k in range(lanes):
                for p in range(P):
                    channel = h * P + p
                    want = (params.weights[0][g * lanes + k, tap * c_in + channel]
                            if channel < c_in else 0)
                    got = word >> ((k * P + p) * bits) & ((1 << bits) - 1)
                    assert got == want & ((1 << bits) - 1), (g, c, k, p)
    assert _equal(read_image(write_image(params), config), params)
    # A set weight in a channel past C_in (tap 0, h = 1, p = 1, lane 0) is refused.
    raw = bytearray(write_image(params))
    at = header_length(config) + (config.weight_base(0) + 1) * config.weight_word_bits // 8
    raw[at] |= 1 << bits                                        # lane 0, position 1
    with pytest.raises(ImageError, match="channels past the 3 input channels"):
        read_image(_recrc(bytes(raw)), config)


@pytest.mark.parametrize("other", ["conv-layers", "input-shape"])
def test_conv_network_mismatch_is_refused(other):
    config = _conv_tiny()
    image = bytearray(write_image(_params(config)))
    at = HEADER_BYTES + 2 * len(config.layer_sizes)
    field = {"conv-layers": at + 10, "input-shape": at}[other]     # pool, height
    image[field] ^= 0x04
    message = {"conv-layers": r"^image conv layers \(\(2, 3, 5\),\) do not match",
               "input-shape": r"^image input shape \(6, 2, 3\) does not match"}[other]
    with pytest.raises(ImageError, match=message) as e:
        # The identity is the configuration's: the header's description itself is compared.
        read_image(_recrc(bytes(image)), config)
    assert e.value.reason == "config"


def test_crc_is_the_protocol_crc(digits_image):
    _, image = digits_image
    assert image_crc(image[:1000]) == IMAGE_CRC.compute(image[:1000])


@pytest.mark.parametrize("cut", [0, 3, HEADER_BYTES - 1, HEADER_BYTES + 3, HEADER_BYTES + 8,
                                 5000, -5, -1], ids=lambda c: f"cut{c}")
def test_truncated(digits_image, cut):
    _, image = digits_image
    short = image[:cut]
    config = digits_config()
    if len(short) < HEADER_BYTES:
        message = f"image truncated: {len(short)} bytes, the header alone needs {HEADER_BYTES}"
    else:
        message = f"image truncated: {len(short)} bytes, expected {image_bytes(config)}"
    with pytest.raises(ImageError, match=message.replace("(", r"\(")) as e:
        read_image(short, config)
    assert e.value.reason == "truncated"


def test_every_flipped_bit_is_a_crc_error():
    """One flipped bit anywhere in a small image (header, sizes, body, CRC) -> corrupted."""
    config = CONFIGS["input-noise"]
    image = write_image(_params(config))
    for bit in range(len(image) * 8):
        damaged = bytearray(image)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ImageError, match=r"^image corrupted: ") as e:
            read_image(bytes(damaged), config)
        assert e.value.reason == "crc", f"bit {bit}"


def test_flipped_bits_in_big_image(digits_image):
    _, image = digits_image
    rng = np.random.default_rng(SEED)
    for bit in rng.choice(len(image) * 8, size=200, replace=False):
        damaged = bytearray(image)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ImageError, match=r"^image corrupted: "):
            read_image(bytes(damaged), digits_config())


def test_crc_message(digits_image):
    _, image = digits_image
    damaged = bytearray(image)
    damaged[100] ^= 0x10
    computed = image_crc(bytes(damaged[:-4]))
    stored = int.from_bytes(image[-4:], "little")
    with pytest.raises(ImageError, match=f"^image corrupted: CRC-32 is {computed:08x}, the image "
                                         f"says {stored:08x}$"):
        read_image(bytes(damaged), digits_config())


def test_bad_magic(digits_image):
    _, image = digits_image
    with pytest.raises(ImageError, match=r"^not a weight image: magic b'PK\\x03\\x04', expected "
                                         r"b'NSMI'$") as e:
        read_image(_recrc(b"PK\x03\x04" + image[4:]), digits_config())
    assert e.value.reason == "magic"
    # A magic damaged in two bits, CRC recomputed: the magic check names it.
    with pytest.raises(ImageError, match=r"^not a weight image: magic b'OSMJ'"):
        read_image(_recrc(b"OSMJ" + image[4:]), digits_config())


def test_other_version(digits_image):
    _, image = digits_image
    with pytest.raises(ImageError, match=r"^image format version 7, this tool reads version 3 "):
        read_image(_recrc(image[:4] + (7).to_bytes(2, "little") + image[6:]), digits_config())


def _version_2_image(image: bytes) -> bytes:
    """The version-2 image of the same parameters, as the previous writer made it: the header
    ends after the layer sizes (no input shape, no conv layers)."""
    sizes_end = HEADER_BYTES + 2 * len(digits_config().layer_sizes)
    old = (image[:4] + (2).to_bytes(2, "little") + image[6:sizes_end]
           + image[header_length(digits_config()):-CRC_BYTES])
    return _recrc(old + bytes(CRC_BYTES))


def _version_1_image(image: bytes) -> bytes:
    """A version-1 image (16-byte header: no data length, no network description)."""
    header = FIELD_OFFSETS["data_length"][0]
    sizes_end = HEADER_BYTES + 2 * len(digits_config().layer_sizes)
    old = (image[:4] + (1).to_bytes(2, "little") + image[6:header] + image[header + 2:sizes_end]
           + image[header_length(digits_config()):])
    return _recrc(old)


@pytest.mark.parametrize("version", [1, 2], ids=["version-1", "version-2"])
def test_old_version_image_is_refused_naming_both_versions(digits_image, version):
    _, image = digits_image
    old = {1: _version_1_image, 2: _version_2_image}[version](image)
    message = (rf"^image format version {version}, this tool reads version 3 \(export the "
               rf"image again from its quantized model\)$")
    for check in (lambda d: read_image(d, digits_config()), read_image, check_image):
        with pytest.raises(ImageError, match=message) as e:
            check(old)
        assert e.value.reason == "version"


@pytest.mark.parametrize("bit", [0, 1, 2], ids=["bit-0", "bit-1", "bit-2"])
def test_flipped_version_bit_is_damage_not_another_version(digits_image, bit):
    """3 flipped in one bit is 2, 1 or 7: without a matching CRC-32 it is a damaged image."""
    _, image = digits_image
    damaged = bytearray(image)
    damaged[FIELD_OFFSETS["version"][0]] ^= 1 << bit
    with pytest.raises(ImageError, match="^image corrupted: CRC-32") as e:
        read_image(bytes(damaged), digits_config())
    assert e.value.reason == "crc"


def test_data_spec_travels_with_the_image():
    config = digits_config()
    spec = DataSpec(dataset="digits", encoding="thermometer", levels=4, pixels=64,
                    class_names=tuple(str(c) for c in range(10)))
    params = _params(config).replace(data=spec)
    image = write_image(params)
    assert len(image) == image_bytes(config, len(spec.to_json().encode()))
    got = read_image(image, config)
    assert got.data == spec and _equal(got, params)
    # Covered by the CRC: a flipped bit in the spec is a damaged image.
    damaged = bytearray(image)
    damaged[-CRC_BYTES - 3] ^= 0x01
    with pytest.raises(ImageError, match="^image corrupted: CRC-32"):
        read_image(bytes(damaged), config)


@pytest.mark.parametrize("field", ["body_length", "data_length"])
def test_flipped_length_bit_without_configuration_is_corrupted_not_truncated(digits_image, field):
    """check_image knows no configuration for an unknown identity: a high bit flipped in a
    length field must still read as damage, not as a file 2 GB short."""
    config = CONFIGS["one-lane"]
    image = write_image(_params(config))
    offset, size = FIELD_OFFSETS[field]
    for bit in (0, 8 * size - 1):
        damaged = bytearray(image)
        damaged[offset + bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ImageError, match="^image corrupted: ") as e:
            check_image(bytes(damaged))
        assert e.value.reason == "crc", f"{field} bit {bit}"


def test_identity_mismatch():
    made_for = CONFIGS["odd-lanes-wide"]
    expected = NSMConfig.from_dict({**made_for.to_dict(), "samples": 7})
    image = write_image(_params(made_for))
    message = (f"image was made for another configuration: image identity "
               f"{made_for.identity:08x}, expected {expected.identity:08x} "
               f"({expected.describe()})")
    with pytest.raises(ImageError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        read_image(image, expected)


def test_identity_mismatch_other_sizes():
    """An image of another size is named as such, not as truncated."""
    image = write_image(_params(CONFIGS["input-noise"]))
    with pytest.raises(ImageError, match="^image was made for another configuration: image "
                                         f"identity {CONFIGS['input-noise'].identity:08x}, "
                                         f"expected {digits_config().identity:08x}"):
        read_image(image, digits_config())


def test_unknown_configuration():
    config = CONFIGS["one-lane"]
    with pytest.raises(ImageError, match=f"^image was made for configuration "
                                         f"{config.identity:08x} .layers .3, 2, 2.., which is "
                                         f"not a known configuration"):
        read_image(write_image(_params(config)))


def test_wrong_body_length():
    config = CONFIGS["input-noise"]
    image = write_image(_params(config))
    n = body_bytes(config)
    # Header says one byte more, and one byte more of body follows: an intact, wrong image.
    longer = image[:12] + (n + 1).to_bytes(4, "little") + image[16:-4] + b"\0"
    with pytest.raises(ImageError, match=f"^image body length {n + 1} bytes, the configuration "
                                         f"needs {n}$") as e:
        read_image(_recrc(longer + b"\0\0\0\0"), config)
    assert e.value.reason == "length"


def test_trailing_bytes():
    config = CONFIGS["input-noise"]
    image = write_image(_params(config))
    with pytest.raises(ImageError, match=f"^image has 3 unexpected bytes after its CRC "
                                         f"[(]{len(image) + 3} bytes, expected {len(image)}[)]$"):
        read_image(image + b"abc", config)


def test_set_padding_bits_refused():
    config = CONFIGS["input-noise"]      # seeds: 31 bits in 4 bytes, top bit unused
    image = bytearray(write_image(_params(config)))
    image[-5] |= 0x80
    with pytest.raises(ImageError, match=r"^image section seeds, word 0: unused high bits are "
                                         r"set [(]they must be zero[)]$"):
        read_image(_recrc(bytes(image)), config)


def test_out_of_range_weight_refused():
    config = CONFIGS["input-noise"]      # 5-bit weights: -16 is outside the symmetric range
    image = bytearray(write_image(_params(config)))
    at = header_length(config)
    image[at] = (image[at] & 0xE0) | 0x10
    with pytest.raises(ImageError, match=r"^image holds invalid parameters: weights\[0\]: values "
                                         r"outside \[-15, 15\]"):
        read_image(_recrc(bytes(image)), config)


def test_read_header(digits_image):
    _, image = digits_image
    header = read_header(image)
    assert header.layer_sizes == digits_config().layer_sizes
    assert header.total_length == len(image)


def test_zero_seed_refused():
    config = CONFIGS["input-noise"]      # one generator: the seed is the last word
    image = bytearray(write_image(_params(config)))
    image[-CRC_BYTES - 4:-CRC_BYTES] = bytes(4)
    with pytest.raises(ImageError, match=r"^image holds invalid parameters: seeds: 0 is not a "
                                         r"non-zero 31-bit value$") as e:
        read_image(_recrc(bytes(image)), config)
    assert e.value.reason == "content"
