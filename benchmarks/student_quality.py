"""Student quality on data that cannot be won by easy data: the default recipe vs. a 6-layer reference.

The set is generated here, seeded, and hard on purpose (issue 13, item 5):
- 64 intents = 16 things a customer writes about x 4 things they want (cancel it, where is it,
  it failed, change it). Intents that share a thing or a want share their vocabulary, so a
  model must read the combination, not a keyword;
- a long tail: class sizes fall geometrically from the largest to 1/40 of it (the imbalance ratio of
  long-tailed benchmarks), so at any size a quarter of the classes have under 40 training texts;
- 5 % label noise in the training set, flipped to a confusable intent (same thing or same want);
- distractors: a third of the texts also mention another thing and another want, as context
  ("I already changed my address last week"), some texts are typed in a hurry;
- a frozen test set: balanced, clean (gold), generated from its own seed and disjoint from the
  training texts; its sha256 is in the result, so two runs can be checked to score the same set.

Two models train through the platform's own loop (ml.train.loop.train_student), on the same
noisy training set with one-hot targets (a human-labelled file: `teacher: {kind: labels}`):
- default_recipe: ml.workflows.Training's defaults (stratified validation split, warmup + decay,
  early stopping on validation macro-F1 within max_epochs, class weights), at --student-layers;
- reference: all 6 layers of MiniLM-L6 fine-tuned on every text with a long fixed schedule
  (--reference-epochs), plain cross-entropy: what a careful practitioner would train.

Both are scored on the frozen test set. The result, benchmarks/results/student_quality.json,
has each model's accuracy, macro-F1, classes never predicted and wall time, and
ratio_macro_f1_student_to_reference (aim >= 0.97) and the never-predicted count (aim 0).

The default size is the issue's (about 10,000 training texts). On a loaded 2-core CPU, run as the
two `--only` processes below, `--n-train 2500` took 22-40 minutes per model (6-18 samples/s, by the host's load)
and the full size about 4x that; on a GPU, minutes. Run:
`.venv/bin/python benchmarks/student_quality.py [--n-train 2500 --student-layers 0 ...]`, or the two
models side by side in two processes (each merges its section into the same result file):
`... student_quality.py --only default_recipe & ... student_quality.py --only reference`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ml.evaluate.metrics import classification_report
from ml.train.loop import train_student
from ml.train.student import DEFAULT_BASE_MODEL, quiet_progress_bars, resolve_base_model
from ml.workflows import Training

AIMS = {"ratio_macro_f1_student_to_reference": (">=", 0.97), "default_recipe_never_predicted": ("<=", 0)}

THINGS = {
    "card": ["card", "debit card", "credit card", "visa card", "bank card"],
    "account": ["account", "profile", "customer account", "user account"],
    "transfer": ["transfer", "bank transfer", "wire", "payment to my friend", "money transfer"],
    "direct debit": ["direct debit", "standing order", "recurring payment", "automatic payment"],
    "loan": ["loan", "personal loan", "credit line", "loan application"],
    "subscription": ["subscription", "membership", "monthly plan", "premium plan"],
    "order": ["order", "purchase", "online order", "basket order"],
    "delivery": ["delivery", "parcel", "package", "shipment"],
    "refund": ["refund", "money back", "reimbursement", "credit note"],
    "invoice": ["invoice", "bill", "receipt", "statement"],
    "password": ["password", "login", "sign in", "pin code"],
    "address": ["address", "billing address", "home address", "postal address"],
    "phone number": ["phone number", "mobile number", "contact number", "number on file"],
    "app": ["app", "mobile app", "banking app", "application on my phone"],
    "appointment": ["appointment", "booking", "reservation", "meeting with an advisor"],
    "insurance": ["insurance", "travel insurance", "policy", "cover"],
}
WANTS = {
    "cancel": [
        "I want to cancel my {t}",
        "please cancel the {t}",
        "how do I stop my {t}",
        "close my {t} please",
        "I no longer need the {t}, cancel it",
        "terminate my {t}",
        "get rid of this {t}",
    ],
    "status": [
        "where is my {t}",
        "any update on my {t}?",
        "what is the status of the {t}",
        "still waiting for my {t}",
        "can you track my {t}",
        "has my {t} gone through yet",
        "how long until the {t} is done",
    ],
    "failed": [
        "my {t} does not work",
        "the {t} was declined",
        "my {t} failed again",
        "error with my {t}",
        "the {t} keeps failing",
        "something is wrong with my {t}",
        "the {t} is broken",
    ],
    "change": [
        "I need to change my {t}",
        "update my {t} please",
        "how can I edit the {t}",
        "switch my {t} to a new one",
        "modify my {t}",
        "I want a different {t}",
        "correct my {t}",
    ],
}
CONTEXT = [
    "I already {w} my {t} last week.",
    "My {t} was {w} before and that was fine.",
    "Not about the {t}, which I {w} yesterday.",
]
CONTEXT_WANTS = {"cancel": "cancelled", "status": "checked", "failed": "reported", "change": "changed"}
OPENINGS = ["", "", "Hi,", "Hello,", "Dear team,", "Hey,", "Good morning,"]
CLOSINGS = ["", "", "Thanks", "Thank you.", "Cheers", "Regards", "Please help asap"]
DISTRACTOR_RATE = 0.33
TYPO_RATE = 0.2
NOISE_RATE = 0.05
IMBALANCE = 40  # largest class / smallest class


def label_names() -> list[str]:
    # Labels as people write them (spaces, '/'): the benchmark runs on the names users bring.
    return [f"{thing} / {want}" for thing in THINGS for want in WANTS]


def _typo(rng: random.Random, text: str) -> str:
    words = text.split()
    i = rng.randrange(len(words))
    word = words[i]
    if len(word) > 3:
        j = rng.randrange(len(word) - 1)
        words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def make_text(rng: random.Random, thing: str, want: str) -> str:
    body = rng.choice(WANTS[want]).format(t=rng.choice(THINGS[thing]))
    parts = [rng.choice(OPENINGS), body[0].upper() + body[1:] + rng.choice([".", "", "!", "?"])]
    if rng.random() < DISTRACTOR_RATE:
        other_thing = rng.choice([t for t in THINGS if t != thing])
        other_want = rng.choice([w for w in WANTS if w != want])
        context = rng.choice(CONTEXT).format(w=CONTEXT_WANTS[other_want], t=rng.choice(THINGS[other_thing]))
        parts.insert(rng.choice([1, 2]), context)
    parts.append(rng.choice(CLOSINGS))
    text = " ".join(p for p in parts if p)
    return _typo(rng, text) if rng.random() < TYPO_RATE else text


def class_sizes(n_total: int, n_classes: int, rng: random.Random) -> list[int]:
    """Long-tailed sizes (IMBALANCE ** -(rank / last rank)), ranks shuffled so the tail is not one topic."""
    shares = IMBALANCE ** -(np.arange(n_classes) / (n_classes - 1))
    sizes = np.maximum(8, np.round(shares / shares.sum() * n_total)).astype(int)
    order = list(range(n_classes))
    rng.shuffle(order)
    return [int(sizes[order.index(c)]) for c in range(n_classes)]


def make_sets(n_train: int, test_per_class: int, seed: int):
    """(train texts, noisy train labels, clean train labels, test texts, test labels, stats)."""
    labels = label_names()
    pairs = [(thing, want) for thing in THINGS for want in WANTS]
    # The test set first, from its own stream: the same texts whatever n_train is (the sha256 in the
    # result shows it); training texts that happen to equal a test text are drawn again.
    test_rng = random.Random(f"{seed}:student-quality-test")
    test_texts, test_y = [], []
    for c, pair in enumerate(pairs):
        while test_y.count(c) < test_per_class:
            text = make_text(test_rng, *pair)
            if text not in test_texts:
                test_texts.append(text)
                test_y.append(c)
    held_out = set(test_texts)
    rng = random.Random(f"{seed}:student-quality-train")
    sizes = class_sizes(n_train, len(labels), rng)
    texts, clean = [], []
    for c, n in enumerate(sizes):
        for _ in range(n):
            text = make_text(rng, *pairs[c])
            while text in held_out:
                text = make_text(rng, *pairs[c])
            texts.append(text)
            clean.append(c)
    noisy = list(clean)
    for i in rng.sample(range(len(noisy)), int(NOISE_RATE * len(noisy))):
        thing, want = pairs[noisy[i]]
        confusable = [k for k, (t, w) in enumerate(pairs) if (t == thing) != (w == want)]
        noisy[i] = rng.choice(confusable)
    stats = {
        "n_classes": len(labels),
        "n_train": len(texts),
        "n_test": len(test_texts),
        "train_class_size_min": min(sizes),
        "train_class_size_max": max(sizes),
        "classes_under_40_train_examples": sum(n < 40 for n in sizes),
        "label_noise_share": float(np.mean(np.array(noisy) != np.array(clean))),
        "test_sha256": hashlib.sha256(json.dumps([test_texts, test_y]).encode()).hexdigest(),
    }
    return texts, np.array(noisy), test_texts, np.array(test_y), stats


def score(model_dir: Path, texts, y, labels, max_length: int, device: str) -> dict:
    from ml.evaluate.serving import load_classifier, predict_probs

    with quiet_progress_bars():
        model, tokenizer = load_classifier(model_dir, device)
    with torch.no_grad():
        probs = predict_probs(model, tokenizer, texts, max_length=max_length, device=device)
    report = classification_report(probs, y, labels)
    predicted = set(probs.argmax(axis=1).tolist())
    never = [labels[c] for c in range(len(labels)) if c not in predicted]
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "never_predicted": never,
        "n_never_predicted": len(never),
        "worst_class_f1": min(report["per_class_f1"].values()),
    }


def run_model(
    name: str,
    cfg: Training,
    base_dir,
    texts,
    y,
    labels,
    test_texts,
    test_y,
    out_root: Path,
    device: str,
    seed: int,
    threads: int,
) -> dict:
    print(
        f"== {name}: {len(texts)} texts, up to {cfg.max_epochs:g} epochs, {cfg.student_layers or 'all'} layers, "
        f"lr {cfg.learning_rate:g}, validation {cfg.validation_fraction:g}, patience {cfg.patience}",
        flush=True,
    )
    started = time.perf_counter()
    one_hot = np.eye(len(labels))[y]
    result = train_student(
        base_dir=base_dir,
        texts=texts,
        teacher_probs=one_hot,
        hard_labels=y,
        label_names=labels,
        cfg=cfg,
        out_dir=out_root / name,
        device=device,
        seed=seed,
        threads=threads,
        log=lambda m: print(f"  {name}: {m}", flush=True),
    )
    train_s = time.perf_counter() - started
    scored = score(result.model_dir, test_texts, test_y, labels, cfg.max_length, device)
    out = {
        **scored,
        "wall_s": time.perf_counter() - started,
        "train_s": train_s,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "best_val_macro_f1": result.best_val_macro_f1,
        "stop_reason": result.stop_reason,
        "samples_per_s": result.samples_per_s,
        "n_parameters": result.n_parameters,
        "history": list(result.history),
        "settings": vars(cfg),
    }
    print(
        f"== {name}: test macro-F1 {out['macro_f1']:.4f} accuracy {out['accuracy']:.4f}, "
        f"{out['n_never_predicted']} classes never predicted, {out['wall_s']:.0f} s ({result.stop_reason})",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--n-train", type=int, default=10000, help="training texts (2500: a quicker run on a CPU)"
    )
    parser.add_argument(
        "--test-per-class", type=int, default=20, help="frozen, balanced test texts per class"
    )
    parser.add_argument(
        "--student-layers",
        type=int,
        default=3,
        help="the recipe's student depth (0 = all 6, Training's default; 3: the demo workflow's, "
        "half the compute, the harder aim)",
    )
    parser.add_argument(
        "--max-epochs", type=float, default=Training.max_epochs, help="the default recipe's budget"
    )
    parser.add_argument("--max-length", type=int, default=32, help="tokens per text, both models")
    parser.add_argument(
        "--reference-epochs",
        type=float,
        default=6.0,
        help="the reference's fixed schedule (the demo trains 3)",
    )
    parser.add_argument("--reference-learning-rate", type=float, default=Training.learning_rate)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    # One thread: on a 2-core host loaded by other work, 2 OpenMP threads trained 3x slower than 1.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--only",
        choices=("default_recipe", "reference"),
        help="train one model and merge it into --out (two processes on two cores finish sooner; "
        "the other model's section is kept only if it was trained on the same data and settings)",
    )
    parser.add_argument("--out", default="benchmarks/results/student_quality.json")
    args = parser.parse_args()

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    labels = label_names()
    texts, y, test_texts, test_y, stats = make_sets(args.n_train, args.test_per_class, args.seed)
    print(f"data: {json.dumps(stats)}", flush=True)
    base_dir = resolve_base_model(DEFAULT_BASE_MODEL)
    recipe = Training(
        student_layers=args.student_layers, max_epochs=args.max_epochs, max_length=args.max_length
    )
    reference = Training(
        student_layers=0,
        max_epochs=args.reference_epochs,
        max_length=args.max_length,
        learning_rate=args.reference_learning_rate,
        validation_fraction=0.0,
        patience=0,
        class_weight_power=0.0,
    )
    shared = {k: v for k, v in vars(args).items() if k not in ("only", "out")}
    report = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "settings": shared,
        "data": stats,
    }
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="bench-student-quality-") as tmp:
        common = dict(
            base_dir=base_dir,
            texts=texts,
            y=y,
            labels=labels,
            test_texts=test_texts,
            test_y=test_y,
            out_root=Path(tmp),
            device=device,
            seed=args.seed,
            threads=args.threads,
        )
        for name, cfg in (("default_recipe", recipe), ("reference", reference)):
            if args.only in (None, name):
                report[name] = run_model(name, cfg, **common)
                report = _merge_and_write(out, report, name)
    print(json.dumps({k: report.get(k) for k in ("aims", "ratio_macro_f1_student_to_reference")}, indent=2))
    print(f"wrote {out}")


def _merge_and_write(out: Path, report: dict, name: str) -> dict:
    """This run's model into the result file; the other model's section is kept when it was trained on
    the same data (test set hash) and settings, so two processes can each train one."""
    other = "reference" if name == "default_recipe" else "default_recipe"
    try:
        previous = json.loads(out.read_text())
    except (OSError, ValueError):
        previous = {}
    if (
        other not in report
        and other in previous
        and previous.get("settings") == report["settings"]
        and previous.get("data") == report["data"]
    ):
        report[other] = previous[other]
    report = {
        k: v
        for k, v in report.items()
        if k not in ("aims", "ratio_macro_f1_student_to_reference", "ratio_wall_time_student_to_reference")
    }
    _ratios(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    return report


def _ratios(report: dict) -> None:
    if "default_recipe" not in report:
        return
    student = report["default_recipe"]
    if "reference" in report:
        report["ratio_macro_f1_student_to_reference"] = student["macro_f1"] / report["reference"]["macro_f1"]
        report["ratio_wall_time_student_to_reference"] = student["wall_s"] / report["reference"]["wall_s"]
    report["default_recipe_never_predicted"] = student["n_never_predicted"]
    report["aims"] = {}
    for key, (op, target) in AIMS.items():
        if key in report:
            value = report[key]
            report["aims"][key] = {
                "value": value,
                "aim": f"{op} {target}",
                "met": value >= target if op == ">=" else value <= target,
            }


if __name__ == "__main__":
    main()
