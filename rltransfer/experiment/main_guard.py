"""Pool workers import the user's main script again (Python's multiprocessing does, under ``spawn``
and ``forkserver``): a script that starts an experiment at its top level, outside
``if __name__ == "__main__":``, would start it again in every worker, each of which dies on the
experiment's lock and is retried until the grid fails with "worker process died". Such a call is
refused with one line, before anything is written.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import FrameType

from rltransfer.errors import UserError

GUARD = 'if __name__ == "__main__":'


def check_main_guard() -> None:
    """Raise ``UserError`` when worker processes could not import the main script without
    starting the experiment again, or could not import it at all (a script read from stdin)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return  # an interactive session, a notebook, python -c: workers import nothing of it
    if getattr(main.__spec__, "name", None) is None and not Path(path).is_file():
        raise UserError(
            f"worker processes import the main script again, and '{path}' cannot be (a script read from stdin); "
            f"save it to a file with the call under `{GUARD}`, or run with one worker"
        )
    frame = _top_level_frame(main.__dict__)
    if frame is None:
        return
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return  # the source is not what ran: nothing to check against
    line = frame.f_lineno
    for stmt in tree.body:
        if stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            if isinstance(stmt, ast.If) and _mentions_name(stmt.test):
                return
            raise UserError(
                f"{path}:{line} starts the experiment when the script is imported, and every worker process "
                f"imports it again (Python's multiprocessing); put the call under `{GUARD}`"
            )


def _top_level_frame(namespace: dict[str, object]) -> FrameType | None:
    """The frame running the main script's module-level code, where the call came from."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is namespace and frame.f_code.co_name == "<module>":
            return frame
        frame = frame.f_back
    return None


def _mentions_name(test: ast.expr) -> bool:
    return any(isinstance(node, ast.Name) and node.id == "__name__" for node in ast.walk(test))
