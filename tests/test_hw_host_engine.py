"""HostInterface (hw/host.py) driving the REAL NSMEngine (hw/engine.py) in Amaranth's simulator.

tests/test_hw_host.py checks every opcode and error against a behavioural fake engine; this file
checks what only the real engine can show, at the byte level of the protocol (no UART bit times):
an image loaded through IMAGE_* frames lands where the engine reads it, READ_RESULT's bytes
(class, sign-extended scores, votes, cycles) equal `model.golden.run` image for image, the LFSR
states carry from one inference to the next, and loading the image again restarts them from its
seeds. Replay a failure with the seed printed in its message.
"""

import struct

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from firmware.image import write_image
from hw.engine import NSMEngine
from hw.host import HostInterface, result_payload_length
from hw.protocol import FRAME_CRC, MAX_PAYLOAD, SYNC_REQUEST, SYNC_RESPONSE, Opcode, Status
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


def request(opcode: Opcode, payload: bytes = b"") -> bytes:
    body = bytes([opcode.value]) + struct.pack("<H", len(payload)) + payload
    return bytes([SYNC_REQUEST]) + body + bytes([FRAME_CRC.compute(body)])


def input_bytes(config: NSMConfig, bits) -> bytes:
    """WRITE_INPUT payload: input j is bit j % 8 of byte j // 8 (1 = +1)."""
    out = bytearray(-(-config.n_inputs // 8))
    for j, bit in enumerate(bits):
        out[j // 8] |= int(bit) << (j % 8)
    return bytes(out)


def parse_result(config: NSMConfig, payload: bytes) -> dict:
    """READ_RESULT payload -> class, scores (signed), votes, cycles."""
    assert len(payload) == result_payload_length(config)
    score_bytes = -(-config.score_bits // 8)
    cls, at, scores, votes = payload[0], 1, [], []
    for _ in range(config.n_classes):
        scores.append(int.from_bytes(payload[at:at + score_bytes], "little", signed=True))
        votes.append(int.from_bytes(payload[at + score_bytes:at + score_bytes + 2], "little"))
        at += score_bytes + 2
    cycles = int.from_bytes(payload[at:at + 4], "little")
    return dict(cls=cls, scores=scores, votes=votes, cycles=cycles)


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
            for byte in request(opcode, payload):
                ctx.set(host.rx.valid, 1)
                ctx.set(host.rx.payload, byte)
                while not await step():
                    pass
            ctx.set(host.rx.valid, 0)
            for _ in range(20_000):
                if len(received) >= 5 and len(received) >= 5 + (received[2] | received[3] << 8):
                    break
                await step()
            else:
                raise AssertionError(f"no response to {opcode.name}; got {bytes(received)}")
            length = received[2] | received[3] << 8
            frame = bytes(received[:5 + length])
            del received[:5 + length]
            assert frame[0] == SYNC_RESPONSE and frame[-1] == FRAME_CRC.compute(frame[1:-1])
            return Status(frame[1]), frame[4:4 + length]

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
    assert await command(Opcode.WRITE_INPUT, input_bytes(config, bits)) == (Status.OK, b"")
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
