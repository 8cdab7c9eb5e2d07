"""The shipped assets match their sources, and app.py parses its arguments."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest

import emma
from app.build_assets import build_catalogue, detokenize, write_assets
from app.catalogue import ASSETS, Catalogue, load_examples
from app.security import verify_password

REPO = Path(__file__).resolve().parent.parent


def test_assets_are_regenerated_identically(shared_data, tmp_path):
    rel, ex = write_assets(shared_data, tmp_path)
    assert rel.read_text(encoding="utf-8") == (ASSETS / "relations.json").read_text(encoding="utf-8")
    assert ex.read_text(encoding="utf-8") == (ASSETS / "examples.json").read_text(encoding="utf-8")


def test_catalogue_sources(shared_data):
    entries = build_catalogue(shared_data)
    fewrel = [e for e in entries if e["source"] == "FewRel"]
    wiki = [e for e in entries if e["source"] == "Wiki-ZSL"]
    assert len(fewrel) == 80 and len(wiki) == 113
    descriptions = json.loads((shared_data / "fewrel" / "relation_description" / "fewrel_relation_description.json").read_text())
    assert {e["id"] for e in fewrel} == set(descriptions)
    # The text is what emma.read_descriptions makes of pid2name.json: "name: description".
    pid2name = emma.read_descriptions(shared_data / "fewrel" / "pid2name.json")
    assert all(pid2name[e["id"]] == e["text"] for e in fewrel)


def test_shipped_catalogue_and_examples():
    cat = Catalogue.load()
    defaults = [cat.by_label[label] for label in cat.defaults()]
    assert len({e.id for e in defaults}) == len(defaults) == 135, "the default set holds each property once"
    assert all(e.text.startswith(e.name + ":") for e in cat.entries)
    examples = load_examples()
    assert 6 <= len(examples) <= 10
    for ex in examples:
        assert ex["text"][slice(*ex["head"])] == ex["head_text"] and ex["text"][slice(*ex["tail"])] == ex["tail_text"]
        assert emma.find_entity(ex["text"], ex["head_text"]) == tuple(ex["head"])
    readme = (ASSETS / "README.md").read_text()
    assert "CC BY-SA 4.0" in readme and "CC0" in readme and "Han et al" in readme


def test_detokenize_spans():
    text, spans = detokenize(["He", "said", '"', "hi", '"', "(", "twice", ")", "."])
    assert text == 'He said "hi" (twice).'
    assert [text[s:e] for s, e in spans] == ["He", "said", '"', "hi", '"', "(", "twice", ")", "."]


def test_app_py_arguments(monkeypatch, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("app_script", REPO / "app.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.parse_auth("ann:s:ecret") == ("ann", "s:ecret")
    with pytest.raises(SystemExit):
        script.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--checkpoint", "--db", "--host", "--port", "--auth", "--auth-file", "--admin", "--allowed-host",
                 "--hash-password", "--share", "workbench.db", "127.0.0.1"):
        assert flag in out
    with pytest.raises(SystemExit) as e:
        script.main(["--checkpoint", str(tmp_path / "missing"), "--db", str(tmp_path / "w.db")])
    assert e.value.code == 2
    assert "cannot load the checkpoint" in capsys.readouterr().err
    launched = {}
    monkeypatch.setattr(script, "launch", lambda demo, **kw: launched.update(kw))
    created = {}
    monkeypatch.setattr(script, "create_app", lambda checkpoint, db, admins, finetune_from: created.update(starts=finetune_from))
    users = tmp_path / "users.txt"
    users.write_text(f"# logins\nbob:{script.hash_password('pw2')}\n")
    script.main(["--checkpoint", "ck", "--db", str(tmp_path / "w.db"), "--auth", "ann:pw", "--auth-file", str(users),
                 "--admin", "bob", "--port", "7999", "--allowed-host", "emma.example", "--finetune-from", "big"])
    assert created == {"starts": [Path("big")]}
    auth = launched.pop("auth")
    assert launched == {"host": "127.0.0.1", "port": 7999, "share": False, "allowed_host": ["emma.example"]}
    assert auth("ann", "pw") and auth("bob", "pw2") and not auth("bob", "pw") and not auth("carl", "pw")
    with pytest.raises(SystemExit) as e:
        script.main(["--checkpoint", "ck", "--db", str(tmp_path / "w.db"), "--admin", "carl", "--auth", "ann:pw"])
    assert e.value.code == 2 and "--admin carl is not a login" in capsys.readouterr().err
    users.write_text("bob:plaintext\n")
    with pytest.raises(SystemExit) as e:
        script.main(["--checkpoint", "ck", "--db", str(tmp_path / "w.db"), "--auth-file", str(users)])
    assert e.value.code == 2 and "line 1: expected USER:scrypt$" in capsys.readouterr().err
    monkeypatch.setattr(script.getpass, "getpass", lambda prompt: "s3cret")
    script.main(["--hash-password"])
    assert verify_password("s3cret", capsys.readouterr().out.strip())


@pytest.mark.parametrize("command, bad", [("loadtest", ["--clients", "1,64"]), ("crashtest", ["--kills", "0"])])
def test_measurement_commands_have_help_and_bounds(command, bad):
    from click.testing import CliRunner

    from research.cli import cli

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "loopback" in result.output.lower()
    result = CliRunner().invoke(cli, [command, *bad])
    assert result.exit_code == 2