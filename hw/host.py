"""The device side of the framed UART protocol (firmware/frames.py, docs/protocol.md).

A request is received whole into a payload buffer and its CRC-8 checked before anything acts on
it, so a damaged frame never touches the engine. Image bytes then go through the image loader,
which checks the header against the constants of this configuration (`firmware/image_format.py`),
assembles the words of each section and writes them through the engine's ports, refuses values
the hardware cannot use, and checks the image CRC-32; the image becomes valid only at IMAGE_END
with every check passed. Any error answers with its status and returns to idle; a frame that
stops half-way is dropped after a timeout (TIMEOUT).
"""

import struct

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.frames import (STATUS_FORMAT, compact_length, encode_identify, input_length,
                             result_format, score_bytes)
from firmware.image_format import (CRC_BYTES, FIELD_OFFSETS, MAX_DATA_BYTES, encode_header,
                                   header_status, image_length, image_sections, word_bytes)
from model.config import NSMConfig

from .interfaces import EngineSignature
from .protocol import (FRAME_CRC, IMAGE_CRC, MAX_PAYLOAD, NO_PAYLOAD, SYNC_REQUEST, SYNC_RESPONSE,
                       DeviceState, Opcode, Status, frame_timeout_cycles)

__all__ = ["HostInterface", "Reply"]


class Reply(enum.Enum, shape=3):
    """Which payload a response carries."""
    NONE = 0
    IDENTIFY = 1
    RESULT = 2
    STATUS = 3
    COMPACT = 4


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
        cfg = self._config
        m = Module()
        engine = self.engine

        # -- request parser state ------------------------------------------------------------
        opcode = Signal(8)
        length = Signal(16)
        count = Signal(16)
        m.submodules.payload = payload = Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        pay_write = payload.write_port()
        pay_read = payload.read_port(domain="sync")
        m.submodules.rx_crc = rx_crc = FRAME_CRC.create()
        m.submodules.tx_crc = tx_crc = FRAME_CRC.create()
        timeout = Signal(range(self._timeout + 1))

        # -- device state --------------------------------------------------------------------
        image_valid = Signal()
        loading = Signal()
        input_valid = Signal()
        streaming = Signal()     # the input being written is an INFER's: start, then answer
        have_result = Signal()
        inferences = Signal(32)
        last_error = Signal(8)
        m.d.comb += [self.image_valid.eq(image_valid), self.loading.eq(loading)]
        with m.If(engine.done):
            m.d.sync += have_result.eq(1)

        # -- response to send ------------------------------------------------------------------
        status = Signal(8)
        resp_len = Signal(16)
        resp_kind = Signal(Reply)
        send_index = Signal(16)

        def byte_fields(value, nbytes, signed=False):
            value = Value.cast(value)
            pad = 8 * nbytes - len(value)
            fill = value[-1].replicate(pad) if signed else Const(0, pad)
            wide = Cat(value, fill)[:8 * nbytes]
            return [wide[8 * i:8 * i + 8] for i in range(nbytes)]

        ident_bytes = [Const(b, 8) for b in encode_identify(cfg)]
        result_fields = {"cls": engine.result.cls, "cycles": engine.result.cycles}
        for c in range(cfg.n_classes):
            result_fields[f"score{c}"] = engine.result.scores[c]
            result_fields[f"votes{c}"] = engine.result.votes[c]
        result_bytes = [byte for name, nbytes, signed in result_format(cfg.n_classes,
                                                                         score_bytes(cfg))
                        for byte in byte_fields(result_fields[name], nbytes, signed)]
        device_state = Mux(engine.busy, DeviceState.RUNNING.value,
                           Mux(loading, DeviceState.LOADING.value, DeviceState.IDLE.value))
        status_values = (device_state, image_valid, last_error, inferences)
        status_bytes = [byte for value, code in zip(status_values, STATUS_FORMAT[1:])
                        for byte in byte_fields(value, struct.calcsize("<" + code))]
        compact_bytes = [engine.result.cls] + [
            byte for c in range(cfg.n_classes) for byte in byte_fields(engine.result.votes[c], 2)]
        assert len(compact_bytes) == compact_length(cfg.n_classes)
        payload_byte = Signal(8)
        with m.Switch(resp_kind):
            for kind, table in ((Reply.IDENTIFY, ident_bytes), (Reply.RESULT, result_bytes),
                                (Reply.STATUS, status_bytes), (Reply.COMPACT, compact_bytes)):
                with m.Case(kind):
                    m.d.comb += payload_byte.eq(Array(table)[send_index])

        def respond(code: Status, kind=Reply.NONE, size=0):
            """Answer with `code` and one of the payloads above, then hunt for the next frame."""
            stmts = [status.eq(code.value), resp_kind.eq(kind), resp_len.eq(size),
                     send_index.eq(0)]
            if code != Status.OK:
                stmts.append(last_error.eq(code.value))
            return stmts

        # -- image loader state ----------------------------------------------------------------
        header = encode_header(cfg)
        n_header = len(header)
        sections = image_sections(cfg)
        n_body_end = n_header + sum(words * word_bytes(bits) for _, words, bits in sections)
        data_at = FIELD_OFFSETS["data_length"][0]
        ports = [engine.weight_wr, engine.a_wr, engine.bias_wr, engine.seed_wr]
        max_word_bytes = max(word_bytes(bits) for _, _, bits in sections)
        position = Signal(range(image_length(cfg, MAX_DATA_BYTES) + 2))
        data_length = Signal(16)
        crc_at = Signal.like(position)     # first trailer byte: after header, body and data
        m.d.comb += crc_at.eq(n_body_end + data_length)
        section = Signal(range(len(sections) + 1))
        word = Signal(range(max(words for _, words, _ in sections) + 1))
        word_byte = Signal(range(max_word_bytes + 1))
        word_buf = Signal(8 * max_word_bytes)
        content_bad = Signal()   # a finished word holds a value the hardware cannot use
        m.submodules.image_crc = image_crc = IMAGE_CRC.create()
        expected_header = Array(Const(b, 8) for b in header)
        checked = [header_status(i) for i in range(n_header)]
        header_error = Array(Const(0 if st is None else st.value, 8) for st in checked)
        section_last_byte = Array(Const(word_bytes(bits) - 1, 8) for _, _, bits in sections)
        section_last_word = Array(Const(words - 1, 32) for _, words, _ in sections)

        feed_byte = Signal(8)    # the image byte the loader takes this cycle
        feed = Signal()
        load_error = Signal(8)   # the loader's verdict on the byte it took last
        # The CRC unit takes the trailer too: an intact image leaves its residue
        # (`match_detected`), checked the cycle after the last byte (`trailer_end`).
        trailer_end = Signal()
        m.d.comb += [image_crc.data.eq(feed_byte),
                     image_crc.valid.eq(feed & (position < crc_at + CRC_BYTES))]
        with m.If(trailer_end):
            m.d.sync += trailer_end.eq(0)
            with m.If(~image_crc.match_detected):
                m.d.sync += load_error.eq(Status.IMAGE_CRC.value)
            with m.Elif(content_bad):
                m.d.sync += load_error.eq(Status.IMAGE_CONTENT.value)

        # Word assembly: the byte lands at its little-endian place; the last one writes.
        assembled = Signal.like(word_buf)
        m.d.comb += assembled.eq(word_buf)
        with m.Switch(word_byte):
            for i in range(max_word_bytes):
                with m.Case(i):
                    m.d.comb += assembled.word_select(i, 8).eq(feed_byte)
        for n, port in enumerate(ports):
            m.d.comb += [port.addr.eq(word), port.data.eq(assembled)]
        in_body = (position >= n_header) & (position < n_body_end)
        word_done = feed & in_body & (word_byte == section_last_byte[section])
        # Values the hardware cannot use: set padding bits, a weight of -2^(w-1) (outside the
        # symmetric range the accumulators are sized for), a zero LFSR seed (stuck at zero).
        word_bad = Signal()
        with m.Switch(section):
            for n, (port, (name, _, bits)) in enumerate(zip(ports, sections)):
                with m.Case(n):
                    m.d.comb += port.en.eq(word_done)
                    bad = assembled[bits:] != 0
                    if name == "weights":
                        w = cfg.weight_bits
                        for k in range(cfg.lanes):
                            bad |= assembled[k * w:(k + 1) * w] == 1 << (w - 1)
                    if name == "seeds":
                        bad |= assembled[:bits] == 0
                    m.d.comb += word_bad.eq(bad)

        with m.If(feed):
            m.d.sync += position.eq(position + 1)
            with m.If(position < n_header):
                with m.If((feed_byte != expected_header[position])
                          & (header_error[position] != 0)):
                    m.d.sync += load_error.eq(header_error[position])
                with m.If(position == data_at):
                    m.d.sync += data_length[:8].eq(feed_byte)
                with m.If(position == data_at + 1):
                    m.d.sync += data_length[8:].eq(feed_byte)
            with m.Elif(in_body):
                m.d.sync += word_buf.eq(assembled)
                with m.If(word_done):
                    m.d.sync += [word_byte.eq(0), word_buf.eq(0), word.eq(word + 1)]
                    with m.If(word_bad):
                        m.d.sync += content_bad.eq(1)
                    with m.If(word == section_last_word[section]):
                        m.d.sync += [word.eq(0), section.eq(section + 1)]
                with m.Else():
                    m.d.sync += word_byte.eq(word_byte + 1)
            with m.Elif(position < crc_at):
                pass                      # the data spec: only the CRC covers it
            with m.Elif(position < crc_at + CRC_BYTES):
                # The trailer: the CRC-32 of everything before it, little-endian. Contents are
                # judged only once the image is known intact.
                with m.If(position == crc_at + CRC_BYTES - 1):
                    m.d.sync += trailer_end.eq(1)
            with m.Else():
                m.d.sync += load_error.eq(Status.IMAGE_LENGTH.value)

        def loader_reset():
            return [position.eq(0), section.eq(0), word.eq(0), word_byte.eq(0), word_buf.eq(0),
                    data_length.eq(0), content_bad.eq(0), trailer_end.eq(0),
                    load_error.eq(Status.OK.value)]
        m.d.comb += image_crc.start.eq(0)

        # -- the engine's input port and start -------------------------------------------------
        input_bytes = input_length(cfg.n_inputs)
        m.d.comb += [engine.input_wr.addr.eq(count), engine.input_wr.data.eq(pay_read.data)]

        # -- receive and execute ---------------------------------------------------------------
        rx_byte = self.rx.payload
        m.d.comb += [rx_crc.data.eq(rx_byte), pay_write.data.eq(rx_byte),
                     pay_write.addr.eq(count), pay_read.addr.eq(count)]
        # A frame that stops arriving is dropped; the timer runs between its bytes.
        with m.If(self.rx.valid):
            m.d.sync += timeout.eq(0)
        with m.Elif(timeout != self._timeout):
            m.d.sync += timeout.eq(timeout + 1)
        timed_out = timeout == self._timeout

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.rx.valid & (rx_byte == SYNC_REQUEST)):
                    m.d.comb += rx_crc.start.eq(1)
                    m.next = "OPCODE"

            # The frame's bytes after the sync; a frame that stops arriving is dropped.
            def on_opcode():
                m.d.sync += opcode.eq(rx_byte)
                m.next = "LEN0"

            def on_len0():
                m.d.sync += length[:8].eq(rx_byte)
                m.next = "LEN1"

            def on_len1():
                m.d.sync += [length[8:].eq(rx_byte), count.eq(0)]
                with m.If(Cat(length[:8], rx_byte) > MAX_PAYLOAD):
                    m.d.sync += respond(Status.BAD_LENGTH)
                    m.next = "SEND_SYNC"
                with m.Elif(Cat(length[:8], rx_byte) == 0):
                    m.next = "CRC"
                with m.Else():
                    m.next = "PAYLOAD"

            def on_payload():
                m.d.comb += pay_write.en.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count == length - 1):
                    m.next = "CRC"

            def on_crc():
                m.d.sync += count.eq(0)
                with m.If(rx_byte != rx_crc.crc):
                    m.d.sync += respond(Status.BAD_CRC)
                    m.next = "SEND_SYNC"
                with m.Else():
                    m.next = "EXECUTE"

            for state, on_byte, crc_covers in (("OPCODE", on_opcode, True),
                                               ("LEN0", on_len0, True),
                                               ("LEN1", on_len1, True),
                                               ("PAYLOAD", on_payload, True),
                                               ("CRC", on_crc, False)):
                with m.State(state):
                    m.d.comb += self.rx.ready.eq(1)
                    if crc_covers:
                        m.d.comb += rx_crc.valid.eq(self.rx.valid)
                    with m.If(self.rx.valid):
                        on_byte()
                    with m.Elif(timed_out):
                        m.d.sync += respond(Status.TIMEOUT)
                        m.next = "SEND_SYNC"

            # The frame is intact: check its length for the opcode, then act.
            with m.State("EXECUTE"):
                m.next = "SEND_SYNC"
                with m.Switch(opcode):
                    with m.Case(*[op.value for op in NO_PAYLOAD]):
                        with m.If(length != 0):
                            m.d.sync += respond(Status.BAD_LENGTH)
                        with m.Elif(opcode == Opcode.IDENTIFY.value):
                            m.d.sync += respond(Status.OK, Reply.IDENTIFY, len(ident_bytes))
                        with m.Elif(opcode == Opcode.READ_STATUS.value):
                            m.d.sync += respond(Status.OK, Reply.STATUS, len(status_bytes))
                        with m.Elif(engine.busy):
                            m.d.sync += respond(Status.BUSY)
                        with m.Elif(opcode == Opcode.IMAGE_BEGIN.value):
                            m.d.sync += [*respond(Status.OK), image_valid.eq(0), loading.eq(1),
                                         *loader_reset()]
                            m.d.comb += image_crc.start.eq(1)
                        with m.Elif(opcode == Opcode.IMAGE_END.value):
                            with m.If(~loading):
                                m.d.sync += respond(Status.IMAGE_NOT_BEGUN)
                            with m.Elif(position != crc_at + CRC_BYTES):
                                m.d.sync += [*respond(Status.IMAGE_LENGTH), loading.eq(0)]
                            with m.Else():
                                m.d.sync += [*respond(Status.OK), loading.eq(0),
                                             image_valid.eq(1)]
                        with m.Elif(opcode == Opcode.START.value):
                            with m.If(~image_valid):
                                m.d.sync += respond(Status.NO_IMAGE)
                            with m.Elif(~input_valid):
                                m.d.sync += respond(Status.NO_INPUT)
                            with m.Else():
                                m.d.comb += engine.start.eq(1)
                                m.d.sync += [*respond(Status.OK), have_result.eq(0),
                                             inferences.eq(inferences + 1)]
                        with m.Else():   # READ_RESULT
                            with m.If(~have_result):
                                m.d.sync += respond(Status.NO_INPUT)
                            with m.Else():
                                m.d.sync += respond(Status.OK, Reply.RESULT, len(result_bytes))
                    with m.Case(Opcode.IMAGE_DATA.value):
                        with m.If(length == 0):
                            m.d.sync += respond(Status.BAD_LENGTH)
                        with m.Elif(engine.busy):
                            m.d.sync += respond(Status.BUSY)
                        with m.Elif(~loading):
                            m.d.sync += respond(Status.IMAGE_NOT_BEGUN)
                        with m.Else():
                            m.next = "IMAGE_FEED"
                    with m.Case(Opcode.WRITE_INPUT.value):
                        with m.If(length != input_bytes):
                            m.d.sync += respond(Status.BAD_LENGTH)
                        with m.Elif(engine.busy):
                            m.d.sync += respond(Status.BUSY)
                        with m.Else():
                            m.d.sync += [input_valid.eq(0), streaming.eq(0)]
                            m.next = "INPUT_FEED"
                    with m.Case(Opcode.INFER.value):
                        with m.If(length != input_bytes):
                            m.d.sync += respond(Status.BAD_LENGTH)
                        with m.Elif(engine.busy):
                            m.d.sync += respond(Status.BUSY)
                        with m.Elif(~image_valid):
                            m.d.sync += respond(Status.NO_IMAGE)
                        with m.Else():
                            m.d.sync += [input_valid.eq(0), streaming.eq(1)]
                            m.next = "INPUT_FEED"
                    with m.Default():
                        m.d.sync += respond(Status.UNKNOWN_OPCODE)

            # Payload bytes to the loader, one per three cycles (the buffer reads synchronously;
            # the trailer's verdict takes a cycle after its last byte).
            with m.State("IMAGE_FEED"):
                m.next = "IMAGE_TAKE"
            with m.State("IMAGE_TAKE"):
                m.d.comb += [feed.eq(1), feed_byte.eq(pay_read.data)]
                m.d.sync += count.eq(count + 1)
                m.next = "IMAGE_SETTLE"
            with m.State("IMAGE_SETTLE"):
                m.next = "IMAGE_CHECK"
            with m.State("IMAGE_CHECK"):
                with m.If(load_error != Status.OK.value):
                    # A failed check aborts the load: nothing of it can become valid.
                    m.d.sync += [status.eq(load_error), resp_kind.eq(Reply.NONE), resp_len.eq(0),
                                 send_index.eq(0), last_error.eq(load_error), loading.eq(0)]
                    m.next = "SEND_SYNC"
                with m.Elif(count == length):
                    m.d.sync += respond(Status.OK)
                    m.next = "SEND_SYNC"
                with m.Else():
                    m.next = "IMAGE_TAKE"

            with m.State("INPUT_FEED"):
                m.next = "INPUT_TAKE"
            with m.State("INPUT_TAKE"):
                m.d.comb += engine.input_wr.en.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count == length - 1):
                    m.d.sync += input_valid.eq(1)
                    with m.If(streaming):
                        m.next = "INFER_START"
                    with m.Else():
                        m.d.sync += respond(Status.OK)
                        m.next = "SEND_SYNC"
                with m.Else():
                    m.next = "INPUT_FEED"

            # INFER: run, and answer when the result is there. Requests that arrive meanwhile
            # wait in the receive buffer in front of this interface (hw/top.py).
            with m.State("INFER_START"):
                m.d.comb += engine.start.eq(1)
                m.d.sync += [have_result.eq(0), inferences.eq(inferences + 1)]
                m.next = "INFER_RUN"
            with m.State("INFER_RUN"):
                with m.If(have_result & ~engine.busy):
                    m.d.sync += respond(Status.OK, Reply.COMPACT, len(compact_bytes))
                    m.next = "SEND_SYNC"

            # -- the response frame ------------------------------------------------------------
            with m.State("SEND_SYNC"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(SYNC_RESPONSE),
                             tx_crc.start.eq(1)]
                with m.If(self.tx.ready):
                    m.next = "SEND_STATUS"
            for state, byte, next_state in (("SEND_STATUS", status, "SEND_LEN0"),
                                            ("SEND_LEN0", resp_len[:8], "SEND_LEN1"),
                                            ("SEND_LEN1", resp_len[8:], "SEND_PAYLOAD")):
                with m.State(state):
                    m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(byte),
                                 tx_crc.data.eq(byte), tx_crc.valid.eq(self.tx.ready)]
                    with m.If(self.tx.ready):
                        m.next = next_state
            with m.State("SEND_PAYLOAD"):
                with m.If(send_index == resp_len):
                    m.next = "SEND_CRC"
                with m.Else():
                    m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(payload_byte),
                                 tx_crc.data.eq(payload_byte), tx_crc.valid.eq(self.tx.ready)]
                    with m.If(self.tx.ready):
                        m.d.sync += send_index.eq(send_index + 1)
            with m.State("SEND_CRC"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc.crc)]
                with m.If(self.tx.ready):
                    m.next = "HUNT"
        return m
