"""The device side of the framed UART protocol (firmware/frames.py, docs/protocol.md).

Four components connected by `amaranth.lib.stream`s, each with one job:

    rx bytes -> FrameReceiver -> request + payload bytes -> CommandExecutor -> response
                                                    image bytes |                 |
                                                   ImageLoader <-+   ResponseSender -> tx bytes

`FrameReceiver` takes a request whole into its payload buffer and checks its CRC-8 before
anything acts on it, so a damaged frame never touches the engine; its one timeout guard drops a
frame that stops half-way (TIMEOUT). `CommandExecutor` checks each request against its opcode's
preconditions (`firmware.frames.PRECONDITIONS`, in one place) and acts: engine start, input
writes, image bytes to the loader. `ImageLoader` checks the image header against the constants
of this configuration (`firmware/image_format.py`), assembles and writes the words of each
section, refuses values the hardware cannot use, and checks the CRC-32 trailer through the
`amaranth.lib.crc` processor; the image becomes valid only at IMAGE_END with every check passed.
`ResponseSender` frames the answer. A request is released only once its answer is on the wire,
so what the answer shows cannot change under it and the next request waits in the receive
buffer in front of this interface (hw/top.py).
"""

import dataclasses
import struct

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.frames import (PRECONDITIONS, STATE_CHECKS, STATUS_FORMAT, DeviceStatus,
                             PayloadRule, compact_length, encode_identify, input_length,
                             result_format, score_bytes)
from firmware.image_format import (CRC_BYTES, FIELD_OFFSETS, MAX_DATA_BYTES, encode_header,
                                   header_status, image_length, image_sections, word_bytes)
from model.config import NSMConfig

from .interfaces import EngineSignature, ResultLayout, WriteSignature
from .protocol import (FRAME_CRC, IMAGE_CRC, MAX_PAYLOAD, SYNC_REQUEST, SYNC_RESPONSE,
                       DeviceState, Opcode, Status, frame_timeout_cycles)

__all__ = ["HostInterface", "FrameReceiver", "CommandExecutor", "ImageLoader", "ResponseSender",
           "Reply", "RequestLayout", "PayloadByte", "ResponseLayout", "DeviceStatusLayout",
           "LoaderSignature"]


class Reply(enum.Enum, shape=3):
    """Which payload a response carries."""
    NONE = 0
    IDENTIFY = 1
    RESULT = 2
    STATUS = 3
    COMPACT = 4


#: A received frame: its opcode and payload length, or the error that ended it (OK: intact).
RequestLayout = data.StructLayout({"opcode": 8, "length": range(MAX_PAYLOAD + 1),
                                   "error": Status})
#: One buffered payload byte; `last` marks the frame's final one.
PayloadByte = data.StructLayout({"data": 8, "last": 1})
#: An answer to send: its status and which payload goes with it.
ResponseLayout = data.StructLayout({"status": Status, "kind": Reply})
#: What READ_STATUS reports (`firmware.frames.DeviceStatus`, field for field).
DeviceStatusLayout = data.StructLayout({"state": DeviceState, "image_valid": 1,
                                        "last_error": Status, "inferences": 32})
assert tuple(DeviceStatusLayout.members) == tuple(f.name for f in dataclasses.fields(DeviceStatus))


class LoaderSignature(wiring.Signature):
    """The image loader as the executor drives it: `begin` restarts a load; `error` is the
    first failed check (OK: none), `complete` says the trailer has been taken, and `idle` that
    the verdict on every byte taken so far is in `error`."""

    def __init__(self):
        super().__init__({"begin": Out(1), "error": In(Status), "complete": In(1),
                          "idle": In(1)})


def _byte_fields(value, nbytes, signed=False):
    """`value` as `nbytes` little-endian bytes, sign- or zero-extended."""
    value = Value.cast(value)
    pad = 8 * nbytes - len(value)
    fill = value[-1].replicate(pad) if signed else Const(0, pad)
    wide = Cat(value, fill)[:8 * nbytes]
    return [wide[8 * i:8 * i + 8] for i in range(nbytes)]


def _first(checks, otherwise):
    """The status of the first (condition, status) whose condition holds, else `otherwise`."""
    value = Value.cast(otherwise)
    for condition, status in reversed(checks):
        value = Mux(condition, status, value)
    return value


class FrameReceiver(wiring.Component):
    """Request bytes in; each frame out once its CRC-8 is checked. `request` (opcode, length,
    or the error that ended the frame) stays valid until taken; meanwhile `payload` streams the
    buffered payload, one byte a cycle."""

    def __init__(self, timeout_cycles: int):
        self._timeout = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "request": Out(stream.Signature(RequestLayout)),
            "payload": Out(stream.Signature(PayloadByte)),
        })

    def elaborate(self, platform):
        m = Module()
        byte = self.rx.payload
        request = self.request.payload

        # The payload buffer (block RAM): written as bytes arrive, read once the CRC matched.
        m.submodules.buffer = buffer = Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        write, read = buffer.write_port(), buffer.read_port(domain="sync")
        index = Signal(range(MAX_PAYLOAD + 1))
        m.submodules.rx_crc = crc = FRAME_CRC.create()
        m.d.comb += [crc.data.eq(byte), write.data.eq(byte), write.addr.eq(index)]

        # The one timeout guard: it runs while no byte is offered.
        timer = Signal(range(self._timeout + 1))
        with m.If(self.rx.valid):
            m.d.sync += timer.eq(0)
        with m.Elif(timer != self._timeout):
            m.d.sync += timer.eq(timer + 1)

        # Reading: the synchronous port's address looks one byte ahead of the one offered.
        taken = self.payload.valid & self.payload.ready
        m.d.comb += [read.addr.eq(index + taken),
                     self.payload.payload.data.eq(read.data),
                     self.payload.payload.last.eq(index == request.length - 1)]

        def end(error):
            m.d.sync += [request.error.eq(error), index.eq(0)]
            m.next = "HELD"

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.rx.valid & (byte == SYNC_REQUEST)):
                    m.d.comb += crc.start.eq(1)
                    m.next = "OPCODE"

            # The bytes after the sync, each as its state says; a frame that stops is dropped.
            for state in ("OPCODE", "LEN0", "LEN1", "PAYLOAD", "CRC"):
                with m.State(state):
                    m.d.comb += self.rx.ready.eq(1)
                    if state != "CRC":
                        m.d.comb += crc.valid.eq(self.rx.valid)
                    else:
                        m.d.comb += read.addr.eq(0)    # byte 0 is offered first
                    with m.If(self.rx.valid):
                        self._on_byte(m, state, index, write, crc, end)
                    with m.Elif(timer == self._timeout):
                        end(Status.TIMEOUT)

            # Held until the executor has answered it; the payload is read meanwhile.
            with m.State("HELD"):
                m.d.comb += [self.request.valid.eq(1),
                             self.payload.valid.eq(index != request.length)]
                with m.If(taken):
                    m.d.sync += index.eq(index + 1)
                with m.If(self.request.ready):
                    m.next = "HUNT"
        return m

    def _on_byte(self, m, state, index, write, crc, end):
        """The byte of `state` (OPCODE, LEN0, LEN1, PAYLOAD or CRC) has arrived."""
        byte, request = self.rx.payload, self.request.payload
        if state == "OPCODE":
            m.d.sync += request.opcode.eq(byte)
            m.next = "LEN0"
        elif state == "LEN0":
            m.d.sync += request.length.eq(byte)
            m.next = "LEN1"
        elif state == "LEN1":
            length = Cat(request.length[:8], byte)
            m.d.sync += [request.length[8:].eq(byte), index.eq(0)]
            with m.If(length > MAX_PAYLOAD):
                end(Status.BAD_LENGTH)   # what follows is skipped as garbage
            with m.Elif(length == 0):
                m.next = "CRC"
            with m.Else():
                m.next = "PAYLOAD"
        elif state == "PAYLOAD":
            m.d.comb += write.en.eq(1)
            m.d.sync += index.eq(index + 1)
            with m.If(index == request.length - 1):
                m.next = "CRC"
        else:
            end(Mux(byte == crc.crc, Status.OK, Status.BAD_CRC))


class ImageLoader(wiring.Component):
    """Image bytes in, engine memory writes out; `control` (`LoaderSignature`, flipped) says
    how the load stands. A failed check stops the load: no byte after it is written."""

    #: The engine's write port (`EngineSignature`) of each image section.
    PORTS = {"weights": "weight_wr", "a": "a_wr", "bias": "bias_wr", "seeds": "seed_wr"}

    def __init__(self, config: NSMConfig):
        self._config = config
        super().__init__({"data": In(stream.Signature(8)), "control": In(LoaderSignature()),
                          **{self.PORTS[name]: Out(WriteSignature(words, bits))
                             for name, words, bits in image_sections(config)}})

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        ctl = self.control

        # Where the load is, from this configuration's image layout.
        header = encode_header(cfg)
        sections = image_sections(cfg)
        n_body_end = len(header) + sum(words * word_bytes(bits) for _, words, bits in sections)
        max_word_bytes = max(word_bytes(bits) for _, _, bits in sections)
        position = Signal(range(image_length(cfg, MAX_DATA_BYTES) + 2))
        data_length = Signal(16)
        crc_at = n_body_end + data_length          # the first trailer byte
        section = Signal(range(len(sections) + 1))
        word = Signal(range(max(words for _, words, _ in sections) + 1))
        word_byte = Signal(range(max_word_bytes + 1))
        word_buf = Signal(8 * max_word_bytes)
        content_bad = Signal()   # a finished word holds a value the hardware cannot use
        error = Signal(Status)
        m.d.comb += [ctl.error.eq(error), ctl.complete.eq(position == crc_at + CRC_BYTES)]

        # A byte is taken while no check has failed; the trailer's verdict takes a cycle.
        trailer_end = Signal()
        byte = self.data.payload
        feed = self.data.valid & self.data.ready & (error == Status.OK)
        m.d.comb += [self.data.ready.eq(~trailer_end), ctl.idle.eq(~trailer_end)]

        # The CRC-32 unit takes the trailer too: an intact image leaves its residue.
        m.submodules.image_crc = crc = IMAGE_CRC.create()
        m.d.comb += [crc.start.eq(ctl.begin), crc.data.eq(byte),
                     crc.valid.eq(feed & (position < crc_at + CRC_BYTES))]

        # Word assembly: the byte lands at its little-endian place; the last one writes.
        assembled = Signal.like(word_buf)
        m.d.comb += assembled.eq(word_buf)
        with m.Switch(word_byte):
            for i in range(max_word_bytes):
                with m.Case(i):
                    m.d.comb += assembled.word_select(i, 8).eq(byte)
        in_body = (position >= len(header)) & (position < n_body_end)
        last_byte = Array(Const(word_bytes(bits) - 1, 8) for _, _, bits in sections)
        last_word = Array(Const(words - 1, 32) for _, words, _ in sections)
        word_done = feed & in_body & (word_byte == last_byte[section])

        written, word_bad = self._write_word(m, section, word, assembled, word_done)
        with m.If(written):
            m.d.sync += content_bad.eq(content_bad | word_bad)

        # Each byte by where it lies: header, body (words), data (the CRC alone covers it),
        # trailer, or past the end.
        with m.If(feed):
            m.d.sync += position.eq(position + 1)
            with m.If(position < len(header)):
                self._header_byte(m, header, position, byte, error, data_length)
            with m.Elif(in_body):
                m.d.sync += word_buf.eq(assembled)
                with m.If(word_done):
                    m.d.sync += [word_byte.eq(0), word_buf.eq(0), word.eq(word + 1)]
                    with m.If(word == last_word[section]):
                        m.d.sync += [word.eq(0), section.eq(section + 1)]
                with m.Else():
                    m.d.sync += word_byte.eq(word_byte + 1)
            with m.Elif(position == crc_at + CRC_BYTES - 1):
                m.d.sync += trailer_end.eq(1)
            with m.Elif(position >= crc_at + CRC_BYTES):
                m.d.sync += error.eq(Status.IMAGE_LENGTH)

        # The trailer's verdict, the cycle after its last byte: contents are judged only once
        # the image is known intact.
        with m.If(trailer_end):
            m.d.sync += [trailer_end.eq(0),
                         error.eq(_first([(~crc.match_detected, Status.IMAGE_CRC),
                                          (content_bad, Status.IMAGE_CONTENT)], Status.OK))]

        with m.If(ctl.begin):
            m.d.sync += [position.eq(0), section.eq(0), word.eq(0), word_byte.eq(0),
                         word_buf.eq(0), data_length.eq(0), content_bad.eq(0),
                         trailer_end.eq(0), error.eq(Status.OK)]
        return m

    @staticmethod
    def _header_byte(m, header, position, byte, error, data_length):
        """A header byte: checked against this configuration's where `header_status` says,
        the data length kept."""
        expected = Array(Const(b, 8) for b in header)
        refusal = Array(Const(0 if st is None else st.value, 8)
                        for st in map(header_status, range(len(header))))
        data_at = FIELD_OFFSETS["data_length"][0]
        with m.If((byte != expected[position]) & (refusal[position] != 0)):
            m.d.sync += error.eq(refusal[position])
        with m.If(position == data_at):
            m.d.sync += data_length[:8].eq(byte)
        with m.If(position == data_at + 1):
            m.d.sync += data_length[8:].eq(byte)

    def _write_word(self, m, section, word, assembled, word_done):
        """The finished word goes to address `word` of its section's port in the cycle after
        its last byte, from registers: the byte comes straight from the receiver's block RAM,
        and a weight word's bits go to every block RAM of the weight memory and through its
        lanes * P checks, too long a path for one cycle. Returns (the write's cycle, whether
        the word holds a value the hardware cannot use: set padding bits, a weight of -2^(w-1)
        (outside the symmetric range the accumulators are sized for), a zero LFSR seed (stuck
        at zero))."""
        cfg = self._config
        written, data = Signal(), Signal.like(assembled)
        addr, at = Signal.like(word), Signal.like(section)
        m.d.sync += written.eq(word_done)
        with m.If(word_done):
            m.d.sync += [data.eq(assembled), addr.eq(word), at.eq(section)]
        word_bad = Signal()
        ports = [getattr(self, self.PORTS[name]) for name, _, _ in image_sections(cfg)]
        for port in ports:
            m.d.comb += [port.addr.eq(addr), port.data.eq(data)]
        with m.Switch(at):
            for n, (port, (name, _, bits)) in enumerate(zip(ports, image_sections(cfg))):
                with m.Case(n):
                    m.d.comb += port.en.eq(written)
                    bad = data[bits:] != 0
                    if name == "weights":
                        w = cfg.weight_bits
                        for n in range(cfg.lanes * cfg.inputs_per_cycle):
                            bad |= data[n * w:(n + 1) * w] == 1 << (w - 1)
                    if name == "seeds":
                        bad |= data[:bits] == 0
                    m.d.comb += word_bad.eq(bad)
        return written, word_bad


class CommandExecutor(wiring.Component):
    """Requests in, responses out: each request's preconditions (`PRECONDITIONS`) checked in
    one place, then its action on the device state, the engine and the image loader."""

    def __init__(self, config: NSMConfig):
        self._config = config
        super().__init__({
            "request": In(stream.Signature(RequestLayout)),
            "payload": In(stream.Signature(PayloadByte)),
            "response": Out(stream.Signature(ResponseLayout)),
            "image": Out(stream.Signature(8)),
            "loader": Out(LoaderSignature()),
            "start": Out(1),
            "busy": In(1),
            "done": In(1),
            "input_wr": Out(WriteSignature(input_length(config.n_inputs), 8)),
            "status": Out(DeviceStatusLayout),
            "loading": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        request = self.request.payload
        opcode = request.opcode

        # Device state (the flags `STATE_CHECKS` names), shown to READ_STATUS.
        flags = {"loading": Signal(), "image": Signal(), "input": Signal(), "result": Signal()}
        inferences, last_error = Signal(32), Signal(Status)
        with m.If(self.done):
            m.d.sync += flags["result"].eq(1)
        self._show_status(m, flags, inferences, last_error)

        # A refused request is answered with its verdict, and nothing else is done.
        verdict = self._verdict(m, flags)

        # The answer, held until sent; the request is released with it.
        answer = Signal(ResponseLayout)
        m.d.comb += self.response.payload.eq(answer)

        def respond(status, kind=Reply.NONE):
            m.d.sync += [answer.status.eq(status), answer.kind.eq(kind)]
            if not isinstance(status, Status):
                with m.If(status != Status.OK):
                    m.d.sync += last_error.eq(status)
            elif status != Status.OK:
                m.d.sync += last_error.eq(status)
            m.next = "RESPOND"

        def start():
            m.d.comb += self.start.eq(1)
            m.d.sync += [flags["result"].eq(0), inferences.eq(inferences + 1)]

        # Payload bytes: image bytes to the loader, input bytes to the engine.
        address = Signal(range(input_length(self._config.n_inputs)))
        last = self.payload.valid & self.payload.ready & self.payload.payload.last
        m.d.comb += [self.image.payload.eq(self.payload.payload.data),
                     self.input_wr.addr.eq(address),
                     self.input_wr.data.eq(self.payload.payload.data)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.request.valid & (verdict != Status.OK)):
                    respond(verdict)
                with m.Elif(self.request.valid):
                    self._act(m, opcode, flags, respond, start, address)

            with m.State("IMAGE_FEED"):
                m.d.comb += [self.image.valid.eq(self.payload.valid),
                             self.payload.ready.eq(self.image.ready)]
                with m.If(last):
                    m.next = "IMAGE_CHECK"
            with m.State("IMAGE_CHECK"):
                with m.If(self.loader.error != Status.OK):       # final: the first failure
                    m.d.sync += flags["loading"].eq(0)      # nothing of it can become valid
                    respond(self.loader.error)
                with m.Elif(self.loader.idle):
                    respond(Status.OK)

            with m.State("INPUT_FEED"):
                m.d.comb += [self.payload.ready.eq(1), self.input_wr.en.eq(self.payload.valid)]
                with m.If(self.payload.valid):
                    m.d.sync += address.eq(address + 1)
                with m.If(last):
                    m.d.sync += flags["input"].eq(1)
                    with m.If(opcode == Opcode.INFER):
                        m.next = "INFER_START"
                    with m.Else():
                        respond(Status.OK)

            # INFER: run, and answer when the result is there.
            with m.State("INFER_START"):
                start()
                m.next = "INFER_RUN"
            with m.State("INFER_RUN"):
                with m.If(flags["result"] & ~self.busy):
                    respond(Status.OK, Reply.COMPACT)

            with m.State("RESPOND"):
                m.d.comb += [self.response.valid.eq(1),
                             self.request.ready.eq(self.response.ready)]
                with m.If(self.response.ready):
                    m.next = "IDLE"
        return m

    def _show_status(self, m, flags, inferences, last_error):
        state = Mux(self.busy, DeviceState.RUNNING,
                    Mux(flags["loading"], DeviceState.LOADING, DeviceState.IDLE))
        m.d.comb += [self.status.state.eq(state), self.status.image_valid.eq(flags["image"]),
                     self.status.last_error.eq(last_error),
                     self.status.inferences.eq(inferences), self.loading.eq(flags["loading"])]

    def _verdict(self, m, flags):
        """The request's answer if it is refused (else OK): a receive error, or the first
        precondition of its opcode's row of `PRECONDITIONS` that does not hold."""
        request = self.request.payload
        fits = {PayloadRule.NONE: request.length == 0, PayloadRule.SOME: request.length != 0,
                PayloadRule.INPUT: request.length == input_length(self._config.n_inputs)}
        verdict = Signal(Status)
        with m.Switch(request.opcode):
            for op, pre in PRECONDITIONS.items():
                with m.Case(op):
                    checks = [(~fits[pre.payload], Status.BAD_LENGTH)]
                    checks += [(self.busy, Status.BUSY)] if pre.idle else []
                    checks += [(~flags[flag], status) for flag, status in STATE_CHECKS
                               if getattr(pre, flag)]
                    m.d.comb += verdict.eq(_first(checks, Status.OK))
            with m.Default():
                m.d.comb += verdict.eq(Status.UNKNOWN_OPCODE)
        with m.If(request.error != Status.OK):
            m.d.comb += verdict.eq(request.error)
        return verdict

    def _act(self, m, opcode, flags, respond, start, address):
        """What each request does once its preconditions hold."""
        with m.Switch(opcode):
            with m.Case(Opcode.IDENTIFY):
                respond(Status.OK, Reply.IDENTIFY)
            with m.Case(Opcode.READ_STATUS):
                respond(Status.OK, Reply.STATUS)
            with m.Case(Opcode.READ_RESULT):
                respond(Status.OK, Reply.RESULT)
            with m.Case(Opcode.IMAGE_BEGIN):
                m.d.comb += self.loader.begin.eq(1)
                m.d.sync += [flags["image"].eq(0), flags["loading"].eq(1)]
                respond(Status.OK)
            with m.Case(Opcode.IMAGE_DATA):
                m.next = "IMAGE_FEED"
            with m.Case(Opcode.IMAGE_END):
                m.d.sync += [flags["loading"].eq(0), flags["image"].eq(self.loader.complete)]
                respond(Mux(self.loader.complete, Status.OK, Status.IMAGE_LENGTH))
            with m.Case(Opcode.START):
                start()
                respond(Status.OK)
            with m.Case(Opcode.WRITE_INPUT, Opcode.INFER):
                m.d.sync += [flags["input"].eq(0), address.eq(0)]
                m.next = "INPUT_FEED"


class ResponseSender(wiring.Component):
    """A response in, its frame out as bytes: sync, status, length, payload, CRC-8. The
    payload is read from `result` and `status` as it is sent; the response is taken once its
    last byte is."""

    def __init__(self, config: NSMConfig):
        self._config = config
        super().__init__({
            "response": In(stream.Signature(ResponseLayout)),
            "tx": Out(stream.Signature(8)),
            "result": In(ResultLayout(config)),
            "status": In(DeviceStatusLayout),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        response = self.response.payload

        # Each payload, byte by byte, in the layouts of firmware/frames.py.
        result = self.result
        values = {"cls": result.cls, "cycles": result.cycles}
        for c in range(cfg.n_classes):
            values[f"score{c}"], values[f"votes{c}"] = result.scores[c], result.votes[c]
        status_sizes = [struct.calcsize("<" + code) for code in STATUS_FORMAT[1:]]
        tables = {
            Reply.IDENTIFY: [Const(b, 8) for b in encode_identify(cfg)],
            Reply.RESULT: [byte for name, nbytes, signed in result_format(cfg.n_classes,
                                                                          score_bytes(cfg))
                           for byte in _byte_fields(values[name], nbytes, signed)],
            Reply.STATUS: [byte for name, size in zip(DeviceStatusLayout.members, status_sizes)
                           for byte in _byte_fields(getattr(self.status, name), size)],
            Reply.COMPACT: [result.cls] + [byte for c in range(cfg.n_classes)
                                           for byte in _byte_fields(result.votes[c], 2)],
        }
        assert len(tables[Reply.COMPACT]) == compact_length(cfg.n_classes)

        # The byte at `index` of the payload `kind` names, and that payload's length.
        index = Signal(range(max(len(t) for t in tables.values()) + 1))
        length = Signal.like(index)
        payload_byte = Signal(8)
        with m.Switch(response.kind):
            for kind, table in tables.items():
                with m.Case(kind):
                    m.d.comb += [payload_byte.eq(Array(table)[index]), length.eq(len(table))]

        # The frame; the CRC covers every byte after the sync.
        m.submodules.tx_crc = crc = FRAME_CRC.create()
        m.d.comb += crc.valid.eq(self.tx.valid & self.tx.ready)
        with m.FSM():
            with m.State("SYNC"):
                m.d.comb += [self.tx.valid.eq(self.response.valid),
                             self.tx.payload.eq(SYNC_RESPONSE), crc.start.eq(1), crc.valid.eq(0)]
                m.d.sync += index.eq(0)
                with m.If(self.tx.valid & self.tx.ready):
                    m.next = "STATUS"
            for state, byte, next_state in (("STATUS", response.status, "LEN0"),
                                            ("LEN0", length[:8], "LEN1"),
                                            ("LEN1", length[8:], "PAYLOAD")):
                with m.State(state):
                    m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(byte),
                                 crc.data.eq(byte)]
                    with m.If(self.tx.ready):
                        m.next = next_state
            with m.State("PAYLOAD"):
                m.d.comb += [self.tx.valid.eq(index != length), self.tx.payload.eq(payload_byte),
                             crc.data.eq(payload_byte)]
                with m.If(index == length):
                    m.next = "CRC"
                with m.Elif(self.tx.ready):
                    m.d.sync += index.eq(index + 1)
            with m.State("CRC"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(crc.crc), crc.valid.eq(0)]
                with m.If(self.tx.ready):
                    m.d.comb += self.response.ready.eq(1)
                    m.next = "SYNC"
        return m


class HostInterface(wiring.Component):
    """Bytes from the UART in, responses out; drives the engine (flipped `EngineSignature`)."""

    def __init__(self, config: NSMConfig, baud_divisor: int):
        self._config = config
        self._timeout = frame_timeout_cycles(baud_divisor)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "engine": Out(EngineSignature(config).flip()),
            "image_valid": Out(1),
            "loading": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        engine = self.engine
        m.submodules.receiver = receiver = FrameReceiver(self._timeout)
        m.submodules.executor = executor = CommandExecutor(self._config)
        m.submodules.loader = loader = ImageLoader(self._config)
        m.submodules.sender = sender = ResponseSender(self._config)

        # Requests in, responses out.
        wiring.connect(m, wiring.flipped(self.rx), receiver.rx)
        wiring.connect(m, receiver.request, executor.request)
        wiring.connect(m, receiver.payload, executor.payload)
        wiring.connect(m, executor.response, sender.response)
        wiring.connect(m, sender.tx, wiring.flipped(self.tx))
        m.d.comb += sender.status.eq(executor.status)

        # Image bytes through the loader into the engine's memories.
        wiring.connect(m, executor.image, loader.data)
        wiring.connect(m, executor.loader, loader.control)
        for name in ("weight_wr", "a_wr", "bias_wr", "seed_wr"):
            wiring.connect(m, getattr(loader, name), wiring.flipped(getattr(engine, name)))

        # The engine's input, start and result.
        wiring.connect(m, executor.input_wr, wiring.flipped(engine.input_wr))
        m.d.comb += [engine.start.eq(executor.start), executor.busy.eq(engine.busy),
                     executor.done.eq(engine.done), sender.result.eq(engine.result),
                     self.image_valid.eq(executor.status.image_valid),
                     self.loading.eq(executor.loading)]
        return m
