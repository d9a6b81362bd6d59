"""Phase-1 pre-training: task-agnostic masked-image modelling (SSLSAM, :mod:`.mae`) and task-expansive
prompt-based supervised training (SupSAM, :mod:`.supsam`), on slices from :mod:`.data`.

Both write a phase-1 checkpoint (:mod:`samlab.models.inits`) that a grid configuration starts from
with ``init: sslsam:<path>`` or ``init: supsam:<path>``. Nothing here imports the notebook API.
"""
