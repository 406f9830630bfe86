"""The board builds' table: resources, clock, synapse-ops per clock, inferences/s, and how close
each build comes to the two bounds of its chip.

The bounds:
- block-RAM bandwidth: the bits the engine reads from its weight memory per clock, against the
  bits all the chip's block RAMs could deliver per clock (ECP5 DP16KD 36 bits wide, iCE40 EBR
  and SPRAM 16 bits each);
- logic: LUTs per synapse-op per clock against the adder floor of about 4w + 2 LUTs for one
  w-bit add/subtract with its masking (a registered adder tree costs a little more).

`python -m bench --only boards` makes the table from the `report.json` files that
`python -m hw.build --board ...` leaves in build/, and rewrites the block of `docs/hardware.md`
between `BEGIN_MARK` and `END_MARK` with it.
"""

from __future__ import annotations

from pathlib import Path

from hw.engine import NSMEngine
from model.config import NSMConfig

__all__ = ["BEGIN_MARK", "END_MARK", "DocBlockError", "RAM_PORT_BITS", "board_figures",
           "fastest_clock", "render", "report_config", "running_clock",
           "weight_reads_per_inference", "replace_doc_block"]

BEGIN_MARK = "<!-- bench:boards begin (python -m bench --only boards rewrites this block) -->"
END_MARK = "<!-- bench:boards end -->"

# Bits one block RAM of each kind delivers per clock at its widest read port.
RAM_PORT_BITS = {"DP16KD": 36, "ICESTORM_RAM": 16, "ICESTORM_SPRAM": 16}
# The resource that counts as logic (LUTs) on each family.
LOGIC = ("TRELLIS_COMB", "ICESTORM_LC")
DSP = ("MULT18X18D", "ICESTORM_DSP")


class DocBlockError(ValueError):
    """The document has no (or a malformed) block for the table."""


def weight_reads_per_inference(config: NSMConfig) -> int:
    """Weight words the engine reads in one inference: every word once per pass of M samples
    side by side."""
    return config.passes * config.weight_words


def adder_floor_luts(config: NSMConfig) -> int:
    """LUTs of one w-bit masked add/subtract: about 4 per weight bit plus 2."""
    return 4 * config.weight_bits + 2


def report_config(report: dict) -> NSMConfig | None:
    """The NSMConfig a board report (`report.json` of hw.build) was built for, or None."""
    try:
        return NSMConfig(**report["config_json"])
    except (KeyError, TypeError, ValueError):
        return None


def running_clock(report: dict) -> float | None:
    """The clock (MHz) a board build's bitstream runs at, or None when there is no bitstream
    that fits and meets timing: no inference rate is claimed for such a build."""
    if report.get("fits") is False or not report.get("timing_met"):
        return None
    return report.get("clock_mhz")


def fastest_clock(reports: list[dict], board: str, identity: int) -> tuple[bool, float | None]:
    """Whether `board` was built for the configuration `identity`, and the fastest clock (MHz)
    of those builds whose bitstream works (None: none does)."""
    clocks = [running_clock(rep) for rep in reports if rep.get("board") == board
              and getattr(report_config(rep), "identity", None) == identity]
    return bool(clocks), max((c for c in clocks if c), default=None)


def board_figures(report: dict) -> dict | None:
    """Figures of one board build (`report.json` of hw.build), or None if the report does not
    name a configuration."""
    config = report_config(report)
    if config is None:
        return None
    res = report.get("resources", {})
    used = {k: v.get("used", 0) for k, v in res.items()}
    total = {k: v.get("total", 0) for k, v in res.items()}
    cycles = NSMEngine.cycles_per_inference(config)
    clock = report.get("clock_mhz")
    running = running_clock(report)
    luts = next((used[k] for k in LOGIC if k in used), None)
    syn_per_clock = config.samples * config.synapses / cycles
    bits_per_clock = weight_reads_per_inference(config) * config.weight_word_bits / cycles
    chip_bits = sum(total.get(k, 0) * bits for k, bits in RAM_PORT_BITS.items())
    luts_per_op = luts / syn_per_clock if luts else None
    return {
        "board": report.get("board"), "config": config.describe(),
        "identity": f"{config.identity:08x}",
        "luts": luts, "luts_total": next((total[k] for k in LOGIC if k in total), None),
        "ram_blocks": {k: used[k] for k in RAM_PORT_BITS if used.get(k)},
        "dsp": next((used[k] for k in DSP if k in used), None),
        "clock_mhz": clock, "fmax_mhz": report.get("fmax_mhz"),
        "timing_met": report.get("timing_met"),
        "cycles_per_inference": cycles,
        "inferences_per_s": running * 1e6 / cycles if running else None,
        "synapse_ops_per_clock": syn_per_clock,
        "synapse_ops_per_clock_per_klut": 1000 * syn_per_clock / luts if luts else None,
        "ram_bits_per_clock": bits_per_clock, "chip_ram_bits_per_clock": chip_bits,
        "ram_bandwidth_fraction": bits_per_clock / chip_bits if chip_bits else None,
        "luts_per_synapse_op": luts_per_op,
        "adder_floor_luts": adder_floor_luts(config),
        "adder_floor_fraction": adder_floor_luts(config) / luts_per_op if luts_per_op else None,
    }


def _num(value, digits=0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _pct(fraction) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f} %"


def render(rows: list[dict]) -> str:
    """The Markdown table of `board_figures` rows."""
    lines = ["| board | configuration | LUTs | block RAM | DSP | clock (MHz) | Fmax (MHz) | "
             "synapse-ops/clock | per 1,000 LUTs | inferences/s | RAM bits/clock (of chip) | "
             "LUTs/synapse-op (floor) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ram = ", ".join(f"{n} {k}" for k, n in r["ram_blocks"].items()) or "-"
        lines.append(
            f"| {r['board']} | {r['config']} | {_num(r['luts'])} / {_num(r['luts_total'])} | "
            f"{ram} | {_num(r['dsp'])} | {_num(r['clock_mhz'], 1)} | {_num(r['fmax_mhz'], 2)} | "
            f"{_num(r['synapse_ops_per_clock'], 1)} | "
            f"{_num(r['synapse_ops_per_clock_per_klut'], 2)} | "
            f"{_num(r['inferences_per_s'])} | {_num(r['ram_bits_per_clock'])} of "
            f"{_num(r['chip_ram_bits_per_clock'])} ({_pct(r['ram_bandwidth_fraction'])}) | "
            f"{_num(r['luts_per_synapse_op'], 1)} ({r['adder_floor_luts']}: "
            f"{_pct(r['adder_floor_fraction'])}) |")
    return "\n".join(lines) + "\n"


def replace_doc_block(path: Path, table: str) -> None:
    """Rewrite the block between the marks in `path` with `table`."""
    text = path.read_text()
    begin, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if begin < 0 or end < begin:
        raise DocBlockError(f"{path}: no block {BEGIN_MARK!r} ... {END_MARK!r} for the table")
    head = text[:begin + len(BEGIN_MARK)]
    path.write_text(f"{head}\n\n{table}\n{text[end:]}")
