"""How the image encoder runs fast without changing its answer.

Why: the image encoder is ~95 % of zero-shot inference, and plain eager fp32 PyTorch one slice at a
time reaches well under half of the fp32 matmul rate of a CPU. What this module adds, and why each
part is safe by default:

* **threads** -- ``torch`` is told to use the cores this process may run on (CPU affinity / cgroup
  quota), unless the user set ``OMP_NUM_THREADS`` or ``SAMLAB_THREADS``.
* **inference mode, channels_last, batches** -- exact: the same arithmetic, laid out for the
  convolution kernels (channels_last is applied only to models that have convolutions) and run on
  several slices per call. Outputs differ from the plain path by float rounding only (~1e-6).
* **torch.compile** (``SAMLAB_COMPILE=auto|on|off``, default ``auto``) -- also exact (fp32), compiled
  with Inductor's ``freezing`` option (its inference-only graph optimisations: 1.78x over eager on the
  idle 2-core CPU, against 1.58x without it; fp32, outputs equal to ~2e-6), but a cold compile costs
  a minute or more. Freezing folds the weights into the compiled code as constants (measured: after
  an in-place update a frozen LiteMedSAM encoder answered with the old weights, 0.67 relative error),
  so the runner watches the parameters' version counters and, once a weight changes (an optimiser
  step), drops its compiled code and runs eagerly from then on (a recompile of the same module would
  be served the stale graph from Dynamo's code cache, whose guards do not look at weight values).
  ``torch.compile(options={"freezing": True})`` does *not* turn freezing on (measured: no speed-up,
  weights not folded); the config is patched around the compiling call instead. Compiled code is kept in a persistent cache
  (``~/.cache/samlab/inductor``), and each compile's cost and speed-up are recorded
  (``compile_record.json`` there), so ``auto`` compiles only when the slices still to embed amortise
  the expected compile time; with no record it assumes a cold compile (:data:`COLD_COMPILE_S`), so a
  fresh clone's quick run never compiles. Any compiler failure falls back to eager, once, with a warning.
* **bf16 autocast** (``SAMLAB_PRECISION=bf16``, default ``fp32``) -- *not* exact: an option whose Dice
  change is measured by ``benchmarks/encoder_efficiency.py``. Its embeddings get their own cache key
  (:func:`samlab.models.predictor.Predictor.cache_namespace`), so exact and reduced results never mix.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..io import read_json, write_json_atomic

COMPILE_MODES = ("auto", "on", "off")
PRECISIONS = ("fp32", "bf16")
#: Assumed cost of a compile with no record on this machine: a cold compile of LiteMedSAM's encoder took
#: 277-504 s on the 2-core development CPU under load. Deliberately pessimistic: `auto` must not make a
#: fresh clone's quick run slower.
COLD_COMPILE_S = 300.0
#: Assumed compiled-vs-eager speed-up with no record (measured 1.7x loaded, 2.0x idle on the 2-core CPU).
ASSUMED_SPEEDUP = 1.7
#: Most slices per encoder call on the CPU. Measured on the 2-core development CPU under heavy load
#: (LiteMedSAM, 256 px, channels_last): 4.7 s per slice one at a time, 8.4 s in pairs, 28.6 s in fours --
#: on a busy CPU larger batches thrash the caches. ``benchmarks/encoder_efficiency.py --batch 2`` measures
#: it again; ``$SAMLAB_CPU_BATCH`` raises the cap where batches pay. GPUs batch from free memory.
CPU_MAX_BATCH = 1


def compile_mode(value: str | None = None) -> str:
    """``value``, else ``$SAMLAB_COMPILE``, else ``auto``; anything else is a clear error."""
    mode = (value or os.environ.get("SAMLAB_COMPILE") or "auto").strip().lower()
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r} (SAMLAB_COMPILE or compile=) must be one of {', '.join(COMPILE_MODES)}")
    return mode


def precision(value: str | None = None) -> str:
    """``value``, else ``$SAMLAB_PRECISION``, else ``fp32`` (exact)."""
    name = (value or os.environ.get("SAMLAB_PRECISION") or "fp32").strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"precision {name!r} (SAMLAB_PRECISION or precision=) must be one of {', '.join(PRECISIONS)}")
    return name


def available_cores() -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup v2 CPU quota where one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


#: torch's thread count when samlab.models was imported: a different count later means someone chose it.
_TORCH_DEFAULT_THREADS = torch.get_num_threads()


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads``, ``$SAMLAB_THREADS`` or the available cores.

    With no ``threads`` given, a choice already made wins: ``OMP_NUM_THREADS`` in the environment,
    or ``torch.set_num_threads`` called after samlab was imported. Returns the thread count in use.
    """
    if threads is None:
        env = os.environ.get("SAMLAB_THREADS")
        if env:
            threads = int(env)
        elif os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads() != _TORCH_DEFAULT_THREADS:
            return torch.get_num_threads()
        else:
            threads = available_cores()
    if threads < 1:
        raise ValueError(f"thread count must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def cache_root() -> Path:
    """``$SAMLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/samlab``, else ``~/.cache/samlab``."""
    if os.environ.get("SAMLAB_CACHE_DIR"):
        return Path(os.environ["SAMLAB_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "samlab"


def enable_compile_cache() -> Path:
    """Point inductor's on-disk caches at ``<cache_root>/inductor`` (unless the user chose a folder)."""
    folder = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor")))
    folder.mkdir(parents=True, exist_ok=True)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return folder


def _record_path() -> Path:
    return cache_root() / "compile_record.json"


def record_key(name: str, shape: tuple[int, ...], precision_name: str) -> str:
    """One compile record per model, input shape, precision, torch version and CPU."""
    return f"{name}|{'x'.join(map(str, shape))}|{precision_name}|torch{torch.__version__}|{platform.processor() or platform.machine()}"


def read_record(key: str) -> dict | None:
    path = _record_path()
    if not path.is_file():
        return None
    try:
        return read_json(path, "compile record").get(key)
    except (ValueError, AttributeError):  # an unreadable record is no record: the next compile rewrites it
        return None


def write_record(key: str, entry: dict) -> None:
    path = _record_path()
    try:
        records = read_json(path, "compile record") if path.is_file() else {}
        if not isinstance(records, dict):
            records = {}
    except ValueError:
        records = {}
    records[key] = entry
    write_json_atomic(path, records, indent=1)


def compile_pays(items_left: int, eager_s_per_item: float, record: dict | None) -> bool:
    """Would compiling now save time over embedding ``items_left`` more items eagerly?

    With a record, the last compile's cost (warm caches make it far cheaper than the first) and its
    measured speed-up; without one, :data:`COLD_COMPILE_S` and :data:`ASSUMED_SPEEDUP`.
    """
    if record:  # the inductor cache only gets warmer: the cheapest compile seen is the one to expect
        cost = float(record.get("compile_s_min", record.get("compile_s", COLD_COMPILE_S)))
        speedup = float(record.get("speedup", ASSUMED_SPEEDUP))
    else:
        cost, speedup = COLD_COMPILE_S, ASSUMED_SPEEDUP
    saving = eager_s_per_item * (1.0 - 1.0 / max(speedup, 1e-6))
    return items_left * saving > cost


def has_convolutions(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def autocast_for(device: torch.device, precision_name: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision_name == 'bf16'``, a no-op context for fp32."""
    if precision_name == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_batch_size(image_size: int, device: torch.device) -> int:
    """Slices per encoder call, from free memory and a rough activation size per slice.

    Activations of a SAM-family encoder take roughly 6 KB per input pixel at their peak (LiteMedSAM
    at 256 px: ~0.4 GB per slice, measured 0.3 GB; ViT-H at 1024 px: several GB); a batch may use a
    quarter of the free memory. The CPU gains little past a few slices (:data:`CPU_MAX_BATCH`).
    """
    per_item = image_size * image_size * 6 * 1024
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cap = 32
    else:
        free, cap = free_host_memory(), int(os.environ.get("SAMLAB_CPU_BATCH") or CPU_MAX_BATCH)
    return int(max(1, min(cap, (free // 4) // per_item)))


def free_host_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``; the cgroup limit where lower)."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(free, 0)


def _freezing() -> contextlib.AbstractContextManager:
    """Inductor's ``freezing`` switched on for the calls inside (where it exists), off again afterwards."""
    try:
        import torch._inductor.config as inductor_config
    except ImportError:  # pragma: no cover -- a torch without Inductor: the compile itself will fail and fall back
        return contextlib.nullcontext()
    return inductor_config.patch(freezing=True)


class EncoderRunner:
    """Run one image encoder the fast way: batches, inference mode, channels_last, optional compile/bf16.

    ``__call__(batch, items_left)`` returns fp32 features on the CPU. ``items_left`` (slices still to
    embed, this batch included) lets ``auto`` decide whether a compile pays off.
    """

    def __init__(self, encoder: nn.Module, device: torch.device, name: str, compile: str | None = None,
                 precision_name: str | None = None,
                 compiler: Callable[[nn.Module], Callable] | None = None):
        self.encoder = encoder
        self.device = device
        self.name = name
        self.compile_mode = compile_mode(compile)
        self.precision = precision(precision_name)
        self.channels_last = has_convolutions(encoder)
        if self.channels_last:
            encoder.to(memory_format=torch.channels_last)
        self._compiler = compiler or (lambda m: torch.compile(m, dynamic=False))
        self._compiled: dict[tuple[int, ...], Callable] = {}
        self._weights_version = self.weights_version()
        self._failed = False
        self.eager_s_per_item: float | None = None
        self.compile_seconds: float | None = None
        self.compiled_used = False
        self._pending_record: tuple[tuple[int, ...], float] | None = None  # a compile whose speed-up is not yet measured

    def weights_version(self) -> int:
        """Sum of the encoder parameters' in-place version counters: it changes whenever a weight is updated."""
        return sum(p._version for p in self.encoder.parameters())

    def _key(self, shape: tuple[int, ...]) -> str:
        return record_key(self.name, shape, self.precision)

    def _want_compile(self, shape: tuple[int, ...], items_left: int) -> bool:
        if self._failed or self.compile_mode == "off":
            return False
        if shape in self._compiled or self.compile_mode == "on":
            return True
        if self.eager_s_per_item is None:  # measure one eager batch first
            return False
        return compile_pays(items_left, self.eager_s_per_item, read_record(self._key(shape)))

    def _compile(self, shape: tuple[int, ...], batch: torch.Tensor) -> torch.Tensor | None:
        """Compile for ``shape`` and run ``batch`` through it; on any failure warn once and return None."""
        enable_compile_cache()
        start = time.perf_counter()
        try:
            compiled = self._compiler(self.encoder)
            with _freezing():  # torch.compile compiles lazily: at this first call
                out = self._run(compiled, batch)
        except Exception as exc:  # noqa: BLE001 -- a missing C compiler, an unsupported op, ...: eager still works
            self._failed = True
            warnings.warn(f"torch.compile of the {self.name} encoder failed, using eager mode "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                          RuntimeWarning, stacklevel=3)
            return None
        self.compile_seconds = time.perf_counter() - start
        self._compiled[shape] = compiled
        # The speed-up of this compile is measured on the next batch (see __call__).
        self._pending_record = (shape, self.compile_seconds)
        return out

    def _run(self, fn: Callable, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast_for(self.device, self.precision):
            out = fn(batch)
        return out.float()

    def __call__(self, batch: torch.Tensor, items_left: int | None = None) -> torch.Tensor:
        batch = batch.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        shape = tuple(batch.shape)
        items_left = batch.shape[0] if items_left is None else items_left
        version = self.weights_version()
        if version != self._weights_version:  # weights updated since the compile: its frozen constants are stale
            self._weights_version = version
            if self._compiled:
                self._compiled.clear()
                self._failed = True  # eager from now on (exact); see the module docstring
        out = None
        if self._want_compile(shape, items_left):
            if shape not in self._compiled:
                out = self._compile(shape, batch)
            else:
                start = time.perf_counter()
                out = self._run(self._compiled[shape], batch)
                self._note_compiled_speed(shape, (time.perf_counter() - start) / shape[0])
            self.compiled_used = self.compiled_used or out is not None
        if out is None:
            start = time.perf_counter()
            out = self._run(self.encoder, batch)
            per_item = (time.perf_counter() - start) / shape[0]
            self.eager_s_per_item = per_item if self.eager_s_per_item is None else min(self.eager_s_per_item, per_item)
        # Inference tensors cannot enter autograd later (decoder training reuses embeddings): clone out.
        return out.detach().cpu().clone()

    def _note_compiled_speed(self, shape: tuple[int, ...], compiled_s_per_item: float) -> None:
        pending = self._pending_record
        if pending is None or pending[0] != shape:
            return
        self._pending_record = None
        previous = read_record(self._key(shape)) or {}
        cheapest = min(pending[1], float(previous.get("compile_s_min", math.inf)))
        entry = {"compile_s": round(pending[1], 2), "compile_s_min": round(cheapest, 2),
                 "compiled_s_per_item": round(compiled_s_per_item, 4)}
        if self.eager_s_per_item:
            entry["eager_s_per_item"] = round(self.eager_s_per_item, 4)
            entry["speedup"] = round(self.eager_s_per_item / compiled_s_per_item, 3)
        try:
            write_record(self._key(shape), entry)
        except OSError:  # a read-only home: the record is an optimisation, never a failure
            pass
