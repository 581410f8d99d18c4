"""A script that starts an experiment at import time is refused before anything is written:
pool workers import the main script again and would start it once more each."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from specs import grid_spec

from rltransfer.errors import UserError
from rltransfer.experiment.main_guard import check_main_guard
from rltransfer.experiment.plan import plan_experiments


def run_as_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, file: str | None = "script.py") -> None:
    """Execute ``source`` as the ``__main__`` module (from ``file`` in ``tmp_path``); it calls ``check()``."""
    module = types.ModuleType("__main__")
    module.__spec__ = None
    if file is not None:
        path = tmp_path / file
        path.write_text(source)
        module.__file__ = str(path) if file != "<stdin>" else "<stdin>"
    module.__dict__["check"] = check_main_guard
    monkeypatch.setitem(sys.modules, "__main__", module)
    exec(compile(source, module.__dict__.get("__file__", "<string>"), "exec"), module.__dict__)


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("import os\ncheck()\n", 2),
        ("def main():\n    check()\n\n\nmain()\n", 5),
        ("if True:\n    check()\n", 2),
    ],
)
def test_an_unguarded_call_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, line: int
) -> None:
    with pytest.raises(UserError, match=rf"script\.py:{line} starts the experiment when the script is imported"):
        run_as_main(tmp_path, monkeypatch, source)


@pytest.mark.parametrize(
    "source",
    [
        'if __name__ == "__main__":\n    check()\n',
        "def main():\n    check()\n\n\nif __name__ == '__main__':\n    main()\n",
        "def main():\n    check()\n",  # defined, never called at import: nothing to check
    ],
)
def test_guarded_calls_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    run_as_main(tmp_path, monkeypatch, source)


def test_interactive_passes_and_stdin_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_as_main(tmp_path, monkeypatch, "check()\n", file=None)  # python -c, a notebook: no main file
    with pytest.raises(UserError, match=r"cannot be \(a script read from stdin\).*or run with one worker"):
        run_as_main(tmp_path, monkeypatch, "check()\n", file="<stdin>")


def test_a_python_dict_is_a_spec(tmp_path: Path) -> None:
    """``run_experiment`` and friends take the mapping a YAML spec would hold."""
    spec = grid_spec("as-dict", targets=["long", {"length": 0.9}])
    (plan,), _ = plan_experiments([spec], [tmp_path / "out"], workers=1)
    assert plan.spec.name == "as-dict" and not (tmp_path / "out").exists()


def test_an_unguarded_script_exits_with_one_line(tmp_path: Path) -> None:
    script = tmp_path / "exp.py"
    spec = grid_spec("guard")
    script.write_text(f"from rltransfer import run_experiment\nrun_experiment({spec!r}, out='out', workers=2)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{script}:2 starts the experiment when the script is imported" in done.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()
