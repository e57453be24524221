"""`benchmarks.gpu_check`: its --cpu-smoke run in a child process of this
backend, its argument errors, and its report from a report with failures."""

import json
import os

import keras
import numpy as np
import pytest

import keras_smallvit
from benchmarks import gpu_check
from benchmarks.model_table import forward_multiply_adds

BACKEND = keras.backend.backend()


@pytest.mark.large
def test_cpu_smoke_run_writes_the_table(tmp_path):
    out = tmp_path / "check"
    # One model per child keeps XLA's compiles to the few the check needs; the
    # input pipeline (tf.data, the same on every backend) runs on the TensorFlow pass.
    argv = [
        "--cpu-smoke", "--backends", BACKEND, "--models", "sl_sata_cb_vit", "--attention-models", "sl_vit",
        "--out", str(out), "--timeout", "120",
    ]  # fmt: skip
    report = gpu_check.main(argv + ([] if BACKEND == "tensorflow" else ["--no-pipeline"]))

    saved = json.loads((out / "gpu_check.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert (out / gpu_check.OUT_MARKER).exists()
    child = saved["backends"][BACKEND]
    assert child["status"] == "ok", child.get("output_tail")
    assert saved["problems"] == []
    assert child["backend"] == BACKEND and child["device"]
    assert child["bf16_matmul_peak_tflops"] > 0
    assert [(r["model"], r["jit_compile"]) for r in child["rows"]] == [("sl_sata_cb_vit", BACKEND != "torch")]
    row = child["rows"][0]
    assert row["precision"] == "mixed_bfloat16" and "error" not in row
    assert row["train_img_s"] > 0 and row["inference_img_s"] > 0 and row["train_vs_vit"] == 1.0
    # The multiply-adds: the same count taken here, on the same tiny model.
    model = keras_smallvit.create_model("sl_sata_cb_vit", num_classes=200, image_size=16, **gpu_check.SMOKE_OVERRIDES)
    macs = forward_multiply_adds(model, 16)
    np.testing.assert_allclose(row["forward_mmacs"], macs / 1e6, rtol=1e-6)
    expected_fraction = row["train_img_s"] * 6 * macs / (child["bf16_matmul_peak_tflops"] * 1e12)
    np.testing.assert_allclose(row["train_fraction_of_peak"], expected_fraction, rtol=1e-6)
    fit = child["float16_fit"]
    assert fit["precision"] == "mixed_float16" and len(fit["losses"]) == 2 and fit["finite"]
    assert all(np.isfinite(fit["losses"]))
    if BACKEND == "torch":
        assert "torch.compile" in child["skipped"]
    fused, explicit = child["attention_rows"]
    assert [(r["model"], r["attention"], r["jit_compile"]) for r in (fused, explicit)] == [
        ("sl_vit", "fused", BACKEND != "torch"), ("sl_vit", "explicit", BACKEND != "torch")
    ]
    assert fused["train_fused_vs_explicit"] == pytest.approx(fused["train_img_s"] / explicit["train_img_s"])
    assert fused["inference_fused_vs_explicit"] == pytest.approx(fused["inference_img_s"] / explicit["inference_img_s"])

    table = (out / "gpu_check.md").read_text()
    assert f"| {BACKEND} | `sl_sata_cb_vit` | {row['jit_compile']} | {row['train_img_s']:.1f} | 1.00 |" in table
    assert f"{child['bf16_matmul_peak_tflops']:.1f} TFLOP/s" in table
    assert "Problems: none." in table
    assert f"| {BACKEND} | `sl_vit` | {fused['jit_compile']} | fused | {fused['train_img_s']:.1f} |" in table
    if BACKEND == "tensorflow":
        pipeline = saved["pipeline"]
        assert pipeline["status"] == "ok" and pipeline["host_img_s"] > 0 and pipeline["device_img_s"] > 0
        assert pipeline["host_img_s_per_core"] == pytest.approx(pipeline["host_img_s"] / os.cpu_count())
        assert f"{pipeline['host_img_s']:.0f} img/s" in table
    else:
        assert "pipeline" not in saved

    # A rerun may replace what gpu_check wrote: its marker says the folder is its own.
    gpu_check.check_out_folder(str(out))


def test_bad_arguments_are_named_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    cases = [
        (["--backends", "tensorflow,mxnet"], ValueError, "--backends.*Allowed values: tensorflow, jax, torch"),
        (["--backends", ","], ValueError, "--backends"),
        (["--models", "vit,resnet9000"], ValueError, "resnet9000"),
        (["--attention-models", "sl_vit,vit9000"], ValueError, "vit9000"),
        (["--image-size", "20"], ValueError, "--image-size must be a multiple of 16"),
        (["--steps", "0"], ValueError, "--steps must be a positive integer"),
        (["--timeout", "0"], ValueError, "--timeout"),
    ]
    for argv, error, message in cases:
        with pytest.raises(error, match=message):
            gpu_check.main(argv + ["--out", str(out)])
    with pytest.raises(SystemExit):  # argparse: unknown arguments are errors
        gpu_check.main(["--out", str(out), "--no-such-flag"])
    assert not out.exists()

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="did not write"):
        gpu_check.main(["--out", str(theirs)])
    assert os.listdir(theirs) == ["notes.txt"] and (theirs / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="not a folder"):
        gpu_check.main(["--out", str(theirs / "notes.txt")])
    gpu_check.check_out_folder(str(tmp_path / "empty_or_missing"))  # a missing folder is fine


def test_report_names_every_failure_and_keeps_the_rows_that_ran(tmp_path):
    def row(model, train, inference, jit=True, **extra):
        return dict(backend="jax", model=model, precision="mixed_bfloat16", jit_compile=jit,
                    train_img_s=train, inference_img_s=inference, first_step_s=1.0, forward_mmacs=100.0, **extra)  # fmt: skip

    report = dict(
        date="2026-12-03 10:00", cpu_smoke=False, models=["vit", "sl_vit"], image_size=64, num_classes=200,
        batch_size=256, steps=20,
        backends=dict(
            jax=dict(status="ok", seconds=100.0, device="gpu: H", bf16_matmul_peak_tflops=800.0, rows=[
                row("vit", 4000.0, 12000.0, train_fraction_of_peak=0.5), row("sl_vit", 3000.0, 9000.0),
                dict(backend="jax", model="sl_sata_cb_vit", jit_compile=True, error="XlaRuntimeError: OOM"),
            ], float16_fit=dict(model="sl_sata_cb_vit", losses=[5.3, float("nan")], finite=False), attention_rows=[
                dict(backend="jax", model="vit", precision="mixed_bfloat16", jit_compile=True, attention="fused",
                     train_img_s=5000.0, inference_img_s=18000.0, first_step_s=1.0),
                dict(backend="jax", model="vit", precision="mixed_bfloat16", jit_compile=True, attention="explicit",
                     train_img_s=4000.0, inference_img_s=12000.0, first_step_s=1.0),
                dict(backend="jax", model="sl_vit", precision="mixed_bfloat16", jit_compile=True, attention="fused",
                     error="XlaRuntimeError: cuDNN"),
                dict(backend="jax", model="sl_vit", precision="mixed_bfloat16", jit_compile=True, attention="explicit",
                     train_img_s=3000.0, inference_img_s=9000.0, first_step_s=1.0),
            ]),
            torch=dict(status="timed out after 150 s", seconds=150.0, rows=[]),
        ),
        pipeline=dict(status="ok", seconds=20.0, cores=16, augmentation="autoaugment", host_img_s=32000.0,
                      host_img_s_per_core=2000.0, device_img_s=48000.0, device_img_s_per_core=3000.0),
    )  # fmt: skip
    gpu_check.add_ratios(report)
    rows = report["backends"]["jax"]["rows"]
    assert rows[1]["train_vs_vit"] == 0.75 and rows[1]["inference_vs_vit"] == 0.75
    attention = report["backends"]["jax"]["attention_rows"]
    assert attention[0]["train_fused_vs_explicit"] == 1.25 and attention[0]["inference_fused_vs_explicit"] == 1.5
    assert not any("train_fused_vs_explicit" in row for row in attention[1:])  # explicit rows, and an error
    report["problems"] = gpu_check.problems(report)
    assert report["problems"] == [
        "jax `sl_sata_cb_vit` jit=True: XlaRuntimeError: OOM",
        "jax `sl_vit` fused attention: XlaRuntimeError: cuDNN",
        "jax mixed_float16 fit: a loss or logit is not finite",
        "torch child timed out after 150 s",
    ]
    gpu_check.write_report(str(tmp_path / "out"), report)
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| jax | `vit` | True | 4000.0 | 1.00 | 12000.0 | 1.00 | 50.0% |" in table
    assert "| jax | `sl_vit` | True | 3000.0 | 0.75 | 9000.0 | 0.75 | - |" in table
    assert "error: XlaRuntimeError: OOM" in table and "NOT FINITE" in table
    assert "- torch: not run (timed out after 150 s)" in table
    assert "| jax | `vit` | True | fused | 5000.0 | 18000.0 | 1.25 | 1.50 |" in table
    assert "| jax | `vit` | True | explicit | 4000.0 | 12000.0 | - | - |" in table
    assert "| jax | `sl_vit` | True | fused | error: XlaRuntimeError: cuDNN |" in table
    # The fastest training row (4000 img/s) over 2000 img/s per host core.
    assert "needs about 2.0 host cores in host mode, 1.3 in device mode" in table
    # Rewriting its own folder is allowed; the JSON keeps NaN as JSON can (not a crash).
    gpu_check.write_report(str(tmp_path / "out"), report)
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text())["problems"] == report["problems"]
