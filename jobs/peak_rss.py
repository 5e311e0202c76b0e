"""`python -m jobs.peak_rss OUT_JSON MODULE [ARG …]`: run `python -m MODULE ARG …` in this
process, then write its exit status and this process's peak RSS to OUT_JSON. How the
benchmarks measure a command's own memory: the figure must come from inside the process
(`hrm.memory.peak_rss_bytes`), and the command itself prints nothing of the kind."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

from hrm.memory import peak_rss_bytes


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    Path(out).write_text(json.dumps({"exit": code, "peak_rss_bytes": peak_rss_bytes()}))
    sys.exit(code)


if __name__ == "__main__":
    main()
