"""Progress bars that show their final state in executed notebooks.

Why: ``tqdm.auto`` draws ipywidgets inside a Jupyter kernel. Under papermill
nobody renders the widgets, so the stored notebook keeps the text fallback of
the first frame and reads "0 %" although the work finished. ``samlab run``
starts its kernels with :func:`use_text_progress` (see :mod:`samlab.runner`), so
every ``tqdm.auto`` bar in samlab and its libraries is a plain text bar there,
stored with its last state; interactive Jupyter sessions keep the widgets.
"""
from __future__ import annotations

__all__ = ["TEXT_PROGRESS_EXEC_LINE", "use_text_progress", "text_mode_active"]

#: The line ``samlab run`` asks each papermill kernel to execute at start-up.
TEXT_PROGRESS_EXEC_LINE = "import samlab.progress as _samlab_progress; _samlab_progress.use_text_progress()"

#: Seconds between redraws of a text bar: every redraw is stored in the executed notebook
#: (10 s keeps a 10-minute training loop to ~60 stored lines instead of one per step).
TEXT_MININTERVAL = 10.0


def use_text_progress(mininterval: float = TEXT_MININTERVAL) -> None:
    """Make ``tqdm.auto`` / ``tqdm.autonotebook`` hand out text bars in this process.

    Modules that import ``from tqdm.auto import tqdm`` after this call (samlab imports
    it inside functions or at module import, both after kernel start-up) get the text
    bar; redraws are rate-limited to ``mininterval`` seconds to keep stored output small.
    """
    import tqdm.auto
    import tqdm.autonotebook
    import tqdm.std

    class TextTqdm(tqdm.std.tqdm):  # type: ignore[misc,valid-type]
        """tqdm.std with a slower redraw: each redraw is a stored output line in the notebook."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("mininterval", mininterval)
            super().__init__(*args, **kwargs)

        def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
            """Postfix (e.g. the running loss) shown at the next timed redraw, not as a redraw of its own:
            tqdm's default ``refresh=True`` would store one line per training step."""
            super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

    def trange(*args, **kwargs):
        return TextTqdm(range(*args), **kwargs)

    for module in (tqdm.auto, tqdm.autonotebook):
        module.tqdm = TextTqdm
        module.trange = trange


def text_mode_active() -> bool:
    """True when :func:`use_text_progress` has replaced ``tqdm.auto``'s bar in this process."""
    import tqdm.auto
    import tqdm.std

    return isinstance(tqdm.auto.tqdm, type) and issubclass(tqdm.auto.tqdm, tqdm.std.tqdm) and \
        tqdm.auto.tqdm.__name__ == "TextTqdm"
