"""Optional dependencies: importing one that is missing raises an error that names its extra.

weft_nb's core (``pip install weft-nb``) is the engine and the notebook; a few features need more
and say so when used, never at ``import weft_nb``. Every optional import goes through
`import_extra()`, so the message (``pip install 'weft-nb[chaos]'``) is written once, by
`MissingExtraError` (in `weft_nb.errors`). The extras are declared in ``pyproject.toml``:

- ``dask``: ``distributed``, for ``weft_nb.DaskExecutor``;
- ``chaos``: ``jupyter_client``, ``nbformat`` and ``ipykernel``, for ``python -m weft_nb.chaos``
  (it runs notebooks in real kernels);
- ``timeline``: ``matplotlib``, for ``%weft timeline``;
- ``otel``: ``opentelemetry-api``, for ``weft_nb.OpenTelemetryInterceptor`` (added by the engine
  itself when installed).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from weft_nb.errors import MissingExtraError


def import_extra(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module``, which the extra ``extra`` installs; ``feature`` is what needs it.

    Raises:
        MissingExtraError: ``module`` cannot be imported; the message names the extra, and the
            import's own error is kept as its cause (and in its ``reason``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0]
        raise MissingExtraError(feature, module=package, extra=extra, reason=str(exc)) from exc
