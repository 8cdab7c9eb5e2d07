"""Per-session state and the checks on what a user types; no gradio, no model.

A session is a plain dict kept in `gr.State` (one copy per browser tab or API client):

    {"owner": "user:ann" | "browser:…" | "session:…" | None,
     "enabled": [catalogue labels switched on],
     "user": {name: description},          # the user's own relations ("" : defined by examples alone)
     "last": {...} | None}                 # the last prediction, what feedback refers to

Everything here returns new values instead of mutating, so a rejected input leaves the session as
it was. Bad input raises `BadInput` with one plain sentence for the UI.
"""

from __future__ import annotations

import copy
import gzip
import html
import re
import unicodedata
import zlib
from pathlib import Path
from typing import Collection

from emma import NO_RELATION, DataError, EntityWithinOther, find_entity, instance_from_text, relation_text, spans_overlap

from .catalogue import Catalogue

MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 1000
MAX_USER_RELATIONS = 500
MAX_REQUEST_ID_CHARS = 100
MAX_IMPORT_BYTES = 50_000_000  # an imported file, unpacked; a larger one is refused before it is parsed
OVERLAP = "The head and tail entities overlap; mark two separate spans."  # a marked span, or a typed entity found only there


class BadInput(ValueError):
    """User input the workbench refuses; the message is one sentence meant for the user."""


def new_session(catalogue: Catalogue) -> dict:
    return {"owner": None, "enabled": catalogue.defaults(), "user": {}, "last": None}


def in_markdown(text: str) -> str:
    """User text inside Markdown: escaped, so a relation name cannot add links or markup."""
    return html.escape(str(text), quote=False).replace("*", "\\*").replace("_", "\\_").replace("[", "\\[").replace("`", "\\`")


def shown(text: str, limit: int = 80) -> str:
    """User text quoted for a message: shortened, and HTML-escaped because toasts render HTML."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(f"'{text}'", quote=False)


def has_visible(text: str | None) -> bool:
    """True when `text` has a character that is neither a control/format character nor white space
    (zero-width spaces and joiners, BOMs, bidi marks alone are not an entity, a name or a sentence)."""
    return any(unicodedata.category(ch)[0] not in "CZ" for ch in text or "")


def check_request_id(value) -> str | None:
    """An optional client request id (None when not given): a printable string of at most 100 characters."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_REQUEST_ID_CHARS or not value.isprintable() or not value.strip():
        raise BadInput(f"A request id must be a printable string of at most {MAX_REQUEST_ID_CHARS} characters.")
    return value


def check_import_size(path: Path) -> None:
    """Refuse an imported file over `MAX_IMPORT_BYTES`, a gzipped one by what it unpacks to (read in steps, so a
    small upload that unpacks to gigabytes never sits in memory), or a .gz file that does not unpack."""
    limit = f"import at most {MAX_IMPORT_BYTES // 1_000_000} MB at once"
    if not path.is_file():
        raise BadInput("The file to import is gone; choose it again.")
    if path.stat().st_size > MAX_IMPORT_BYTES:
        raise BadInput(f"The file has {path.stat().st_size / 1e6:.0f} MB; {limit}.")
    if path.suffix != ".gz":
        return
    unpacked = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                unpacked += len(chunk)
                if unpacked > MAX_IMPORT_BYTES:
                    raise BadInput(f"The file unpacks to more than {MAX_IMPORT_BYTES // 1_000_000} MB; {limit}.")
    except (OSError, EOFError, zlib.error):
        raise BadInput("The file's name ends in .gz but it is not a readable gzip file.") from None


def sentence_case(message: str) -> str:
    message = message.strip()
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


# ------------------------------------------------------------------ relations


def relations_in_force(session: dict, catalogue: Catalogue, labelled: Collection[str] = ()) -> dict[str, str]:
    """{name: text}: the enabled catalogue relations (catalogue order), then the user's own.

    A relation of the user's without a description is defined by its labelled examples: it is in force
    only once it has one (its name in `labelled`), and its text is its name (see `emma.relation_text`).
    """
    enabled = set(session["enabled"])
    out = {e.label: e.text for e in catalogue.entries if e.label in enabled}
    for name, description in session["user"].items():
        if description or name in labelled:
            out[name] = relation_text(name, description)
    return out


def waiting_for_examples(session: dict, labelled: Collection[str]) -> list[str]:
    """The user's relations without a description and without examples (not in force until labelled)."""
    return [name for name, description in session["user"].items() if not description and name not in labelled]


def check_relation(session: dict, catalogue: Catalogue, name: str, description: str, editing: bool) -> tuple[str, str, str]:
    """Validate a new or edited user relation; returns (name, description, text) stripped."""
    name = " ".join((name or "").split())
    description = (description or "").strip()
    if not has_visible(name):
        raise BadInput("Give the relation a name.")
    if len(name) > MAX_NAME_CHARS:
        raise BadInput(f"The relation name is longer than {MAX_NAME_CHARS} characters.")
    if description and not has_visible(description):
        raise BadInput("The description has no visible characters; leave it empty to define the relation by labelled examples, "
                       "or say in words how the head entity relates to the tail entity.")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise BadInput(f"The description is longer than {MAX_DESCRIPTION_CHARS} characters.")
    if name.casefold() == NO_RELATION:
        raise BadInput(f"{shown(name)} is reserved: corpora and exports use it for \"none of these\"; choose another name.")
    if name in catalogue.by_label:
        raise BadInput(f"{shown(name)} is a catalogue relation; choose another name for your own.")
    # Names that differ only in capitals would compete for the same sentences under two labels.
    twin = next((other for other in (*catalogue.by_label, *session["user"]) if other != name
                 and other.casefold() == name.casefold()), None)
    if twin is not None and twin in catalogue.by_label:
        raise BadInput(f"{shown(name)} differs from the catalogue relation {shown(twin)} only in capitals; choose "
                       f"another name for your own.")
    if twin is not None and not (editing and name in session["user"]):
        raise BadInput(f"You already have {shown(twin)}, which differs from {shown(name)} only in capitals; "
                       f"{'edit it' if editing else 'press Save changes to edit it'} under that name, or choose another.")
    if editing and name not in session["user"]:
        raise BadInput(f"You have no relation named {shown(name)} to edit (a relation cannot be renamed: delete it and "
                       f"add it under the new name; its labelled examples stay with the old name).")
    if not editing and name in session["user"]:
        raise BadInput(f"You already have a relation named {shown(name)}; press Save changes to edit it.")
    if not editing and len(session["user"]) >= MAX_USER_RELATIONS:
        raise BadInput(f"You have {MAX_USER_RELATIONS} relations already; delete some first.")
    text = relation_text(name, description)
    if not description:  # defined by its examples: no description to confuse with another's
        return name, description, text
    mine = {_norm(description), _norm(_body(text))}
    for other, other_text in relations_in_force(session, catalogue).items():
        if other != name and mine & {_norm(other_text), _norm(_body(other_text))}:
            raise BadInput(f"Relation {shown(other)} already has this description; describe the new one differently.")
    return name, description, text


def _body(text: str) -> str:
    """The description part of "name: description"."""
    return text.split(":", 1)[-1]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def with_user_relation(session: dict, name: str, description: str) -> dict:
    out = copy.deepcopy(session)
    out["user"][name] = description
    return out


def without_user_relation(session: dict, name: str) -> dict:
    name = " ".join((name or "").split())
    if name not in session["user"]:
        raise BadInput(f"You have no relation named {shown(name)}." if name else "Choose one of your relations to delete.")
    out = copy.deepcopy(session)
    del out["user"][name]
    return out


def stored_switches(stored: list[str] | None, catalogue: Catalogue) -> list[str]:
    """The catalogue relations switched on, from what the store holds (None: never saved, so the defaults);
    a label the catalogue no longer has is dropped."""
    return catalogue.defaults() if stored is None else [label for label in stored if label in catalogue.by_label]


def catalogue_order(catalogue: Catalogue, enabled: list[str]) -> list[str]:
    """`enabled` once each, in catalogue order; BadInput for a label the catalogue does not have."""
    unknown = [label for label in enabled if label not in catalogue.by_label]
    if unknown:
        raise BadInput(f"{shown(unknown[0])} is not in the catalogue.")
    keep = set(enabled)
    return [e.label for e in catalogue.entries if e.label in keep]


def with_enabled(session: dict, catalogue: Catalogue, enabled: list[str]) -> dict:
    out = copy.deepcopy(session)
    out["enabled"] = catalogue_order(catalogue, enabled)
    return out


def parse_relation_set(data: object, catalogue: Catalogue) -> tuple[list[str], dict[str, str]]:
    """Read an imported relation set: {name: description} (as exported; "" or the bare name for a relation defined by its
    labelled examples) or pid2name {id: [name, description]}.

    Returns (catalogue labels to enable, {name: description} of the user's relations). A name whose
    text equals its catalogue entry's enables that entry; anything else becomes a user relation, one
    defined by its examples ("") where the text is the name alone (as such a relation is exported).
    """
    if not isinstance(data, dict) or not data:
        raise BadInput("The file should hold a JSON object {relation name: description}.")
    enabled, user = [], {}
    texts: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            name, description = value[0], value[1]
        elif isinstance(value, str):
            name, description = str(key), value
        else:
            raise BadInput(f"The entry {shown(key)} should map to a description string.")
        name = " ".join(name.split())
        if not has_visible(name):
            raise BadInput(f"The entry {shown(key)} has an empty name.")
        description = description.strip()
        if description and not has_visible(description):
            raise BadInput(f"The entry {shown(key)} has a description with no visible characters; leave it \"\" for a "
                           f"relation defined by its labelled examples.")
        if description.lower().startswith(name.lower() + ":"):  # exported sets hold "name: description"
            description = description[len(name) + 1 :].strip()
            if not has_visible(description):
                raise BadInput(f"The entry {shown(key)} has an empty description.")
        elif " ".join(description.split()).lower() == name.lower():
            description = ""  # exported as its bare name: a relation defined by its labelled examples (or given as "")
        text = relation_text(name, description)
        entry = catalogue.by_label.get(name)
        if entry is not None and entry.text in (text, value if isinstance(value, str) else None):
            enabled.append(name)
        elif entry is not None:
            raise BadInput(f"{shown(name)} is a catalogue relation with another description; rename it in the file.")
        else:
            if len(name) > MAX_NAME_CHARS or len(description) > MAX_DESCRIPTION_CHARS:
                raise BadInput(f"The entry {shown(name)} is too long.")
            user[name] = description
        body = text.split(":", 1)[-1].strip().lower()
        if body in texts:
            raise BadInput(f"{shown(texts[body])} and {shown(name)} have the same description.")
        texts[body] = name
    if len(user) > MAX_USER_RELATIONS:
        raise BadInput(f"The file holds more than {MAX_USER_RELATIONS} new relations.")
    return enabled, user


# ------------------------------------------------------------------ entities


def utf16_to_index(text: str, offset: int) -> int:
    """Convert a browser (UTF-16 code unit) offset into a Python string index."""
    units = 0
    for i, ch in enumerate(text):
        if units >= offset:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(text)


def selection_span(text: str, index: list[int] | tuple[int, int], value: str | None) -> tuple[int, int] | None:
    """The selected character span of `text` from a Textbox select event, whitespace trimmed."""
    if not text or index is None or len(index) != 2:
        return None
    s, e = int(index[0]), int(index[1])
    if text[s:e] != value and value is not None:
        s, e = utf16_to_index(text, s), utf16_to_index(text, e)
    s, e = max(0, min(s, e)), min(len(text), max(s, e))
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if s < e else None


def holds(sentence: str, typed: str, span) -> bool:
    """Whether a marked `span` still holds the entity string `typed` (the test `resolve_entity` applies)."""
    return bool(span) and bool((typed or "").strip()) and sentence[span[0]:span[1]].strip() == typed.strip()


def ambiguity_note(sentence: str, head: str, tail: str, spans: dict | None) -> str:
    """A sentence for the hint when a typed (not selected) entity occurs more than once: which occurrence is used and how
    to pick another; "" otherwise."""
    notes = []
    for role, typed in (("head", head), ("tail", tail)):
        typed = (typed or "").strip()
        if not typed or holds(sentence, typed, (spans or {}).get(role)):
            continue
        n = len(re.findall(re.escape(typed), sentence, re.IGNORECASE))
        if n > 1:
            notes.append(f"{shown(typed)} occurs {n} times; the {role} is the one marked above (to use another, select "
                         f"it and press {role.capitalize()}).")
    return " ".join(notes)


def resolve_entity(sentence: str, role: str, typed: str, marked, avoid: tuple[int, int] | None = None) -> tuple[int, int]:
    """Character span of one entity.

    A span marked from a selection is used while the sentence still has that text there; otherwise
    the typed entity string is looked up (first occurrence, case-insensitive, not overlapping `avoid`).
    """
    typed = (typed or "").strip()
    if typed and not has_visible(typed):
        raise BadInput(f"The {role} entity has no visible characters; mark words of the sentence.")
    if holds(sentence, typed, marked):
        return int(marked[0]), int(marked[1])
    if not typed:
        raise BadInput(f"Mark the {role} entity: select it in the sentence and press {role.capitalize()}, or type it.")
    try:
        return find_entity(sentence, typed, avoid=avoid)
    except EntityWithinOther:
        raise BadInput(OVERLAP) from None
    except DataError:
        raise BadInput(f"The {role} entity {shown(typed)} does not occur in the sentence.") from None


def resolve_entities(sentence: str, head_text: str, tail_text: str, spans: dict | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """Character spans (end exclusive) of head and tail, checked the way the model will read them."""
    sentence = sentence or ""
    if not has_visible(sentence):
        raise BadInput("Enter a sentence first.")
    spans = spans or {}
    head = resolve_entity(sentence, "head", head_text, spans.get("head"))
    tail = resolve_entity(sentence, "tail", tail_text, spans.get("tail"), avoid=head)
    if spans_overlap(head, tail):
        raise BadInput(OVERLAP)
    try:
        instance_from_text(sentence, head, tail)
    except DataError as e:
        raise BadInput(sentence_case(str(e))) from None
    return head, tail


def highlighted(sentence: str, head: tuple[int, int] | None, tail: tuple[int, int] | None) -> dict:
    """HighlightedText value: the sentence with HEAD and TAIL entities (whitespace kept in the segments)."""
    entities = [{"entity": label, "start": span[0], "end": span[1]} for label, span in (("HEAD", head), ("TAIL", tail)) if span]
    return {"text": sentence or "", "entities": entities}
