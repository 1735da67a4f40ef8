"""The one table model of psra-bench, rendered as aligned text, Markdown or HTML.

The CLI, the notebooks and the report all build a :class:`Table` and ask it for the rendering
they need, so a table looks the same wherever it is printed and is escaped once, here.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Table"]


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


@dataclass
class Table:
    """Columns and rows of cells, with an optional title, note and report section."""

    columns: list[str]
    rows: Sequence[Sequence[Any]] = ()
    title: str = ""
    note: str = ""
    section: str = ""

    @classmethod
    def of(
        cls,
        columns: Sequence[Any],
        rows: Sequence[Sequence[Any]],
        *,
        title: str = "",
        note: str = "",
        section: str = "",
    ) -> Table:
        """A table from any sequences (copied into lists)."""
        return cls([str(c) for c in columns], [list(r) for r in rows], title, note, section)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Table:
        """The table of a JSON dict with ``columns`` and ``rows`` (``title``, ``note``, ``section`` optional)."""
        return cls.of(
            data["columns"],
            data["rows"],
            title=str(data.get("title", "")),
            note=str(data.get("note", "") or ""),
            section=str(data.get("section", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what results.json and the notebooks' result files hold)."""
        return {
            "section": self.section,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "note": self.note,
        }

    def text(self) -> str:
        """Aligned plain text: the title, a header line, a rule, the rows, then the note."""
        cells = [self.columns] + [[_cell(v) for v in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [self.title] if self.title else []
        for n, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)

    def markdown(self, *, heading: str = "###") -> str:
        """A GitHub-flavoured Markdown table (pipes and newlines in cells escaped), titled with ``heading``."""

        def cell(v: Any) -> str:
            return _cell(v).replace("|", "\\|").replace("\n", " ")

        lines = [f"{heading} {self.title}", ""] if self.title else []
        lines += ["| " + " | ".join(cell(c) for c in self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        lines.append("")
        if self.note:
            lines += [f"_{self.note}_", ""]
        return "\n".join(lines)

    def html(self, *, css_class: str = "", heading: str = "h3") -> str:
        """An HTML table (every cell escaped), titled with ``<heading>`` and followed by its note."""
        e = html.escape
        head = "".join(f"<th>{e(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{e(_cell(v))}</td>" for v in row) + "</tr>" for row in self.rows)
        cls = f" class='{e(css_class)}'" if css_class else ""
        parts = [f"<{heading}>{e(self.title)}</{heading}>"] if self.title else []
        parts.append(f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        if self.note:
            parts.append(f"<p class='note'>{e(self.note)}</p>")
        return "\n".join(parts)
