"""Regenerate notebooks/05_report.ipynb: `python notebooks/_build/make_05.py`."""

from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgen import finish, write

from psra_bench.params import ReportNotebookParams

cells = [
    new_markdown_cell(
        "# 05 — Performance report\n\n"
        "Assembles the results that notebooks 01–04 wrote into `output_dir` (this run's folder) into\n"
        "`report.html`, `report.md` and `results.json`, compares with the previous comparable run in\n"
        "`history.jsonl` and flags regressions. All logic is in `psra_bench.report.assemble`."
    ),
    new_code_cell(ReportNotebookParams.cell(), metadata={"tags": ["parameters"]}),
    new_code_cell(
        "from psra_bench.params import ReportNotebookParams\n\n"
        "ReportNotebookParams.from_namespace(globals()).check()"
    ),
    new_code_cell(
        "from pathlib import Path\n\n"
        "from psra_bench.report.assemble import SECTION_FILES, assemble_report\n"
        "from psra_bench.report.sections import summary_lines\n\n"
        "present = [stem for _, stem in SECTION_FILES if (Path(output_dir) / f'{stem}.json').exists()]\n"
        "print('section results found:', ', '.join(present) or 'none')"
    ),
    new_code_cell(
        "if present:\n"
        "    results = assemble_report(output_dir, run_id, reports_dir=reports_dir, quick=quick)\n"
        "    print('\\n'.join(summary_lines(results)))\n"
        "    print('report:', Path(output_dir) / 'report.html')\n"
        "else:\n"
        "    print('nothing to assemble: run notebooks 01-04 (or `psra-bench report`) first')"
    ),
]
write(finish(cells, "nb05"), Path(__file__).resolve().parent.parent / "05_report.ipynb")
