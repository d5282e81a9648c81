"""Description parsing and the command line's help."""

from __future__ import annotations

import pytest

from zalo_music.cli import build_parser, main
from zalo_music.data.vocab import parse_description
from zalo_music.fileio import safe_child


def test_parse_competition_style_description():
    p = parse_description("This is an instrumental rock music piece. The piece is being performed on a clean "
                          "sounding electric guitar with a groovy bass. The atmosphere is groovy and happy. "
                          "The tempo is fast.")
    assert p.instruments == ["electric guitar", "bass"]
    assert p.moods == ["groovy", "happy"]
    assert p.genre == "rock" and p.bpm == 132.0
    assert parse_description("A song at 95 BPM.").bpm == 95.0
    assert parse_description("A lo-fi song in F# major with a piano.").key == "F# major"
    assert parse_description("This piece is in the key of A minor.").key == "A minor"
    assert parse_description("Nothing musical here.").instruments == []


def test_safe_child_refuses_escapes(tmp_path):
    assert safe_child(tmp_path, "1699.123.mp3") == (tmp_path / "1699.123.mp3").resolve()
    for bad in ("../x.mp3", "/etc/passwd", "a/b.mp3", "", "..", "x\x00.mp3"):
        with pytest.raises(ValueError, match="unsafe"):
            safe_child(tmp_path, bad)


def test_every_command_documents_its_options(capsys):
    parser = build_parser()
    for cmd in ("doctor", "demo-data", "prepare", "quickstart"):
        with pytest.raises(SystemExit):
            parser.parse_args([cmd, "--help"])
        out = capsys.readouterr().out
        assert "usage: zalo-music" in out
    parser.parse_args(["prepare", "--json", "x", "--audio-dir", "y", "--name", "z"])


def test_prepare_error_is_one_clear_line(tmp_path, capsys):
    js = tmp_path / "t.json"
    js.write_text("[1, 2]")
    assert main(["prepare", "--json", str(js), "--audio-dir", str(tmp_path), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "t.json" in err and "expected an object" in err


def test_doctor_reports_and_passes_here(capsys):
    assert main(["doctor", "--no-hub"]) == 0
    out = capsys.readouterr().out
    assert "audiocraft config tree" in out and "ffmpeg" in out and out.strip().splitlines()[-1].startswith("doctor:")
