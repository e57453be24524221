"""A paper's table in one command: plan, run (resumable, on every local
device, sharded across hosts), report next to the paper's numbers.

    python -m training.reproduce --list
    python -m training.reproduce spt_lsa_table2 --dry-run          # the plan and its device-hours
    python -m training.reproduce sata_table2 --seeds 0,1,2 --set data_dir=data/tiny-imagenet-200
    python -m training.reproduce digits_demo --epochs-scale 0.2    # minutes on a laptop
    python -m training.reproduce spt_lsa_table2 --shard 3/8        # host 3 of 8 (SLURM array, ...)
    python -m training.reproduce spt_lsa_table2 --collect          # the table from what has finished

Each run is an ordinary resumable run folder of `training.train`,
`<out>/<table>/<row>_<dataset>_seed<k>` (its log in `<out>/<table>/logs/`):
the same command after a kill skips the finished runs and resumes the
others; a changed setting is refused as a single run refuses it. Runs go
one per GPU (each child sees one device: `CUDA_VISIBLE_DEVICES`), or
`--workers N` at once on CPU; a failed run is reported and the others go
on. `--shard i/n` runs every n-th run of the plan starting at i, so n hosts
writing to one shared `--out` cover the plan exactly once.

The report (`<out>/<table>/report.{md,csv,json}`, `report.png`,
`curves_<dataset>.png`): per row and dataset the paper's top-1, ours (mean
± std over the seeds, best epoch as the papers' code reports it, and the
final epoch), the difference and the run folders.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time

from training.tables import get_table
from training.tables import list_tables

# Training images per dataset (`num_train`), for the plan's estimate without loading any data.
TRAIN_IMAGES = {"digits": 1437, "cifar10": 50000, "cifar100": 50000, "svhn_cropped": 73257, "tiny_imagenet": 100000}


@dataclasses.dataclass
class PlannedRun:
    """One run of a table: a row on a dataset with a seed."""

    table: str
    row: object
    dataset: str
    seed: int
    config: object

    @property
    def name(self):
        return f"{self.row.slug}_{self.dataset}_seed{self.seed}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", nargs="?", help="a table of training/tables (see --list)")
    parser.add_argument("--list", action="store_true", help="list the tables with their rows and datasets")
    parser.add_argument("--out", default="runs/tables", help="where the runs and the report go (runs/tables)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (0)")
    parser.add_argument("--datasets", default=None, help="comma-separated subset of the table's datasets")
    parser.add_argument("--rows", default=None, help="comma-separated subset of the rows (names or slugs)")
    parser.add_argument("--epochs-scale", type=float, default=None,
                        help="scale every run's epochs (0.1: a quick look; said in the report's title)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainConfig field of every run (e.g. data_dir=...)")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs at once (default: one per visible GPU, else 1)")
    parser.add_argument("--shard", default=None, metavar="I/N", help="run every N-th run from I (multi-host)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimate, run nothing")
    parser.add_argument("--measure-steps", type=int, default=3,
                        help="training steps timed per model for the estimate (0: no estimate)")
    parser.add_argument("--collect", action="store_true", help="write the report from the finished runs only")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one run: its TrainConfig JSON
    return parser.parse_args(argv)


def parse_shard(text):
    """`"i/n"` -> `(i, n)` with `0 <= i < n`."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise ValueError(f"Invalid `--shard` {text!r}. Expected I/N with 0 <= I < N, e.g. 0/4.")
    return index, count


def plan(table, seeds, out, datasets=None, rows=None, epochs_scale=None, assignments=()):
    """The `PlannedRun`s of `table` (rows x datasets x seeds, in that order),
    each with its validated `TrainConfig`."""
    from keras_smallvit.training.config import apply_overrides
    from training.configs import get_config

    datasets = list(datasets or table.datasets)
    for dataset in datasets:
        if dataset not in table.datasets:
            raise ValueError(f"Invalid `--datasets` {dataset!r}. Allowed values: {', '.join(table.datasets)}.")
    chosen = list(table.rows)
    if rows:
        known = {r.name: r for r in table.rows} | {r.slug: r for r in table.rows}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise ValueError(f"Invalid `--rows` {unknown[0]!r}. Allowed values: "
                             f"{', '.join(r.name for r in table.rows)} (or their folder names).")
        chosen = [r for r in table.rows if r.name in rows or r.slug in rows]
    if epochs_scale is not None and not 0 < epochs_scale <= 10:
        raise ValueError(f"Invalid `--epochs-scale` {epochs_scale}. Expected a number in (0, 10].")
    runs = []
    for row in chosen:
        for dataset in datasets:
            base = get_config(table.base_config(row, dataset))
            config = apply_overrides(base, list(table.settings) + list(row.settings))
            config = apply_overrides(config, {"model": row.model, "dataset": dataset, "export": False})
            config = apply_overrides(config, list(assignments))
            if epochs_scale is not None:
                # Warm-up back to the recipe's share of the new budget.
                config = dataclasses.replace(
                    config, epochs=max(1, round(config.epochs * epochs_scale)), warmup_epochs=None
                )
            for seed in seeds:
                run = PlannedRun(table.name, row, dataset, seed, None)
                run.config = dataclasses.replace(config, seed=seed, workdir=os.path.join(out, table.name, run.name))
                run.config.check_fields()
                runs.append(run)
    return runs


def run_state(run):
    """"finished", "diverged", "partial" (a folder to resume) or "new"."""
    metrics = os.path.join(run.config.workdir, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics) as f:
            return "diverged" if json.load(f).get("diverged") else "finished"
    return "partial" if os.path.exists(os.path.join(run.config.workdir, "config.json")) else "new"


def visible_gpus():
    """The GPU ids a child may be given: `CUDA_VISIBLE_DEVICES` if set,
    else those `nvidia-smi` lists (none without it)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g for g in given.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU"))]


def device_name():
    """This host's accelerator (or CPU) model, for the report."""
    if visible_gpus() and shutil.which("nvidia-smi"):
        try:
            names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=20).stdout.split("\n")
            return f"{len(visible_gpus())}x {names[0].strip()}"
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        model = None
    return f"CPU {model or 'unknown'} ({os.cpu_count()} cores)"


# --- the estimate ------------------------------------------------------------------


def measure_models(runs, steps):
    """`{(model, image_size, classes): {"images_per_second", "parameters",
    "mflops"}}` of the plan's models: `steps` timed training steps at the
    run's batch size on random data, after a compiling step (this process's
    backend and device)."""
    if steps < 1:
        return {}
    import keras

    from benchmarks.model_table import forward_multiply_adds
    from benchmarks.model_table import train_images_per_second
    from keras_smallvit.data import default_image_size
    from keras_smallvit.training.runner import build_model

    measured = {}
    for run in runs:
        size = run.config.image_size or default_image_size(run.dataset) or 64
        key = (run.config.model, size, run.config.batch_size)
        if key in measured:
            continue
        print(f"measuring {run.config.model} at {size} px, batch {run.config.batch_size} ...", flush=True)
        keras.utils.set_random_seed(0)
        model, _ = build_model(run.config, 100, size)
        try:
            mflops = forward_multiply_adds(model, size) / 1e6
        except Exception:  # a backend's counter that fails on a model: the column stays empty
            mflops = None
        measured[key] = {
            "model": run.config.model,
            "image_size": size,
            "batch_size": run.config.batch_size,
            "parameters": int(model.count_params()),
            "mflops": mflops,
            "images_per_second": train_images_per_second(model, size, run.config.batch_size, steps),
        }
        keras.backend.clear_session()
    return measured


def estimate_hours(run, measured):
    """Device-hours of one run at the measured speed (None: not measured)."""
    from keras_smallvit.data import default_image_size

    size = run.config.image_size or default_image_size(run.dataset) or 64
    speed = measured.get((run.config.model, size, run.config.batch_size), {}).get("images_per_second")
    if not speed:
        return None
    images = TRAIN_IMAGES.get(run.dataset)
    if images is None:
        from keras_smallvit.data import split_files

        found = split_files(run.dataset, "train", run.config.data_dir)
        images = len(found[0].paths) if found else None
    if images is None:
        return None
    if run.config.max_train_examples:
        images = min(images, run.config.max_train_examples)
    steps = images * run.config.repeated_augmentation // run.config.batch_size
    if run.config.steps_per_epoch:
        steps = min(steps, run.config.steps_per_epoch)
    return run.config.epochs * steps * run.config.batch_size / speed / 3600


def format_hours(hours):
    if hours is None:
        return "?"
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h"


def print_measurements(measured):
    """The models as measured here: the throughput, MFLOPs and parameters
    columns of the papers' tables, on this machine."""
    print(f"measured on {device_name()} (training img/s: {next(iter(measured.values()))['batch_size']} "
          "per batch, random data, after a compiling step):")
    print("| model | image size | params (M) | MFLOPs | train img/s |")
    print("|---|---|---|---|---|")
    for m in measured.values():
        mflops = "-" if m["mflops"] is None else f"{m['mflops']:.1f}"
        print(f"| {m['model']} | {m['image_size']} | {m['parameters'] / 1e6:.2f} | {mflops} | "
              f"{m['images_per_second']:.1f} |")


def print_plan(table, runs, workers, measured, title):
    shape = [len(dict.fromkeys(getattr(r, k) for r in runs)) for k in ("row", "dataset", "seed")]
    print(f"{title}: {len(runs)} runs ({shape[0]} rows x {shape[1]} datasets x {shape[2]} seeds), {workers} at once")
    print("| run | model | dataset | seed | epochs | state | estimate |")
    print("|---|---|---|---|---|---|---|")
    total = 0.0
    for run in runs:
        hours = estimate_hours(run, measured)
        total += hours or 0.0
        print(f"| {run.name} | {run.config.model} | {run.dataset} | {run.seed} | {run.config.epochs} | "
              f"{run_state(run)} | {format_hours(hours)} |")
    if measured:
        unknown = sum(estimate_hours(r, measured) is None for r in runs)
        print(f"estimate: {total:.2f} device-hours on {device_name()}, about {format_hours(total / workers)} "
              f"with {workers} at once" + (f" ({unknown} runs not estimated)" if unknown else ""))
    return total


# --- running -----------------------------------------------------------------------


def child_command(run):
    return [sys.executable, "-m", "training.reproduce", "--child", run.config.to_json()]


def run_sweep(runs, workers, log_dir, gpus):
    """Runs `runs` (skipping the finished ones), `workers` at once; returns
    `{run name: "finished" | "diverged" | "failed: ..."}`, printing one line
    per run that ends with the runs left and an ETA."""
    os.makedirs(log_dir, exist_ok=True)
    states = {r.name: run_state(r) for r in runs}
    outcome = {name: state for name, state in states.items() if state in ("finished", "diverged")}
    waiting = [r for r in runs if r.name not in outcome]
    if outcome:
        print(f"{len(outcome)} run(s) finished before: not run again")
    running, durations, free = {}, [], list(range(workers))
    while waiting or running:
        while waiting and free:
            slot, run = free.pop(0), waiting.pop(0)
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            log = open(os.path.join(log_dir, f"{run.name}.log"), "a")
            process = subprocess.Popen(child_command(run), stdout=log, stderr=subprocess.STDOUT, env=env)
            running[process.pid] = (process, run, slot, log, time.time())
            print(f"started {run.name}" + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ""), flush=True)
        time.sleep(0.5)
        for pid, (process, run, slot, log, start) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[pid]
            free.append(slot)
            durations.append(time.time() - start)
            if process.returncode == 0:
                outcome[run.name] = run_state(run)
                metrics = read_metrics(run)
                result = f"best top-1 {metrics['best_top1']:.4f}, final {metrics['final_top1']:.4f}"
            else:
                outcome[run.name] = f"failed (exit {process.returncode}; log {os.path.join(log_dir, run.name)}.log)"
                result = outcome[run.name]
            left = len(waiting) + len(running)
            eta = sum(durations) / len(durations) * math.ceil(left / workers)
            print(f"[{len(runs) - left}/{len(runs)}] {run.name}: {result}; {left} left"
                  + (f", ETA {format_hours(eta / 3600)}" if left else ""), flush=True)
    return outcome


def read_metrics(run):
    with open(os.path.join(run.config.workdir, "metrics.json")) as f:
        return json.load(f)


def read_curve(run):
    """`(epochs, val_top1)` from the run's log.csv (empty without one)."""
    path = os.path.join(run.config.workdir, "log.csv")
    if not os.path.exists(path):
        return [], []
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_top1")]
    return [int(r["epoch"]) for r in rows], [float(r["val_top1"]) for r in rows]


# --- the report --------------------------------------------------------------------


def mean_std(values):
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def build_report(table, runs, title):
    """One entry per (row, dataset): the paper's value and ours over the
    finished seeds (top-1 in %)."""
    entries = []
    for row in dict.fromkeys(r.row for r in runs):
        for dataset in dict.fromkeys(r.dataset for r in runs if r.row is row):
            mine = [r for r in runs if r.row is row and r.dataset == dataset]
            done = [r for r in mine if run_state(r) == "finished"]
            metrics = [read_metrics(r) for r in done]
            best, best_std = mean_std([100 * m["best_top1"] for m in metrics if m.get("best_top1") is not None])
            final, final_std = mean_std([100 * m["final_top1"] for m in metrics])
            paper = row.paper.get(dataset)
            speed = [m["train_images_per_second"] for m in metrics if m.get("train_images_per_second")]
            entries.append({
                "row": row.name, "model": row.model, "dataset": dataset, "paper": paper,
                "best_mean": best, "best_std": best_std, "final_mean": final, "final_std": final_std,
                "n": len(done), "planned": len(mine),
                "difference": None if paper is None or best is None else best - paper,
                "parameters": metrics[0]["parameters"] if metrics else None,
                "train_images_per_second": sum(speed) / len(speed) if speed else None,
                "runs": [r.config.workdir for r in done],
            })
    return {"table": table.name, "title": title, "source": table.source, "device": device_name(), "entries": entries}


def _cell(mean, std, n):
    return "-" if mean is None else f"{mean:.2f} ± {std:.2f} (n={n})"


def report_markdown(report):
    lines = [f"# {report['title']}", "", f"Source: {report['source']}. Ours: top-1 % at the best epoch "
             f"(as the papers' code reports it), mean ± std over seeds; final epoch alongside. Device: "
             f"{report['device']} (MFLOPs: `--dry-run` measures them).", "",
             "| row | dataset | paper | ours (best) | ours (final) | difference | params | train img/s |",
             "|---|---|---|---|---|---|---|---|"]
    for e in report["entries"]:
        paper = "-" if e["paper"] is None else f"{e['paper']:.2f}"
        difference = "-" if e["difference"] is None else f"{e['difference']:+.2f}"
        params = "-" if not e["parameters"] else f"{e['parameters'] / 1e6:.2f}M"
        speed = "-" if not e["train_images_per_second"] else f"{e['train_images_per_second']:.0f}"
        lines.append(f"| {e['row']} | {e['dataset']} | {paper} | {_cell(e['best_mean'], e['best_std'], e['n'])} | "
                     f"{_cell(e['final_mean'], e['final_std'], e['n'])} | {difference} | {params} | {speed} |")
    missing = sum(e["planned"] - e["n"] for e in report["entries"])
    if missing:
        lines += ["", f"{missing} planned run(s) not finished (yet): not in the means."]
    return "\n".join(lines) + "\n"


def write_report(report, runs, folder):
    """`report.md`, `.csv`, `.json`, `report.png` and `curves_<dataset>.png` in `folder`."""
    from keras_smallvit.training.callbacks import write_text_atomically

    os.makedirs(folder, exist_ok=True)
    write_text_atomically(os.path.join(folder, "report.json"), json.dumps(report, indent=2))
    write_text_atomically(os.path.join(folder, "report.md"), report_markdown(report))
    columns = [k for k in report["entries"][0] if k != "runs"] + ["runs"] if report["entries"] else []
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for entry in report["entries"]:
        writer.writerow({**entry, "runs": ";".join(entry["runs"])})
    write_text_atomically(os.path.join(folder, "report.csv"), buffer.getvalue())
    plot_report(report, os.path.join(folder, "report.png"))
    for dataset in dict.fromkeys(r.dataset for r in runs):
        plot_curves(report["title"], [r for r in runs if r.dataset == dataset], dataset,
                    os.path.join(folder, f"curves_{dataset}.png"))


def plot_report(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(e["dataset"] for e in report["entries"]))
    figure, axes = plt.subplots(1, len(datasets), figsize=(max(6, 5 * len(datasets)), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        entries = [e for e in report["entries"] if e["dataset"] == dataset]
        x = range(len(entries))
        axis.bar([i - 0.2 for i in x], [e["paper"] or 0 for e in entries], 0.4, label="paper", color="#999999")
        axis.bar([i + 0.2 for i in x], [e["best_mean"] or 0 for e in entries], 0.4,
                 yerr=[e["best_std"] or 0 for e in entries], label="ours", color="#1f77b4", capsize=3)
        axis.set_xticks(list(x), [e["row"] for e in entries], rotation=45, ha="right", fontsize=8)
        values = [v for e in entries for v in (e["paper"], e["best_mean"]) if v]
        if values:
            axis.set_ylim(max(0, min(values) - 5), min(100, max(values) + 2))
        axis.set_title(dataset)
        axis.set_ylabel("top-1 %")
    axes[0][0].legend()
    figure.suptitle(textwrap.fill(report["title"], 90), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_curves(title, runs, dataset, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in dict.fromkeys(r.row for r in runs):
        curves = [read_curve(r) for r in runs if r.row is row]
        curves = [c for c in curves if c[0]]
        if not curves:
            continue
        length = min(len(c[0]) for c in curves)
        mean = [100 * sum(c[1][i] for c in curves) / len(curves) for i in range(length)]
        axis.plot(curves[0][0][:length], mean, marker="o", markersize=3, label=f"{row.name} (n={len(curves)})")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation top-1 %")
    axis.set_title(textwrap.fill(f"{title}: {dataset}", 80), fontsize=8)
    if axis.lines:
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# --- the command line --------------------------------------------------------------


def list_tables_text():
    lines = []
    for name in list_tables():
        table = get_table(name)
        lines.append(f"{name}: {len(table.rows)} rows x {len(table.datasets)} datasets "
                     f"({', '.join(table.datasets)}) - {table.title}")
    return "\n".join(lines)


def run_child(config_json):
    """One run in this process (the sweep's child): `training.train`."""
    from keras_smallvit.training import TrainConfig
    from keras_smallvit.training import train

    train(TrainConfig.from_json(config_json), verbose=2)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child is not None:
        return run_child(args.child)
    if args.list:
        print(list_tables_text())
        return None
    try:
        if args.table is None:
            raise ValueError(f"Give a table. Allowed values: {', '.join(list_tables())} (--list describes them).")
        table = get_table(args.table)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        shard = parse_shard(args.shard) if args.shard else None
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"Invalid `--workers` {args.workers}. Expected an integer >= 1.")
        runs = plan(table, seeds, args.out, args.datasets and args.datasets.split(","),
                    args.rows and [r.strip() for r in args.rows.split(",")], args.epochs_scale, args.assignments)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    every_run = runs
    if shard:
        runs = runs[shard[0]::shard[1]]
    gpus = visible_gpus()
    workers = args.workers or max(1, len(gpus))
    title = table.title + (f" (epochs x {args.epochs_scale})" if args.epochs_scale else "")
    folder = os.path.join(args.out, table.name)
    if args.collect:
        report = build_report(table, every_run, title)
        write_report(report, every_run, folder)
        print(report_markdown(report))
        return report
    measured = measure_models(runs, args.measure_steps) if args.dry_run else {}
    if measured:
        print_measurements(measured)
    print_plan(table, runs, workers, measured, title + (f", shard {args.shard}" if shard else ""))
    if args.dry_run:
        return {"runs": [r.name for r in runs], "measured": list(measured.values())}
    outcome = run_sweep(runs, workers, os.path.join(folder, "logs"), gpus)
    report = build_report(table, every_run, title)
    write_report(report, every_run, folder)
    print(report_markdown(report))
    print(f"report: {os.path.join(folder, 'report.md')} (+ .csv, .json, report.png, curves_<dataset>.png)")
    failed = [name for name, state in outcome.items() if state.startswith("failed")]
    if failed:
        raise SystemExit(f"error: {len(failed)} run(s) failed: " + "; ".join(f"{n}: {outcome[n]}" for n in failed))
    return report


if __name__ == "__main__":
    main()
