"""The one table model: the same table as aligned text, Markdown and HTML, escaped where it must be."""

from __future__ import annotations

from psra_bench.table import Table

T = Table.of(["name", "p50 ms"], [["a|b", 1.5], ["<script>", None]], title="Latency", note="n = 3")


def test_text_is_aligned_with_title_rule_and_note() -> None:
    assert T.text().splitlines() == [
        "Latency",
        "name      p50 ms",
        "--------  ------",
        "a|b       1.5",
        "<script>  –",
        "",
        "n = 3",
    ]


def test_markdown_escapes_pipes_and_newlines() -> None:
    md = Table.of(["x"], [["one\ntwo|three"]], title="T").markdown(heading="##").splitlines()
    assert md == ["## T", "", "| x |", "|---|", "| one two\\|three |"]


def test_html_escapes_every_cell_and_names_its_class() -> None:
    out = T.html(css_class="regression")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "<h3>Latency</h3>" in out and "<table class='regression'>" in out
    assert "<td>–</td>" in out and "<p class='note'>n = 3</p>" in out


def test_dict_round_trip() -> None:
    data = {"section": "cache", "title": "Hit rates", "columns": ["entity", "hit rate"], "rows": [["hs", 0.7]]}
    table = Table.from_dict(data)
    assert table.to_dict() == {**data, "note": ""}
    assert Table.from_dict(table.to_dict()) == table
