"""`benchmarks.throughput`'s pieces that need no timing: the CPU's bfloat16
instructions read from /proc/cpuinfo text, and the side-by-side ratios."""

import pytest

from benchmarks import throughput

XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
OLD = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU E5-2690 v4\nflags\t\t: fpu avx2 fma\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("text,name,found,says", [
    (XEON, "Intel(R) Xeon(R) Platinum 8480C", ["avx512_bf16", "amx_bf16"], "avx512_bf16, amx_bf16;"),
    (EPYC, "AMD EPYC", ["avx512_bf16"], "avx512_bf16 (no AMX)"),
    (OLD, "Intel(R) Xeon(R) CPU E5-2690 v4", [], "none: mixed_bfloat16 emulates"),
    (GRAVITON, None, ["bf16"], "bfloat16 instructions: bf16"),
])
def test_the_cpus_bfloat16_instructions_are_read_from_its_flags(text, name, found, says):
    got_name, _, got = throughput.cpu_description(text)
    assert got == found and (name is None or got_name == name)
    assert says in throughput.describe_cpu(text) + ";"


def test_ratios_are_to_vit_of_the_same_precision_and_to_the_official_model_of_the_same_architecture():
    def row(backend, model, precision, train, infer, fast=None):
        return dict(backend=backend, model=model, precision=precision, jit_compile="auto", fast_paths=fast,
                    train_img_s=train, inference_img_s=infer)

    rows = [
        row("official PyTorch", "SL-ViT", "float32", 50.0, 100.0),
        row("official PyTorch", "ViT", "float32", 80.0, 200.0),
        row("torch", "vit", "float32", 60.0, 120.0, True),
        row("torch", "sl_vit", "float32", 40.0, 90.0, True),
        row("torch", "vit", "mixed_bfloat16", 120.0, 240.0, True),
        row("torch", "sl_vit", "mixed_bfloat16", 90.0, 150.0, True),
        row("torch", "sl_vit", "mixed_bfloat16", 30.0, 60.0, False),  # no ViT with fast paths off
    ]
    throughput.add_ratios(rows, "vit")
    assert rows[3]["train_vs_vit"] == 40.0 / 60.0 and rows[3]["inference_vs_vit"] == 90.0 / 120.0
    assert rows[5]["train_vs_vit"] == 90.0 / 120.0
    assert rows[5]["train_vs_official"] == 90.0 / 50.0 and rows[4]["inference_vs_official"] == 240.0 / 200.0
    assert "train_vs_vit" not in rows[6] and rows[6]["train_vs_official"] == 30.0 / 50.0
    assert "train_vs_vit" not in rows[0]
