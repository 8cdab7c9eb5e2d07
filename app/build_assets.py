"""Regenerate `assets/relations.json` and `assets/examples.json` from the shared FewRel / Wiki-ZSL files.

The workbench ships a default relation catalogue so that a new user can predict at once: the 80
FewRel relations and the 113 Wiki-ZSL relations (the two benchmarks of the EMMA paper, section
4.1), each described as "name: Wikidata description", which is how `emma.read_descriptions`
renders `pid2name.json` and so how the model saw descriptions in training.

Run from the repository root:

    python -m app.build_assets                      # reads ../shared/data
    python -m app.build_assets --data /path/to/data --out assets

Each catalogue entry: ``{"id", "name", "label", "text", "source", "default"}``. ``label`` is the
relation's unique name in the workbench (what predictions and feedback use); a Wiki-ZSL relation
whose Wikidata property is also a FewRel relation is labelled "name (Wiki-ZSL)" and disabled by
default, so that the default set has one entry per property.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from emma import find_entity, relation_text

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "assets"

FEWREL = "FewRel"
WIKIZSL = "Wiki-ZSL"
N_EXAMPLES = 8

# No space before these tokens, none after the opening ones (plain English detokenisation).
_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "'s", "'", "%", "n't", "-"}
_NO_SPACE_AFTER = {"(", "[", "{", "$", "-"}


def build_catalogue(data: Path) -> list[dict]:
    """The FewRel relations (those with a description file entry) then the Wiki-ZSL ones."""
    pid2name = json.loads((data / "fewrel" / "pid2name.json").read_text(encoding="utf-8"))
    fewrel_ids = json.loads((data / "fewrel" / "relation_description" / "fewrel_relation_description.json").read_text(encoding="utf-8"))
    wiki = json.loads((data / "wikizsl" / "pid2name_wiki.json").read_text(encoding="utf-8"))
    missing = sorted(set(fewrel_ids) - set(pid2name))
    if missing:
        raise ValueError(f"pid2name.json lacks FewRel relations {missing}")
    entries: list[dict] = []
    labels: set[str] = set()

    def add(pid: str, name: str, description: str, source: str, default: bool, label: str) -> None:
        if label in labels:
            label = f"{label} ({source})"
        if label in labels:
            label = f"{label} {pid}"
        labels.add(label)
        entries.append({
            "id": pid,
            "name": name.strip(),
            "label": label.strip(),
            "text": relation_text(name, description),
            "source": source,
            "default": default,
        })

    for pid in sorted(fewrel_ids, key=_pid_order):
        name, description = pid2name[pid]
        add(pid, name, description, FEWREL, True, name)
    for pid in sorted(wiki, key=_pid_order):
        name, description = wiki[pid]
        also_fewrel = pid in fewrel_ids
        add(pid, name, description, WIKIZSL, not also_fewrel, f"{name} ({WIKIZSL})" if also_fewrel else name)
    return entries


def _pid_order(pid: str) -> tuple[int, str]:
    return (int(pid[1:]) if pid[1:].isdigit() else 10**9, pid)


def detokenize(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join word tokens into readable text; returns the text and each token's character span."""
    text = ""
    spans = []
    glue_next = True  # no space before the first token
    open_quote = False  # straight double quotes alternate: an opening one hugs the next word, a closing one the last
    for tok in tokens:
        closing_quote = tok == '"' and open_quote
        if not (glue_next or tok in _NO_SPACE_BEFORE or closing_quote):
            text += " "
        spans.append((len(text), len(text) + len(tok)))
        text += tok
        if tok == '"':
            open_quote = not open_quote
        glue_next = tok in _NO_SPACE_AFTER or (tok == '"' and open_quote)
    return text, spans


def build_examples(data: Path, catalogue: list[dict], n: int = N_EXAMPLES) -> list[dict]:
    """One short FewRel validation sentence per relation, for `n` relations, as text with character spans.

    An example is kept only when typing its entity strings finds the marked spans again (first
    occurrence, the tail avoiding the head), so loading it by text marks exactly the same words.
    """
    val = json.loads((data / "fewrel" / "val_wiki.json").read_text(encoding="utf-8"))
    names = {e["id"]: e["label"] for e in catalogue if e["source"] == FEWREL}
    out = []
    for pid in sorted(val, key=_pid_order):
        for record in val[pid]:
            example = _example(record, pid, names.get(pid, pid))
            if example is not None:
                out.append(example)
                break
        if len(out) == n:
            break
    return out


def _example(record: dict, pid: str, label: str) -> dict | None:
    tokens = record["tokens"]
    if any(not t.strip() for t in tokens):  # a few FewRel tokens are whitespace only
        return None
    text, spans = detokenize(tokens)
    if not 60 <= len(text) <= 170:
        return None
    marks = {}
    for key in ("h", "t"):
        idx = record[key][2][0]
        marks[key] = (spans[idx[0]][0], spans[idx[-1]][1])
    head, tail = marks["h"], marks["t"]
    head_text, tail_text = text[head[0] : head[1]], text[tail[0] : tail[1]]
    if text.lower().count(head_text.lower()) != 1 or text.lower().count(tail_text.lower()) != 1:
        return None  # an entity written twice would make the example ambiguous to read
    if find_entity(text, head_text) != head or find_entity(text, tail_text, avoid=head) != tail:
        return None
    return {
        "text": text,
        "head": list(head),
        "tail": list(tail),
        "head_text": head_text,
        "tail_text": tail_text,
        "relation": label,
        "relation_id": pid,
        "source": "FewRel val_wiki.json",
    }


def write_assets(data: Path = DEFAULT_DATA, out: Path = DEFAULT_OUT) -> tuple[Path, Path]:
    """Build both files under `out`; returns their paths."""
    catalogue = build_catalogue(data)
    examples = build_examples(data, catalogue)
    out.mkdir(parents=True, exist_ok=True)
    rel_path, ex_path = out / "relations.json", out / "examples.json"
    rel_path.write_text(json.dumps(catalogue, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    ex_path.write_text(json.dumps(examples, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("wrote %d relations to %s and %d examples to %s", len(catalogue), rel_path, len(examples), ex_path)
    return rel_path, ex_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.build_assets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write (default: assets/)")
    args = parser.parse_args(argv)
    if not (args.data / "fewrel" / "pid2name.json").is_file():
        parser.error(f"{args.data} does not hold fewrel/pid2name.json; pass --data")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_assets(args.data, args.out)


if __name__ == "__main__":
    main()
