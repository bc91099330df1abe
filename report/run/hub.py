"""Whether a Hugging Face hub id can be loaded now, decided in one short request instead of a retry loop.

Without this, a hub id on a machine that cannot reach the hub waits in huggingface_hub's retries (about 25 s with a
refused connection, longer when packets are dropped) before failing, and a model that *is* cached waits the same
before transformers falls back to the cache. One HEAD request with a short timeout and no retry decides first:
- hub reachable (or HF_HUB_OFFLINE set: the user chose the cache): the id is loaded as it is;
- hub unreachable, model cached: the cached snapshot folder is loaded (no request is made again);
- hub unreachable, model not cached: one clear line at once (report.run.model_source.unavailable_message).
"""

from __future__ import annotations

import importlib

PROBE_TIMEOUT_S = 2.0  # twice per run at most (checking, then loading): the issue asks for a failure within 5 s


class HubUnreachable(OSError):
    """The hub did not answer the probe; the text says how it failed."""


def hub_offline_requested() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def probe_hub(timeout: float = PROBE_TIMEOUT_S) -> None:
    """One HEAD request to the hub's endpoint (HF_ENDPOINT), no retry; raises HubUnreachable if it gets no answer.

    Any HTTP status counts as reachable: the question is whether requests get an answer, not what the answer is.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except _transport_errors() as err:
        raise HubUnreachable(f"{constants.ENDPOINT}: {type(err).__name__}: {err}".rstrip(": ")) from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a request that gets no answer raises: huggingface_hub 1.x speaks through httpx, 2.x through httpx2."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def cached_snapshot(repo_id: str) -> str | None:
    """The cached snapshot folder of `repo_id` (its default revision), or None when it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def loadable_source(repo_id: str) -> str:
    """The hub id itself when the hub answers (or offline mode is on); the cached snapshot folder when it does not;
    HubUnreachable when it does not answer and nothing is cached."""
    if hub_offline_requested():
        return repo_id
    try:
        probe_hub()
    except HubUnreachable:
        snapshot = cached_snapshot(repo_id)
        if snapshot is None:
            raise
        return snapshot
    return repo_id
