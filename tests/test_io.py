"""nas.io: the one reader of YAML/JSON files users hand the tool (safe, bounded, one error line)."""
from __future__ import annotations

import pytest

from nas.arch import load_arch
from nas.cli import main
from nas.errors import ArchError, ArtifactError
from nas.io import parse_yaml, read_json, read_text, read_yaml

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi"))


def test_aliases_are_refused_before_expansion(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ArtifactError, match=r"aliases \(\*name\) are not allowed") as e:
        read_yaml(path)
    assert len(str(e.value)) < 300
    assert parse_yaml("a: &x 1\nb: 2") == {"a": 1, "b": 2}  # an anchor alone is harmless


def test_deep_nesting_non_utf8_and_size_are_one_line(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(ArtifactError, match="nested too deeply"):
        read_yaml(deep)
    deep_json = tmp_path / "deep.json"
    deep_json.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ArtifactError, match="nested too deeply"):
        read_json(deep_json)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ArtifactError, match="not UTF-8"):
        read_yaml(latin)
    with pytest.raises(ArtifactError, match="larger than any"):
        read_text(latin, max_bytes=4)


def test_cli_reports_bad_files_in_one_line(tmp_path, capsys):
    bomb = tmp_path / "space.yaml"
    bomb.write_text(BOMB)
    latin = tmp_path / "arch.yaml"
    latin.write_bytes(b"resolution: 32\nstem: \xff\n")
    for argv in (["space", "validate", str(bomb)], ["run", "--config", str(bomb)],
                 ["arch", "info", str(latin), "--space", "tiny32"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and len(err) < 400, err
    with pytest.raises(ArchError, match="not UTF-8"):
        load_arch(latin)


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    from nas.io import write_text

    with pytest.raises(ArtifactError, match="is a directory; give a file path"):
        write_text(tmp_path, "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="is not a directory"):
        write_text(tmp_path / "file" / "out.csv", "x")
    assert main(["profile", "--space", "tiny32", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "no-run"), "--reference", "largest",
                 "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err  # said before looking at the run
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("value, problem", [(None, "missing"), ("fast", "not a number"),
                                            (float("nan"), "not finite"), (-1.0, "negative"),
                                            (True, "not a number")])
def test_bad_table_entries_are_named(value, problem):
    import json

    from nas.latency import LatencyTable
    from nas.space import load_space

    table = LatencyTable.new(load_space("tiny32"), {"type": "cpu", "name": "x", "dtype": "fp32",
                                                    "batch_size": 1, "threads": 1}, {})
    data = json.loads(json.dumps(table._data, default=str))
    data.pop("_space", None)
    data["entries"] = [{"kind": "head", "params": {"dim": 8}, "ms": value}]
    with pytest.raises(ArtifactError, match=f"entries\\[0\\].ms is {problem}"):
        LatencyTable(data, source="t.json")


def test_temp_files_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    import os

    from nas.io import write_json

    dead = tmp_path / ".x.json.999999999.ab12cd.tmp"  # a writer that was killed
    alive = tmp_path / f".x.json.{os.getpid()}.ef34gh.tmp"  # one still writing
    theirs = tmp_path / ".x.json.backup.tmp"  # not named by this tool
    for p in (dead, alive, theirs):
        p.write_text("partial")
    write_json(tmp_path / "x.json", {"a": 1})
    assert not dead.exists() and alive.exists() and theirs.exists()
    assert read_json(tmp_path / "x.json") == {"a": 1}
