"""A small labelled evaluation set that the project makes itself (no third-party documents, no licence doubts)."""

from __future__ import annotations

from pathlib import Path


def write_text_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A born-digital PDF: each page's lines set as real text (a text layer pdftotext reads back)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    for lines in pages:
        pdf.add_page()
        for k, line in enumerate(lines):
            pdf.set_font("Helvetica", style="B" if k == 0 else "", size=20 if k == 0 else 13)
            pdf.multi_cell(0, 11 if k == 0 else 7, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return Path(path)
