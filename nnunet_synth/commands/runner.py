"""Running a parsed command: one-line errors and exit codes, the same from ``nnunet-synth`` and ``python -m``."""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable

from nnunet_synth.errors import SynthError

PROG = "nnunet-synth"


def run_parsed(name: str, run, args: argparse.Namespace) -> int:
    """Run a command's ``run(args)``; a SynthError becomes one line on stderr and exit status 2."""
    try:
        code = run(args)
    except SynthError as e:
        print(f"{PROG} {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:
        # The commands check their output folders first; this is the file system failing under them
        # (it became read-only, ran full, a folder was replaced by a file). Other OSErrors are bugs.
        if e.errno not in _FILE_SYSTEM_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"{PROG} {name}: error: {where}{e.strerror or e}; check that the output location exists, is "
              f"writable and has free space, then rerun the same command", file=sys.stderr)
        return 2
    return int(code or 0)


_FILE_SYSTEM_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                       errno.EISDIR}


def standalone(name: str, doc: str | None, add_arguments: Callable, run: Callable,
               argv: list[str] | None = None) -> int:
    """``python -m nnunet_synth.commands.NAME ...`` (e.g. under ``accelerate launch``): the same as ``nnunet-synth NAME ...``."""
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=(doc or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_parsed(name, run, parser.parse_args(sys.argv[1:] if argv is None else argv))
