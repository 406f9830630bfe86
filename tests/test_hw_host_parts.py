"""The components of the host interface (hw/host.py), each alone in Amaranth's simulator:
FrameReceiver, ImageLoader, CommandExecutor, ResponseSender. tests/test_hw_host.py checks them
together, byte for byte on the wire."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from firmware import frames
from firmware.frames import (MAX_PAYLOAD, SYNC_REQUEST, DeviceState, Opcode, Status,
                             encode_request)
from firmware.image import image_crc, write_image
from firmware.image_format import (CRC_BYTES, FIELD_OFFSETS, header_length, image_body,
                                   image_sections, section_words, word_bytes)
from hw.host import (CommandExecutor, FrameReceiver, ImageLoader, Reply, ResponseSender)
from model.config import NSMConfig
from model.params import QuantizedNSM

SEED = 20261202
TIMEOUT = 64
CONFIG = NSMConfig(layer_sizes=(10, 5, 3), lanes=3, weight_bits=5, a_bits=7, a_frac=3,
                   bias_bits=9, lfsr_width=7, samples=4, name="host-parts")
INPUT_BYTES = frames.input_length(CONFIG.n_inputs)


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# -- FrameReceiver ------------------------------------------------------------------------------

def receive(data: bytes, gaps=(), hold=0):
    """Send `data` into a FrameReceiver (a byte after `gaps[i]` idle cycles), read each frame's
    payload, release it once read and `hold` cycles have passed; returns the frames (opcode,
    length, error, payload, cycle the request appeared) and the cycles at which rx was ready
    while held."""
    dut = FrameReceiver(TIMEOUT)
    got, ready_while_held = [], []

    async def bench(ctx):
        queue = list(data)
        cycle, gap, frame = 0, 0, None
        ctx.set(dut.payload.ready, 1)
        while cycle < 6 * TIMEOUT + 40 * len(data):
            sent = len(data) - len(queue)
            wait = gaps[sent] if sent < len(gaps) else 0
            offer = bool(queue) and gap >= wait
            ctx.set(dut.rx.valid, offer)
            ctx.set(dut.rx.payload, queue[0] if offer else 0)
            release = frame is not None and frame["held"] >= max(hold, frame["head"][1] + 1)
            ctx.set(dut.request.ready, release)
            _, _, rx_ready, req_valid, req, p_valid, p = await ctx.tick().sample(
                dut.rx.ready, dut.request.valid, dut.request.payload, dut.payload.valid,
                dut.payload.payload)
            cycle += 1
            gap = 0 if offer and rx_ready else gap + 1
            if offer and rx_ready:
                queue.pop(0)
            if req_valid:
                if frame is None:
                    frame = {"head": (req.opcode, req.length, Status(req.error)), "bytes": [],
                             "held": 0, "at": cycle}
                frame["held"] += 1
                if rx_ready:
                    ready_while_held.append(cycle)
                if p_valid:
                    frame["bytes"].append(p.data)
                    assert p.last == (len(frame["bytes"]) == req.length)
                if release:
                    got.append((*frame["head"], bytes(frame["bytes"]), frame["at"]))
                    frame = None

    simulate(dut, bench)
    return got, ready_while_held


def _corrupt_crc(frame):
    return frame[:-1] + bytes([frame[-1] ^ 0x10])


RECEIVED = {
    "intact": (encode_request(Opcode.IMAGE_DATA, b"\x01\x02\x03"),
               (Opcode.IMAGE_DATA, 3, Status.OK, b"\x01\x02\x03")),
    "no-payload": (encode_request(Opcode.IDENTIFY), (Opcode.IDENTIFY, 0, Status.OK, b"")),
    "largest": (encode_request(Opcode.IMAGE_DATA, bytes(n % 251 for n in range(MAX_PAYLOAD))),
                (Opcode.IMAGE_DATA, MAX_PAYLOAD, Status.OK,
                 bytes(n % 251 for n in range(MAX_PAYLOAD)))),
    "garbage-first": (b"\x00\xa5\x13" + encode_request(0x42, b"\x99"),
                      (0x42, 1, Status.OK, b"\x99")),
    "bad-crc": (_corrupt_crc(encode_request(Opcode.WRITE_INPUT, b"\x07\x00")),
                (Opcode.WRITE_INPUT, 2, Status.BAD_CRC, None)),
    "oversize": (bytes([SYNC_REQUEST, Opcode.IMAGE_DATA]) + (MAX_PAYLOAD + 1).to_bytes(2, "little"),
                 (Opcode.IMAGE_DATA, None, Status.BAD_LENGTH, None)),
}


@pytest.mark.parametrize("case", RECEIVED, ids=list(RECEIVED))
def test_frame_receiver_passes_a_frame_once_its_crc_is_checked(case):
    data, (opcode, length, error, payload) = RECEIVED[case]
    got, _ = receive(data)
    assert len(got) == 1
    got_op, got_len, got_error, got_payload, _ = got[0]
    assert (got_op, got_error) == (opcode, error)
    if error == Status.OK:
        assert (got_len, got_payload) == (length, payload)


def test_frame_receiver_holds_the_frame_and_takes_no_byte_until_it_is_released():
    data = encode_request(Opcode.READ_STATUS) + encode_request(Opcode.IDENTIFY)
    got, ready_while_held = receive(data, hold=30)
    assert [(op, error) for op, _, error, _, _ in got] == [(Opcode.READ_STATUS, Status.OK),
                                                           (Opcode.IDENTIFY, Status.OK)]
    assert ready_while_held == []
    assert got[1][4] - got[0][4] > 30


@pytest.mark.parametrize("cut", [1, 3, 5], ids=lambda c: f"after{c}bytes")
def test_frame_receiver_times_out_a_frame_that_stops(cut):
    data = encode_request(Opcode.WRITE_INPUT, b"\x01\x02")[:cut]
    got, _ = receive(data)
    assert [error for _, _, error, _, _ in got] == [Status.TIMEOUT]
    # The timer starts after the last byte: cycles `cut` .. the request's appearance.
    assert TIMEOUT <= got[0][4] - cut <= TIMEOUT + 3


def test_frame_receiver_bytes_slower_than_the_timeout_are_still_one_frame():
    data = encode_request(Opcode.INFER, b"\x05\x01")
    got, _ = receive(data, gaps=[0] + [TIMEOUT - 2] * (len(data) - 1))
    assert [(op, error, payload) for op, _, error, payload, _ in got] == [
        (Opcode.INFER, Status.OK, b"\x05\x01")]


# -- ImageLoader --------------------------------------------------------------------------------

def load(image: bytes, seed=SEED, config=CONFIG):
    """Feed `image` into a fresh ImageLoader (after `begin`), with random idle cycles between
    bytes; returns (error, complete, the writes of each section)."""
    dut = ImageLoader(config)
    ports = {"weights": dut.weight_wr, "a": dut.a_wr, "bias": dut.bias_wr, "seeds": dut.seed_wr}
    writes = {name: [] for name in ports}
    rng = np.random.default_rng(seed)
    out = {}

    async def bench(ctx):
        ctx.set(dut.control.begin, 1)
        await ctx.tick()
        ctx.set(dut.control.begin, 0)
        at = 0
        while at < len(image) or not ctx.get(dut.control.idle):
            offer = at < len(image) and rng.random() < 0.7
            ctx.set(dut.data.valid, offer)
            ctx.set(dut.data.payload, image[at] if offer else 0)
            sampled = await ctx.tick().sample(dut.data.ready, *[
                s for p in ports.values() for s in (p.en, p.addr, p.data)])
            ready, rest = sampled[2], sampled[3:]
            for n, name in enumerate(ports):
                if rest[3 * n]:
                    writes[name].append((rest[3 * n + 1], rest[3 * n + 2]))
            if offer and ready:
                at += 1
        out.update(error=Status(ctx.get(dut.control.error)),
                   complete=ctx.get(dut.control.complete))

    simulate(dut, bench)
    return out["error"], out["complete"], writes


def _image(damage=None):
    image = bytearray(write_image(QuantizedNSM.random(CONFIG, np.random.default_rng(SEED))))
    body = header_length(CONFIG)
    seeds_at = len(image) - CRC_BYTES - CONFIG.n_generators * word_bytes(CONFIG.lfsr_width)
    if damage == "magic":
        image[1] ^= 0x01
    elif damage == "identity":
        image[FIELD_OFFSETS["identity"][0]] ^= 0x01
    elif damage == "crc":
        image[-1] ^= 0x01
    elif damage == "crc-then-more":
        image[-1] ^= 0x01
        image += b"\x00"
    elif damage == "long":
        image += b"\x00"
    elif damage in ("zero-seed", "zero-last-seed", "weight-padding"):
        if damage == "zero-seed":
            image[seeds_at] = 0
        elif damage == "zero-last-seed":        # the image's last word, checked last
            image[-CRC_BYTES - word_bytes(CONFIG.lfsr_width):-CRC_BYTES] = bytes(
                word_bytes(CONFIG.lfsr_width))
        else:
            image[body + 1] |= 0x80
        image[-CRC_BYTES:] = image_crc(bytes(image[:-CRC_BYTES])).to_bytes(CRC_BYTES, "little")
    return bytes(image)


def test_image_loader_writes_every_word_and_completes():
    image = _image()
    error, complete, writes = load(image)
    assert (error, complete) == (Status.OK, 1)
    expected = section_words(CONFIG, image_body(CONFIG, image))
    for name, _, _ in image_sections(CONFIG):
        assert writes[name] == list(enumerate(expected[name])), name


LOADER_ERRORS = [("magic", Status.IMAGE_MAGIC), ("identity", Status.IMAGE_CONFIG),
                 ("crc", Status.IMAGE_CRC), ("crc-then-more", Status.IMAGE_CRC),
                 ("long", Status.IMAGE_LENGTH), ("zero-seed", Status.IMAGE_CONTENT),
                 ("zero-last-seed", Status.IMAGE_CONTENT), ("weight-padding", Status.IMAGE_CONTENT)]


@pytest.mark.parametrize("damage,status", LOADER_ERRORS, ids=[d for d, _ in LOADER_ERRORS])
def test_image_loader_keeps_the_first_failed_check(damage, status):
    error, _, writes = load(_image(damage))
    assert error == status
    if damage in ("magic", "identity"):      # a header refused: nothing written after it
        assert all(w == [] for w in writes.values())


# P = 2: a weight word holds lanes * P weights, each of them checked.
WIDE_WORDS = NSMConfig(layer_sizes=(10, 5, 3), lanes=2, inputs_per_cycle=2, weight_bits=5,
                       a_bits=7, a_frac=3, bias_bits=9, lfsr_width=7, samples=4,
                       name="host-parts-P2")


@pytest.mark.parametrize("position", range(WIDE_WORDS.lanes * WIDE_WORDS.inputs_per_cycle),
                         ids=lambda n: f"weight{n}")
def test_image_loader_refuses_the_weight_minimum_at_every_place_of_a_word(position):
    """-2^(w-1) (outside the symmetric range the sums are sized for) in any of the lanes * P
    weights of a word is refused, by the gateware and by the software device alike."""
    from tools.transport import ModelTransport
    cfg, w = WIDE_WORDS, WIDE_WORDS.weight_bits
    image = bytearray(write_image(QuantizedNSM.random(cfg, np.random.default_rng(SEED))))
    body, nbytes = header_length(cfg), word_bytes(cfg.weight_word_bits)
    word = int.from_bytes(image[body:body + nbytes], "little")
    word = word & ~(((1 << w) - 1) << (position * w)) | (1 << (w - 1)) << (position * w)
    image[body:body + nbytes] = word.to_bytes(nbytes, "little")
    image[-CRC_BYTES:] = image_crc(bytes(image[:-CRC_BYTES])).to_bytes(CRC_BYTES, "little")
    assert load(bytes(image), config=cfg)[0] == Status.IMAGE_CONTENT
    model = ModelTransport(cfg)
    statuses = []
    for request in (encode_request(Opcode.IMAGE_BEGIN),
                    encode_request(Opcode.IMAGE_DATA, bytes(image)),
                    encode_request(Opcode.IMAGE_END)):
        model.write(request)
        statuses.append(Status(frames.parse_responses(model.read(len(model._out), 0))[0].status))
    assert next(s for s in statuses if s != Status.OK) == Status.IMAGE_CONTENT, statuses


def test_image_loader_begin_restarts_a_load():
    image = _image()
    error, complete, _ = load(image[:20])
    assert (error, complete) == (Status.OK, 0)
    error, complete, _ = load(image)                # a fresh loader after `begin`
    assert (error, complete) == (Status.OK, 1)


# -- CommandExecutor ----------------------------------------------------------------------------

def execute(requests, busy=0, loader_complete=0):
    """Present each (opcode, payload, error) to a CommandExecutor whose engine is `busy`; each
    request's payload is offered as a stream. Returns [(status, kind)] of the responses and the
    count of engine starts, input writes and image bytes passed to the loader."""
    dut = CommandExecutor(CONFIG)
    answers, counts = [], {"start": 0, "input": 0, "image": 0, "begin": 0}

    async def bench(ctx):
        ctx.set(dut.busy, busy)
        ctx.set(dut.loader.complete, loader_complete)
        ctx.set(dut.loader.idle, 1)
        ctx.set(dut.loader.error, Status.OK)
        ctx.set(dut.image.ready, 1)
        ctx.set(dut.response.ready, 1)
        for opcode, payload, error in requests:
            ctx.set(dut.request.valid, 1)
            ctx.set(dut.request.payload, {"opcode": opcode, "length": len(payload),
                                          "error": error})
            at, done = 0, False
            for _ in range(4 * MAX_PAYLOAD):
                offer = at < len(payload)
                ctx.set(dut.payload.valid, offer)
                ctx.set(dut.payload.payload, {"data": payload[at] if offer else 0,
                                              "last": at == len(payload) - 1})
                (_, _, p_ready, req_ready, r_valid, r, start, wr_en, img_valid, begin
                 ) = await ctx.tick().sample(
                    dut.payload.ready, dut.request.ready, dut.response.valid,
                    dut.response.payload, dut.start, dut.input_wr.en, dut.image.valid,
                    dut.loader.begin)
                counts["start"] += start
                counts["input"] += wr_en
                counts["image"] += img_valid
                counts["begin"] += begin
                if offer and p_ready:
                    at += 1
                if r_valid:
                    answers.append((Status(r.status), Reply(r.kind)))
                    assert req_ready, "a request is released with its answer"
                    done = True
                    break
            assert done, f"no answer to {opcode:#x}"
            ctx.set(dut.request.valid, 0)
            await ctx.tick()

    simulate(dut, bench)
    return answers, counts


def _request(opcode):
    payload = {Opcode.IMAGE_DATA: b"\x4e\x53", Opcode.WRITE_INPUT: bytes(INPUT_BYTES),
               Opcode.INFER: bytes(INPUT_BYTES)}.get(opcode, b"")
    return (opcode, payload, Status.OK)


# Written out here, not taken from firmware.frames.PRECONDITIONS: what would change what a
# running inference reads, or read a result not there yet.
REFUSED_WHILE_BUSY = [Opcode.WRITE_INPUT, Opcode.IMAGE_BEGIN, Opcode.IMAGE_DATA,
                      Opcode.IMAGE_END, Opcode.START, Opcode.INFER, Opcode.READ_RESULT]


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_executor_refuses_exactly_the_memory_changes_while_busy(opcode):
    answers, counts = execute([_request(opcode)], busy=1)
    if opcode in REFUSED_WHILE_BUSY:
        assert answers == [(Status.BUSY, Reply.NONE)]
        assert counts == {"start": 0, "input": 0, "image": 0, "begin": 0}
    else:
        assert answers[0][0] == Status.OK


STATES = {"idle": 0, "busy": 1}
LENGTHS = [0, 1, INPUT_BYTES, 7]


@pytest.mark.parametrize("busy", STATES.values(), ids=STATES.keys())
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"len{n}")
def test_executor_answers_every_opcode_as_the_precondition_table_says(length, busy):
    """From reset (no image, no result): every opcode and unknown ones, IMAGE_BEGIN last (the
    one that passing changes another's precondition); an input written counts for START."""
    opcodes = [op for op in Opcode if op != Opcode.IMAGE_BEGIN] + [0x00, 0xFF,
                                                                   Opcode.IMAGE_BEGIN]
    answers, _ = execute([(op, bytes(length), Status.OK) for op in opcodes], busy=busy)
    state = dict(loading=False, image=False, input=False, result=False)
    expected = []
    for op in opcodes:
        expected.append(frames.refusal(op, length, CONFIG.n_inputs, busy=busy, **state))
        state["input"] |= op == Opcode.WRITE_INPUT and expected[-1] == Status.OK
    assert [status for status, _ in answers] == expected


@pytest.mark.parametrize("error", [Status.BAD_CRC, Status.BAD_LENGTH, Status.TIMEOUT],
                         ids=lambda s: s.name)
def test_executor_answers_a_receive_error_and_executes_nothing(error):
    answers, counts = execute([(Opcode.START, b"", error), (Opcode.IMAGE_BEGIN, b"", error),
                               (Opcode.WRITE_INPUT, bytes(INPUT_BYTES), error)])
    assert answers == [(error, Reply.NONE)] * 3
    assert counts == {"start": 0, "input": 0, "image": 0, "begin": 0}


def test_executor_runs_a_load_and_an_inference_in_order():
    answers, counts = execute([_request(Opcode.IMAGE_BEGIN), _request(Opcode.IMAGE_DATA),
                               _request(Opcode.IMAGE_END), _request(Opcode.WRITE_INPUT),
                               _request(Opcode.START), _request(Opcode.READ_STATUS)],
                              loader_complete=1)
    assert answers == [(Status.OK, Reply.NONE)] * 5 + [(Status.OK, Reply.STATUS)]
    assert counts == {"start": 1, "input": INPUT_BYTES, "image": 2, "begin": 1}


# -- ResponseSender -----------------------------------------------------------------------------

def _result():
    rng = np.random.default_rng(SEED)
    n = CONFIG.n_classes
    return frames.InferenceResult(
        int(rng.integers(n)), tuple(int(v) for v in rng.integers(-2 ** 12, 2 ** 12, n)),
        tuple(int(v) for v in rng.integers(0, CONFIG.samples + 1, n)), 0x89ABCDEF)


RESULT = _result()
DEVICE_STATUS = (DeviceState.LOADING, 1, Status.IMAGE_CRC, 0x01020304)
PAYLOADS = {
    Reply.NONE: b"",
    Reply.IDENTIFY: frames.encode_identify(CONFIG),
    Reply.RESULT: frames.encode_result(CONFIG.n_classes, frames.score_bytes(CONFIG), RESULT),
    Reply.STATUS: frames.encode_status(*DEVICE_STATUS),
    Reply.COMPACT: frames.encode_compact(CONFIG.n_classes, RESULT),
}


def send(status, kind, stall_every=0):
    """The bytes a ResponseSender sends for (status, kind); tx.ready low every `stall_every`
    cycles. Also whether the response was taken only after its last byte."""
    dut = ResponseSender(CONFIG)
    sent, out = bytearray(), {}

    async def bench(ctx):
        ctx.set(dut.result, {"cls": RESULT.cls, "scores": list(RESULT.scores),
                             "votes": list(RESULT.votes), "cycles": RESULT.cycles})
        state, valid, error, inferences = DEVICE_STATUS
        ctx.set(dut.status, {"state": state, "image_valid": valid, "last_error": error,
                             "inferences": inferences})
        ctx.set(dut.response.valid, 1)
        ctx.set(dut.response.payload, {"status": status, "kind": kind})
        for cycle in range(2000):
            ready = not (stall_every and cycle % stall_every == 0)
            ctx.set(dut.tx.ready, ready)
            _, _, valid, byte, taken = await ctx.tick().sample(dut.tx.valid, dut.tx.payload,
                                                              dut.response.ready)
            if valid and ready:
                sent.append(byte)
            if taken:
                out["taken_at"] = len(sent)
                break

    simulate(dut, bench)
    return bytes(sent), out.get("taken_at")


@pytest.mark.parametrize("kind", list(Reply), ids=lambda k: k.name)
@pytest.mark.parametrize("stall", [0, 3], ids=["ready", "stalled"])
def test_response_sender_frames_each_payload(kind, stall):
    status = Status.OK if kind != Reply.NONE else Status.NO_IMAGE
    frame, taken_at = send(status, kind, stall)
    assert frame == frames.encode_response(status, PAYLOADS[kind])
    assert taken_at == len(frame)
