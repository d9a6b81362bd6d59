"""Import MONAI without paying for a grammar nothing here uses.

Why: ``import monai`` imports every MONAI submodule, among them ``monai.bundle``, which imports
``jsonschema``; when the optional ``rfc3987-syntax`` package is installed (Jupyter's dependencies
bring it), jsonschema builds that package's Lark grammar for RFC 3987 IRIs at import. Measured on
the 2-core CPU: ``import monai.metrics`` 17.5 s, 13.0 s with the grammar skipped -- 4.5 s in every
notebook kernel of a study (each notebook is its own kernel) for an ``iri`` format check samlab
never asks for. Likewise ``transformers`` (peft's dependency): MONAI's TransChex network imports
it through ``optional_import`` at MONAI's import, 2.2 s per kernel (8.5 -> 6.3 s for ``import monai``
after torch, measured on the 2-core AMD EPYC), for a network samlab never builds. Notebooks that
use LoRA still import it, when ``samlab.peft`` first needs ``peft``.

:func:`import_monai` makes these packages unimportable for the duration of MONAI's import only
(jsonschema then goes without its ``iri``/``iri-reference`` format checkers and TransChex without
BERT, exactly as when the packages are not installed) and restores them afterwards, so a later
``import rfc3987_syntax`` or ``import transformers`` works.
Importing this module imports MONAI; ``samlab.metrics`` and ``samlab.train.losses`` import it
before their ``from monai... import``.
"""
from __future__ import annotations

import sys

_SKIPPED = ("rfc3987_syntax", "transformers")


def import_monai() -> None:
    """Import ``monai`` once, with the packages in ``_SKIPPED`` hidden while it imports (see the module docstring)."""
    if "monai" in sys.modules:
        return
    hidden = [name for name in _SKIPPED if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import` now raises ImportError, which MONAI expects
    try:
        import monai  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]

import_monai()
