"""The default relation catalogue and the example sentences shipped in `assets/`.

EMMA is zero-shot (paper section 3): a relation is nothing but its description, so the catalogue is
a list of descriptions the user can switch on and off, and any relation typed by a user is as good
as a catalogue one. `app/build_assets.py` writes the files this module reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class Entry:
    """One catalogue relation. `label` is unique; `text` is what the encoder reads."""

    id: str
    name: str
    label: str
    text: str
    source: str
    default: bool = True


@dataclass
class Catalogue:
    """Catalogue relations in file order, plus lookup by label.

    Example:
        >>> cat = Catalogue.load()
        >>> cat.defaults()[:2]
        ['head of government', 'country']
    """

    entries: list[Entry]
    by_label: dict[str, Entry] = field(init=False)

    def __post_init__(self) -> None:
        self.by_label = {e.label: e for e in self.entries}
        if len(self.by_label) != len(self.entries):
            raise ValueError("catalogue labels must be unique")

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Catalogue":
        path = Path(path) if path is not None else ASSETS / "relations.json"
        return cls([Entry(**e) for e in json.loads(path.read_text(encoding="utf-8"))])

    @classmethod
    def from_descriptions(cls, descriptions: dict[str, str], source: str = "custom") -> "Catalogue":
        """A catalogue from {label: text}, all on by default (tests, custom deployments)."""
        return cls([Entry(id=label, name=label, label=label, text=text, source=source) for label, text in descriptions.items()])

    def __len__(self) -> int:
        return len(self.entries)

    def texts(self) -> frozenset[str]:
        """Every catalogue relation's text: beside a user's own relations these get the checkpoint's
        `seen_margin` (see `Engine`)."""
        return frozenset(e.text for e in self.entries)

    def defaults(self) -> list[str]:
        return [e.label for e in self.entries if e.default]

    def search(self, query: str) -> list[Entry]:
        """Entries whose label, id, source or text contains every word of `query` (case-insensitive)."""
        words = (query or "").lower().split()
        if not words:
            return list(self.entries)
        out = []
        for e in self.entries:
            hay = f"{e.label} {e.id} {e.source} {e.text}".lower()
            if all(w in hay for w in words):
                out.append(e)
        return out


def load_examples(path: str | Path | None = None) -> list[dict]:
    """Example sentences: {"text", "head": [start, end], "tail": [start, end], "head_text", "tail_text", ...}."""
    path = Path(path) if path is not None else ASSETS / "examples.json"
    return json.loads(path.read_text(encoding="utf-8"))
