"""The benchmark as users run it (a smoke run of every section), and the functions its figures rest on."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from support import REPO, run_env

sys.path.insert(0, str(REPO / "benchmarks"))
import bench  # noqa: E402
import common  # noqa: E402
from common import Row  # noqa: E402


@pytest.mark.slow
def test_quick_benchmark_prints_and_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--batches", "2,64", "--json", str(out)]
    result = subprocess.run(
        [*command, "--data", str(tmp_path / "data")],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=900,  # a smoke run: generous for a loaded machine
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {r["section"] for r in rows} == {"train", "data", "rollout", "memory", "kernels"}
    names = [r["name"] for r in rows]
    assert "plain loop (each frame encoded once), batch 2, fp32, TF on" in names
    assert "cvae_dist, batch 2, fp32, TF on" in names
    assert sum(r["notes"].get("best", False) for r in rows) == 2  # cvae_dist's best setting, TF on and off
    timed = [r for r in rows if r["section"] != "kernels" and not r["skipped"]]
    assert all(r["frames_per_s"] > 0 and r["seconds"] > 0 for r in timed)
    assert all(r["peak_mib"] > 0 for r in timed if r["section"] in ("train", "memory"))
    assert [r["notes"]["window"] for r in rows if r["section"] == "memory"] == [4, 4, 8, 8]
    # Batch 64 exceeds the quick data's windows: a skipped row at each precision, and the run goes on.
    too_big = [r for r in rows if r["notes"].get("batch") == 64]
    assert len(too_big) == 2 and all(r["skipped"] and r["frames_per_s"] is None for r in too_big)
    assert not report["out_of_memory"]
    # Kernels per step: eager counted, TF on and off; compiled only with --compile; no CUDA-graph variant.
    kernels = {r["name"]: r for r in rows if r["section"] == "kernels"}
    for tf in ("on", "off"):
        eager = kernels[f"cvae_dist, batch 2, fp32, TF {tf}, eager"]
        counts = eager["notes"]["counts"]["cpu"]
        assert eager["notes"]["kernels"] == counts["total"] > counts["model"] == counts["forward"] + counts["backward"] > 0
        assert eager["notes"]["kernels_per_frame"] == pytest.approx(counts["total"] / (2 * 3))
        assert report["summary"][f"kernels_per_step_eager_tf_{tf}"] == counts["total"]
        assert "--compile" in kernels[f"cvae_dist, batch 2, fp32, TF {tf}, compiled"]["skipped"]
        assert "--compile" in kernels[f"cvae_dist, batch 2, fp32, TF {tf}, compiled by region"]["skipped"]
        assert kernels[f"cvae_dist, batch 2, fp32, TF {tf}, CUDA graphs"]["skipped"] == "CUDA graphs need a GPU"
    # Stepping through time (TF off) runs more ops than decoding the window in one batch.
    assert (
        kernels["cvae_dist, batch 2, fp32, TF off, eager"]["notes"]["model_kernels"]
        > kernels["cvae_dist, batch 2, fp32, TF on, eager"]["notes"]["model_kernels"]
    )
    assert "cvae_dist, batch 2, fp32, TF on" in result.stdout and "frames/s" in result.stdout
    assert "kernels_per_step_eager_tf_off:" in result.stdout and "/frame" in result.stdout


# ---- out of memory ----------------------------------------------------------------------------


def _raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    """`error` as raised (with its traceback), from `cause` if given."""
    try:
        raise error from cause
    except BaseException as raised:  # noqa: BLE001
        return raised


def _cpu_allocation_failure() -> RuntimeError:
    try:
        torch.empty(2**62, dtype=torch.uint8)
    except RuntimeError as err:
        return err
    pytest.skip("this machine allocated 4 EiB")


OUT_OF_MEMORY = [
    "CUDA error: out of memory",
    "GET was unable to find an engine to execute this computation",
    "FIND was unable to find an engine to execute this computation",
    "cuDNN Frontend error: [cudnn_frontend] Error: No valid execution plans built.",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input.",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
]


@pytest.mark.parametrize("message", OUT_OF_MEMORY)
def test_is_out_of_memory_recognises_what_cudnn_and_cublas_raise(message):
    err = _raised(RuntimeError(message))
    assert common.is_out_of_memory(err)
    # Also wrapped, as torch.compile re-raises what fails inside it.
    assert common.is_out_of_memory(_raised(KeyError("backend failed"), cause=err))


def test_is_out_of_memory_of_torch_errors():
    assert common.is_out_of_memory(_raised(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    assert issubclass(torch.cuda.OutOfMemoryError, RuntimeError)
    assert common.is_out_of_memory(_cpu_allocation_failure())
    with pytest.raises(RuntimeError) as shapes:
        torch.ones(2, 3) @ torch.ones(4, 5)
    assert not common.is_out_of_memory(shapes.value)
    assert not common.is_out_of_memory(_raised(RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM")))
    assert not common.is_out_of_memory(_raised(ValueError("out of memory")))  # only RuntimeErrors say so


def test_fitting_notes_out_of_memory_and_raises_the_rest():
    stub = SimpleNamespace(out_of_memory=[])

    def failing(err):
        def measure():
            raise err

        return measure

    assert bench.Bench.fitting(stub, failing(RuntimeError(OUT_OF_MEMORY[1])), "batch 256, bf16") is None
    assert bench.Bench.fitting(stub, failing(torch.OutOfMemoryError("CUDA out of memory")), "batch 512, fp32") is None
    assert stub.out_of_memory == ["batch 256, bf16", "batch 512, fp32"]
    with pytest.raises(RuntimeError, match="shapes"):
        bench.Bench.fitting(stub, failing(RuntimeError("mat1 and mat2 shapes cannot be multiplied")), "batch 2, fp32")
    assert bench.Bench.fitting(stub, lambda: "row", "batch 2, fp32") == "row"
    assert len(stub.out_of_memory) == 2


# ---- kernels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "none"),
    [
        ("aten::view", True),
        ("aten::reshape", True),
        ("aten::as_strided", True),
        ("aten::transpose", True),
        ("aten::split", True),
        ("aten::detach", True),
        ("aten::to", True),  # a copy shows as the ops it calls
        ("aten::empty_strided", True),
        ("aten::resize_", True),
        ("aten::add", False),
        ("aten::add_", False),
        ("aten::copy_", False),
        ("aten::convolution_backward", False),
        ("aten::_foreach_mul_", False),
        ("aten::_local_scalar_dense", False),
    ],
)
def test_launches_no_kernel(op, none):
    assert common.launches_no_kernel(op) is none


def test_count_kernels_counts_leaf_ops_and_inductor_kernels_by_phase():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, foreach=False)  # one add_ per parameter
    x = torch.randn(8, 2, 2)

    def step():
        out = model(x.view(8, 4)).transpose(0, 1).reshape(-1)  # views: no kernels
        with torch.profiler.record_function("graph_0_cpp_fused_add_mul_0"):  # as inductor names a kernel
            pass
        out.sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=False)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    counts = common.count_kernels(step, torch.device("cpu"))
    assert set(counts) == {"cpu"}
    cpu = counts["cpu"]
    # aten::linear calls aten::addmm, which copies the bias (aten::copy_) and multiplies; reshape
    # copies the transposed output (aten::clone calls aten::copy_); aten::sum fills its output and
    # sums; the inductor kernel; and backward's seed, ones_like's aten::fill_.
    assert cpu["forward"] == 2 + 1 + 2 + 1 + 1
    assert cpu["optimizer"] == 2
    assert cpu["backward"] > 0 and cpu["after_backward"] > 0  # clipping
    assert cpu["model"] == cpu["forward"] + cpu["backward"]
    assert cpu["total"] == sum(cpu[phase] for phase in common.PHASES)


def test_kernel_summary_and_target():
    def kernels(variant, tf, total, model):
        notes = {"variant": variant, "teacher_forcing": tf, "kernels": total, "model_kernels": model, "kernels_per_frame": total / 30}
        return Row("kernels", f"cvae_dist, TF {tf}, {variant}", notes=notes)

    rows = [
        kernels("eager", True, 2700, 640),
        kernels("eager", False, 16000, 13900),
        kernels("compiled", True, 2200, 140),
        kernels("compiled", False, 4000, 1900),
        kernels("compiled by region", False, 4500, 2400),
        Row("kernels", "cvae_dist, CUDA graphs", notes={"variant": "CUDA graphs", "teacher_forcing": True}, skipped="none yet"),
    ]
    figures = common.summary(rows, "tiny", 4, None)
    assert figures["kernels_per_step_eager_tf_off"] == 16000 and figures["model_kernels_per_step_compiled_tf_on"] == 140
    assert figures["compiled_over_eager_model_kernels_tf_off"] == pytest.approx(1900 / 13900)
    assert figures["compiled_by_region_over_eager_model_kernels_tf_off"] == pytest.approx(2400 / 13900)
    assert not any("CUDA_graphs" in key for key in figures)
    lines = bench.kernel_target_lines(figures)
    assert len(lines) == 2 and lines[0].startswith("kernel target, TF off") and lines[0].endswith(": met")
    assert lines[1].endswith(": met")
    printed = common.table(rows, figures)
    assert "kernels  /frame" in printed.splitlines()[0] and "16,000" in printed and "kernels_per_step_eager_tf_off: 16,000" in printed
    assert "skipped: none yet" in printed
    # On a GPU the rows also count the host's launches, which a CUDA graph's replay makes one of.
    on_gpu = [
        Row("kernels", f"cvae_dist, TF on, {variant}", notes={**rows[0].notes, "variant": variant, "launches": launches})
        for variant, launches in (("eager", 2700), ("compiled", 2200), ("CUDA graphs", 900))
    ]
    figures = common.summary(on_gpu, "tiny", 4, None)
    assert figures["launches_per_step_CUDA_graphs_tf_on"] == 900 and figures["graphs_over_eager_launches_tf_on"] == pytest.approx(900 / 2700)
    assert "launches" in common.table(on_gpu, figures).splitlines()[0].split() and "launches" not in printed.splitlines()[0]
    # Tables without kernel rows keep their columns.
    assert "kernels" not in common.table([Row("train", "x", 1.0, 0.5, 2.0)]).splitlines()[0]


# ---- bytes moved ----------------------------------------------------------------------------


def test_bytes_moved_counts_inputs_and_outputs_of_kernels_only():
    a, b = torch.ones(1000), torch.ones(1000)
    with common.bytes_moved_mode() as counter:
        c = a + b  # reads 2 x 4000 bytes, writes 4000
        c.view(10, 100).t()  # views move nothing
        c.mul_(2)  # reads and writes c: counted as its input and its output
    assert counter.bytes == 3 * 4000 + 2 * 4000


def test_training_bytes_per_frame_halves_activations_in_bf16():
    fp32 = common.training_bytes_per_frame("tiny", 2, "no", 1)
    bf16 = common.training_bytes_per_frame("tiny", 2, "bf16", 1)
    # bf16 moves 2-byte activations, but the weights and their gradients stay float32.
    assert 0.4 * fp32 < bf16 < 0.8 * fp32


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 3350.0),
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA H200", 4800.0),
        ("NVIDIA A100-SXM4-80GB", None),
    ],
)
def test_peak_bandwidth_by_gpu_name(name, peak):
    assert common.peak_bandwidth_gbps(name) == peak


def test_summary_reports_bandwidth_and_both_full_epochs(monkeypatch):
    counted = []
    monkeypatch.setattr(common, "training_flops_per_frame", lambda preset, window: 1e9)
    monkeypatch.setattr(common, "training_bytes_per_frame", lambda *setting: counted.append(setting) or 5e8)

    def best(tf, frames_per_s):
        notes = {"batch": 2, "window": 16, "precision": "bf16", "teacher_forcing": tf, "best": True}
        return Row("train", f"cvae_dist, batch 2, bf16, TF {'on' if tf else 'off'}", frames_per_s, 30 / frames_per_s, 100.0, notes)

    figures = common.summary([best(True, 3000.0), best(False, 1000.0)], "tiny", 16, 100.0, 1000.0)
    moved = 5e8
    assert counted[0] == ("tiny", 16, "bf16", 2)  # at the best TF-on row's precision and batch
    assert figures["training_mb_moved_per_frame"] == pytest.approx(moved / 1e6)
    assert figures["best_gbps"] == pytest.approx(3000 * moved / 1e9)
    assert figures["share_of_peak_bandwidth"] == pytest.approx(figures["best_gbps"] / 1000)
    assert figures["full_epoch_seconds_tf_on"] == pytest.approx(figures["full_epoch_seconds_tf_off"] / 3)
    assert "share_of_peak" in figures and "share_of_peak_bandwidth" not in common.summary([best(True, 3000.0)], "tiny", 16, None)


def test_cuda_kernels_by_the_op_that_launched_them():
    """On events shaped as torch.profiler gives them on a GPU (no GPU needed): kernels attached to
    the CPU op that launched them, and the device's own events."""
    from torch.autograd import DeviceType

    def event(name, start, parent=None, kernels=(), device=DeviceType.CPU, activity=None):
        kernels = [SimpleNamespace(name=k) for k in kernels]
        return SimpleNamespace(
            name=name, time_range=SimpleNamespace(start=start), cpu_parent=parent, kernels=kernels, device_type=device, activity_type=activity
        )

    backward = event("autograd::engine::evaluate_function: ConvolutionBackward0", 10)
    step = event("Optimizer.step#Adam.step", 20)
    cpu = [
        event("aten::cudnn_convolution", 1, kernels=["sm90_xmma_fprop", "Memset (Device)"]),
        event("aten::convolution_backward", 11, parent=backward, kernels=["dgrad", "wgrad"]),
        backward,
        event("aten::linalg_vector_norm", 15, kernels=["reduce"]),
        event("aten::_fused_adam_", 21, parent=step, kernels=["multi_tensor_apply"]),
        step,
    ]
    device = [event(k, 0, device=DeviceType.CUDA, activity="kernel") for k in ["a", "b", "c", "d", "e", "f", "triton_poi_fused_0"]]
    device.append(event("Memcpy HtoD", 0, device=DeviceType.CUDA, activity="gpu_memcpy"))
    # The host's runtime calls: a launch per kernel (cuLaunchKernel: triton's), one per graph replay; a copy is no launch.
    runtime = [event(name, 0) for name in ["cudaLaunchKernel"] * 5 + ["cuLaunchKernel", "cudaGraphLaunch", "cudaMemcpyAsync"]]
    counts = common.cuda_kernels(cpu + device + runtime)
    assert counts == {
        "forward": 1,
        "backward": 2,
        "after_backward": 1,
        "optimizer": 1,
        "unattributed": 2,
        "model": 3,
        "total": 7,
        "launches": 7,
    }
