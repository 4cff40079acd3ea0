"""The displacement estimator's forward pass on the CPU: five ways to run it, against a FLOP limit.

Why (issue 17, item 2): on a CPU host the forward is the registration's largest single cost
(``benchmarks/results/service_latency*.md``). This measures what the cheap options buy on one intra-op
thread, for VoxelMorph at the SPEC's default size loaded as an artifact, on 2D 128×128 pairs, batch 1 and 16:
``eager`` (``torch.no_grad``, today's path in ``models/inference.py``), ``inference_mode``, ``channels_last``
(model and inputs NHWC, the layout oneDNN convolutions prefer), ``torch.compile`` (default mode,
``dynamic=False``: one graph per batch size; its first call per batch is reported apart as the compile time,
Inductor's caches off: a cold start), ``MONAI`` (the same network from ``monai.networks.blocks``, the
project's weights copied in) and ``eager, network only`` (U-Net and flow head: what the FLOP count covers).
``× FLOP limit``: how many times slower each row runs than its convolutions' FLOPs (``FlopCounterMode``)
would at the speed of an fp32 matmul on the same thread count (the machine's ceiling).

Every row's ``disp`` is compared with eager's. The SPEC's near-zero flow head would make every
displacement ~1e-5 voxels and any comparison pass trivially, so the head is redrawn and scaled to a
largest velocity of 4 voxels before the artifact is saved (latency does not depend on weight values).
Timing: warm-up calls, then rounds calling every row once in turn (load drift on a shared machine hits
all rows alike); medians and minima of ``time.perf_counter``.

    nice -n 5 python benchmarks/forward.py                     # 6 to 9 minutes on 2 shared cores
    python benchmarks/forward.py --quick --out /tmp/forward.md  # seconds: 32×32, compile backend aot_eager
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.networks.blocks import DVF2DDF, Convolution, UpSample
from monai.networks.layers import Pool
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.artifact import load_artifact, save_artifact  # noqa: E402
from models.integrate import resize_field  # noqa: E402
from models.intensity import IntensityConfig  # noqa: E402
from models.networks.estimator import Deformation, DisplacementEstimator, EstimatorConfig  # noqa: E402
from models.networks.registry import build_estimator  # noqa: E402

VARIANTS = ("eager", "inference_mode", "channels_last", "torch.compile", "MONAI", "eager, network only")
FULL = {"shape": (128, 128), "batches": (1, 16), "repeats": {1: 40, 16: 10}, "warmup": 3, "matmul_n": 1024}
QUICK = {"shape": (32, 32), "batches": (1, 16), "repeats": {1: 3, 16: 2}, "warmup": 1, "matmul_n": 256}
MAX_VELOCITY = 4.0  # voxels: a trained model's order of magnitude at 128² (see the docstring)


@dataclass
class Variant:
    """A way of running the forward: ``call(moving, fixed) -> disp`` on inputs passed through ``prepare``."""
    name: str
    call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    compared: bool = True  # False: another output than eager's disp (the network-only row)


@dataclass
class Result:
    """One row: per-call seconds, the first call (compile time), the deviation from eager or the error."""
    times: list[float] = field(default_factory=list)
    first_call_s: float = 0.0
    max_diff: float | None = None
    error: str | None = None


Results = dict[int, dict[str, Result]]  # batch -> variant -> row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The flags; ``--quick`` is the test's run (tiny grid, few repeats, a compile backend without C++)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="32×32, few repeats, torch.compile backend aot_eager")
    p.add_argument("--repeats", type=int, help="timed rounds per batch size (default 40 at batch 1, 10 at 16)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, as in the worker)")
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; --quick aot_eager)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "forward.md")
    args = p.parse_args(argv)
    args.plan = plan = dict(QUICK if args.quick else FULL)
    if (args.repeats is not None and args.repeats < 1) or args.threads < 1:
        p.error(f"--repeats and --threads must be at least 1, got {args.repeats} and {args.threads}")
    plan["repeats"] = dict.fromkeys(plan["batches"], args.repeats) if args.repeats else plan["repeats"]
    plan["backend"] = args.compile_backend or ("aot_eager" if args.quick else "inductor")
    if plan["backend"] not in (known := torch._dynamo.list_backends(exclude_tags=())):
        p.error(f"unknown --compile-backend {plan['backend']!r}; torch knows {', '.join(known)}")
    return args


def build_model(shape: tuple[int, ...], folder: Path) -> DisplacementEstimator:
    """The SPEC's default VoxelMorph, saved and loaded as an artifact, its flow head scaled to move voxels."""
    torch.manual_seed(0)
    config = EstimatorConfig(ndim=len(shape))
    estimator = build_estimator(config).eval()
    nn.init.kaiming_uniform_(estimator.flow.weight, a=5**0.5)  # PyTorch's default, not the near-zero start
    with torch.no_grad():
        scale = MAX_VELOCITY / estimator(*inputs(1, shape, seed=1)).vel.abs().max().item()
        for parameter in (estimator.flow.weight, estimator.flow.bias):
            parameter.mul_(scale)
    save_artifact(folder, estimator, config, IntensityConfig(), train_shape=shape,
                  card={"method": "none", "data": "none: random weights (benchmarks/forward.py)"})
    return load_artifact(folder).estimator


class MonaiUNet(nn.Module):
    """The project's U-Net (``models/networks/unet.py``) from MONAI blocks, with the same parameter names:
    per level a ``Convolution`` (3×3, stride 1, bias, LeakyReLU 0.2, no norm or dropout); max pooling down,
    nearest ×2 upsampling (``UpSample``) and skip concatenation up, then the full-resolution convs."""

    def __init__(self, enc: tuple[int, ...], dec: tuple[int, ...], in_channels: int = 2) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Module:
            return Convolution(2, cin, cout, strides=1, kernel_size=3, act=("leakyrelu", {"negative_slope": 0.2}),
                               norm=None, bias=True)

        self.pool = Pool["max", 2](kernel_size=2)
        self.upsample = UpSample(2, scale_factor=2, mode="nontrainable", interp_mode="nearest", align_corners=None)
        # (where, conv's output channels, channels after it: a decoder level's output is joined by its skip)
        plan = ([("down", f, f) for f in enc] + [("up", f, f + s) for f, s in zip(dec[: len(enc)], reversed(enc))]
                + [("extra", f, f) for f in dec[len(enc):]])
        channels, self.down, self.up, self.extra = in_channels, nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for where, features, after in plan:
            getattr(self, where).append(block(channels, features))
            channels = after
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        for block in self.up:
            x = torch.cat([self.upsample(block(x)), skips.pop()], dim=1)
        for block in self.extra:
            x = block(x)
        return x


class MonaiEstimator(nn.Module):
    """U-Net, flow head (``Convolution``, conv only) and scaling and squaring (``DVF2DDF``), as the project's;
    the resizes around the integration are the project's ``resize_field`` (no MONAI block rescales voxel units).
    """

    def __init__(self, config: EstimatorConfig) -> None:
        super().__init__()
        self.backbone = MonaiUNet(config.enc, config.dec)
        self.flow = Convolution(2, self.backbone.out_channels, 2, kernel_size=3, conv_only=True)
        self.integrate = DVF2DDF(num_steps=config.int_steps, mode="bilinear", padding_mode="zeros")
        self.downsize = config.int_downsize

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Deformation:
        shape = tuple(fixed.shape[2:])
        flow = self.flow(self.backbone(torch.cat([moving, fixed], dim=1)))
        vel = resize_field(flow, tuple(max(s // self.downsize, 2) for s in shape))
        return Deformation(vel=vel, disp=resize_field(self.integrate(vel), shape),
                           disp_inv=resize_field(self.integrate(-vel), shape))


def monai_copy(estimator: DisplacementEstimator) -> MonaiEstimator:
    """The MONAI network with ``estimator``'s weights (names line up but for the flow head's ``conv.``)."""
    monai_net = MonaiEstimator(EstimatorConfig(ndim=2)).eval()
    state = {k.replace("flow.", "flow.conv.", 1) if k.startswith("flow.") else k: v
             for k, v in estimator.state_dict().items()}
    monai_net.load_state_dict(state, strict=True)
    return monai_net


def runner(model: Callable, mode: Callable = torch.no_grad) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``model(moving, fixed)`` under ``mode``, returning ``disp`` (or the tensor a network-only call returns)."""
    def call(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        with mode():
            out = model(moving, fixed)
        return out.disp if isinstance(out, Deformation) else out
    return call


def variants(estimator: DisplacementEstimator, backend: str) -> list[Variant]:
    """The rows, in :data:`VARIANTS` order; each returns ``disp`` (the network-only row its flow)."""
    last = torch.channels_last
    return [Variant("eager", runner(estimator)), Variant("inference_mode", runner(estimator, torch.inference_mode)),
            Variant("channels_last", runner(copy.deepcopy(estimator).to(memory_format=last)),
                    lambda t: t.contiguous(memory_format=last)),
            Variant("torch.compile", runner(torch.compile(estimator, dynamic=False, backend=backend))),
            Variant("MONAI", runner(monai_copy(estimator))),
            Variant("eager, network only", compared=False,
                    call=runner(lambda m, f: estimator.flow(estimator.backbone(torch.cat([m, f], 1)))))]


def inputs(batch: int, shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``(batch, 1, *shape)`` moving and fixed images in [0, 1] (the normalised intensity range)."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 1, *shape, generator=generator) for _ in range(2))  # type: ignore[return-value]


def seconds(call: Callable[[], object]) -> float:
    """Wall seconds of one call (CPU only: nothing to synchronise)."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(rows: list[Variant], batch: int, shape: tuple[int, ...], warmup: int, repeats: int) -> dict[str, Result]:
    """Warm every row up (the first call is kept: compile time), check it against eager, then time it in rounds."""
    moving, fixed = inputs(batch, shape, seed=batch)
    results, live, reference = {}, [], None
    for row in rows:
        result = results[row.name] = Result()
        m, f = row.prepare(moving), row.prepare(fixed)
        try:
            start = time.perf_counter()
            out = row.call(m, f)
            result.first_call_s = time.perf_counter() - start
            for _ in range(warmup - 1):
                row.call(m, f)
        except Exception as error:  # noqa: BLE001 - e.g. no C compiler for Inductor: a row, not a crash
            first_line = (str(error).strip().splitlines() or [""])[0][:160]
            result.error = f"{type(error).__name__}: {first_line}".replace("|", "/")
            continue
        if reference is None:
            reference = out
        elif row.compared:
            result.max_diff = (out - reference).abs().max().item()
        live.append((row, m, f, result))
    for _ in range(repeats):
        for row, m, f, result in live:
            result.times.append(seconds(lambda row=row, m=m, f=f: row.call(m, f)))
    return results


def count_flops(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, list[str]]:
    """FLOPs of one pair and the operators counted (convolutions; elementwise ops and grid_sample are not)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs(1, shape, seed=0))
    return counter.get_total_flops(), sorted(str(op) for op in counter.get_flop_counts()["Global"])


def matmul_ceiling(n: int, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n×n @ n×n matmul on this thread count: what a dense kernel reaches here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: first-call allocations
    return 2 * n**3 / min(seconds(lambda: a @ b) for _ in range(repeats)) / 1e9


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (``platform.processor()`` is often empty on Linux)."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def table(results: Results, flops: int, ceiling: float) -> list[str]:
    """The markdown rows; ``× FLOP limit`` = median ms per pair / (FLOPs per pair / ceiling)."""
    lines = ["| variant | batch | ms/call median | ms/call min | ms/pair median | GFLOP/s | × FLOP limit "
             "| max abs diff vs eager |", "|---|---|---|---|---|---|---|---|"]
    limit_ms = 1e3 * flops / (ceiling * 1e9)
    for name in VARIANTS:
        for batch, rows in results.items():
            r = rows[name]
            if r.error:
                lines.append(f"| {name} | {batch} | error: {r.error} | | | | | |")
                continue
            median, best = 1e3 * statistics.median(r.times), 1e3 * min(r.times)
            diff = "reference" if name == "eager" else ("n/a (flow, not disp)" if r.max_diff is None
                                                       else f"{r.max_diff:.2e}")
            lines.append(f"| {name} | {batch} | {median:.2f} | {best:.2f} | {median / batch:.2f} | "
                         f"{flops * batch / (median / 1e3) / 1e9:.1f} | {median / batch / limit_ms:.1f} | {diff} |")
    return lines


def per_pair(results: Results, name: str, batch: int, stat: Callable = statistics.median) -> float | None:
    """Median (or ``stat``) ms per pair of a row, None if it failed."""
    return None if results[batch][name].error else 1e3 * stat(results[batch][name].times) / batch


def reading(results: Results, flops: int, ceiling: float) -> list[str]:
    """Sentences computed from the numbers: each option against eager, the compile's payback, the FLOP gap."""
    lines, limit_ms = [], 1e3 * flops / (ceiling * 1e9)
    for batch in results:
        eager, eager_min = per_pair(results, "eager", batch), per_pair(results, "eager", batch, min)
        said = ", ".join(f"{name} ×{eager / ms:.2f} / ×{eager_min / per_pair(results, name, batch, min):.2f}"
                         for name in VARIANTS[1:5] if (ms := per_pair(results, name, batch)))
        lines.append(f"- Batch {batch}: eager {eager:.2f} ms per pair; speed-up over eager (medians / minima): {said}.")
        compiled = results[batch]["torch.compile"]
        if not compiled.error:
            saved_ms = batch * (eager - per_pair(results, "torch.compile", batch))
            payback = (f"pays back after {1e3 * compiled.first_call_s / saved_ms:,.0f} calls" if saved_ms > 0
                       else "never pays back (not faster)")
            lines.append(f"  The compile took {compiled.first_call_s:.1f} s and {payback} at this batch (medians).")
        if net := per_pair(results, "eager, network only", batch):
            net_min = per_pair(results, "eager, network only", batch, min)
            lines.append(f"  The network alone (U-Net and flow head) takes {net:.2f} ms per pair, "
                         f"{net / limit_ms:.1f}× its convolutions' FLOP limit; eager minus it, the integration "
                         f"(two scaling and squarings of 7 grid_samples, and the resizes), is {eager - net:.2f} "
                         f"ms per pair by medians, "
                         f"{eager_min - net_min:.2f} by minima ({100 * (eager_min - net_min) / eager_min:.0f} %).")
    best = min((per_pair(results, n, b), n, b) for b in results for n in VARIANTS[:5] if per_pair(results, n, b))
    return lines + [
        f"- Fastest row: {best[1]} at batch {best[2]}, {best[0] / limit_ms:.1f}× the FLOP limit: its convolutions run "
        f"at {flops / best[0] / 1e6:.1f} GFLOP/s against the matmul's {ceiling:.1f}.",
        "- The machine is shared with other work: compare rows within one batch size (their rounds interleave; the "
        "batch sizes ran minutes apart), and prefer the minima where the medians look noisy. The forward computes "
        "`disp` and `disp_inv` (two integrations), though inference uses only `disp`."]


def report(args: argparse.Namespace, argv: list[str], results: Results, facts: dict) -> str:
    """The whole markdown file: how it was run, the table, what was not counted, and the reading."""
    plan, shape, config = args.plan, "×".join(map(str, args.plan["shape"])), EstimatorConfig()
    repeats = ", ".join(f"{n} at batch {b}" for b, n in plan["repeats"].items())
    compile_times = ", ".join(f"batch {b}: " + (f"failed ({c.error})" if c.error else f"{c.first_call_s:.1f} s")
                              for b, c in ((b, r["torch.compile"]) for b, r in results.items()))
    return "\n".join([
        "# Forward pass of the displacement estimator (CPU)", "",
        f"Command: `{' '.join(['python benchmarks/forward.py', *argv])}`", "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {cpu_model()}, "
        f"{os.cpu_count()} CPUs, capability {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__} "
        f"with {torch.get_num_threads()} intra-op thread(s); Python {platform.python_version()}; load average "
        f"(1/5/15 min) {facts['load_start']} at the start, {facts['load_end']} at the end.", "",
        f"Model: VoxelMorph at the SPEC's default size (enc {list(config.enc)}, dec {list(config.dec)}, "
        f"{config.int_steps} integration steps at 1/{config.int_downsize} resolution), saved and loaded as an "
        f"artifact, random weights with the flow head scaled so that the largest velocity is {MAX_VELOCITY:g} "
        f"voxels (largest |disp| here: {facts['max_disp']:.2f} voxels). Inputs: 2D {shape} pairs, random. "
        f"Timing: {plan['warmup']} warm-up call(s), then rounds ({repeats}) calling every row once in turn.", "",
        *table(results, facts["flops"], facts["ceiling"]), "",
        f"**torch.compile**: backend `{plan['backend']}`, default mode, `dynamic=False`, Inductor caches off; "
        f"first call (compile and run; the first also starts Inductor up), {compile_times}."
        + (" `--quick` uses `aot_eager` (no C++ code generation), so its compile row checks the capture, "
           "not Inductor's speed." if plan["backend"] != "inductor" else ""), "",
        f"**FLOP limit**: `FlopCounterMode` counts {', '.join(facts['ops'])}: {facts['flops'] / 1e6:.1f} MFLOP per "
        f"pair (MONAI network: {facts['monai_flops'] / 1e6:.1f}). Not counted: elementwise ops (LeakyReLU, bias, "
        f"concatenation, pooling, upsampling), grid_sample and the integration's interpolations. Ceiling: fp32 "
        f"{plan['matmul_n']}² matmul on {torch.get_num_threads()} thread(s), best before / after the rows "
        f"{facts['ceilings'][0]:.1f} / {facts['ceilings'][1]:.1f} GFLOP/s, so {facts['ceiling']:.1f}. `× FLOP limit` "
        f"= ms per pair / (FLOPs per pair / ceiling); `GFLOP/s`: those FLOPs per second.", "",
        "**MONAI**: `Convolution` (3×3, stride 1, LeakyReLU 0.2, no norm), `Pool['max']`, `UpSample` (nearest ×2), "
        "`DVF2DDF` (scaling and squaring by `Warp`, zeros padding), with the project's weights copied in, so its "
        "outputs are compared too. Differences: the project upsamples to the skip's exact size, MONAI ×2 (the same "
        "on sides that are multiples of 16, as here); the resizes around the integration are the project's "
        "`resize_field`; MONAI's `Warp` normalises its grid by Python per-axis writes each call.", "",
        "## Reading", "", *reading(results, facts["flops"], facts["ceiling"]), ""])


@contextlib.contextmanager
def settings(threads: int) -> Iterator[None]:
    """``threads`` intra-op threads, Inductor from cold (as a fresh worker pays it), known warnings quiet (dynamo
    traces through models.warp's lru_cache, MONAI's Warp uses grid_sample as wanted); all restored after."""
    import torch._inductor.config as inductor_config  # here, not at the top: ~1.5 s to import
    before = torch.get_num_threads(), inductor_config.force_disable_caches
    torch.set_num_threads(threads)
    inductor_config.force_disable_caches = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(lru_cache|native grid_sample|dynamo_pgo).*")
        try:
            yield
        finally:
            torch.set_num_threads(before[0])
            inductor_config.force_disable_caches = before[1]


def main(argv: list[str] | None = None) -> int:
    """Build the model, measure every row at each batch size, write and print the table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plan, facts = args.plan, {"load_start": "/".join(f"{v:.2f}" for v in os.getloadavg())}
    with settings(args.threads), tempfile.TemporaryDirectory(prefix="adacs-forward-") as tmp:
        estimator = build_model(plan["shape"], Path(tmp))
        facts["flops"], facts["ops"] = count_flops(estimator, plan["shape"])
        facts["monai_flops"], _ = count_flops(monai_copy(estimator), plan["shape"])
        with torch.no_grad():
            facts["max_disp"] = estimator(*inputs(1, plan["shape"], seed=1)).disp.abs().max().item()
        ceilings = [matmul_ceiling(plan["matmul_n"])]
        rows, results = variants(estimator, plan["backend"]), {}
        for batch in plan["batches"]:
            print(f"== batch {batch}: {len(rows)} rows, {plan['repeats'][batch]} rounds", flush=True)
            results[batch] = measure(rows, batch, plan["shape"], plan["warmup"], plan["repeats"][batch])
        ceilings.append(matmul_ceiling(plan["matmul_n"]))
        facts.update(ceilings=ceilings, ceiling=max(ceilings), load_end="/".join(f"{v:.2f}" for v in os.getloadavg()))
        text = report(args, argv, results, facts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
