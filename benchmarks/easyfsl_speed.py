"""Side by side with easyfsl on identical episodes: per-episode agreement and speed.

On cached minilm embeddings of Banking77 (support from train, queries from test), 10,000 episodes of
5-way 5-shot 15-query are sampled once by ``fewshot.evaluation.episodes.sample_episodes``; then
1. our batched evaluator runs on them in a fresh subprocess (sampling + scoring timed, peak RSS of that
   whole process measured as its VmHWM), several times;
2. easyfsl 1.5's own loop (``easyfsl.utils.evaluate``: DataLoader + ``TaskSampler.episodic_collate_fn`` +
   ``PrototypicalNetworks``) runs on the very same episodes (a ``TaskSampler`` subclass replays them);
3. per-episode accuracies are compared: ours ``prototype-l2`` vs easyfsl ``PrototypicalNetworks`` (negative
   Euclidean distance to mean features), and ours ``prototype`` (cosine, the registered classifier) vs
   easyfsl's own ``cosine_distance_to_prototypes`` in a ``PrototypicalNetworks`` subclass.

easyfsl's ``TaskSampler.__init__`` calls ``Sampler.__init__(data_source=None)``, which current torch (whose
``Sampler`` has no ``__init__``) rejects; ``sampler_init_shim`` supplies one for the duration of the run.

    .venv/bin/python benchmarks/easyfsl_speed.py [--episodes 10000] [--out benchmarks/results/easyfsl_speed.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text" / "banking77"


def peak_rss_mib() -> float:
    """Peak resident set size of this process image so far, in MiB: VmHWM from /proc/self/status.

    Not ``getrusage().ru_maxrss``: Linux carries that over fork + exec, so a child started from a big parent
    reports the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours_only(npz: str, episodes: int, method: str, seed: int, runs: int) -> dict:
    """Subprocess body: load embeddings, time our evaluator ``runs`` times, report accuracies and peak RSS."""
    from fewshot.evaluation.episodes import run_episodic  # numpy only: torch is not imported in this process

    z = np.load(npz)
    rss_before = peak_rss_mib()
    times, res = [], None
    for _ in range(runs):
        res = run_episodic(method, z["train_x"], z["train_y"], z["test_x"], z["test_y"], n_way=5, n_shot=5,
                           n_query=15, n_episodes=episodes, seed=seed)
        times.append(res.seconds)
    np.save(npz.replace(".npz", f".{method}.npy"), res.accuracies)
    return {"method": method, "seconds": times, "accuracy": res.accuracy, "ci95": res.ci95,
            "peak_rss_mib": peak_rss_mib(), "peak_rss_mib_after_loading": rss_before,
            "torch_imported": "torch" in sys.modules}


@contextlib.contextmanager
def sampler_init_shim():
    """Let easyfsl's ``Sampler.__init__(data_source=None)`` call work on torch versions without it."""
    from torch.utils.data import Sampler

    had = "__init__" in Sampler.__dict__
    if not had:
        Sampler.__init__ = lambda self, data_source=None: None
    try:
        yield
    finally:
        if not had:
            del Sampler.__init__


def easyfsl_loader(features, labels, task_lists, n_way, n_shot, n_query):
    """A DataLoader over ``features`` whose TaskSampler replays ``task_lists`` (lists of row indices,
    class-major: K support then Q query rows per class)."""
    import torch
    from easyfsl.datasets import FewShotDataset
    from easyfsl.samplers import TaskSampler
    from torch.utils.data import DataLoader

    class EmbeddingDataset(FewShotDataset):
        def __init__(self, x, y):
            self.x, self.y = torch.from_numpy(x), [int(v) for v in y]

        def __getitem__(self, item):
            return self.x[item], self.y[item]

        def __len__(self):
            return len(self.y)

        def get_labels(self):
            return self.y

    class ReplayTaskSampler(TaskSampler):
        def __iter__(self):
            yield from task_lists

    dataset = EmbeddingDataset(features, labels)
    with sampler_init_shim():
        sampler = ReplayTaskSampler(dataset, n_way=n_way, n_shot=n_shot, n_query=n_query, n_tasks=len(task_lists))
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)


def easyfsl_models():
    """(recording PrototypicalNetworks, cosine PrototypicalNetworks), identity backbone over embeddings.

    The recording model is easyfsl's PrototypicalNetworks unchanged except that it keeps a reference to each
    task's support labels and output scores (two list appends, no computation), so the timed
    ``easyfsl.utils.evaluate`` run also yields per-episode accuracies."""
    import torch
    from easyfsl.methods import PrototypicalNetworks

    class RecordingPrototypicalNetworks(PrototypicalNetworks):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.record: list = []

        def process_support_set(self, support_images, support_labels):
            super().process_support_set(support_images, support_labels)
            self.record.append(support_labels)

        def forward(self, query_images):
            scores = super().forward(query_images)
            self.record.append(scores)
            return scores

    class CosinePrototypicalNetworks(PrototypicalNetworks):
        """easyfsl's PrototypicalNetworks scored with easyfsl's own cosine_distance_to_prototypes."""

        def forward(self, query_images):
            return self.cosine_distance_to_prototypes(self.compute_features(query_images))

    return (RecordingPrototypicalNetworks(torch.nn.Identity()).eval(),
            CosinePrototypicalNetworks(torch.nn.Identity()).eval())


def recorded_accuracies(record: list, n_shot: int, n_query: int) -> np.ndarray:
    """Per-episode accuracy from the recording model: query labels are class-major, so the query targets are
    each class's (remapped) support label repeated Q times."""
    out = []
    for support_labels, scores in zip(record[0::2], record[1::2]):
        targets = support_labels[::n_shot].repeat_interleave(n_query)
        out.append((scores.argmax(1) == targets).sum().item() / len(targets))
    return np.array(out)


def easyfsl_per_episode(model, features: np.ndarray, eps, offset: int, n_episodes: int) -> np.ndarray:
    """Per-episode accuracy of the first ``n_episodes`` episodes with ``easyfsl.utils.evaluate_on_one_task``
    (tensors indexed directly)."""
    import torch
    from easyfsl.utils import evaluate_on_one_task
    from tqdm.auto import tqdm

    x = torch.from_numpy(features)
    n, k, q = eps.n_way, eps.n_shot, eps.n_query
    s_y, q_y = torch.arange(n).repeat_interleave(k), torch.arange(n).repeat_interleave(q)
    out = []
    with torch.no_grad():
        for e in tqdm(range(n_episodes), desc="easyfsl cosine per-episode", leave=False):
            correct, total = evaluate_on_one_task(model, x[torch.from_numpy(eps.support[e].ravel())], s_y,
                                                  x[torch.from_numpy(eps.query[e].ravel() + offset)], q_y)
            out.append(correct / total)
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=5, help="timed runs of our evaluator (fresh process)")
    ap.add_argument("--cosine-episodes", type=int, default=None,
                    help="episodes for the cosine agreement check (default: all)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "easyfsl_speed.json"))
    ap.add_argument("--_ours", nargs=3, help=argparse.SUPPRESS)   # internal: NPZ METHOD RUNS
    args = ap.parse_args(argv)
    if args._ours:
        print(json.dumps(ours_only(args._ours[0], args.episodes, args._ours[1], args.seed, int(args._ours[2]))))
        return 0

    import easyfsl
    import torch
    from easyfsl.utils import evaluate

    from fewshot.evaluation.bench import prepare
    from fewshot.evaluation.episodes import sample_episodes

    data = prepare(str(DATA / "train.csv"), str(DATA / "test.csv"), "minilm", cache_dir=args.cache_dir)
    n_way, n_shot, n_query = 5, 5, 15
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "emb.npz")
        np.savez(npz, train_x=data.train_x, train_y=data.train_y, test_x=data.test_x, test_y=data.test_y)
        ours = {}
        for method, runs in (("prototype", args.runs), ("prototype-l2", args.runs)):
            proc = subprocess.run([sys.executable, __file__, "--episodes", str(args.episodes), "--seed",
                                   str(args.seed), "--_ours", npz, method, str(runs)], check=True,
                                  capture_output=True, text=True)
            ours[method] = json.loads(proc.stdout.strip().splitlines()[-1])
            ours[method]["accuracies"] = np.load(npz.replace(".npz", f".{method}.npy"))
            print(f"ours {method}: {ours[method]['seconds']} s, peak RSS {ours[method]['peak_rss_mib']:.0f} MiB",
                  file=sys.stderr)

    # the very same episodes, as easyfsl task index lists over [train; test] features
    eps = sample_episodes(data.train_y, data.test_y, n_way=n_way, n_shot=n_shot, n_query=n_query,
                          n_episodes=args.episodes, seed=args.seed)
    offset = len(data.train_y)
    tasks = np.concatenate([eps.support, eps.query + offset], axis=2).reshape(args.episodes, -1).tolist()
    features = np.concatenate([data.train_x, data.test_x])
    labels = np.concatenate([data.train_y, data.test_y])
    l2_model, cos_model = easyfsl_models()

    t0 = time.perf_counter()
    easy_acc = evaluate(l2_model, easyfsl_loader(features, labels, tasks, n_way, n_shot, n_query), device="cpu",
                        use_tqdm=True, tqdm_prefix="easyfsl evaluate")
    easy_seconds = time.perf_counter() - t0
    print(f"easyfsl evaluate: {easy_seconds:.1f} s, accuracy {easy_acc:.6f}", file=sys.stderr)

    per_l2 = recorded_accuracies(l2_model.record, n_shot, n_query)
    assert len(per_l2) == args.episodes
    n_cos = min(args.cosine_episodes or args.episodes, args.episodes)
    per_cos = easyfsl_per_episode(cos_model, features, eps, offset, n_cos)
    diff_l2 = np.abs(per_l2 - ours["prototype-l2"]["accuracies"])
    diff_cos = np.abs(per_cos - ours["prototype"]["accuracies"][:n_cos])
    best = {m: min(o["seconds"]) for m, o in ours.items()}
    median = {m: float(np.median(o["seconds"])) for m, o in ours.items()}
    report = {
        "data": "banking77 minilm embeddings (384-d): support from train.csv, queries from test.csv",
        "episodes": args.episodes, "way": n_way, "shot": n_shot, "query": n_query, "seed": args.seed,
        "versions": {"easyfsl": getattr(easyfsl, "__version__", "1.5.0"), "torch": torch.__version__,
                     "numpy": np.__version__},
        "cpu_count": os.cpu_count(), "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "ours": {m: {k: v for k, v in o.items() if k != "accuracies"} for m, o in ours.items()},
        "easyfsl": {"seconds": easy_seconds, "accuracy": easy_acc},
        "speedup_median": {m: easy_seconds / median[m] for m in ours},
        "speedup_best": {m: easy_seconds / best[m] for m in ours},
        "agreement": {
            "prototype-l2 vs PrototypicalNetworks": {"episodes": len(diff_l2), "max_abs_diff": float(diff_l2.max()),
                                                     "episodes_differing": int((diff_l2 > 1e-6).sum())},
            "prototype vs PrototypicalNetworks+cosine_distance_to_prototypes": {
                "episodes": len(diff_cos), "max_abs_diff": float(diff_cos.max()), "episodes_differing": int((diff_cos > 1e-6).sum())},
            "easyfsl evaluate() accuracy - mean of our prototype-l2 episodes":
                float(easy_acc - ours["prototype-l2"]["accuracies"].mean()),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"### Ours vs easyfsl {report['versions']['easyfsl']}: {args.episodes} episodes, 5-way 5-shot "
             "15-query, Banking77 minilm embeddings", "",
             "| evaluator | seconds (median of runs) | best | speed-up vs easyfsl (median / best) | peak RSS (MiB) |",
             "|---|---:|---:|---:|---:|",
             f"| easyfsl `evaluate` + PrototypicalNetworks | {easy_seconds:.2f} | | 1 | |"]
    for m, o in ours.items():
        lines.append(f"| fewshot `{m}` (sampling + scoring) | {median[m]:.3f} | {best[m]:.3f} | "
                     f"{report['speedup_median'][m]:.0f}x / {report['speedup_best'][m]:.0f}x | "
                     f"{o['peak_rss_mib']:.0f} |")
    lines += ["", "Per-episode agreement (|accuracy difference| > 1e-6 counts as differing):", ""]
    for k, v in report["agreement"].items():
        lines.append(f"- {k}: {v}")
    lines.append(f"\nLoad average (1/5/15 min) at start {tuple(round(v, 1) for v in load_at_start)}, at end "
                 f"{tuple(round(v, 1) for v in report['load_average_at_end'])} on {os.cpu_count()} cores "
                 "(the machine is shared; timings are wall clock).")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
