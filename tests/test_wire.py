"""The wire modules (firmware/frames.py, firmware/image_format.py): plain Python, one codec."""

import os
import subprocess
import sys

import pytest

from firmware import frames
from firmware.frames import FrameError, Opcode, Status
from model.config import NSMConfig, digits_config

CONFIG = NSMConfig(layer_sizes=(10, 5, 3), lanes=3, weight_bits=5, a_bits=7, a_frac=3,
                   bias_bits=9, lfsr_width=7, samples=4)


def test_firmware_and_tools_import_no_amaranth():
    code = ("import sys, firmware.frames, firmware.image_format, firmware.image, "
            "firmware.doc_examples, tools.client, tools.transport; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('amaranth', 'hw', 'sim'));"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, r.stdout + r.stderr


def test_crc8_is_the_gateware_crc():
    from hw.protocol import FRAME_CRC

    data = bytes(range(256)) * 3
    for n in (0, 1, 5, 257, len(data)):
        assert frames.crc8(data[:n]) == FRAME_CRC.compute(data[:n])


def test_request_and_response_frames():
    frame = frames.encode_request(Opcode.WRITE_INPUT, b"\x01\x02")
    assert frame[:4] == bytes([0x5A, 0x05, 2, 0]) and frame[-1] == frames.crc8(frame[1:-1])
    assert frames.encode_request(0x7E)[1] == 0x7E
    response = frames.encode_response(Status.BUSY, b"xy")
    assert frames.decode_response(response) == frames.Response(Status.BUSY, b"xy")
    assert frames.parse_responses(response * 2) == [frames.Response(Status.BUSY, b"xy")] * 2
    damaged = bytearray(response)
    damaged[4] ^= 1
    with pytest.raises(FrameError, match="^response checksum "):
        frames.decode_response(bytes(damaged))
    with pytest.raises(FrameError, match="^byte 0x5a where a response sync"):
        frames.ResponseParser().feed(b"\x5a")
    with pytest.raises(FrameError, match="^response length 257 exceeds MAX_PAYLOAD=256$"):
        frames.response_length(bytes([0xA5, 0, 0x01, 0x01]))
    with pytest.raises(ValueError, match="^payload of 257 bytes exceeds MAX_PAYLOAD=256$"):
        frames.encode_request(Opcode.IMAGE_DATA, bytes(257))


def test_payload_round_trips():
    ident = frames.decode_identify(frames.encode_identify(CONFIG))
    assert (ident.identity, ident.layer_sizes, ident.lanes, ident.samples, ident.score_bytes) == (
        CONFIG.identity, CONFIG.layer_sizes, CONFIG.lanes, CONFIG.samples,
        frames.score_bytes(CONFIG))
    status = frames.encode_status(frames.DeviceState.RUNNING, True, Status.BUSY, 70000)
    assert frames.decode_status(status) == frames.DeviceStatus(
        frames.DeviceState.RUNNING, True, Status.BUSY, 70000)
    nscore = frames.score_bytes(CONFIG)
    result = frames.InferenceResult(2, (-300, 5, 2 ** (8 * nscore - 1) - 1), (1, 0, 3), 0xC0DE)
    payload = frames.encode_result(3, nscore, result)
    assert len(payload) == frames.result_length(CONFIG)
    assert frames.decode_result(3, nscore, payload) == result
    compact = frames.CompactResult(1, (0, 4, 0))
    assert frames.decode_compact(3, frames.encode_compact(3, compact)) == compact
    with pytest.raises(FrameError, match="^READ_RESULT: payload of 3 bytes"):
        frames.decode_result(3, nscore, b"abc")


def test_identify_of_another_protocol_version_is_refused():
    payload = bytearray(frames.encode_identify(CONFIG))
    payload[4] = 1
    with pytest.raises(FrameError, match="^IDENTIFY: the device speaks protocol version 1, "
                                         "this tool version 2$"):
        frames.decode_identify(bytes(payload))


def test_input_packing():
    z = [-1] * 20
    for j in (0, 9, 19):
        z[j] = 1
    packed = frames.pack_input(z, 20)
    assert packed == bytes([0x01, 0x02, 0x08])
    assert frames.unpack_input(packed, 20) == z
    with pytest.raises(ValueError, match="^input values must be -1 or [+]1$"):
        frames.pack_input([0] * 20, 20)


def test_stream_window_fits_the_receive_buffer():
    for n_inputs in (1, 256, 784, 2048):
        w = frames.stream_window(n_inputs)
        frame = frames.input_length(n_inputs) + frames.HEAD_BYTES + 1
        assert (w - 1) * frame <= frames.RX_BUFFER_BYTES < w * frame
    assert frames.stream_window(digits_config().n_inputs) == 14


def test_header_statuses_cover_every_header_byte():
    from firmware.image_format import HEADER_BYTES, header_field, header_status

    fields = [header_field(i) for i in range(HEADER_BYTES + 4)]
    assert fields[:4] == ["magic"] * 4 and fields[16:18] == ["data_length"] * 2
    assert fields[18:] == ["network"] * 4
    assert header_status(7) == Status.IMAGE_MAGIC and header_status(16) is None
    assert header_status(12) == Status.IMAGE_LENGTH and header_status(20) == Status.IMAGE_CONFIG
    # With a configuration, the network description's fields by name: a conv network's
    # 4 layer sizes, its input shape, the conv count and its 2 conv layers.
    from firmware.image_format import header_length
    from model.config import conv_layer_sizes
    conv = ((8, 3, 2), (16, 3, 2))
    cfg = digits_config(layer_sizes=conv_layer_sizes((8, 8, 4), conv, (64, 10)),
                        conv_layers=conv, input_shape=(8, 8, 4))
    named = [header_field(i, cfg) for i in range(HEADER_BYTES, header_length(cfg))]
    assert named == ["layer_sizes"] * 10 + ["input_shape"] * 6 + ["conv_layers"] * 9
    assert {header_status(i) for i in range(HEADER_BYTES, header_length(cfg))} == {
        Status.IMAGE_CONFIG}
    with pytest.raises(ValueError, match="past the 43-byte header"):
        header_field(header_length(cfg), cfg)


NONE_SET = dict(loading=False, image=False, input=False, result=False)


@pytest.mark.parametrize("state,expected", [
    (dict(busy=True, length=1), Status.BAD_LENGTH),
    (dict(busy=True, length=0), Status.BUSY),
    (dict(busy=False, length=0), Status.NO_IMAGE),
    (dict(busy=False, length=0, image=True), Status.NO_INPUT),
    (dict(busy=False, length=0, image=True, input=True), Status.OK),
], ids=["length-first", "then-busy", "then-image", "then-input", "all-met"])
def test_refusal_checks_length_then_busy_then_state_in_order(state, expected):
    state = dict(NONE_SET, **state)
    length = state.pop("length")
    assert frames.refusal(Opcode.START, length, 10, **state) == expected


def test_refusal_of_each_opcode_from_reset():
    n = 10
    with_payload = (Opcode.WRITE_INPUT, Opcode.INFER, Opcode.IMAGE_DATA)
    idle = {op: frames.refusal(op, frames.input_length(n) if op in with_payload else 0, n,
                               busy=False, **NONE_SET) for op in Opcode}
    assert idle == {Opcode.IDENTIFY: Status.OK, Opcode.READ_STATUS: Status.OK,
                    Opcode.IMAGE_BEGIN: Status.OK, Opcode.IMAGE_DATA: Status.IMAGE_NOT_BEGUN,
                    Opcode.IMAGE_END: Status.IMAGE_NOT_BEGUN, Opcode.WRITE_INPUT: Status.OK,
                    Opcode.START: Status.NO_IMAGE, Opcode.READ_RESULT: Status.NO_INPUT,
                    Opcode.INFER: Status.NO_IMAGE}
    assert frames.refusal(0x0A, 0, n, busy=False, **NONE_SET) == Status.UNKNOWN_OPCODE
    assert frames.refusal(Opcode.IMAGE_DATA, 0, n, busy=False, **NONE_SET) == Status.BAD_LENGTH
    assert frames.refusal(Opcode.WRITE_INPUT, 1, n, busy=False, **NONE_SET) == Status.BAD_LENGTH


def test_the_precondition_table_of_the_protocol_doc_is_the_code_s():
    """docs/protocol.md's table of preconditions, row by row, against frames.PRECONDITIONS."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    rows = text.split("| opcode | payload length | refused while busy | device state needed |")[1]
    lengths = {"0": frames.PayloadRule.NONE, "1..256": frames.PayloadRule.SOME,
               "`ceil(N_0 / 8)`": frames.PayloadRule.INPUT}
    needs = {"a load begun (IMAGE_NOT_BEGUN)": "loading", "a valid image (NO_IMAGE)": "image",
             "an input (NO_INPUT)": "input", "a finished inference (NO_INPUT)": "result"}
    documented = {}
    for line in rows.strip().splitlines()[1:]:
        if not line.startswith("|"):
            break
        names, length, busy, state = (cell.strip() for cell in line.strip("|").split("|"))
        flags = {needs[n.strip()]: True for n in state.split(",") if n.strip()}
        for name in names.split(","):
            documented[Opcode[name.strip()]] = frames.Precondition(
                lengths[length], idle={"yes": True, "no": False}[busy], **flags)
    assert documented == frames.PRECONDITIONS
    assert frames.MAX_PAYLOAD == 256      # the table's "1..256"
