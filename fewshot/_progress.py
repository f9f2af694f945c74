"""The one progress-bar policy of fewshot: a bar appears only once work has run for ``DELAY_SECONDS``.

Every bar in the package is made by ``progress(...)`` (or takes its keywords from ``bar_options``), so that:

* by default a bar is created with tqdm's ``delay=DELAY_SECONDS``: a call that ends sooner prints nothing, and
  a longer one (encoding a corpus, a fine-tune, a benchmark) shows its bar from then on;
* ``show_progress_bar=True`` / ``False`` (the argument of ``encode``, ``finetune_encoder``, ...) forces the bar on
  at once / off;
* the environment variable ``FEWSHOT_PROGRESS`` (``1``/``true``/``on`` or ``0``/``false``/``off``) forces it for
  every call that does not pass the argument — e.g. ``FEWSHOT_PROGRESS=0`` in a service's environment;
* without either, tqdm's own ``TQDM_DISABLE=1`` still silences everything.

Third-party bars are kept out: sentence-transformers' ``Batches`` bar is never enabled (fewshot loops over the
batches itself, under this policy), and transformers' ``Loading weights`` bar goes through ``quiet_loading``.

Library messages go through ``logging`` (logger names under ``fewshot``), never ``print``; ``LOGGER`` is the
package's root logger.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from fewshot.errors import InvalidInputError

#: seconds of work before a bar appears (tqdm ``delay``)
DELAY_SECONDS = 2.0
#: environment switch: 1 forces bars on, 0 off, unset/empty leaves the delay policy
ENV = "FEWSHOT_PROGRESS"
_ON, _OFF = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})
LOGGER = logging.getLogger("fewshot")


def forced() -> bool | None:
    """``FEWSHOT_PROGRESS`` as True (force on) / False (force off) / None (unset: the delay policy)."""
    raw = os.environ.get(ENV, "").strip().lower()
    if not raw:
        return None
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise InvalidInputError(f"{ENV} must be 1 (bars on) or 0 (bars off), or unset; got {raw!r}")


def bar_options(show: bool | None = None) -> dict[str, Any]:
    """tqdm keywords for a bar under the policy. ``show`` True/False forces it (it beats ``FEWSHOT_PROGRESS``);
    None follows the environment, else waits ``DELAY_SECONDS`` before drawing anything."""
    if show is None:
        show = forced()
    if show is None:
        return {"delay": DELAY_SECONDS}  # `disable` left to tqdm, so TQDM_DISABLE=1 still applies
    return {"disable": False, "delay": 0.0} if show else {"disable": True}


def progress(iterable: Iterable[Any] | None = None, *, show: bool | None = None, **tqdm_kwargs: Any) -> Any:
    """A tqdm bar (``tqdm.auto``) over ``iterable`` (or a manual one with ``total=``) under the policy; other
    keywords (``desc``, ``total``, ``unit``, ``leave``...) go to tqdm."""
    from tqdm.auto import tqdm

    return tqdm(iterable, **{**tqdm_kwargs, **bar_options(show)})


def _policy_hook(factory: Any, args: tuple, kwargs: dict) -> Any:
    """transformers' tqdm hook: its bars (``Loading weights``...) follow the policy (a load under
    ``DELAY_SECONDS`` shows nothing)."""
    options = bar_options(None)
    if kwargs.get("disable"):
        options = {}
    return factory(*args, **{**kwargs, **options})


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Load a Hugging Face model inside this block: transformers' bars (``Loading weights``) follow the policy;
    the previous hook is restored afterwards. A no-op where transformers is missing or too old to take a hook."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    previous = set_hook(_policy_hook) if set_hook is not None else None
    try:
        yield
    finally:
        if set_hook is not None:
            set_hook(previous)
