"""`python -m training.reproduce`: the tables as data, the plan, a resumable
sweep with concurrent workers, shards, `--collect` and the report."""

import csv
import json
import os

import pytest

from tests.contract import BACKEND
from training import reproduce
from training.tables import get_table
from training.tables import list_tables

# A seconds-long run of each row: a 1-block model, 64 digits, 2 epochs.
TINY = [
    "model.depth=1", "model.hidden_dim=16", "model.num_heads=2", "model.head_dim=8",
    "max_train_examples=64", "max_test_examples=32", "batch_size=16", "eval_batch_size=32",
    "repeated_augmentation=1", "augmentation=none", "epochs=2", "data_workers=1",
]


def test_list_names_every_table_with_its_rows(capsys):
    reproduce.main(["--list"])
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in listed] == list_tables()
    for line in listed:
        table = get_table(line.split(":")[0])
        assert f"{len(table.rows)} rows x {len(table.datasets)} datasets" in line


def test_plans_follow_the_papers_tables(tmp_path):
    # SPT/LSA Table 2 as published (Lee, Lee & Song 2021): a few cells, read off the paper.
    spt = get_table("spt_lsa_table2")
    cells = {(r.name, d): v for r in spt.rows for d, v in r.paper.items()}
    assert cells[("SL-ViT", "cifar100")] == 76.92 and cells[("ResNet 56", "tiny_imagenet")] == 58.77
    assert cells[("SL-Swin w/ S_pool", "svhn_cropped")] == 97.92 and cells[("ViT", "cifar10")] == 93.58
    runs = reproduce.plan(spt, [0, 1], str(tmp_path))
    assert len(runs) == len(spt.rows) * 4 * 2
    assert len({r.config.workdir for r in runs}) == len(runs)  # one folder per run
    for run in runs:
        assert (run.config.model, run.config.dataset, run.config.seed) == (run.row.model, run.dataset, run.seed)
        assert run.config.epochs == 100 and not run.config.export  # the recipe; tables need no export
    # SATA Table 2: each row on its own recipe (SATA paper Table 1: s's learning rate; t = 0.05 for PiT on C100).
    sata = {(r.row.name, r.dataset): r.config for r in reproduce.plan(get_table("sata_table2"), [0], str(tmp_path))}
    assert (sata["SATA-PiT", "cifar100"].sata_lr, sata["SATA-PiT", "cifar100"].sata_threshold) == (1e-3, 0.05)
    assert (sata["SATA-ViT", "cifar100"].sata_lr, sata["SATA-PiT", "tiny_imagenet"].sata_lr) == (7e-5, 3e-4)
    assert sata["ViT", "cifar100"].sata_lr is None and sata["ViT", "tiny_imagenet"].lr is None  # paper rate
    scaled = reproduce.plan(spt, [0], str(tmp_path), datasets=["cifar100"], rows=["vit"], epochs_scale=0.1)
    assert [(r.name, r.config.epochs, r.config.resolved_warmup_epochs()) for r in scaled] == [
        ("vit_cifar100_seed0", 10, 1)]
    with pytest.raises(ValueError, match="`--rows` 'nope'"):
        reproduce.plan(spt, [0], str(tmp_path), rows=["nope"])
    # Shards partition the plan exactly.
    names = [r.name for r in runs]
    shards = [names[i::3] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(names) and not set(shards[0]) & set(shards[1])
    assert reproduce.parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ValueError, match="`--shard`"):
            reproduce.parse_shard(bad)


@pytest.mark.skipif(BACKEND != "torch", reason="the plans and the layer settings they give are the configs', "
                    "the same on every backend: one backend (the quickest to build) is enough")
def test_every_table_plans_valid_runs_and_its_settings_reach_the_model(tmp_path):
    from keras_smallvit.layers.attention import MultiHeadSelfAttention
    from keras_smallvit.layers.suppression import TrivialAttentionSuppression
    from keras_smallvit.training.runner import build_model
    from keras_smallvit.utils.layers import all_sublayers

    for name in list_tables():
        for run in reproduce.plan(get_table(name), [0], str(tmp_path)):
            run.config.validate()  # with the model checks
    tiny = ["model.depth=1", "image_size=32"]

    def layers_of(table, row_name, kind):
        run = reproduce.plan(get_table(table), [0], str(tmp_path), rows=[row_name], assignments=tiny)[0]
        model, _ = build_model(run.config, 10, 32)
        return run.config, [layer for layer in all_sublayers(model) if isinstance(layer, kind)]

    # SATA Table 6: tau = k / sqrt(D_h) in every attention layer, with and without SATA.
    for k in (1, 3):
        for row in (f"ViT + tau x{k}", f"ViT + tau x{k} + SATA"):
            _, attentions = layers_of("sata_table6", row, MultiHeadSelfAttention)
            assert attentions and all(a.default_scale == pytest.approx(k * a.head_dim**-0.5) for a in attentions)
    # SATA Tables 3-5: s fixed at the grid's value (not trained), t as given; learnable s stays learnable.
    _, suppressions = layers_of("sata_table3", "s = 0.75, t = 0.1 (grid)", TrivialAttentionSuppression)
    assert [(s.threshold, float(s.scale), s.sata_scale.trainable) for s in suppressions] == [(0.1, 0.75, False)]
    _, suppressions = layers_of("sata_table4", "s=0 t=0.025", TrivialAttentionSuppression)
    assert [(s.threshold, float(s.scale), s.sata_scale.trainable) for s in suppressions] == [(0.025, 0.0, False)]
    config, suppressions = layers_of("sata_table3", "learnable s, t = 0.1", TrivialAttentionSuppression)
    assert [(s.threshold, s.sata_scale.trainable) for s in suppressions] == [(0.1, True)] and config.sata_lr == 1e-3
    # SATA Table 7: LSA and SATA together on ViT.
    _, attentions = layers_of("sata_table7", "ViT + LSA + SATA", MultiHeadSelfAttention)
    assert all(a.diagonal_mask and a.learnable_temperature for a in attentions)


def read_report(folder):
    with open(os.path.join(folder, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(folder, "report.csv")) as f:
        rows = list(csv.DictReader(f))
    return report, rows


@pytest.mark.skipif(BACKEND != "jax", reason="the sweep runs `training.train` in child processes of this backend; "
                    "training itself is tested on every backend: one backend (the quickest: JAX 57 s, torch 88 s "
                    "here) is enough")
def test_a_sweep_runs_two_at_once_skips_finished_runs_resumes_and_reports(tmp_path, capsys):
    out = str(tmp_path / "tables")
    base = ["digits_demo", "--out", out, "--rows", "ViT,SL-ViT", "--workers", "2"]
    tiny = [a for s in TINY for a in ("--set", s)]
    argv = base + ["--measure-steps", "0"] + tiny
    planned = reproduce.main(base + ["--measure-steps", "1", "--dry-run"] + tiny)  # plans, measures, writes nothing
    assert planned["runs"] == ["vit_digits_seed0", "sl-vit_digits_seed0"] and not os.path.exists(out)
    assert [m["model"] for m in planned["measured"]] == ["vit", "sl_vit"]
    assert all(m["images_per_second"] > 0 and m["parameters"] > 0 for m in planned["measured"])
    assert "| vit_digits_seed0 | vit | digits | 0 | 2 | new |" in capsys.readouterr().out
    report = reproduce.main(argv)
    folder = os.path.join(out, "digits_demo")
    runs = [os.path.join(folder, name) for name in ("vit_digits_seed0", "sl-vit_digits_seed0")]
    metrics = []
    for run in runs:
        with open(os.path.join(run, "metrics.json")) as f:
            metrics.append(json.load(f))
    saved, rows = read_report(folder)
    assert saved == json.loads(json.dumps(report))
    for entry, row, m, run in zip(saved["entries"], rows, metrics, runs):
        assert entry["best_mean"] == pytest.approx(100 * m["best_top1"]) and entry["n"] == 1
        assert entry["final_mean"] == pytest.approx(100 * m["final_top1"]) and entry["runs"] == [run]
        assert float(row["best_mean"]) == pytest.approx(100 * m["best_top1"]) and row["runs"] == run
    for name in ("report.md", "report.png", "curves_digits.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0
    printed = capsys.readouterr().out
    assert "[2/2]" in printed and "0 left" in printed

    # A run killed after its last epoch (no metrics.json yet): --collect reports the finished one alone...
    first_metrics = os.path.getmtime(os.path.join(runs[0], "metrics.json"))
    os.remove(os.path.join(runs[1], "metrics.json"))
    collected = reproduce.main(argv + ["--collect"])
    assert [e["n"] for e in collected["entries"]] == [1, 0]
    assert "1 planned run(s) not finished" in open(os.path.join(folder, "report.md")).read()
    # ...and the same command again skips the finished run and resumes the other to the same result.
    again = reproduce.main(argv)
    assert os.path.getmtime(os.path.join(runs[0], "metrics.json")) == first_metrics
    assert [e["best_mean"] for e in again["entries"]] == [e["best_mean"] for e in report["entries"]]
    assert "1 run(s) finished before: not run again" in capsys.readouterr().out
    # A failed run is reported and fails the sweep: a changed setting refuses to resume, as single runs do.
    os.remove(os.path.join(runs[0], "metrics.json"))
    changed = ["digits_demo", "--out", out, "--rows", "ViT", "--measure-steps", "0"]
    changed += [a for s in TINY + ["label_smoothing=0.2"] for a in ("--set", s)]
    with pytest.raises(SystemExit, match=r"1 run\(s\) failed: vit_digits_seed0"):
        reproduce.main(changed)
    with open(os.path.join(folder, "logs", "vit_digits_seed0.log")) as f:
        assert "label_smoothing: 0.1 -> 0.2" in f.read()
