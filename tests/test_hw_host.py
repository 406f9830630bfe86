"""The host interface (hw/host.py) in the Amaranth simulator, against a fake engine.

`FakeEngine` below is a behavioural stand-in for `hw.engine.NSMEngine` that lives only in this
test: it takes the input bytes, runs for a fixed number of cycles and returns a result computed
from the first input byte, so that every opcode's response can be predicted exactly. The image
loader's writes are recorded from the engine ports and compared, word for word, with the
sections packed in this test from the parameters (docs/contract.md, "Weight image").
"""

import struct

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from firmware import frames
from firmware.frames import (MAX_PAYLOAD, SYNC_REQUEST, SYNC_RESPONSE, DeviceState, Opcode, Status,
                             encode_request, frame_timeout_cycles)
from firmware.image import ImageError, read_image, write_image
from firmware.image_format import (CRC_BYTES, FIELD_OFFSETS, HEADER_BYTES, header_length,
                                   image_crc, image_length, image_sections, word_bytes)
from hw.host import HostInterface
from hw.interfaces import EngineSignature
from model.config import NSMConfig
from model.params import QuantizedNSM

SEED = 20261122
BAUD_DIVISOR = 4
RUN_CYCLES = 400
# Small and odd on purpose: words of 15, 21 and 27 bits, groups that do not fill the lanes.
CONFIG = NSMConfig(layer_sizes=(10, 5, 3), lanes=3, weight_bits=5, a_bits=7, a_frac=3,
                   bias_bits=9, lfsr_width=7, samples=4, name="host-test")
INPUT_BYTES = frames.input_length(CONFIG.n_inputs)


class FakeEngine(wiring.Component):
    """Busy for RUN_CYCLES after `start`; result from input byte 0 (see `expected_result`)."""

    def __init__(self, config):
        self._config = config
        super().__init__(EngineSignature(config))

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        first_input = Signal(8)
        countdown = Signal(range(RUN_CYCLES + 1))
        runs = Signal(16)
        with m.If(self.input_wr.en & (self.input_wr.addr == 0)):
            m.d.sync += first_input.eq(self.input_wr.data)
        m.d.comb += self.busy.eq(countdown != 0)
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [countdown.eq(RUN_CYCLES), runs.eq(runs + 1)]
        with m.Elif(countdown == 1):
            m.d.sync += [
                countdown.eq(0), self.done.eq(1),
                self.result.cls.eq(first_input % cfg.n_classes),
                self.result.cycles.eq(0xC0DE0000 | runs),
            ]
            for c in range(cfg.n_classes):
                m.d.sync += [self.result.scores[c].eq(first_input * (c + 1) - 300),
                             self.result.votes[c].eq((first_input + c) % (cfg.samples + 1))]
        with m.Elif(countdown != 0):
            m.d.sync += countdown.eq(countdown - 1)
        return m


def expected_result(first_input: int, runs: int) -> bytes:
    n = CONFIG.n_classes
    return frames.encode_result(n, frames.score_bytes(CONFIG), frames.InferenceResult(
        first_input % n, tuple(first_input * (c + 1) - 300 for c in range(n)),
        tuple((first_input + c) % (CONFIG.samples + 1) for c in range(n)),
        0xC0DE0000 | runs))


request = encode_request


class Bench:
    """Drives the host's byte streams cycle by cycle and records what it does to the engine."""

    def __init__(self, ctx, host, engine):
        self.ctx, self.host, self.engine = ctx, host, engine
        self.ports = {"weights": host.engine.weight_wr, "a": host.engine.a_wr,
                      "bias": host.engine.bias_wr, "seeds": host.engine.seed_wr,
                      "input": host.engine.input_wr}
        self.writes = {name: [] for name in self.ports}
        self.writes_while_busy = 0
        self.tx_bytes = bytearray()
        self.cycles = 0
        watched = [host.rx.ready, host.tx.valid, host.tx.payload, engine.busy]
        for port in self.ports.values():
            watched += [port.en, port.addr, port.data]
        self.watched = watched
        ctx.set(host.tx.ready, 1)

    async def step(self):
        _, _, rx_ready, tx_valid, tx_byte, busy, *ports = await self.ctx.tick().sample(
            *self.watched)
        self.cycles += 1
        for n, name in enumerate(self.ports):
            en, addr, data = ports[3 * n:3 * n + 3]
            if en:
                self.writes[name].append((addr, data))
                self.writes_while_busy += bool(busy)
        if tx_valid:
            self.tx_bytes.append(tx_byte)
        return rx_ready

    async def send(self, data: bytes, gap: int = 0):
        for byte in data:
            self.ctx.set(self.host.rx.valid, 1)
            self.ctx.set(self.host.rx.payload, byte)
            while not await self.step():
                pass
            self.ctx.set(self.host.rx.valid, 0)
            for _ in range(gap):
                await self.step()

    async def response(self, limit=20000):
        """The next response frame, parsed and checked: (status, payload)."""
        for _ in range(limit):
            frame = self._frame()
            if frame is not None:
                return frame
            await self.step()
        raise AssertionError(f"no response within {limit} cycles; got {bytes(self.tx_bytes)}")

    def _frame(self):
        buf = self.tx_bytes
        if len(buf) < frames.HEAD_BYTES or len(buf) < frames.response_length(buf[:4]):
            return None
        end = frames.response_length(buf[:4])
        response = frames.decode_response(buf[:end])
        del buf[:end]
        return Status(response.status), response.payload

    async def command(self, opcode, payload=b""):
        await self.send(request(opcode, payload))
        return await self.response()

    async def idle(self, cycles):
        for _ in range(cycles):
            await self.step()

    async def load_image(self, image: bytes, chunk=7):
        """IMAGE_BEGIN, IMAGE_DATA frames, IMAGE_END up to the first error; `frames_sent`
        counts the frames sent."""
        self.frames_sent = 1
        assert await self.command(Opcode.IMAGE_BEGIN) == (Status.OK, b"")
        for i in range(0, len(image), chunk):
            self.frames_sent += 1
            status, _ = await self.command(Opcode.IMAGE_DATA, image[i:i + chunk])
            if status != Status.OK:
                return status
        self.frames_sent += 1
        status, _ = await self.command(Opcode.IMAGE_END)
        return status


def run(scenario):
    """Run `scenario(bench)` on a fresh host + fake engine; returns the bench afterwards."""
    m = Module()
    m.submodules.host = host = HostInterface(CONFIG, BAUD_DIVISOR)
    m.submodules.engine = engine = FakeEngine(CONFIG)
    wiring.connect(m, host.engine, engine)
    result = {}

    async def testbench(ctx):
        bench = Bench(ctx, host, engine)
        result["bench"] = bench
        await scenario(bench)
        assert bench.tx_bytes == bytearray(), f"unexpected bytes {bytes(bench.tx_bytes)}"

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return result["bench"]


def random_params(seed=SEED):
    return QuantizedNSM.random(CONFIG, np.random.default_rng(seed))


def packed_sections(params: QuantizedNSM) -> dict:
    """The words of each image section, packed here from the contract (not from the image)."""
    cfg = params.config
    words = {}
    for name, bits in (("weights", cfg.weight_bits), ("a", cfg.a_bits),
                       ("bias", cfg.bias_bits)):
        out = []
        for l in range(cfg.n_layers):
            n_out = cfg.fan_out(l)
            for g in range(cfg.groups(l)):
                rows = range(g * cfg.lanes, min((g + 1) * cfg.lanes, n_out))
                columns = range(cfg.fan_in(l)) if name == "weights" else [None]
                for j in columns:
                    word = 0
                    for k, i in enumerate(rows):
                        value = {"weights": lambda: params.weights[l][i, j],
                                 "a": lambda: params.a[l][i],
                                 "bias": lambda: params.bias[l][i]}[name]()
                        word |= (int(value) & ((1 << bits) - 1)) << (k * bits)
                    out.append(word)
        words[name] = out
    words["seeds"] = [int(s) for s in params.seeds]
    return words


def identify_expected() -> bytes:
    return frames.encode_identify(CONFIG)


def status_expected(state, image_valid, last_error, inferences) -> bytes:
    return frames.encode_status(state, image_valid, last_error, inferences)


# -- opcodes ------------------------------------------------------------------------------------

def test_identify_reports_config_identity_version_sizes_lanes_and_k():
    async def scenario(b):
        assert await b.command(Opcode.IDENTIFY) == (Status.OK, identify_expected())
    bench = run(scenario)
    decoded = frames.decode_identify(identify_expected())
    assert (decoded.identity, decoded.layer_sizes, decoded.lanes, decoded.samples,
            decoded.score_bytes) == (CONFIG.identity, CONFIG.layer_sizes, CONFIG.lanes,
                                     CONFIG.samples, frames.score_bytes(CONFIG))


def test_read_status_after_reset():
    async def scenario(b):
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.IDLE, 0, Status.OK, 0))
    run(scenario)


def test_correct_image_is_written_word_for_word_and_becomes_valid():
    params = random_params()
    image = write_image(params)
    assert len(image) == image_length(CONFIG)
    expected = packed_sections(params)

    async def scenario(b):
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.IDLE, 0, Status.OK, 0))
        assert await b.command(Opcode.IMAGE_BEGIN) == (Status.OK, b"")
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.LOADING, 0, Status.OK, 0))
        for i in range(0, len(image), 7):   # 7: frames end in the middle of words
            assert await b.command(Opcode.IMAGE_DATA, image[i:i + 7]) == (Status.OK, b"")
        assert await b.command(Opcode.IMAGE_END) == (Status.OK, b"")
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.IDLE, 1, Status.OK, 0))

    bench = run(scenario)
    for name, words, _ in image_sections(CONFIG):
        assert len(expected[name]) == words
        assert bench.writes[name] == list(enumerate(expected[name])), name


def test_input_start_busy_result_and_inference_count():
    image = write_image(random_params())

    async def scenario(b):
        assert await b.load_image(image, chunk=MAX_PAYLOAD) == Status.OK
        assert await b.command(Opcode.WRITE_INPUT, bytes([0x9B, 0x02])) == (Status.OK, b"")
        assert await b.command(Opcode.START) == (Status.OK, b"")
        # Still running: results, a new image and new inputs are refused.
        assert await b.command(Opcode.READ_RESULT) == (Status.BUSY, b"")
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.RUNNING, 1, Status.BUSY, 1))
        for opcode, payload in ((Opcode.WRITE_INPUT, bytes([0x55, 0x01])),
                                (Opcode.IMAGE_BEGIN, b""), (Opcode.IMAGE_DATA, image[:7]),
                                (Opcode.IMAGE_END, b""), (Opcode.START, b"")):
            assert await b.command(opcode, payload) == (Status.BUSY, b""), opcode.name
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.RUNNING, 1, Status.BUSY, 1))
        await b.idle(RUN_CYCLES)
        assert await b.command(Opcode.READ_RESULT) == (Status.OK, expected_result(0x9B, 1))
        assert await b.command(Opcode.WRITE_INPUT, bytes([0x41, 0x00])) == (Status.OK, b"")
        assert await b.command(Opcode.START) == (Status.OK, b"")
        await b.idle(RUN_CYCLES)
        assert await b.command(Opcode.READ_RESULT) == (Status.OK, expected_result(0x41, 2))
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.IDLE, 1, Status.BUSY, 2))

    bench = run(scenario)
    assert bench.writes["input"] == [(0, 0x9B), (1, 0x02), (0, 0x41), (1, 0x00)]
    assert bench.writes_while_busy == 0


def test_infer_while_a_started_inference_runs_is_busy_and_writes_nothing():
    image = write_image(random_params())

    async def scenario(b):
        assert await b.load_image(image, chunk=MAX_PAYLOAD) == Status.OK
        assert await b.command(Opcode.WRITE_INPUT, bytes([0x9B, 0x02])) == (Status.OK, b"")
        assert await b.command(Opcode.START) == (Status.OK, b"")
        assert await b.command(Opcode.INFER, bytes([0x11, 0x00])) == (Status.BUSY, b"")
        await b.idle(RUN_CYCLES)
        assert await b.command(Opcode.READ_RESULT) == (Status.OK, expected_result(0x9B, 1))

    bench = run(scenario)
    assert bench.writes["input"] == [(0, 0x9B), (1, 0x02)]


def test_start_without_image_is_no_image_and_without_input_is_no_input():
    image = write_image(random_params())

    async def scenario(b):
        assert await b.command(Opcode.START) == (Status.NO_IMAGE, b"")
        assert await b.command(Opcode.WRITE_INPUT, bytes(INPUT_BYTES)) == (Status.OK, b"")
        assert await b.command(Opcode.START) == (Status.NO_IMAGE, b"")
        assert await b.command(Opcode.READ_RESULT) == (Status.NO_INPUT, b"")
    run(scenario)

    async def scenario_no_input(b):
        assert await b.load_image(image, chunk=MAX_PAYLOAD) == Status.OK
        assert await b.command(Opcode.START) == (Status.NO_INPUT, b"")
    run(scenario_no_input)


def test_image_data_and_end_without_begin():
    async def scenario(b):
        assert await b.command(Opcode.IMAGE_DATA, b"NSMI") == (Status.IMAGE_NOT_BEGUN, b"")
        assert await b.command(Opcode.IMAGE_END) == (Status.IMAGE_NOT_BEGUN, b"")
    run(scenario)


# -- malformed frames ---------------------------------------------------------------------------

def test_bad_crc_is_refused_and_nothing_is_executed():
    frame = bytearray(request(Opcode.IMAGE_BEGIN))
    frame[-1] ^= 0x01

    async def scenario(b):
        await b.send(bytes(frame))
        assert await b.response() == (Status.BAD_CRC, b"")
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.IDLE, 0, Status.BAD_CRC, 0))
    run(scenario)


@pytest.mark.parametrize("opcode", [0x00, 0x0A, 0x7F, 0xFF], ids=lambda o: f"op{o:02x}")
def test_unknown_opcode(opcode):
    async def scenario(b):
        assert await b.command(opcode, b"\x01\x02") == (Status.UNKNOWN_OPCODE, b"")
        assert await b.command(Opcode.IDENTIFY) == (Status.OK, identify_expected())
    run(scenario)


def test_oversize_length_is_refused_at_once_and_the_payload_is_skipped_as_garbage():
    async def scenario(b):
        await b.send(bytes([SYNC_REQUEST, Opcode.IMAGE_DATA.value])
                     + struct.pack("<H", MAX_PAYLOAD + 1))
        assert await b.response() == (Status.BAD_LENGTH, b"")
        await b.send(bytes(range(0x10, 0x40)))           # what the host sent on: no 0x5A
        assert await b.command(Opcode.IDENTIFY) == (Status.OK, identify_expected())
    run(scenario)


@pytest.mark.parametrize("opcode,payload", [
    (Opcode.IDENTIFY, b"\x00"),
    (Opcode.START, b"\x00\x00"),
    (Opcode.WRITE_INPUT, bytes(INPUT_BYTES + 1)),
    (Opcode.WRITE_INPUT, bytes(INPUT_BYTES - 1)),
    (Opcode.IMAGE_DATA, b""),
], ids=["identify+1", "start+2", "input-long", "input-short", "image-data-empty"])
def test_wrong_payload_length_for_the_opcode(opcode, payload):
    async def scenario(b):
        assert await b.command(opcode, payload) == (Status.BAD_LENGTH, b"")
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.IDLE, 0, Status.BAD_LENGTH, 0))
    bench = run(scenario)
    assert bench.writes["input"] == []


@pytest.mark.parametrize("cut", [1, 2, 4, 6], ids=lambda c: f"after{c}bytes")
def test_truncated_frame_times_out_and_the_device_recovers(cut):
    frame = request(Opcode.WRITE_INPUT, bytes([1, 2]))[:cut]
    timeout = frame_timeout_cycles(BAUD_DIVISOR)

    async def scenario(b):
        await b.send(frame)
        start = b.cycles
        assert await b.response(limit=timeout + 100) == (Status.TIMEOUT, b"")
        waited = b.cycles - start
        assert timeout <= waited <= timeout + 20, waited
        assert await b.command(Opcode.IDENTIFY) == (Status.OK, identify_expected())
    bench = run(scenario)
    assert bench.writes["input"] == []


def test_slow_bytes_within_the_timeout_are_one_frame():
    gap = frame_timeout_cycles(BAUD_DIVISOR) - 10

    async def scenario(b):
        await b.send(request(Opcode.IDENTIFY), gap=gap)
        assert await b.response() == (Status.OK, identify_expected())
    run(scenario)


def test_garbage_before_sync_is_skipped():
    async def scenario(b):
        await b.send(bytes([0x00, 0xFF, SYNC_RESPONSE, 0x13, 0x37]))
        assert await b.command(Opcode.IDENTIFY) == (Status.OK, identify_expected())
    run(scenario)


# -- refused images -------------------------------------------------------------------------------

def _damaged(name):
    """A damaged image; `fix-crc` variants recompute the CRC-32 (the contents are wrong, the
    image is intact)."""
    params = random_params()
    image = bytearray(write_image(params))
    field = {n: offset for n, (offset, _) in FIELD_OFFSETS.items()}
    body = header_length(CONFIG)
    seeds_at = len(image) - CRC_BYTES - CONFIG.n_generators * word_bytes(CONFIG.lfsr_width)
    recrc = False
    if name == "magic":
        image[0:4] = b"NSMX"
    elif name == "version":
        image[field["version"]] ^= 0x01
    elif name == "reserved":
        image[field["reserved"]] = 1
    elif name == "identity":
        image[field["identity"]] ^= 0x40
    elif name == "layer-count":
        image[field["n"]] += 1
    elif name == "layer-size":
        image[HEADER_BYTES] += 1
    elif name == "body-length":
        image[field["body_length"]] += 1
    elif name == "data-length":
        image[field["data_length"]] += 1
    elif name == "crc":
        image[-1] ^= 0x80
    elif name == "body-bit":
        image[body + 5] ^= 0x04
    elif name == "short":
        image = image[:-5]
    elif name == "long":
        image = image + b"\x00"
    elif name == "zero-seed":
        image[seeds_at] = 0
        recrc = True
    elif name == "seed-padding":
        image[seeds_at] |= 0x80            # 7-bit seeds in one byte
        recrc = True
    elif name == "weight-min":
        # Lane 1 of weight word 0 (5-bit weights): -16, outside the symmetric range.
        word = int.from_bytes(image[body:body + 2], "little") & ~(0x1F << 5) | (0x10 << 5)
        image[body:body + 2] = word.to_bytes(2, "little")
        recrc = True
    elif name == "weight-padding":
        image[body + 1] |= 0x80            # 15 bits of weights in two bytes
        recrc = True
    if recrc:
        image[-CRC_BYTES:] = image_crc(bytes(image[:-CRC_BYTES])).to_bytes(CRC_BYTES, "little")
    return bytes(image)


DAMAGES = [
    ("magic", Status.IMAGE_MAGIC),
    ("version", Status.IMAGE_MAGIC),
    ("reserved", Status.IMAGE_MAGIC),
    ("identity", Status.IMAGE_CONFIG),
    ("layer-count", Status.IMAGE_CONFIG),
    ("layer-size", Status.IMAGE_CONFIG),
    ("body-length", Status.IMAGE_LENGTH),
    ("data-length", Status.IMAGE_LENGTH),   # one byte more expected: IMAGE_END comes early
    ("crc", Status.IMAGE_CRC),
    ("body-bit", Status.IMAGE_CRC),
    ("short", Status.IMAGE_LENGTH),
    ("long", Status.IMAGE_LENGTH),
    ("zero-seed", Status.IMAGE_CONTENT),
    ("seed-padding", Status.IMAGE_CONTENT),
    ("weight-min", Status.IMAGE_CONTENT),
    ("weight-padding", Status.IMAGE_CONTENT),
]


def _model_load(image: bytes, chunk=7):
    """The same load through the software device: (status, frame index) of the first error."""
    from tools.transport import ModelTransport

    model = ModelTransport(CONFIG)
    requests = ([encode_request(Opcode.IMAGE_BEGIN)]
                + [encode_request(Opcode.IMAGE_DATA, image[i:i + chunk])
                   for i in range(0, len(image), chunk)]
                + [encode_request(Opcode.IMAGE_END)])
    for n, frame in enumerate(requests):
        model.write(frame)
        status = Status(frames.parse_responses(model.read(len(model._out), 0))[0].status)
        if status != Status.OK:
            return status, n
    return Status.OK, len(requests)


@pytest.mark.parametrize("damage,status", DAMAGES,
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_damaged_image_is_refused_and_start_says_no_image(damage, status):
    image = _damaged(damage)
    # The image reader (the host's check before sending) refuses every one of them too.
    with pytest.raises(ImageError):
        read_image(image, CONFIG)
    where = {}

    async def scenario(b):
        assert await b.load_image(image) == status
        where["frame"] = b.frames_sent
        # The load is over: more data is refused, and nothing is valid.
        assert await b.command(Opcode.IMAGE_END) == (Status.IMAGE_NOT_BEGUN, b"")
        assert await b.command(Opcode.WRITE_INPUT, bytes(INPUT_BYTES)) == (Status.OK, b"")
        assert await b.command(Opcode.START) == (Status.NO_IMAGE, b"")
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.IDLE, 0, Status.NO_IMAGE, 0))
    run(scenario)
    # The software device answers the same, at the same frame.
    assert _model_load(image) == (status, where["frame"] - 1)


def test_image_begin_invalidates_a_valid_image():
    image = write_image(random_params())

    async def scenario(b):
        assert await b.load_image(image, chunk=MAX_PAYLOAD) == Status.OK
        assert await b.command(Opcode.WRITE_INPUT, bytes(INPUT_BYTES)) == (Status.OK, b"")
        assert await b.command(Opcode.IMAGE_BEGIN) == (Status.OK, b"")
        assert await b.command(Opcode.START) == (Status.NO_IMAGE, b"")
        # A half-sent image followed by IMAGE_END is too short.
        assert await b.command(Opcode.IMAGE_DATA, image[:40]) == (Status.OK, b"")
        assert await b.command(Opcode.IMAGE_END) == (Status.IMAGE_LENGTH, b"")
        assert await b.command(Opcode.START) == (Status.NO_IMAGE, b"")
        # And a complete one afterwards is accepted again.
        assert await b.load_image(image, chunk=MAX_PAYLOAD) == Status.OK
        assert await b.command(Opcode.START) == (Status.OK, b"")
    run(scenario)


# -- the whole core, through the serial line ------------------------------------------------------

def _serial_exchange(requests, max_cycles=400_000):
    """`NSMAccelerator` (real engine, receive buffer, UARTs) of CONFIG: all `requests` sent
    back to back on uart_rx; returns every response frame decoded from uart_tx."""
    from hw.top import NSMAccelerator
    dut = NSMAccelerator(CONFIG, BAUD_DIVISOR)
    received = bytearray()
    line = bytes(b"".join(requests))

    async def bench(ctx):
        ctx.set(dut.uart_rx, 1)
        state = {"prev": 1, "bits": None, "timer": 0, "byte": 0}
        bits = [bit for byte in line for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]]
        for cycle in range(max_cycles):
            n = cycle // BAUD_DIVISOR
            ctx.set(dut.uart_rx, bits[n] if n < len(bits) else 1)
            _, _, tx = await ctx.tick().sample(dut.uart_tx)
            # Decode uart_tx: find the start edge, sample mid-bit.
            if state["bits"] is None:
                if state["prev"] == 1 and tx == 0:
                    state.update(bits=0, timer=BAUD_DIVISOR + BAUD_DIVISOR // 2, byte=0)
            else:
                state["timer"] -= 1
                if state["timer"] == 0:
                    if state["bits"] < 8:
                        state["byte"] |= tx << state["bits"]
                        state["bits"] += 1
                        state["timer"] = BAUD_DIVISOR
                    else:
                        assert tx == 1, "stop bit"
                        received.append(state["byte"])
                        state["bits"] = None
            state["prev"] = tx
            if n > len(bits) and len(frames.parse_responses_prefix(received)) == len(requests):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return [(Status(r.status), r.payload) for r in frames.parse_responses(bytes(received))]


def test_accelerator_top_answers_over_the_serial_line():
    """`NSMAccelerator` with the real engine: IDENTIFY and READ_STATUS through uart_rx/uart_tx."""
    assert _serial_exchange([request(Opcode.IDENTIFY), request(Opcode.READ_STATUS)]) == [
        (Status.OK, identify_expected()),
        (Status.OK, status_expected(DeviceState.IDLE, 0, Status.OK, 0))]


def test_accelerator_top_takes_requests_sent_back_to_back_while_it_computes():
    """Requests sent without waiting for answers (a streamed image, INFERs in flight) wait in
    the receive buffer while the device executes earlier ones; none is lost."""
    from model import golden

    params = random_params()
    image = write_image(params)
    rng = np.random.default_rng(SEED)
    images = rng.choice(np.array([-1, 1]), size=(3, CONFIG.n_inputs))
    requests = ([request(Opcode.IMAGE_BEGIN)]
                + [request(Opcode.IMAGE_DATA, image[i:i + 40]) for i in range(0, len(image), 40)]
                + [request(Opcode.IMAGE_END)]
                + [request(Opcode.INFER, frames.pack_input(x, CONFIG.n_inputs)) for x in images])
    answers = _serial_exchange(requests)
    assert [status for status, _ in answers] == [Status.OK] * len(requests)
    expected = golden.run(params, images, trace=False)
    for i, (_, payload) in enumerate(answers[-3:]):
        got = frames.decode_compact(CONFIG.n_classes, payload)
        assert (got.cls, list(got.votes)) == (int(expected.cls[i]),
                                              [int(v) for v in expected.votes[i]]), f"seed {SEED}"


# -- streaming inference ------------------------------------------------------------------------

def expected_compact(first_input: int) -> bytes:
    n = CONFIG.n_classes
    return frames.encode_compact(n, frames.CompactResult(
        first_input % n, tuple((first_input + c) % (CONFIG.samples + 1) for c in range(n))))


def test_infer_streams_inputs_and_answers_each_when_it_is_done():
    image = write_image(random_params())
    inputs = [bytes([0x21, 0x01]), bytes([0x7C, 0x00]), bytes([0x03, 0x02])]

    async def scenario(b):
        assert await b.command(Opcode.INFER, inputs[0]) == (Status.NO_IMAGE, b"")
        assert await b.load_image(image, chunk=MAX_PAYLOAD) == Status.OK
        assert await b.command(Opcode.INFER, bytes(INPUT_BYTES + 1)) == (Status.BAD_LENGTH, b"")
        start = b.cycles
        assert await b.command(Opcode.INFER, inputs[0]) == (Status.OK,
                                                            expected_compact(inputs[0][0]))
        assert b.cycles - start > RUN_CYCLES          # answered once the engine is done
        # Back to back: each request is taken after the previous answer, none is refused.
        await b.send(encode_request(Opcode.INFER, inputs[1]) +
                     encode_request(Opcode.INFER, inputs[2]))
        assert await b.response() == (Status.OK, expected_compact(inputs[1][0]))
        assert await b.response() == (Status.OK, expected_compact(inputs[2][0]))
        # The full result of the last one is there too, and every inference was counted.
        assert await b.command(Opcode.READ_RESULT) == (Status.OK, expected_result(0x03, 3))
        assert await b.command(Opcode.READ_STATUS) == (
            Status.OK, status_expected(DeviceState.IDLE, 1, Status.BAD_LENGTH, 3))

    bench = run(scenario)
    assert [data for _, data in bench.writes["input"]] == [x for i in inputs for x in i]
    assert bench.writes_while_busy == 0
