"""How the local launcher starts Axolotl: through its console script's interpreter, so that a
process pool the trainer spawns does not import the trainer's whole CLI again."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lockgate.errors import StageError
from lockgate.launchers.local import LocalAxolotlLauncher, trainer_command

# A stand-in for Axolotl's CLI module: it notes each import, then spawns a one-process pool the
# way Hugging Face datasets saves a prepared dataset, and fails (no adapter is written).
FAKE_CLI = """
import multiprocessing, os, sys
with open(os.environ["IMPORTS_LOG"], "a") as log:
    log.write(f"{os.getpid()}\\n")

def main():
    from axolotl.pool_work import pid
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(pid)
    print("training failed on purpose", flush=True)
    return 1
"""
POOL_WORK = "import os\n\ndef pid():\n    return os.getpid()\n"
# What pip writes for a console script.
CONSOLE_SCRIPT = """#!{python}
import re
import sys
from axolotl.cli.main import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


@pytest.fixture
def trainer_env(tmp_path: Path) -> Path:
    """A virtual environment with a fake ``axolotl`` package and its ``bin/axolotl`` console script."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # venv/lib/pythonX.Y/site-packages
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    cli = site / "axolotl" / "cli"
    cli.mkdir(parents=True)
    (site / "axolotl" / "__init__.py").write_text("")
    (site / "axolotl" / "pool_work.py").write_text(POOL_WORK)
    (cli / "__init__.py").write_text("")
    (cli / "main.py").write_text(FAKE_CLI)
    script = venv / "bin" / "axolotl"
    script.write_text(CONSOLE_SCRIPT.format(python=venv / "bin" / "python"))
    script.chmod(0o755)
    return script


def test_a_spawned_pool_of_the_trainer_does_not_import_its_cli_again(trainer_env: Path, tmp_path: Path) -> None:
    imports = tmp_path / "imports.log"
    config = tmp_path / "axolotl.yaml"
    config.write_text("max_steps: 3\n")
    out = tmp_path / "out"
    out.mkdir()
    launcher = LocalAxolotlLauncher(trainer_env, env={"IMPORTS_LOG": str(imports)})
    with pytest.raises(StageError):
        launcher.train(config, out, timeout_s=120)
    log = (out / "axolotl.log").read_text()
    assert "training failed on purpose" in log, log  # the trainer ran, and its pool did
    assert len(imports.read_text().splitlines()) == 1, f"the CLI was imported again by the pool's child:\n{log}"

    # Started as the console script, the pool's child imports it again: what the launcher avoids.
    imports.unlink()
    subprocess.run([str(trainer_env)], env={"IMPORTS_LOG": str(imports)}, capture_output=True, timeout=120)
    assert len(imports.read_text().splitlines()) == 2


def test_the_command_runs_a_python_console_script_by_its_interpreter_and_anything_else_as_is(
    trainer_env: Path, tmp_path: Path
) -> None:
    python, flag, _, *args = trainer_command(trainer_env, "train", "c.yaml")
    assert (Path(python), flag, args) == (trainer_env.parent / "python", "-c", ["train", "c.yaml"])

    by_env = tmp_path / "by-env"
    by_env.write_text("#!/usr/bin/env python3\nfrom axolotl.cli.main import main\n")
    assert Path(trainer_command(by_env, "train")[0]).name.startswith("python")

    shell = tmp_path / "shell"
    shell.write_text("#!/usr/bin/env bash\necho trained\n")
    assert trainer_command(shell, "train") == [str(shell), "train"]
    assert trainer_command(tmp_path / "missing", "train") == [str(tmp_path / "missing"), "train"]
