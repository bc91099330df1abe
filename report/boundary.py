"""The CLI's one error boundary: every failure ends as one clear line and a non-zero exit.

- UserError (bad input, named): its message, its exit code.
- OSError (permission, disk full, read-only, not a folder, name too long, ...): what happened to which file.
- A library that cannot be imported, a file a library cannot parse: one line naming it.
- SIGTERM / Ctrl-C: 'interrupted', exit 128 + signal; complete results stay, `--resume` continues.
- Anything else is a bug: the traceback stays, with a line asking to report it (exit 70, EX_SOFTWARE).
"""

from __future__ import annotations

import errno
import functools
import re
import sys
import traceback

import click

from report.errors import Interrupted, UserError

EXIT_BUG = 70
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error",
}
RESUME_HINT = "complete results are kept; continue with --resume"


def describe_os_error(err: OSError) -> str:
    what = _OS_ERRORS.get(err.errno, err.strerror or type(err).__name__)
    paths = [p for p in (err.filename, err.filename2) if p]
    where = f" ({' -> '.join(map(str, paths))})" if paths else ""
    return f"{what}{where}"


def _fail(message: str, code: int) -> None:
    text = re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", " ".join(str(message).split()))  # no terminal escape gets through
    click.echo(f"error: {text}", err=True)
    sys.exit(code)


def error_boundary(command):
    """Wrap a Click command's function: known failures become one line; bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from safetensors import SafetensorError

        try:
            return command(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # Click reports its own
        except UserError as err:
            _fail(str(err), err.exit_code)
        except Interrupted as err:
            _fail(f"interrupted by {err}: {RESUME_HINT}", 128 + err.signum)
        except KeyboardInterrupt:
            _fail(f"interrupted: {RESUME_HINT}", 130)
        except OSError as err:
            _fail(describe_os_error(err), 1)
        except ImportError as err:
            _fail(f"a library cannot be loaded ({err}); reinstall the project: pip install -e .", 1)
        except SafetensorError as err:
            _fail(f"a safetensors file cannot be read ({err})", 1)
        except Exception:
            click.echo(traceback.format_exc().rstrip(), err=True)
            _fail("this is a bug in weekday-circuits: please report it with the command and the traceback above",
                  EXIT_BUG)

    return wrapper
