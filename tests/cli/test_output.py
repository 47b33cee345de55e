"""User data in human output prints as written, never as markup or terminal codes."""

from __future__ import annotations

import pytest

from cli import output
from cli.commands import agent as agent_command
from cli.commands import exports as exports_command
from cli.commands import links as links_command
from cli.output import escape_controls, escape_markup, files_table


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain.jpg", "plain.jpg"),
        ("esc\x1b[31mred.jpg", "esc\\x1b[31mred.jpg"),
        ("two\nlines.jpg", "two\\nlines.jpg"),
        ("cr\r.jpg", "cr\\r.jpg"),
        ("tab\t.jpg", "tab\\t.jpg"),
        ("nul\x00bel\x07.jpg", "nul\\x00bel\\x07.jpg"),
        ("del\x7f.jpg", "del\\x7f.jpg"),
        ("csi\x9b31m.jpg", "csi\\x9b31m.jpg"),
        ("nel\x85.jpg", "nel\\x85.jpg"),
        ("café ☕ 👩‍👩‍👧.jpg", "café ☕ 👩‍👩‍👧.jpg"),
    ],
)
def test_escape_controls(text, expected):
    assert escape_controls(text) == expected


def test_escape_controls_leaves_no_control():
    every_code = "".join(chr(code) for code in range(0xA0))
    escaped = escape_controls(every_code)
    assert all(char.isprintable() for char in escaped)


def render(capsys, *renderables) -> str:
    output.console.print(*renderables)
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    [
        "[bold]rich[bold].jpg",
        "[red]alert[/red].jpg",
        "[link=http://127.0.0.1/]x[/link].jpg",
        "ends with backslash\\",
        "a:smile:b.jpg",
        "{task.description}.jpg",
    ],
)
def test_escape_markup_prints_literally(capsys, name):
    assert render(capsys, f"[bold]{escape_markup(name)}[/bold]") == name + "\n"


def test_escape_markup_escapes_controls(capsys):
    printed = render(capsys, escape_markup("[i]x[/i]\x1b[2J\n.jpg"))
    assert printed == "[i]x[/i]\\x1b[2J\\n.jpg\n"


def test_files_table_prints_literally(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    files_table(
        [
            {
                "id": "f1",
                "drive": "[red]Tape[/red]",
                "path": "DCIM/[bold]rich[bold].jpg",
                "media_type": "image/jpeg",
                "size": 10,
                "state": "online",
            },
            {
                "id": "f2",
                "drive": "Tape\x1b]0;title\x07",
                "path": "esc\x1b[31mred\n.jpg",
                "media_type": "image/jpeg",
                "size": 10,
                "state": "online",
            },
        ]
    )
    printed = capsys.readouterr().out
    assert "[red]Tape[/red]" in printed
    assert "DCIM/[bold]rich[bold].jpg" in printed
    assert "Tape\\x1b]0;title\\x07" in printed
    assert "esc\\x1b[31mred\\n.jpg" in printed
    assert "\x1b" not in printed


HOSTILE = "[bold]x[bold]\x1b[2J{name}"
HOSTILE_SHOWN = "[bold]x[bold]\\x1b[2J{name}"


def test_export_report_prints_literally(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    exports_command._report(
        {
            "id": "e1",
            "status": "waiting",
            "files_done": 0,
            "archive_size": None,
            "skipped": [{"drive": HOSTILE, "path": "a.jpg", "reason": "offline"}],
            "substituted": [
                {"drive": HOSTILE, "path": "b.jpg", "copy_drive": "C", "copy_path": HOSTILE}
            ],
            "waiting_for": [HOSTILE],
        }
    )
    printed = capsys.readouterr().out
    assert f"skipped {HOSTILE_SHOWN}:a.jpg: offline" in printed
    assert f"copy used {HOSTILE_SHOWN}:b.jpg from C:{HOSTILE_SHOWN}" in printed
    assert f"waiting for drives: {HOSTILE_SHOWN}" in printed
    assert "\x1b" not in printed


def test_agent_event_prints_literally(capsys):
    agent_command._event(False, "connected", drive=HOSTILE, path="/media/x")
    assert capsys.readouterr().out == f"connected drive={HOSTILE_SHOWN} path=/media/x\n"


def test_link_prints_literally(capsys):
    links_command._print_link(
        {
            "id": "l1",
            "label": HOSTILE,
            "state": "active",
            "url": "http://127.0.0.1/s/abc",
            "expires_at": None,
            "has_password": False,
            "allow_download": False,
            "show_metadata": False,
            "stats": {"views": 0, "downloads": 0, "last_access_at": None},
            "warnings": [f"group {HOSTILE} is restricted"],
        }
    )
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{HOSTILE_SHOWN} (l1): active\n")
    assert captured.err == f"  warning: group {HOSTILE_SHOWN} is restricted\n"


class FakeDownload:
    headers = {"Content-Length": "5"}

    def iter_content(self, chunk_size):
        yield b"hello"


def test_download_name_with_braces(tmp_path):
    saved = exports_command._save(FakeDownload(), tmp_path, HOSTILE + ".jpg", as_json=False)
    assert saved == tmp_path / (HOSTILE + ".jpg")
    assert saved.read_bytes() == b"hello"
