"""cocotb benches of the whole accelerator `nsm_core`, driven only through its UART.

`classify`: load a weight image, run every input image, compare every trace payload (u and z of
every neuron, layer and sample) and every result (class, scores, votes) with the golden model.
`bad_input`: malformed frames and images; the device reports the error, never hangs, never runs
on a half-loaded image, and serves the next good command.

Settings come from the environment (sim/tb_common.py).
"""

from __future__ import annotations

import os
import struct

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from firmware import frames
from firmware.frames import (FRAME_TIMEOUT_BITS, MAX_PAYLOAD, SYNC_REQUEST, Opcode, Status,
                             encode_request)
from firmware.image import write_image
from firmware.image_format import CRC_BYTES, header_length, image_crc, word_bytes

from .scoreboard import Scoreboard, input_payload, parse_result_payload
from .tb_common import Stopwatch, TraceMonitor, load_setup, reset, write_report
from .uart_bfm import FrameError, Response, UartBfm
from .verilator import CLOCK_PERIOD_NS

# Bit times a response may take to start: generous, far below the frame timeout.
RESPONSE_BITS = 512
# Silence that proves a dropped frame was dropped: past the device's inter-byte timeout.
TIMEOUT_WAIT_BITS = FRAME_TIMEOUT_BITS + 256


def image_of(params) -> bytes:
    return write_image(params)


def request_frame(opcode, payload: bytes = b"", *, crc_xor: int = 0) -> bytes:
    """A request frame; `crc_xor` != 0 damages its checksum (for bad-input cases)."""
    frame = bytearray(encode_request(opcode, payload))
    frame[-1] ^= crc_xor
    return bytes(frame)


def recrc(image: bytearray) -> bytes:
    """The image with its CRC-32 trailer recomputed: intact, whatever its contents."""
    image[-CRC_BYTES:] = image_crc(bytes(image[:-CRC_BYTES])).to_bytes(CRC_BYTES, "little")
    return bytes(image)


async def start_device(dut, setup):
    baud = int(os.environ["NSM_SIM_BAUD"])
    dut.uart_rx.value = 1
    await reset(dut)
    return UartBfm(dut, baud, CLOCK_PERIOD_NS)


async def expect(bfm: UartBfm, frame: bytes, status: Status, what: str) -> Response:
    await bfm.send(frame)
    try:
        resp = await bfm.recv_response(RESPONSE_BITS + 16 * len(frame))
    except (TimeoutError, FrameError) as e:
        raise AssertionError(f"{what}: {e}") from None
    assert resp.status == status.value, \
        f"{what}: status {resp.status_name}, expected {status.name}"
    return resp


async def identify(bfm, config):
    resp = await expect(bfm, request_frame(Opcode.IDENTIFY), Status.OK, "IDENTIFY")
    expected = frames.encode_identify(config)
    assert resp.payload == expected, \
        f"IDENTIFY payload {resp.payload.hex()}, expected {expected.hex()}"


async def load_image(bfm, image: bytes, chunk: int = MAX_PAYLOAD):
    await expect(bfm, request_frame(Opcode.IMAGE_BEGIN), Status.OK, "IMAGE_BEGIN")
    for pos in range(0, len(image), chunk):
        await expect(bfm, request_frame(Opcode.IMAGE_DATA, image[pos:pos + chunk]), Status.OK,
                     f"IMAGE_DATA at byte {pos}")
    await expect(bfm, request_frame(Opcode.IMAGE_END), Status.OK, "IMAGE_END")


async def read_status(bfm) -> tuple[int, int, int, int]:
    resp = await expect(bfm, request_frame(Opcode.READ_STATUS), Status.OK, "READ_STATUS")
    st = frames.decode_status(resp.payload)
    return st.state, int(st.image_valid), st.last_error, st.inferences


async def infer(dut, bfm, config, bits) -> dict:
    """WRITE_INPUT, START, wait for busy to fall, READ_RESULT (retried while BUSY)."""
    await expect(bfm, request_frame(Opcode.WRITE_INPUT, input_payload(config, bits)),
                 Status.OK, "WRITE_INPUT")
    await expect(bfm, request_frame(Opcode.START), Status.OK, "START")
    while True:
        if int(dut.busy.value):
            await FallingEdge(dut.busy)
        await bfm.send(request_frame(Opcode.READ_RESULT))
        resp = await bfm.recv_response(RESPONSE_BITS)
        if resp.status != Status.BUSY.value:
            break
    resp.expect(Status.OK)
    return parse_result_payload(config, resp.payload)


async def classify_all(dut, bfm, setup, scoreboard, monitor, first_image=0):
    for n, bits in enumerate(setup.inputs):
        monitor.image = first_image + n
        result = await infer(dut, bfm, setup.config, bits)
        monitor.check()
        scoreboard.trace_complete(first_image + n)
        scoreboard.result(first_image + n, result["cls"], result["scores"], result["votes"])
        dut._log.info("image %d: class %d votes %s cycles %d", n, result["cls"],
                      result["votes"], result["cycles"])
    return result


@cocotb.test()
async def classify(dut):
    setup = load_setup()
    cfg = setup.config
    dut._log.info("seed %d, %s, %d images", setup.seed, cfg.describe(), len(setup.inputs))
    bfm = await start_device(dut, setup)
    await identify(bfm, cfg)
    image = image_of(setup.params)

    load = Stopwatch().start()
    await load_image(bfm, image)
    load.stop()
    state, valid, _, _ = await read_status(bfm)
    assert valid == 1, "image not valid after a good load"

    scoreboard = Scoreboard(setup.params, setup.inputs, seed=setup.seed, label="nsm_core")
    monitor = TraceMonitor(dut, cfg, scoreboard)
    run = Stopwatch().start()
    last = await classify_all(dut, bfm, setup, scoreboard, monitor)
    run.stop()
    monitor.stop()
    _, _, _, inferences = await read_status(bfm)
    assert inferences == len(setup.inputs), f"device counted {inferences} inferences"
    dut._log.info("PASS %s", scoreboard.summary())
    dut._log.info("image load: %d bytes, %d cycles, %.0f cycles/s", len(image), load.cycles,
                  load.rate)
    dut._log.info("inference: %d cycles, %.2f s, %.0f cycles/s", run.cycles, run.seconds,
                  run.rate)
    write_report({"images": scoreboard.counts["images"], "samples": scoreboard.counts["samples"],
                  "u": scoreboard.counts["u"], "z": scoreboard.counts["z"],
                  "classes": [int(c) for c in scoreboard.expected.cls],
                  "image_bytes": len(image), "load_cycles": load.cycles,
                  "load_seconds": load.seconds, "run_cycles": run.cycles,
                  "run_seconds": run.seconds, "cycles_per_image_last": last["cycles"],
                  "trace_payloads": monitor.payloads})


# -- bad input -----------------------------------------------------------------------------------

async def drain(bfm, bits=TIMEOUT_WAIT_BITS) -> list[Response]:
    """Every response the device sends until `bits` bit times of silence."""
    got = []
    while True:
        try:
            got.append(await bfm.recv_response(bits))
        except TimeoutError:
            if bfm.parser.buffer:
                raise AssertionError(f"unfinished response {bytes(bfm.parser.buffer).hex()}")
            return got


async def still_serves(bfm, cfg, what):
    try:
        await identify(bfm, cfg)
    except AssertionError as e:
        raise AssertionError(f"after {what}: the device does not serve IDENTIFY ({e})") from None


async def no_image(bfm, cfg, bits, what):
    """START is refused with NO_IMAGE: no inference on a missing or half-loaded image."""
    await expect(bfm, request_frame(Opcode.WRITE_INPUT, input_payload(cfg, bits)), Status.OK,
                 f"{what}: WRITE_INPUT")
    await expect(bfm, request_frame(Opcode.START), Status.NO_IMAGE, f"{what}: START")
    _, valid, _, _ = await read_status(bfm)
    assert valid == 0, f"{what}: READ_STATUS says the image is valid"


async def bad_load(bfm, parts: list[bytes], error: Status, what: str):
    """IMAGE_BEGIN, then `parts` as IMAGE_DATA, then IMAGE_END: the first non-OK status must
    be `error`; after it the load is over (further DATA/END answer IMAGE_NOT_BEGUN or the
    same error)."""
    await expect(bfm, request_frame(Opcode.IMAGE_BEGIN), Status.OK, f"{what}: IMAGE_BEGIN")
    frames = [request_frame(Opcode.IMAGE_DATA, p) for p in parts]
    frames.append(request_frame(Opcode.IMAGE_END))
    failed = False
    for i, frame in enumerate(frames):
        await bfm.send(frame)
        resp = await bfm.recv_response(RESPONSE_BITS + 16 * len(frame))
        if failed:
            assert resp.status in (Status.IMAGE_NOT_BEGUN.value, error.value), \
                f"{what}: frame {i} after the error answered {resp.status_name}"
        elif resp.status != Status.OK.value:
            assert resp.status == error.value, \
                f"{what}: frame {i} answered {resp.status_name}, expected {error.name}"
            failed = True
    assert failed, f"{what}: the whole load was accepted, expected {error.name}"


@cocotb.test()
async def bad_input(dut):
    setup = load_setup()
    cfg = setup.config
    rng = np.random.default_rng(setup.seed)
    dut._log.info("seed %d, %s", setup.seed, cfg.describe())
    bfm = await start_device(dut, setup)
    bits = setup.inputs[0]
    good = image_of(setup.params)
    cases = []

    # Frame level.
    cases.append("unknown opcode")
    await expect(bfm, request_frame(0x7E), Status.UNKNOWN_OPCODE, "opcode 0x7E")
    cases.append("bad checksum")
    await expect(bfm, request_frame(Opcode.IDENTIFY, crc_xor=0x5A), Status.BAD_CRC,
                 "IDENTIFY with a corrupted checksum")
    cases.append("corrupted payload byte")
    frame = bytearray(request_frame(Opcode.WRITE_INPUT, input_payload(cfg, bits)))
    frame[4] ^= 0x10
    await expect(bfm, bytes(frame), Status.BAD_CRC, "WRITE_INPUT with a flipped payload bit")
    cases.append("payload wrong for opcode")
    await expect(bfm, request_frame(Opcode.IDENTIFY, b"\x00"), Status.BAD_LENGTH,
                 "IDENTIFY with a payload")
    await expect(bfm, request_frame(Opcode.WRITE_INPUT, b"\x00" * (len(input_payload(cfg, bits))
                                                                     + 1)),
                 Status.BAD_LENGTH, "WRITE_INPUT one byte too long")
    cases.append("payload longer than MAX_PAYLOAD")
    await bfm.send(bytes([SYNC_REQUEST, Opcode.IMAGE_DATA.value])
                   + struct.pack("<H", MAX_PAYLOAD + 1))
    resp = await bfm.recv_response(TIMEOUT_WAIT_BITS)
    assert resp.status == Status.BAD_LENGTH.value, f"long frame answered {resp.status_name}"
    await drain(bfm)
    await still_serves(bfm, cfg, "a too long frame")

    cases.append("truncated frame (timeout)")
    await bfm.send(request_frame(Opcode.WRITE_INPUT, input_payload(cfg, bits))[:3])
    resp = await bfm.recv_response(TIMEOUT_WAIT_BITS)
    assert resp.status == Status.TIMEOUT.value, f"truncated frame answered {resp.status_name}"
    await still_serves(bfm, cfg, "a truncated frame")

    cases.append("random bytes")
    noise = rng.integers(0, 256, size=64, dtype=np.uint8).tobytes()
    await bfm.send(noise)
    for r in await drain(bfm):
        assert r.status in {s.value for s in Status}, f"random bytes: status 0x{r.status:02x}"
    await still_serves(bfm, cfg, "random bytes")

    # Commands out of order.
    cases.append("START before any image")
    await no_image(bfm, cfg, bits, "no image loaded")
    cases.append("IMAGE_DATA / IMAGE_END without IMAGE_BEGIN")
    await expect(bfm, request_frame(Opcode.IMAGE_DATA, good[:16]), Status.IMAGE_NOT_BEGUN,
                 "IMAGE_DATA first")
    await expect(bfm, request_frame(Opcode.IMAGE_END), Status.IMAGE_NOT_BEGUN, "IMAGE_END first")

    # Bad images; a good image loaded first must be invalidated by each failed load.
    chunks = lambda data: [data[p:p + MAX_PAYLOAD] for p in range(0, len(data), MAX_PAYLOAD)]
    bad_images = []
    magic = bytearray(good)
    magic[0] ^= 0xFF
    bad_images.append(("wrong magic", bytes(magic), Status.IMAGE_MAGIC))
    version = bytearray(good)
    version[4] ^= 0x02
    bad_images.append(("wrong format version", bytes(version), Status.IMAGE_MAGIC))
    ident = bytearray(good)
    ident[8] ^= 0x01
    bad_images.append(("other configuration identity", bytes(ident), Status.IMAGE_CONFIG))
    length = bytearray(good)
    length[12] ^= 0x01
    bad_images.append(("wrong body length field", bytes(length), Status.IMAGE_LENGTH))
    bad_images.append(("image one byte short", good[:-1], Status.IMAGE_LENGTH))
    bad_images.append(("image one byte long", good + b"\x00", Status.IMAGE_LENGTH))
    body = bytearray(good)
    body[len(good) // 2] ^= 0x40
    bad_images.append(("corrupted body byte", bytes(body), Status.IMAGE_CRC))
    crc = bytearray(good)
    crc[-1] ^= 0x01
    bad_images.append(("wrong image CRC", bytes(crc), Status.IMAGE_CRC))
    # Intact images (CRC recomputed) with values the hardware cannot use.
    seeds_at = len(good) - CRC_BYTES - cfg.n_generators * word_bytes(cfg.lfsr_width)
    zero_seed = bytearray(good)
    zero_seed[seeds_at:seeds_at + word_bytes(cfg.lfsr_width)] = bytes(word_bytes(cfg.lfsr_width))
    bad_images.append(("zero LFSR seed", recrc(zero_seed), Status.IMAGE_CONTENT))
    w_min = bytearray(good)
    first = header_length(cfg)
    word = int.from_bytes(w_min[first:first + 2], "little")
    w = cfg.weight_bits
    word = word & ~((1 << w) - 1) | (1 << (w - 1))        # lane 0 of word 0: -2^(w-1)
    w_min[first:first + 2] = word.to_bytes(2, "little")
    bad_images.append(("weight -2^(w-1)", recrc(w_min), Status.IMAGE_CONTENT))
    for what, data, error in bad_images:
        cases.append(f"image: {what}")
        await load_image(bfm, good)
        await bad_load(bfm, chunks(data), error, what)
        await no_image(bfm, cfg, bits, what)

    cases.append("IMAGE_BEGIN again in the middle of a load")
    await load_image(bfm, good)
    await expect(bfm, request_frame(Opcode.IMAGE_BEGIN), Status.OK, "IMAGE_BEGIN")
    half = chunks(good)[: max(1, len(chunks(good)) // 2)]
    for c in half:
        await expect(bfm, request_frame(Opcode.IMAGE_DATA, c), Status.OK, "IMAGE_DATA")
    await expect(bfm, request_frame(Opcode.IMAGE_BEGIN), Status.OK, "IMAGE_BEGIN again")
    await expect(bfm, request_frame(Opcode.IMAGE_END), Status.IMAGE_LENGTH,
                 "IMAGE_END of an empty load")
    await no_image(bfm, cfg, bits, "restarted load")

    cases.append("reset pin in the middle of a load")
    await expect(bfm, request_frame(Opcode.IMAGE_BEGIN), Status.OK, "IMAGE_BEGIN")
    for c in half:
        await expect(bfm, request_frame(Opcode.IMAGE_DATA, c), Status.OK, "IMAGE_DATA")
    await reset(dut)
    await no_image(bfm, cfg, bits, "reset during a load")

    cases.append("START before WRITE_INPUT")
    await reset(dut)               # inputs written above would otherwise still be there
    await load_image(bfm, good)
    await expect(bfm, request_frame(Opcode.START), Status.NO_INPUT, "START without input")

    # And the device still computes exactly what the golden model does, from fresh seeds.
    cases.append("good inference after all of the above")
    await load_image(bfm, good)
    scoreboard = Scoreboard(setup.params, setup.inputs[:1], seed=setup.seed, label="after errors")
    monitor = TraceMonitor(dut, cfg, scoreboard)
    result = await infer(dut, bfm, cfg, bits)
    monitor.check()
    monitor.stop()
    scoreboard.trace_complete(0)
    scoreboard.result(0, result["cls"], result["scores"], result["votes"])
    dut._log.info("PASS bad-input cases (%d): %s", len(cases), "; ".join(cases))
    write_report({"bad_input_cases": cases})


# -- busy: commands that would change what the engine reads ---------------------------------------

@cocotb.test()
async def busy_refusals(dut):
    """While an inference really runs (dut.busy checked before every command), WRITE_INPUT,
    IMAGE_BEGIN/DATA/END, START, INFER and READ_RESULT answer exactly BUSY; afterwards the
    image is still valid and the result equals the golden model's for the input written
    before START (nothing it reads was overwritten). Needs an inference longer than these
    commands take on the line (the digits configuration: ~147k cycles)."""
    setup = load_setup()
    cfg = setup.config
    bfm = await start_device(dut, setup)
    good = image_of(setup.params)
    await load_image(bfm, good)
    bits = setup.inputs[0]
    other = input_payload(cfg, 1 - np.asarray(bits))
    await expect(bfm, request_frame(Opcode.WRITE_INPUT, input_payload(cfg, bits)), Status.OK,
                 "WRITE_INPUT")
    await expect(bfm, request_frame(Opcode.START), Status.OK, "START")
    refused = []
    for opcode, payload in ((Opcode.WRITE_INPUT, other), (Opcode.IMAGE_BEGIN, b""),
                            (Opcode.IMAGE_DATA, good[:64]), (Opcode.IMAGE_END, b""),
                            (Opcode.START, b""), (Opcode.INFER, other),
                            (Opcode.READ_RESULT, b"")):
        assert int(dut.busy.value), f"the inference ended before {opcode.name} was sent"
        await expect(bfm, request_frame(opcode, payload), Status.BUSY, f"{opcode.name} while busy")
        refused.append(opcode.name)
    assert int(dut.busy.value), "the inference ended while the last refusal was sent"
    _, valid, _, _ = await read_status(bfm)
    assert valid == 1, "a refused IMAGE_* invalidated the image"
    await FallingEdge(dut.busy)
    resp = await expect(bfm, request_frame(Opcode.READ_RESULT), Status.OK, "READ_RESULT")
    result = parse_result_payload(cfg, resp.payload)
    scoreboard = Scoreboard(setup.params, setup.inputs[:1], seed=setup.seed, label="busy")
    scoreboard.result(0, result["cls"], result["scores"], result["votes"])
    dut._log.info("PASS refused while busy: %s", ", ".join(refused))
    write_report({"busy_refused": refused})
