"""The package as a user installs it: a wheel (not an editable install) with the console
scripts, the harness sources that `--sim` compiles, the SPDX licence, test tools as an extra.

The fresh-install test takes about 50 s on 2 cores (it compiles the Verilator harness from the
wheel's sources into a new build folder)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {"nsm": "tools.nsm:main", "nsm-train": "model.train:main",
           "nsm-build": "hw.build:main", "nsm-main": "tools.main:main"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # The checkout's files only (tracked or not ignored), so that no earlier build output
    # (build/lib, *.egg-info) can put into the wheel what the package data does not declare.
    source = tmp_path_factory.mktemp("source")
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # No build isolation: this venv's setuptools, no download.
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "License classifiers are deprecated" not in proc.stderr
    assert "project.license` as a TOML table is deprecated" not in proc.stderr
    wheels = sorted(out.glob("nsm_accel-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_has_the_harness_sources_scripts_licence_and_a_test_extra(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry = next(z.read(n).decode() for n in names
                     if n.endswith(".dist-info/entry_points.txt"))
    assert {"hw/harness.cpp", "sim/include/lz4.h"} <= names
    for script, target in SCRIPTS.items():
        assert f"{script} = {target}" in entry
    assert "License-Expression: BSD-2-Clause" in meta
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    for tool in ("pytest", "pytest-xdist"):
        (line,) = [r for r in requires if r.split()[1].split(">")[0] == tool]
        assert 'extra == "test"' in line


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def test_fresh_install_runs_nsm_help_and_infer_sim_on_the_digits_image(wheel, tmp_path):
    """A new venv, the wheel installed (no deps: this venv's site-packages is appended to its
    path, nothing downloaded), run outside the checkout: `nsm --help`, `nsm --version` and an
    `nsm infer --sim` on the trained digits image, the harness compiled from the wheel's copy
    into a fresh build folder."""
    from firmware.image import write_image
    from sim.testing import digits_model

    started = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    new_site = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                           "install", "--no-deps", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr
    assert Path(new_site, "hw", "harness.cpp").is_file()
    # The dependencies after the install (so that pip does not see this venv's nsm-accel).
    Path(new_site, "project-deps.pth").write_text(_site_packages() + "\n")
    work = tmp_path / "work"          # not the checkout: nothing imported from the repository
    work.mkdir()
    image = work / "digits.nsmi"
    image.write_bytes(write_image(digits_model()))
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "NSM_BUILD_DIR": str(tmp_path / "sim-build")}

    def run(*args):
        return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)

    where = run("python", "-c", "import hw.harness as h; print(h.HARNESS_CPP)")
    assert where.stdout.strip() == str(Path(new_site, "hw", "harness.cpp")), where.stderr
    help_ = run("nsm", "--help")
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("usage: nsm ")
    assert run("nsm", "--version").stdout == "nsm (nsm-accel 0.1.0)\n"
    infer = run("nsm", "infer", "--sim", "--image", str(image), "--limit", "3", "-q",
                "--compare-golden")
    assert infer.returncode == 0, infer.stderr
    assert "golden     3/3 results identical to the golden model" in infer.stdout
    assert any((tmp_path / "sim-build").glob("harness-*/nsm_harness"))
    print(f"fresh install, help and infer --sim: {time.monotonic() - started:.0f} s")
