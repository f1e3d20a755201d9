"""The inference fast path: precision, memory layout, compilation and CUDA graphs.

:class:`FastModel` wraps a :class:`ReverseDistillation` in eval mode and runs its forward pass
with the switches of :class:`RuntimeOptions`. Each switch keeps the anomaly maps within a
stated tolerance of the fp32 reference (``tests/unit/model/test_runtime.py``): the distances
and the Gaussian blur run in fp32 even under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

from inspector.errors import WaitAbandonedError
from inspector.model.engine import Backend
from inspector.model.records import InferenceBatch
from inspector.model.reverse_distillation import ReverseDistillation

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]
_T = TypeVar("_T")


def in_passing_thread(
    work: Callable[[], _T],
    name: str = "inspector-model-setup",
    stop: threading.Event | None = None,
) -> _T:
    """Run ``work`` on a thread of its own that ends with it; return its result or raise.

    For model set-up (loading, warm-up, reference timings) outside the thread that will run
    inference. On CPU, torch's OpenMP runtime (libgomp) gives every thread that runs a parallel
    op a team of worker threads for as long as that thread lives; once the teams hold more
    threads than there are cores, every team stops spinning between ops and sleeps instead
    (``bench/openmp_teams_ab.py`` measures what a second team costs; its latest figures are in
    ``bench/PERFORMANCE.md``). A thread that ends takes its team with it, so only the
    inference thread keeps one. The daemon loads every model through one function that runs
    here (``inspector.runtime.models.load_served_model``), whichever thread asks: the main
    thread at start, an HTTP worker thread for ``POST /v1/models``, the reload thread.

    Args:
        work: What to run.
        name: The thread's name.
        stop: Stop waiting once this is set (a daemon told to exit while a client constructor
            blocks): the work is abandoned on its daemon thread, which ends with the process.

    Raises:
        WaitAbandonedError: ``stop`` was set before ``work`` finished.
    """
    outcome: list[_T] = []
    failure: list[BaseException] = []
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)
        finally:
            finished.set()

    # A daemon thread: Ctrl+C on the caller must not wait for the work to finish.
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    while not finished.wait(0.05):
        if stop is not None and stop.is_set():
            raise WaitAbandonedError(f"stopped waiting for {name}")
    if failure:
        raise failure[0]
    return outcome[0]


@dataclass(frozen=True)
class RuntimeOptions:
    """Fast-path switches (the ``model`` config section; see ``ModelConfig``).

    Attributes:
        precision: ``fp32``, ``bf16``, ``int8`` or ``auto``. ``auto`` and ``int8`` are
            :func:`inspector.backends.load_model`'s to resolve (measured; the int8 record);
            :class:`FastModel` runs fp32 or bf16 (see :func:`resolve_precision`).
        channels_last: NHWC layout for the convolutions.
        compile: ``torch.compile`` the forward pass.
        cuda_graphs: Capture and replay the forward pass on CUDA (fixed batch shape).
    """

    precision: Literal["fp32", "bf16", "int8", "auto"] = "fp32"
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = False


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision :class:`FastModel` runs: ``fp32`` and ``bf16`` as asked, ``auto`` unmeasured.

    ``auto`` is measured where it matters: the daemon, ``predict`` and ``calibrate`` load
    through :func:`inspector.backends.load_model`, and ``bench`` through the same measurement
    (:func:`inspector.backends.auto.choose`), which times each path on the machine (cached per
    machine and checkpoint) and hands this class the precision it chose. Given ``auto`` itself
    (a library caller), this class times nothing: ``bf16`` on a CUDA GPU that supports it (the
    GPU's own capability, not a CPU flag), ``fp32`` on the CPU, where no flag predicts the
    faster one (bf16 ran 2x fp32 on one AVX512-BF16 CPU and slower than fp32 on another with
    the same flags).

    Raises:
        ValueError: ``int8`` (or anything else): int8 is a checkpoint's int8 record on OpenVINO.
    """
    if requested == "fp32":
        return "fp32"
    if requested == "bf16":
        return "bf16"
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "fp32"
    raise ValueError(
        f"precision {requested!r} is not a PyTorch fast-path precision (fp32, bf16, auto); "
        "int8 is served from a checkpoint's int8 record: load it with "
        "inspector.backends.load_model"
    )


class FastModel:
    """A model in eval mode, run with the fast-path switches.

    Args:
        model: The model; moved to ``device`` and put in eval mode.
        device: Where to run.
        options: The switches.
        batch_size: The batch shape CUDA graphs are captured for (larger batches are an error,
            smaller ones padded).

    Attributes:
        precision: ``fp32`` or ``bf16`` (``auto`` resolved by :func:`resolve_precision`).

    Raises:
        ValueError: ``options.precision`` is ``int8`` (not a PyTorch fast-path precision).
    """

    def __init__(
        self,
        model: ReverseDistillation,
        device: torch.device,
        options: RuntimeOptions,
        *,
        batch_size: int = 8,
    ) -> None:
        self.backend: Backend = "torch"
        self.device = device
        self.options = options
        self.batch_size = batch_size
        self.image_size = model.config.image_size
        self.precision: Precision = resolve_precision(options.precision, device)
        self.memory_format = (
            torch.channels_last if options.channels_last else torch.contiguous_format
        )
        self.model = model.to(device).eval()
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        forward: Callable[[torch.Tensor], InferenceBatch] = self.model
        if options.compile:
            # dynamic=False: the daemon's batches have few shapes; each compiles once.
            forward = torch.compile(self.model, dynamic=False)
        self._forward = forward
        self._graph: _CudaGraph | None = None
        self.use_cuda_graphs = options.cuda_graphs and device.type == "cuda"
        if options.cuda_graphs and device.type != "cuda":
            log.info("model.cuda_graphs ignored on %s (CUDA only)", device)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.precision == "bf16":
            # No weight-cast cache: each weight is used once per forward, so it saves nothing,
            # and cached casts must not outlive a CUDA graph capture (as make_graphed_callables
            # requires).
            with torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False):
                yield
        else:
            yield

    def _run(self, images: torch.Tensor) -> InferenceBatch:
        with self._autocast():
            return self._forward(images)

    def __call__(self, images: torch.Tensor) -> InferenceBatch:
        """Maps ``(N, 1, H, W)`` and scores ``(N,)`` (float32, on the device).

        Args:
            images: Normalised images ``(N, 3, H, W)`` on the device.
        """
        images = images.contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            if not self.use_cuda_graphs:
                out = self._run(images)
            else:
                if self._graph is None:
                    self._graph = _CudaGraph(self._run, images, self.batch_size)
                out = self._graph(images)
        return InferenceBatch(out.anomaly_map.float(), out.pred_score.float())


class _CudaGraph:
    """One captured forward pass for a fixed ``(batch_size, 3, H, W)`` input."""

    def __init__(
        self,
        run: Callable[[torch.Tensor], InferenceBatch],
        example: torch.Tensor,
        batch_size: int,
    ) -> None:
        shape = (batch_size, *example.shape[1:])
        self.static_in = torch.zeros(shape, device=example.device, dtype=example.dtype)
        self.static_in = self.static_in.contiguous(
            memory_format=torch.channels_last
            if example.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        # Warm up on a side stream (cuDNN picks algorithms, the allocator settles), then capture.
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                run(self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = run(self.static_in)

    def __call__(self, images: torch.Tensor) -> InferenceBatch:
        n = images.shape[0]
        if n > self.static_in.shape[0]:
            raise ValueError(
                f"batch of {n} exceeds the captured batch size {self.static_in.shape[0]}"
            )
        self.static_in[:n].copy_(images)
        if n < self.static_in.shape[0]:
            self.static_in[n:].zero_()
        self.graph.replay()
        # Clone: the next replay overwrites the static outputs.
        return InferenceBatch(
            self.static_out.anomaly_map[:n].clone(), self.static_out.pred_score[:n].clone()
        )
