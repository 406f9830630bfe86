"""PLLs of the boards: parameters computed for a requested frequency, and the primitives.

`ice40_pll_params` / `ecp5_pll_params` search the dividers of the iCE40 SB_PLL40 (SIMPLE
feedback) and of the ECP5 EHXPLLL (feedback from CLKOP) within the ranges of their data sheets
(iCE40 sysCLOCK PLL Design and Usage Guide, TN1251; ECP5 sysCLOCK PLL/DLL Design and Usage
Guide, TN1263) for the output closest to the request, the way `icepll` and `ecppll` do; the
achieved frequency is exact (a `Fraction` of hertz). `ICE40PLL` and `ECP5PLL` instantiate the
primitive with those parameters; `PLL_FOR_FAMILY` picks one per FPGA family.
"""

from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PLLError", "ICE40PLLParams", "ECP5PLLParams", "ice40_pll_params",
           "ecp5_pll_params", "ICE40PLL", "ECP5PLL", "PLL_FOR_FAMILY", "pll_params",
           "MAX_ERROR"]

MHZ = 1_000_000
# The largest relative distance between the request and the closest achievable frequency that
# is accepted: beyond it the request is refused rather than silently built at another clock.
MAX_ERROR = Fraction(1, 100)


class PLLError(ValueError):
    """No divider setting reaches the requested frequency; the message says why."""


def _check_range(what: str, hz, low_mhz, high_mhz, family: str) -> None:
    if not low_mhz * MHZ <= hz <= high_mhz * MHZ:
        raise PLLError(f"{what} {float(hz) / MHZ:g} MHz is outside the {family} PLL's range "
                       f"{float(low_mhz):g}..{float(high_mhz):g} MHz")


def _closest(name: str, candidates, ref_hz, out_hz):
    """The candidate whose `out_hz` is nearest the request; refuse when none is within
    `MAX_ERROR` of it."""
    best = min(candidates, key=lambda c: c[0], default=None)
    if best is None or abs(best[1].out_hz - out_hz) > MAX_ERROR * out_hz:
        near = f" (nearest {float(best[1].out_hz) / MHZ:g} MHz)" if best else ""
        raise PLLError(f"the {name} PLL cannot make {float(out_hz) / MHZ:g} MHz from "
                       f"{float(ref_hz) / MHZ:g} MHz within {float(MAX_ERROR):.0%}{near}")
    return best[1]


# -- iCE40 SB_PLL40, SIMPLE feedback: f_out = f_ref * (DIVF+1) / ((DIVR+1) * 2**DIVQ) -----------

ICE40_REF_MHZ = (10, 133)
ICE40_PFD_MHZ = (10, 133)
ICE40_VCO_MHZ = (533, 1066)
ICE40_OUT_MHZ = (16, 275)
ICE40_DIVR = range(16)
ICE40_DIVF = range(128)
ICE40_DIVQ = range(1, 7)
# FILTER_RANGE by the phase detector frequency: (upper bound in MHz, exclusive; value).
ICE40_FILTER = ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5))


@dataclass(frozen=True)
class ICE40PLLParams:
    ref_hz: Fraction
    divr: int
    divf: int
    divq: int

    @property
    def pfd_hz(self) -> Fraction:
        return self.ref_hz / (self.divr + 1)

    @property
    def vco_hz(self) -> Fraction:
        return self.pfd_hz * (self.divf + 1)

    @property
    def out_hz(self) -> Fraction:
        return self.vco_hz / 2 ** self.divq

    @property
    def filter_range(self) -> int:
        return next((value for bound, value in ICE40_FILTER if self.pfd_hz < bound * MHZ), 6)


def ice40_pll_params(ref_hz, out_hz) -> ICE40PLLParams:
    ref_hz, out_hz = Fraction(ref_hz), Fraction(out_hz)
    _check_range("input", ref_hz, *ICE40_REF_MHZ, "iCE40")
    _check_range("output", out_hz, *ICE40_OUT_MHZ, "iCE40")

    def candidates():
        for divr in ICE40_DIVR:
            for divf in ICE40_DIVF:
                for divq in ICE40_DIVQ:
                    p = ICE40PLLParams(ref_hz, divr, divf, divq)
                    # The output's range too (icepll checks only the request's: for 16 MHz it
                    # gives 15.9375 MHz).
                    if (ICE40_PFD_MHZ[0] * MHZ <= p.pfd_hz <= ICE40_PFD_MHZ[1] * MHZ
                            and ICE40_VCO_MHZ[0] * MHZ <= p.vco_hz <= ICE40_VCO_MHZ[1] * MHZ
                            and ICE40_OUT_MHZ[0] * MHZ <= p.out_hz <= ICE40_OUT_MHZ[1] * MHZ):
                        # First found wins a tie, as in icepll.
                        yield abs(p.out_hz - out_hz), p
    return _closest("iCE40", candidates(), ref_hz, out_hz)


# -- ECP5 EHXPLLL, feedback from CLKOP: f_out = f_ref * CLKFB_DIV / CLKI_DIV -------------------

ECP5_REF_MHZ = (Fraction(8), 400)
ECP5_PFD_MHZ = (Fraction(3125, 1000), 400)
ECP5_VCO_MHZ = (400, 800)
ECP5_OUT_MHZ = (Fraction(3125, 1000), 400)
ECP5_CLKI_DIV = range(1, 129)
ECP5_CLKFB_DIV = range(1, 81)
ECP5_CLKOP_DIV = range(1, 129)


@dataclass(frozen=True)
class ECP5PLLParams:
    ref_hz: Fraction
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def out_hz(self) -> Fraction:
        return self.ref_hz / self.clki_div * self.clkfb_div

    @property
    def vco_hz(self) -> Fraction:
        return self.out_hz * self.clkop_div

    @property
    def clkop_cphase(self) -> int:
        # CLKOP shifted by 180 degrees, half its divider in VCO cycles, as Lattice's tools and
        # ecppll do (ecppll computes it in float and truncates, 5 for a divider of 12). The
        # phase of the PLL's output against the oscillator matters to nothing in the design.
        return self.clkop_div // 2


def ecp5_pll_params(ref_hz, out_hz) -> ECP5PLLParams:
    ref_hz, out_hz = Fraction(ref_hz), Fraction(out_hz)
    _check_range("input", ref_hz, *ECP5_REF_MHZ, "ECP5")
    _check_range("output", out_hz, *ECP5_OUT_MHZ, "ECP5")

    def candidates():
        for clki in ECP5_CLKI_DIV:
            if not ECP5_PFD_MHZ[0] * MHZ <= ref_hz / clki <= ECP5_PFD_MHZ[1] * MHZ:
                continue
            for clkfb in ECP5_CLKFB_DIV:
                out = ref_hz / clki * clkfb
                # Only the output dividers that put the VCO in its range.
                low = max(-(-ECP5_VCO_MHZ[0] * MHZ // out), ECP5_CLKOP_DIV.start)
                high = min(ECP5_VCO_MHZ[1] * MHZ // out, ECP5_CLKOP_DIV.stop - 1)
                for clkop in range(int(low), int(high) + 1):
                    p = ECP5PLLParams(ref_hz, clki, clkfb, clkop)
                    # A tie goes to the VCO nearest 600 MHz, then to the first, as ecppll.
                    yield (abs(p.out_hz - out_hz), abs(p.vco_hz - 600 * MHZ)), p
    return _closest("ECP5", candidates(), ref_hz, out_hz)


# -- the primitives -----------------------------------------------------------------------------

class ICE40PLL(wiring.Component):
    """SB_PLL40_PAD: the reference comes straight from the clock pad `pad` (an I/O port of the
    board's clock pin); `clk_out` is the PLL's global output, `locked` its lock detector."""

    clk_out: Out(1)
    locked: Out(1)

    def __init__(self, params: ICE40PLLParams, pad):
        self.params = params
        self._pad = pad
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq, p_FILTER_RANGE=p.filter_range,
            i_RESETB=1, i_BYPASS=0,
            io_PACKAGEPIN=self._pad,
            o_PLLOUTGLOBAL=self.clk_out, o_LOCK=self.locked)
        return m


class ECP5PLL(wiring.Component):
    """EHXPLLL with CLKOP fed back; `clk_in` is the oscillator, `clk_out` CLKOP."""

    clk_in: In(1)
    clk_out: Out(1)
    locked: Out(1)

    def __init__(self, params: ECP5PLLParams):
        self.params = params
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.pll = Instance(
            "EHXPLLL",
            # The loop filter settings ecppll writes for every configuration.
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            a_FREQUENCY_PIN_CLKI=f"{float(p.ref_hz) / MHZ:g}",
            a_FREQUENCY_PIN_CLKOP=f"{float(p.out_hz) / MHZ:g}",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div, p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, i_CLKFB=self.clk_out,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=self.clk_out, o_LOCK=self.locked)
        return m


# Per FPGA family (the `family` of hw.build's BOARDS): the parameter search.
PLL_FOR_FAMILY = {"ice40": ice40_pll_params, "ecp5": ecp5_pll_params}


def pll_params(family: str, ref_hz, out_hz):
    """The PLL parameters of `family` for `out_hz` from `ref_hz`; raises PLLError."""
    return PLL_FOR_FAMILY[family](ref_hz, out_hz)
