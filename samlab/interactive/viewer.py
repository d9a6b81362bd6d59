"""The click viewer: ipywidgets + ipympl wiring around an :class:`~.session.InteractiveSegmenter`,
and the decision whether a front end exists to show it (else the notebook replays a scripted
session)."""
from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .session import InteractiveSegmenter, SegmentationState

if TYPE_CHECKING:
    import ipywidgets

__all__ = ["widgets_available", "enable_widget_backend", "InteractiveViewer"]


def widgets_available(mode: str = "auto") -> tuple[bool, str]:
    """Decide whether to open the click viewer; returns ``(decision, reason)``.

    ``on``/``off`` force it. ``auto`` (the notebook default) needs three things: an IPython
    *kernel* (not plain python), ``ipympl`` importable, and a front end that renders widgets.
    The kernel cannot ask its front end, so the last one is read from what front ends leave in the
    kernel's environment: Jupyter Server (JupyterLab, Notebook 7) sets ``JPY_SESSION_NAME`` for
    every kernel it starts for a notebook, VS Code defines ``__vsc_ipynb_file__``. Papermill, nbval
    and nbclient start kernels through jupyter_client directly and set neither, so CI takes the
    scripted path. The environment variable ``SAMLAB_WIDGETS=1``/``0`` overrides ``auto``.
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"widgets must be 'auto', 'on' or 'off', got {mode!r}")
    if mode == "on":
        return True, "widgets='on': opening the click viewer"
    if mode == "off":
        return False, "widgets='off': running the scripted session instead of the viewer"
    forced = os.environ.get("SAMLAB_WIDGETS", "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"SAMLAB_WIDGETS={forced} decides ({'viewer' if forced == '1' else 'scripted session'})"
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks
        return False, "IPython is not installed: scripted session"
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False, "not running in a Jupyter kernel: scripted session"
    if not (os.environ.get("JPY_SESSION_NAME") or "__vsc_ipynb_file__" in getattr(shell, "user_ns", {})):
        return False, ("no widget front end detected (papermill / nbval / a console kernel): scripted session; "
                       "set widgets='on' (or SAMLAB_WIDGETS=1) to force the viewer")
    if importlib.util.find_spec("ipympl") is None:  # find_spec: importing ipympl would hook into the kernel
        return False, "ipympl is not installed (pip install ipympl): scripted session"
    return True, "Jupyter front end detected: opening the click viewer"


def enable_widget_backend() -> None:
    """Switch matplotlib to ipympl (``%matplotlib widget``); only call it where a front end exists."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("enable_widget_backend() needs an IPython kernel")
    shell.run_line_magic("matplotlib", "widget")


class InteractiveViewer:
    """ipywidgets + matplotlib wiring around an :class:`InteractiveSegmenter`.

    Slice slider, structure picker, a point/box mode switch and a clear button. In point mode a
    left click adds a foreground point, a right click or shift+click a background point; in box
    mode drag a rectangle (matplotlib ``RectangleSelector``). Every change re-decodes and redraws
    the mask (orange), the ground-truth outline (green) and the Dice. The callbacks
    (``on_click``, ``on_box``, the widget observers) take plain event objects, so tests call them
    without a browser.
    """

    def __init__(self, segmenter: InteractiveSegmenter, figsize: tuple[float, float] = (5.0, 5.0)):
        import ipywidgets as W
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
        from matplotlib.widgets import RectangleSelector

        self.segmenter = segmenter
        with plt.ioff():
            self.fig, self.ax = plt.subplots(figsize=figsize)
        self.ax.set_axis_off()
        z = segmenter.slice_index
        self._image = self.ax.imshow(segmenter.image[z], cmap="gray", interpolation="nearest")
        self._mask = self.ax.imshow(np.zeros((*segmenter.shape, 4)), interpolation="nearest")
        self._gt_contour = None
        (self._fg,) = self.ax.plot([], [], "*", color="lime", markersize=14, markeredgecolor="black")
        (self._bg,) = self.ax.plot([], [], "X", color="red", markersize=11, markeredgecolor="black")
        self._box = Rectangle((0, 0), 0, 0, fill=False, edgecolor="yellow", linewidth=1.5, visible=False)
        self.ax.add_patch(self._box)
        self.slider = W.IntSlider(value=z, min=0, max=segmenter.image.shape[0] - 1, description="slice",
                                  continuous_update=False)
        self.picker = W.Dropdown(options=list(segmenter.structures), value=segmenter.structure, description="structure")
        self.mode = W.ToggleButtons(options=["point", "box"], value="point", description="prompt")
        self.clear_button = W.Button(description="clear prompt")
        self.status = W.HTML()
        self.slider.observe(self.on_slice, names="value")
        self.picker.observe(self.on_structure, names="value")
        self.mode.observe(self.on_mode, names="value")
        self.clear_button.on_click(self.on_clear)
        self.fig.canvas.mpl_connect("button_press_event", self.on_click)
        self.selector = RectangleSelector(self.ax, self.on_box, useblit=False, button=[1], minspanx=2, minspany=2,
                                          spancoords="data", interactive=False)
        self.selector.set_active(False)
        self.state = self.refresh()

    # -- callbacks
    def on_slice(self, change: Mapping[str, Any]) -> None:
        self.segmenter.set_slice(change["new"])
        self.refresh()

    def on_structure(self, change: Mapping[str, Any]) -> None:
        self.segmenter.set_structure(change["new"])
        self.refresh()

    def on_mode(self, change: Mapping[str, Any]) -> None:
        self.selector.set_active(change["new"] == "box")

    def on_clear(self, _button: Any = None) -> None:
        self.segmenter.clear()
        self.refresh()

    def on_click(self, event: Any) -> None:
        """Point mode: button 1 = foreground (background with shift held), button 3 = background."""
        if self.mode.value != "point" or event.inaxes is not self.ax or event.xdata is None:
            return
        button = int(getattr(event, "button", 1) or 1)
        if button not in (1, 3):
            return
        shift = "shift" in str(getattr(event, "key", "") or "")
        self.segmenter.add_point(event.xdata, event.ydata, foreground=(button == 1 and not shift))
        self.refresh()

    def on_box(self, eclick: Any, erelease: Any) -> None:
        if self.mode.value != "box" or None in (eclick.xdata, erelease.xdata):
            return
        self.segmenter.set_box(eclick.xdata, eclick.ydata, erelease.xdata, erelease.ydata)
        self.refresh()

    # -- drawing
    def refresh(self) -> SegmentationState:
        """Re-decode and redraw; returns the state shown."""
        state = self.segmenter.update()
        seg = self.segmenter
        self._image.set_data(seg.image[seg.slice_index])
        self._image.set_clim(float(seg.image[seg.slice_index].min()), float(seg.image[seg.slice_index].max()))
        rgba = np.zeros((*seg.shape, 4))
        rgba[state.mask] = (1.0, 0.55, 0.0, 0.45)
        self._mask.set_data(rgba)
        if self._gt_contour is not None:
            self._gt_contour.remove()
            self._gt_contour = None
        gt = seg.ground_truth
        if gt.any():
            self._gt_contour = self.ax.contour(gt.astype(float), levels=[0.5], colors=["lime"], linewidths=1.0)
        fg = [(x, y) for x, y, f in state.points if f]
        bg = [(x, y) for x, y, f in state.points if not f]
        self._fg.set_data([p[0] for p in fg], [p[1] for p in fg])
        self._bg.set_data([p[0] for p in bg], [p[1] for p in bg])
        if state.box is not None:
            x0, y0, x1, y1 = state.box
            self._box.set_bounds(x0, y0, x1 - x0, y1 - y0)
        self._box.set_visible(state.box is not None)
        self.ax.set_title(state.text, fontsize=9)
        self.status.value = f"<b>{state.text}</b>"
        self.fig.canvas.draw_idle()
        self.state = state
        return state

    def widget(self) -> ipywidgets.VBox:
        """The assembled widget; the figure canvas is included when it is an ipympl widget."""
        import ipywidgets as W

        parts = [W.HBox([self.slider, self.picker]), W.HBox([self.mode, self.clear_button])]
        if isinstance(self.fig.canvas, W.DOMWidget):
            parts.append(self.fig.canvas)
        parts.append(self.status)
        return W.VBox(parts)
