"""The learned token embeddings in TensorBoard's projector (rnnlab.projector): after a real run on each backend the
files add_embedding writes are there, hold the checkpoint's weights and the vocabulary's tokens, agree between the
backends in float64, and are absent where a task has no tokens or the callback is off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.projector import printable
from rnnlab.train import train

pytestmark = pytest.mark.compose

TEXT = "the cat\tsat on the mat.\nthe dog sat\ton the log!\n" * 40
LM = ("task=language_model", "data=text_file", "data.seq_len=8", "data.batch_size=8", "model=gru",
      "model.hidden_size=6", "trainer.max_steps=4", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
      "trainer.val_check_interval=2", "trainer.max_epochs=null", "trainer.precision=64", "task.sample_length=4",
      "print_sample=false", "seed=3")  # fmt: skip
BACKENDS = ("torch", "numpy")


def projector_files(run_dir: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    """tag -> (tensors.tsv as float64, metadata.tsv's lines) for every embedding projector_config.pbtxt lists."""
    board = run_dir / "tensorboard"
    config = (board / "projector_config.pbtxt").read_text()
    out = {}
    for block in config.split("embeddings {")[1:]:
        fields = dict(line.strip().split(": ", 1) for line in block.strip().splitlines() if ": " in line)
        tag = fields["tensor_name"].strip('"').rsplit(":", 1)[0]
        matrix = np.loadtxt(board / fields["tensor_path"].strip('"'), delimiter="\t", dtype=np.float64, ndmin=2)
        tokens = (board / fields["metadata_path"].strip('"')).read_text(encoding="utf-8").split("\n")[:-1]
        out[tag] = (matrix, tokens)
    return out


def checkpoint_weights(run_dir: Path, backend: str) -> dict[str, np.ndarray]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if backend == "numpy":
        return {k: v.double().numpy() for k, v in ckpt["numpy_backend"]["params"].items()}
    return {k.removeprefix("net."): v.double().numpy() for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory, compose_factory, corpus) -> dict[tuple[str, int], tuple[Path, list[str]]]:
    """A float64 character language model per backend, with an embedding (embed_dim 5) and with one-hot inputs
    (embed_dim 0): its run directory and its vocabulary."""
    out = {}
    for backend in BACKENDS:
        for embed in (5, 0):
            run_dir = tmp_path_factory.mktemp(f"lm-{backend}-{embed}") / "run"
            result = train(compose_factory((*LM, f"data.path={corpus}", f"model.backend={backend}",
                                            f"model.embed_dim={embed}"), run_dir))  # fmt: skip
            out[backend, embed] = (run_dir, list(result.objects["datamodule"].vocab.itos))
    return out


@pytest.mark.unit
def test_printable_labels():
    assert [printable(t) for t in (" ", "\n", "\t", "\r", "a", "<unk>", "", "\x07", "é")] == [
        "␣", "\\n", "\\t", "\\r", "a", "<unk>", "∅", "\\x07", "é"]  # fmt: skip
    assert printable("new york") == "new␣york"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("embed", [5, 0], ids=["embedding", "one-hot"])
def test_projector_holds_the_checkpoint_weights_and_the_vocabulary(lm_runs, backend, embed):
    run_dir, vocab = lm_runs[backend, embed]
    files = projector_files(run_dir)
    weights = checkpoint_weights(run_dir, backend)
    if embed:
        (matrix, tokens) = files["embedding"]
        expected = weights["embedding.weight"]
    else:
        (matrix, tokens) = files["input_weights"]
        expected = weights["rnn.weight_ih_l0"].T  # [V, 3H]: token v's column of the GRU's input weights
    assert list(files) == ["embedding" if embed else "input_weights"]
    assert matrix.shape == (len(vocab), embed or 3 * 6)
    np.testing.assert_array_equal(matrix, expected)  # tensors.tsv holds the exact float64 values
    assert tokens == [printable(t) for t in vocab]
    assert {"␣", "\\n", "\\t"} <= set(tokens)
    assert not any(c in "".join(tokens) for c in " \n\t")
    assert (run_dir / "tensorboard" / "00004" / ("embedding" if embed else "input_weights") / "tensors.tsv").is_file()


@pytest.mark.parametrize("embed", [5, 0], ids=["embedding", "one-hot"])
def test_both_backends_write_the_same_matrix_in_float64(lm_runs, embed):
    (a, tokens_a), (b, tokens_b) = (next(iter(projector_files(lm_runs[bk, embed][0]).values())) for bk in BACKENDS)
    assert tokens_a == tokens_b
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)  # the parity tests' tolerance after training
    assert np.abs(a).max() > 0.05  # a real matrix, not zeros


@pytest.mark.parametrize("backend", BACKENDS)
def test_seq2seq_writes_source_and_target_embeddings(compose, recorder, tmp_path, backend):
    train(compose("task=seq2seq", "data=dates", "data.num_samples=120", "data.batch_size=8", "model=gru",
                  "model.hidden_size=6", "model.embed_dim=4", f"model.backend={backend}", "trainer.max_steps=2",
                  "trainer.max_epochs=null", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
                  "trainer.limit_test_batches=1", run_dir=tmp_path / "run"))  # fmt: skip
    dm = recorder.runs[0].datamodule
    files = projector_files(tmp_path / "run")
    weights = checkpoint_weights(tmp_path / "run", backend)
    assert list(files) == ["src_embedding", "tgt_embedding"]
    for tag, vocab in (("src_embedding", dm.vocab.itos), ("tgt_embedding", dm.target_vocab.itos)):
        matrix, tokens = files[tag]
        np.testing.assert_array_equal(matrix, weights[f"{tag}.weight"])
        assert tokens == [printable(t) for t in vocab]


def test_bidirectional_tagger_appends_the_reverse_input_weights(compose, recorder, tmp_path):
    train(compose("task=tag", "data=ner_synth", "data.num_train=64", "data.num_val=16", "data.num_test=16",
                  "model=rnn", "model.hidden_size=4", "model.embed_dim=0", "model.backend=numpy",
                  "trainer.max_steps=2", "trainer.max_epochs=null", "trainer.val_check_interval=2",
                  "trainer.limit_test_batches=1", run_dir=tmp_path / "run"))  # fmt: skip
    weights = checkpoint_weights(tmp_path / "run", "numpy")
    matrix, tokens = projector_files(tmp_path / "run")["input_weights"]
    expected = np.concatenate([weights["rnn.weight_ih_l0"].T, weights["rnn.weight_ih_l0_reverse"].T], axis=1)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.shape == (len(recorder.runs[0].datamodule.vocab), 8)
    assert tokens == [printable(t) for t in recorder.runs[0].datamodule.vocab.itos]


def test_nothing_for_float_inputs_or_when_switched_off(compose, tmp_path, corpus):
    adding = ("task=regress", "data=adding", "data.length=6", "data.num_train=64", "data.num_val=16",
              "data.num_test=16", "data.batch_size=16", "model.hidden_size=4", "trainer.max_steps=2",
              "trainer.max_epochs=null", "trainer.val_check_interval=2")  # fmt: skip
    train(compose(*adding, run_dir=tmp_path / "adding"))
    train(compose(*LM, f"data.path={corpus}", "model.embed_dim=5", "callbacks.projector=null",
                  run_dir=tmp_path / "off"))  # fmt: skip
    for name in ("adding", "off"):
        board = tmp_path / name / "tensorboard"
        assert board.is_dir()
        assert any(board.glob("events.out.tfevents.*"))
        assert not (board / "projector_config.pbtxt").exists()
        assert not list(board.glob("*/*/tensors.tsv"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_tokens_keeps_the_first_rows_of_each_table(compose, recorder, tmp_path, corpus, backend):
    train(compose(*LM, f"data.path={corpus}", "model.embed_dim=5", f"model.backend={backend}",
                  "callbacks.projector.max_tokens=3", run_dir=tmp_path / "run"))  # fmt: skip
    vocab = recorder.runs[0].datamodule.vocab.itos
    assert len(vocab) > 3
    matrix, tokens = projector_files(tmp_path / "run")["embedding"]
    np.testing.assert_array_equal(matrix, checkpoint_weights(tmp_path / "run", backend)["embedding.weight"][:3])
    assert tokens == [printable(t) for t in vocab[:3]]


@pytest.mark.unit
@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "many"])
def test_max_tokens_must_be_a_positive_integer_or_null(bad):
    from rnnlab.projector import Projector

    with pytest.raises(ValueError, match=r"callbacks\.projector\.max_tokens"):
        Projector(max_tokens=bad)
    assert Projector(max_tokens=None).max_tokens is None
