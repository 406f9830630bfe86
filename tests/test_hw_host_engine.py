"""HostInterface (hw/host.py) driving the REAL NSMEngine (hw/engine.py) in Amaranth's simulator.

tests/test_hw_host.py checks every opcode and error against a behavioural fake engine; this file
checks what only the real engine can show, at the byte level of the protocol (no UART bit times):
an image loaded through IMAGE_* frames lands where the engine reads it, READ_RESULT's bytes
(class, sign-extended scores, votes, cycles) equal `model.golden.run` image for image, the LFSR
states carry from one inference to the next, and loading the image again restarts them from its
seeds. Replay a failure with the seed printed in its message.
"""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from firmware import frames
from firmware.frames import MAX_PAYLOAD, Opcode, Status, encode_request
from firmware.image import write_image
from hw.engine import NSMEngine
from hw.host import HostInterface
from model import golden
from model.config import NSMConfig
from model.params import QuantizedNSM

BAUD_DIVISOR = 4
# Tiny, with lanes that do not divide the layers, both noise modes, K > 1; each with a seed for
# which the noise changes the scores of a repeated image (checked below), so that the LFSR
# checks cannot pass by luck.
CONFIGS = {
    "synapse": (NSMConfig(layer_sizes=(10, 5, 3), lanes=3, weight_bits=5, a_bits=7, a_frac=3,
                          bias_bits=9, lfsr_width=7, samples=4, name="host-engine-synapse"), 2),
    "input": (NSMConfig(layer_sizes=(11, 6, 5, 3), lanes=2, weight_bits=4, noise="input",
                        p_bits=3, p_keep=5, samples=4, name="host-engine-input"), 1),
}
IMAGES = 3


def parse_result(config: NSMConfig, payload: bytes) -> dict:
    r = frames.decode_result(config.n_classes, frames.score_bytes(config), payload)
    return dict(cls=r.cls, scores=list(r.scores), votes=list(r.votes), cycles=r.cycles)


def simulate(config: NSMConfig, scenario):
    """Run `scenario(command)` on host + real engine; `await command(opcode, payload)` sends a
    request byte by byte on the host's rx stream and returns the parsed (status, payload)."""
    m = Module()
    m.submodules.host = host = HostInterface(config, BAUD_DIVISOR)
    m.submodules.engine = engine = NSMEngine(config)
    wiring.connect(m, host.engine, engine)

    async def testbench(ctx):
        ctx.set(host.tx.ready, 1)
        received = bytearray()

        async def step():
            _, _, rx_ready, tx_valid, tx_byte = await ctx.tick().sample(
                host.rx.ready, host.tx.valid, host.tx.payload)
            if tx_valid:
                received.append(tx_byte)
            return rx_ready

        async def command(opcode, payload=b""):
            for byte in encode_request(opcode, payload):
                ctx.set(host.rx.valid, 1)
                ctx.set(host.rx.payload, byte)
                while not await step():
                    pass
            ctx.set(host.rx.valid, 0)
            for _ in range(20_000):
                if (len(received) >= frames.HEAD_BYTES
                        and len(received) >= frames.response_length(received[:4])):
                    break
                await step()
            else:
                raise AssertionError(f"no response to {opcode.name}; got {bytes(received)}")
            end = frames.response_length(received[:4])
            response = frames.decode_response(received[:end])
            del received[:end]
            return Status(response.status), response.payload

        await scenario(command)
        assert received == bytearray(), f"unasked bytes {bytes(received)}"

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


async def load(command, image: bytes):
    assert await command(Opcode.IMAGE_BEGIN) == (Status.OK, b"")
    for i in range(0, len(image), MAX_PAYLOAD):
        assert await command(Opcode.IMAGE_DATA, image[i:i + MAX_PAYLOAD]) == (Status.OK, b"")
    assert await command(Opcode.IMAGE_END) == (Status.OK, b"")


async def infer(command, config, bits) -> dict:
    assert await command(Opcode.WRITE_INPUT, frames.pack_input(2 * np.asarray(bits) - 1,
                                                               config.n_inputs)) == (Status.OK, b"")
    assert await command(Opcode.START) == (Status.OK, b"")
    while True:
        status, payload = await command(Opcode.READ_RESULT)
        if status == Status.OK:
            return parse_result(config, payload)
        assert status == Status.BUSY, status


@pytest.mark.parametrize("config,seed", CONFIGS.values(), ids=CONFIGS.keys())
def test_results_through_the_protocol_equal_the_golden_model(config, seed):
    rng = np.random.default_rng(seed)
    params = QuantizedNSM.random(config, rng)
    images = rng.integers(0, 2, size=(IMAGES, config.n_inputs))
    expected = golden.run(params, 2 * images - 1, trace=False)
    # Without the reload, image 0 run again (LFSRs carrying on) scores differently.
    carried_on = golden.run(params, 2 * images[:1] - 1, states=expected.final_states, trace=False)
    assert carried_on.scores[0].tolist() != expected.scores[0].tolist(), f"seed {seed}"
    got = []

    async def scenario(command):
        await load(command, write_image(params))
        for bits in images:
            got.append(await infer(command, config, bits))
        # A new load of the same image restarts the LFSRs from its seeds: image 0 again.
        await load(command, write_image(params))
        got.append(await infer(command, config, images[0]))

    simulate(config, scenario)
    where = f"seed {seed}, {config.describe()}"
    for n, result in enumerate(got):
        i = n % IMAGES if n < IMAGES else 0
        assert result["cls"] == int(expected.cls[i]), f"class, run {n}, {where}"
        assert result["scores"] == [int(s) for s in expected.scores[i]], f"scores, run {n}, {where}"
        assert result["votes"] == [int(v) for v in expected.votes[i]], f"votes, run {n}, {where}"
        assert result["cycles"] == NSMEngine.cycles_per_inference(config), f"cycles, {where}"


def test_commands_that_change_memories_are_refused_while_the_engine_really_runs():
    """The real engine busy: WRITE_INPUT, IMAGE_BEGIN/DATA/END and START answer exactly BUSY,
    and the inference that runs meanwhile still equals the golden model (nothing it reads was
    overwritten)."""
    # Long enough (K * 2176 cycles) that every command below arrives while it runs.
    config, seed = NSMConfig(layer_sizes=(64, 32, 4), lanes=1, samples=8, name="busy"), 5
    rng = np.random.default_rng(seed)
    params = QuantizedNSM.random(config, rng)
    images = rng.integers(0, 2, size=(2, config.n_inputs))
    expected = golden.run(params, 2 * images[:1] - 1, trace=False)
    other = frames.pack_input(2 * images[1] - 1, config.n_inputs)
    image = write_image(params)
    answers = []

    async def scenario(command):
        await load(command, image)
        assert await command(Opcode.WRITE_INPUT, frames.pack_input(
            2 * images[0] - 1, config.n_inputs)) == (Status.OK, b"")
        assert await command(Opcode.START) == (Status.OK, b"")
        for opcode, payload in ((Opcode.WRITE_INPUT, other), (Opcode.IMAGE_BEGIN, b""),
                                (Opcode.IMAGE_DATA, image[:MAX_PAYLOAD]),
                                (Opcode.IMAGE_END, b""), (Opcode.START, b""),
                                (Opcode.READ_RESULT, b"")):
            answers.append((opcode, await command(opcode, payload)))
        status, payload = await command(Opcode.READ_STATUS)
        answers.append((Opcode.READ_STATUS, frames.decode_status(payload).state))
        got.append(await infer_result(command, config))

    got = []
    simulate(config, scenario)
    assert answers == [(op, (Status.BUSY, b"")) for op in
                       (Opcode.WRITE_INPUT, Opcode.IMAGE_BEGIN, Opcode.IMAGE_DATA,
                        Opcode.IMAGE_END, Opcode.START, Opcode.READ_RESULT)] + [
        (Opcode.READ_STATUS, frames.DeviceState.RUNNING)], f"seed {seed}"
    result = got[0]
    assert result["scores"] == [int(s) for s in expected.scores[0]], f"seed {seed}"
    assert result["votes"] == [int(v) for v in expected.votes[0]], f"seed {seed}"


async def infer_result(command, config) -> dict:
    """READ_RESULT, polled while BUSY."""
    while True:
        status, payload = await command(Opcode.READ_RESULT)
        if status == Status.OK:
            return parse_result(config, payload)
        assert status == Status.BUSY, status


@pytest.mark.parametrize("config,seed", CONFIGS.values(), ids=CONFIGS.keys())
def test_streamed_infer_equals_the_golden_model(config, seed):
    """INFER with the real engine: each answer (class, votes) equals the golden model's, the
    LFSR states carried from one inference to the next."""
    rng = np.random.default_rng(seed)
    params = QuantizedNSM.random(config, rng)
    images = rng.integers(0, 2, size=(IMAGES, config.n_inputs))
    expected = golden.run(params, 2 * images - 1, trace=False)
    got = []

    async def scenario(command):
        await load(command, write_image(params))
        for bits in images:
            status, payload = await command(Opcode.INFER, frames.pack_input(
                2 * np.asarray(bits) - 1, config.n_inputs))
            assert status == Status.OK
            got.append(frames.decode_compact(config.n_classes, payload))

    simulate(config, scenario)
    for i, r in enumerate(got):
        assert (r.cls, list(r.votes)) == (int(expected.cls[i]),
                                          [int(v) for v in expected.votes[i]]), f"seed {seed}"
