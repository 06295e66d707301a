"""The README's quick start, run as written: every command of its shell block, in a fresh
folder holding a small model built in code (``model.onnx``), calibration samples
(``samples.npz``) and the TOML block of the section as the file ``--config`` names. Each command
must exit 0 and every file it names with ``-o``, ``--report`` or the config's ``output`` must
exist afterwards. No network: the model and the data are made here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from onnxforge.commands.config_file import tomllib  # tomli on Python 3.10
from onnxforge.models.cnn import small_cnn

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart() -> tuple[list[str], list[str]]:
    """The quick-start section's shell commands and TOML blocks."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no '## Quick start' section"
    section = match.group(1)
    shell = re.findall(r"^```(?:sh|bash|shell|console)\n(.*?)^```", section, flags=re.S | re.M)
    tomls = re.findall(r"^```toml\n(.*?)^```", section, flags=re.S | re.M)
    commands = []
    for block in shell:
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands, tomls


def _outputs(argv: list[str], configs: dict[str, dict]) -> list[str]:
    out = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-o", "--output", "--report")]
    for i, a in enumerate(argv[:-1]):
        if a == "--config":
            out += [configs[argv[i + 1]].get("output")] if configs[argv[i + 1]].get("output") else []
    return out


def test_the_quickstart_commands_run(tmp_path):
    commands, tomls = quickstart()
    assert commands and all(c.startswith("onnxforge ") for c in commands), commands
    model, feeds = small_cnn()
    onnx.save(model, tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "samples.npz", **{k: rng.standard_normal((20, *v.shape[1:])).astype(v.dtype) for k, v in feeds.items()})
    configs: dict[str, dict] = {}
    named = [shlex.split(c)[shlex.split(c).index("--config") + 1] for c in commands if "--config" in shlex.split(c)]
    assert len(named) == len(tomls), "one TOML block per --config file in the quick start"
    for name, body in zip(named, tomls):
        (tmp_path / name).write_text(body)
        configs[name] = tomllib.loads(body)
    exe = Path(sys.executable).with_name("onnxforge")
    env = {k: v for k, v in os.environ.items() if k != "ONNXFORGE_PROGRESS"}
    for command in commands:
        argv = shlex.split(command)
        run = subprocess.run([str(exe), *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{command}: exit {run.returncode}\n{run.stderr[-2000:]}"
        for path in _outputs(argv, configs):
            assert (tmp_path / path).is_file(), f"{command}: {path} was not written"
