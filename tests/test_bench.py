"""The bench's orchestration: sections, results.json, RESULTS.md rendered from it."""

import json

import pytest

from bench.__main__ import SECTIONS, main


def _one_build(tmp_path, monkeypatch):
    """A build folder with one iCEBreaker report of the digits default, as the bench's root."""
    import bench.__main__ as bench_main
    from model.config import digits_config
    (tmp_path / "build" / "icebreaker" / "digits").mkdir(parents=True)
    (tmp_path / "build" / "icebreaker" / "digits" / "report.json").write_text(
        json.dumps(_ice40_report(digits_config())))
    monkeypatch.setattr(bench_main, "ROOT", tmp_path)


def test_only_some_sections_keeps_the_others_results(tmp_path, monkeypatch):
    _one_build(tmp_path, monkeypatch)
    out = tmp_path / "RESULTS.md"
    earlier = {"sections": {"golden": {"title": SECTIONS["golden"][0], "date": "2026-01-01",
                                       "command": "python bench/golden_bench.py",
                                       "seconds": None, "exit_code": 0,
                                       "figures": {"ratio": 1.5}, "text": "golden table\n"}}}
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    assert main(["--only", "boards", "--out", str(out),
                 "--hardware-doc", str(_doc_with_block(tmp_path))]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sections"]["golden"] == earlier["sections"]["golden"]
    assert results["sections"]["boards"]["exit_code"] == 0
    assert "| board |" in results["sections"]["boards"]["text"]
    text = out.read_text()
    assert "golden table" in text and "(2026-01-01)" in text      # a run of unknown length
    assert "(not run yet: `python -m bench --only train`)" in text
    assert results["command"].startswith(f"python -m bench --only boards --out {out} ")


def _doc_with_block(tmp_path):
    from bench.hardware_table import BEGIN_MARK, END_MARK
    doc = tmp_path / "hardware.md"
    doc.write_text(f"# before\n{BEGIN_MARK}\nold table\n{END_MARK}\n# after\n")
    return doc


def _ice40_report(config):
    return {"board": "icebreaker", "config": config.describe(), "config_json": config.to_dict(),
            "resources": {"ICESTORM_LC": {"used": 5000, "total": 5280},
                          "ICESTORM_RAM": {"used": 12, "total": 30},
                          "ICESTORM_SPRAM": {"used": 2, "total": 4},
                          "ICESTORM_DSP": {"used": 4, "total": 8}},
            "clock_mhz": 18.0, "fmax_mhz": 22.21, "timing_met": True}


@pytest.mark.parametrize("fields", [{}, {"inputs_per_cycle": 2, "parallel_samples": 4}],
                         ids=["P1-M1", "P2-M4"])
def test_board_figures_at_the_clock_not_at_fmax_against_the_chips_bounds(fields):
    from bench.hardware_table import board_figures
    from hw.engine import NSMEngine
    from model.config import digits_config
    config = digits_config(**fields)
    row = board_figures(_ice40_report(config))
    cycles = NSMEngine.cycles_per_inference(config)
    ops = config.samples * config.synapses / cycles
    assert row["inferences_per_s"] == 18e6 / cycles
    assert row["synapse_ops_per_clock"] == ops
    assert row["synapse_ops_per_clock_per_klut"] == 1000 * ops / 5000
    # Every weight word is read once per pass; 30 EBRs and 4 SPRAMs deliver 16 bits each.
    bits = config.passes * config.weight_words * config.weight_word_bits / cycles
    assert row["ram_bits_per_clock"] == bits
    assert row["chip_ram_bits_per_clock"] == 34 * 16
    assert row["adder_floor_fraction"] == (4 * config.weight_bits + 2) / (5000 / ops)
    assert (row["luts"], row["dsp"], row["ram_blocks"]) == (
        5000, 4, {"ICESTORM_RAM": 12, "ICESTORM_SPRAM": 2})


@pytest.mark.parametrize("failure", [{"timing_met": False}, {"fits": False, "timing_met": False}],
                         ids=["timing-missed", "does-not-fit"])
def test_board_figures_claim_no_inference_rate_without_a_working_bitstream(failure):
    from bench.hardware_table import board_figures
    from model.config import digits_config
    row = board_figures({**_ice40_report(digits_config()), **failure})
    assert row["inferences_per_s"] is None
    assert row["clock_mhz"] == 18.0 and row["luts"] == 5000


def test_fastest_clock_of_a_configurations_working_builds():
    from bench.hardware_table import fastest_clock
    from model.config import digits_config
    config, other = digits_config(), digits_config(lanes=8)
    reports = [{**_ice40_report(config), "clock_mhz": 18.0},
               {**_ice40_report(config), "clock_mhz": 24.0},
               {**_ice40_report(config), "clock_mhz": 30.0, "timing_met": False},
               {**_ice40_report(other), "clock_mhz": 40.0}]
    assert fastest_clock(reports, "icebreaker", config.identity) == (True, 24.0)
    assert fastest_clock(reports[2:3], "icebreaker", config.identity) == (True, None)
    assert fastest_clock(reports, "ulx3s-85f", config.identity) == (False, None)


def test_boards_section_rewrites_only_the_docs_block(tmp_path, monkeypatch):
    import bench.__main__ as bench_main
    _one_build(tmp_path, monkeypatch)
    doc = _doc_with_block(tmp_path)
    text, rows = bench_main._boards_section(doc)
    table = bench_main._board_table()[0]
    assert len(rows) == 1 and table in text
    new = doc.read_text()
    assert new.startswith("# before\n") and new.endswith("# after\n")
    assert table in new and "old table" not in new


def test_boards_section_without_builds_leaves_the_docs_table(tmp_path, monkeypatch):
    import bench.__main__ as bench_main
    monkeypatch.setattr(bench_main, "ROOT", tmp_path)
    doc = _doc_with_block(tmp_path)
    before = doc.read_text()
    text, rows = bench_main._boards_section(doc)
    assert rows is None and text.startswith("(no board built: `python -m hw.build --board")
    assert doc.read_text() == before


def test_boards_section_without_the_docs_block_fails_with_one_line(tmp_path, monkeypatch):
    import bench.__main__ as bench_main
    _one_build(tmp_path, monkeypatch)
    doc = tmp_path / "plain.md"
    doc.write_text("no block here\n")
    out = tmp_path / "RESULTS.md"
    assert bench_main.main(["--only", "boards", "--out", str(out),
                            "--hardware-doc", str(doc)]) == 1
    sec = json.loads((tmp_path / "results.json").read_text())["sections"]["boards"]
    assert sec["exit_code"] == 1
    assert sec["text"].startswith("boards: ") and "no block" in sec["text"]
    assert sec["text"].count("\n") == 1
    assert doc.read_text() == "no block here\n"


def test_main_job_board_entry_is_at_the_clock_not_at_fmax():
    from tools.main import board_entry
    entry = board_entry({"clock_mhz": 18.0, "fmax_mhz": 22.21}, 147406)
    assert entry == {"clock_mhz": 18.0, "fmax_mhz": 22.21, "inferences_per_s": 18e6 / 147406}


def test_a_failing_section_is_recorded_and_fails_the_run(tmp_path, monkeypatch):
    script = tmp_path / "failing_bench.py"
    script.write_text("import sys\nprint('half a table')\nsys.exit(3)\n")
    monkeypatch.setitem(SECTIONS, "golden", ("Golden", str(script), False))
    out = tmp_path / "RESULTS.md"
    assert main(["--only", "golden", "--out", str(out)]) == 1
    sec = json.loads((tmp_path / "results.json").read_text())["sections"]["golden"]
    assert sec["exit_code"] == 3 and "half a table" in sec["text"]
    assert "**exited with 3**" in out.read_text()


@pytest.mark.parametrize("only", ["nonsense", "train,nonsense", ","], ids=["unknown", "mixed",
                                                                          "empty"])
def test_unknown_sections_are_a_usage_error(only, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--only", only, "--out", str(tmp_path / "R.md")])
    assert e.value.code == 2
    assert "--only:" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_mnist_args_reach_the_mnist_bench(tmp_path):
    """--mnist-args is split into bench/mnist_bench.py's own options (and only the mnist
    section gets them); that script's parser takes them."""
    from bench.__main__ import _parser, _script_args
    from bench.mnist_bench import _args

    args = _parser().parse_args(["--only", "mnist", "--mnist-args",
                                 "--conv-train 12000 --golden-images 5000 --skip-rtl"])
    got = _script_args("mnist", args, tmp_path)
    assert got == ["--conv-train", "12000", "--golden-images", "5000", "--skip-rtl"]
    parsed = _args(got)
    assert (parsed.conv_train, parsed.golden_images, parsed.skip_rtl) == (12000, 5000, True)
    assert "--conv-train" not in _script_args("golden", args, tmp_path)
