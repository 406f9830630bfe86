"""Top levels: the bare accelerator core for simulation, and a board top for FPGAs.

`NSMAccelerator` is what the testbenches and the simulator harness drive: the compute engine
and the host interface behind one UART, with the engine's trace port brought out for monitors.
`NSMBoardTop` puts it on a board: the board's clock (through its PLL, `hw.pll`), its UART pins,
and LEDs for busy and image-valid.
"""

from amaranth.build import ResourceError
from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from firmware.frames import DEFAULT_BAUD, RX_BUFFER_BYTES
from model.config import NSMConfig

from .engine import NSMEngine
from .host import HostInterface
from .interfaces import TraceLayout
from .pll import ECP5PLL, ICE40PLL, ECP5PLLParams, ICE40PLLParams
from .uart import UARTReceiver, UARTTransmitter, uart_divisor

__all__ = ["NSMAccelerator", "NSMBoardTop"]


class NSMAccelerator(wiring.Component):
    def __init__(self, config: NSMConfig, baud_divisor: int):
        self._config = config
        self._divisor = baud_divisor
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "trace_valid": Out(1),
            "trace_data": Out(TraceLayout(config)),
            "busy": Out(1),
            "image_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # The serial line, as byte streams.
        m.submodules.uart_rx = rx = UARTReceiver(self._divisor)
        m.submodules.uart_tx = tx = UARTTransmitter(self._divisor)
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx)]

        # The protocol, driving the engine. The receive buffer holds requests that arrive
        # while an earlier one executes (streamed INFERs while the engine computes).
        m.submodules.host = host = HostInterface(self._config, self._divisor)
        m.submodules.engine = engine = NSMEngine(self._config)
        m.submodules.rx_buffer = rx_buffer = SyncFIFOBuffered(width=8, depth=RX_BUFFER_BYTES)
        wiring.connect(m, rx.data, rx_buffer.w_stream)
        wiring.connect(m, rx_buffer.r_stream, host.rx)
        wiring.connect(m, host.tx, tx.data)
        wiring.connect(m, host.engine, engine)

        # What monitors and LEDs see.
        m.d.comb += [
            self.trace_valid.eq(engine.trace_stream.valid),
            self.trace_data.eq(engine.trace_stream.payload),
            self.busy.eq(engine.busy),
            self.image_valid.eq(host.image_valid),
        ]
        return m


class NSMBoardTop(Elaboratable):
    """The accelerator on a board with a UART resource. With `pll` (the parameters of
    `hw.pll` for the board's oscillator) the `sync` domain runs from the PLL's output, held in
    reset until the PLL locks; without it, from the oscillator. `baud` sets the UART divisor
    from that clock, `clock_hz`."""

    def __init__(self, config: NSMConfig, baud: int = DEFAULT_BAUD,
                 pll: ICE40PLLParams | ECP5PLLParams | None = None):
        self.config = config
        self.baud = baud
        self.pll = pll

    def clock_hz(self, platform):
        """The frequency the design runs at: the PLL's output, exactly, or the oscillator's."""
        return self.pll.out_hz if self.pll is not None else platform.default_clk_frequency

    def baud_divisor(self, platform) -> int:
        return uart_divisor(self.clock_hz(platform), self.baud)

    def elaborate(self, platform):
        m = Module()
        if self.pll is not None:
            self._pll_domain(m, platform)
        m.submodules.core = core = NSMAccelerator(self.config, self.baud_divisor(platform))
        # UART: the board's first serial port, through plain I/O buffers.
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.uart_rx.eq(rx.i), tx.o.eq(core.uart_tx)]
        # LEDs: busy and image valid, where the board has them.
        for n, signal in enumerate((core.busy, core.image_valid)):
            try:
                led = platform.request("led", n, dir="-")
            except ResourceError:   # a board with fewer LEDs: nothing to show
                break
            m.submodules[f"led{n}_buffer"] = buffer = io.Buffer("o", led)
            m.d.comb += buffer.o.eq(signal)
        return m

    def _pll_domain(self, m, platform):
        """`sync` from the PLL on the board's oscillator, in reset until the PLL locks."""
        clk = platform.request(platform.default_clk, dir="-")
        if isinstance(self.pll, ICE40PLLParams):
            # The iCE40's PLL takes its reference from the clock pad itself.
            m.submodules.pll = pll = ICE40PLL(self.pll, clk.io)
        else:
            m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk)
            m.submodules.pll = pll = ECP5PLL(self.pll)
            m.d.comb += pll.clk_in.eq(clk_buffer.i)
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += sync.clk.eq(pll.clk_out)
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="sync")
        # No constraint on `sync.clk` here: nextpnr derives it from the oscillator pin's through
        # the PLL's dividers (hw.build checks that it did).
