"""Shared fixtures: a tiny random BERT (built once per run, no network), tiny checkpoints, toy data.

The tiny encoder uses the packaged all-MiniLM-L6-v2 vocabulary (a local file) with a 2-layer,
32-wide random BERT, so a training step takes milliseconds. Data-dependent tests use
`shared_data`, which skips cleanly when ../shared/data is absent.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

TINY_BERT = dict(
    model_type="bert",
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
    type_vocab_size=2,
)

# Toy relations and sentences: enough structure for a few training steps to move the loss.
TOY_DESCRIPTIONS = {
    "founded by": "founded by: founder or co-founder of this organization, religion or place",
    "born in": "place of birth: most specific known birth location of a person",
    "capital of": "capital of: country, state or region of which this city is the capital",
    "member of": "member of sports team: sports teams or clubs that the subject represents",
}

TOY_SENTENCES = [
    ("founded by", "Apple was founded by Steve Jobs in 1976 .", "Apple", "Steve Jobs"),
    ("founded by", "Microsoft , which Bill Gates founded , grew fast .", "Microsoft", "Bill Gates"),
    ("founded by", "The company Tesla was started by Elon Musk and others .", "Tesla", "Elon Musk"),
    ("born in", "Marie Curie was born in Warsaw in 1867 .", "Marie Curie", "Warsaw"),
    ("born in", "Born in Ulm , Albert Einstein later moved to Munich .", "Albert Einstein", "Ulm"),
    ("born in", "Mozart , a native of Salzburg , composed early .", "Mozart", "Salzburg"),
    ("capital of", "Paris is the capital and largest city of France .", "Paris", "France"),
    ("capital of", "Berlin became the capital of Germany again in 1990 .", "Berlin", "Germany"),
    ("capital of", "Rome , capital of Italy , is ancient .", "Rome", "Italy"),
    ("member of", "Messi played for Barcelona for many years .", "Messi", "Barcelona"),
    ("member of", "Jordan starred for the Chicago Bulls in the nineties .", "Jordan", "Chicago Bulls"),
    ("member of", "Ronaldo signed with Juventus in 2018 .", "Ronaldo", "Juventus"),
]


def _span(tokens: list[str], phrase: str) -> tuple[int, int]:
    words = phrase.split()
    for i in range(len(tokens) - len(words) + 1):
        if tokens[i : i + len(words)] == words:
            return i, i + len(words)
    raise AssertionError(f"{phrase!r} not in {tokens}")


@pytest.fixture(scope="session")
def toy_instances():
    """Twelve labelled `Instance`s over four relations."""
    from emma.data import Instance

    out = []
    for rel, sentence, head, tail in TOY_SENTENCES:
        tokens = sentence.split()
        out.append(Instance(tuple(tokens), _span(tokens, head), _span(tokens, tail), rel))
    return out


@pytest.fixture(scope="session")
def toy_descriptions():
    return dict(TOY_DESCRIPTIONS)


@pytest.fixture(scope="session")
def packaged_encoder() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (real weights; for end-to-end tests)."""
    from emma.checkpoint import default_encoder

    return default_encoder()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, packaged_encoder) -> str:
    """A randomly initialised 2-layer BERT saved as a model folder with the packaged vocabulary."""
    from transformers import AutoConfig, AutoModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = Path(packaged_encoder) / name
        if src.exists():
            shutil.copy(src, folder / name)
    torch.manual_seed(0)
    config = AutoConfig.for_model(vocab_size=30522, **TINY_BERT)
    AutoModel.from_config(config, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def _tiny_model_and_tokenizer(tiny_encoder_dir):
    from emma.checkpoint import load_tokenizer
    from emma.model import Emma, EmmaConfig

    tokenizer = load_tokenizer(tiny_encoder_dir)
    torch.manual_seed(0)
    model = Emma.from_encoder(EmmaConfig(encoder="tiny", max_length=64, max_description_length=32), len(tokenizer), pretrained=tiny_encoder_dir)
    return model.eval(), tokenizer


@pytest.fixture
def tiny_model(_tiny_model_and_tokenizer):
    """(Emma, tokenizer): a fresh deep copy of the tiny random model per test."""
    model, tokenizer = _tiny_model_and_tokenizer
    return copy.deepcopy(model), tokenizer


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, _tiny_model_and_tokenizer) -> str:
    """A checkpoint folder of the tiny random model (untrained: for plumbing, not accuracy)."""
    from emma.checkpoint import save_checkpoint

    model, tokenizer = _tiny_model_and_tokenizer
    folder = tmp_path_factory.mktemp("tiny_ckpt") / "emma-tiny"
    save_checkpoint(model, tokenizer, folder)
    return str(folder)


@pytest.fixture
def tiny_extractor(tiny_checkpoint, toy_descriptions):
    """An `Extractor` on the tiny checkpoint with the toy relations, fp32 on CPU."""
    from emma.pipeline import Extractor

    ex = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    ex.set_relations(toy_descriptions)
    return ex


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent (a fresh machine without it)."""
    if not (SHARED_DATA / "fewrel" / "val_wiki.json").is_file():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def fresh_accelerate():
    """Reset accelerate's process-wide state and torch's determinism flag after a test that trains.

    `emma.train.train` builds an `Accelerator`, whose state is process-wide, and switches on
    deterministic algorithms; without a reset one training test would configure the next.
    """
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    torch.use_deterministic_algorithms(False)
