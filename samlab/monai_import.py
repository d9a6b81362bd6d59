"""Import MONAI without paying for a grammar nothing here uses.

Why: ``import monai`` imports every MONAI submodule, among them ``monai.bundle``, which imports
``jsonschema``; when the optional ``rfc3987-syntax`` package is installed (Jupyter's dependencies
bring it), jsonschema builds that package's Lark grammar for RFC 3987 IRIs at import. Measured on
the 2-core CPU: ``import monai.metrics`` 17.5 s, 13.0 s with the grammar skipped -- 4.5 s in every
notebook kernel of a study (each notebook is its own kernel) for an ``iri`` format check samlab
never asks for.

:func:`import_monai` makes ``rfc3987_syntax`` unimportable for the duration of MONAI's import only
(jsonschema then goes without its ``iri``/``iri-reference`` format checkers, exactly as when the
package is not installed) and restores it afterwards, so a later ``import rfc3987_syntax`` works.
Importing this module imports MONAI; ``samlab.metrics`` and ``samlab.train.losses`` import it
before their ``from monai... import``.
"""
from __future__ import annotations

import sys

_SKIPPED = "rfc3987_syntax"


def import_monai() -> None:
    """Import ``monai`` once, with ``rfc3987_syntax`` hidden while it imports (see the module docstring)."""
    if "monai" in sys.modules:
        return
    hide = _SKIPPED not in sys.modules
    if hide:
        sys.modules[_SKIPPED] = None  # type: ignore[assignment]  # `import` now raises ImportError, which jsonschema expects
    try:
        import monai  # noqa: F401
    finally:
        if hide and sys.modules.get(_SKIPPED, 0) is None:
            del sys.modules[_SKIPPED]


import_monai()
