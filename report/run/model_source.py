"""What a model name points at: a Hugging Face id (aliases resolved; its cached snapshot when the hub does not
answer) or a local checkpoint folder.

A name is a Hugging Face id (`gpt2`, ...; `gpt2-small` is an alias of `gpt2`), a local checkpoint folder, or
the bundled offline model (report/run/bundled.py). Whether what it points at can be analysed is
report/run/checkpoint.py's question.
"""

from __future__ import annotations

import os
from pathlib import Path

from report.errors import ModelUnavailable
from report.run.hub import HubUnreachable, loadable_source

ALIASES = {"gpt2-small": "gpt2"}


def resolve_name(name: str) -> str:
    return ALIASES.get(name, name)


def is_local(name: str) -> bool:
    return os.sep in name or name.startswith(".") or Path(name).exists()


def resolve_source(name: str) -> str:
    """The hub id (aliases resolved; its cached snapshot folder when the hub does not answer) or the absolute
    checkpoint folder; a folder without config.json is an error."""
    if not is_local(name):
        try:  # one short request, no retry loop: a hub that does not answer fails in seconds (report/run/hub.py)
            return loadable_source(resolve_name(name))
        except HubUnreachable as err:
            raise ModelUnavailable(unavailable_message(name, err)) from None
    folder = Path(name).expanduser().resolve()
    if not folder.is_dir():
        raise ModelUnavailable(f"model folder {name!r} not found")
    if not (folder / "config.json").is_file():
        raise ModelUnavailable(f"model folder {name!r} has no config.json")
    return str(folder)


def unavailable_message(name: str, err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (f"cannot load model {name!r}: the Hugging Face hub cannot be reached and it is not in the local cache "
            f"({text}). To run offline, pass a local checkpoint folder (--model path/to/folder) "
            "or the bundled model (--model gemma-3-270m, the default; installed with the project).")
