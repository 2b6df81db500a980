"""Render a report document (heading, numbered sections of label/value rows or tables) to DOCX and PDF.

DOCX uses Times New Roman 13 pt with a 14 pt title, as Vietnamese administrative documents do (Decree
30/2020/NĐ-CP); Word substitutes a metric-compatible font where it is missing. The PDF embeds DejaVu Serif,
vendored beside this module with its licence, because it covers every Vietnamese letter and tone mark and
does not depend on what fonts the server happens to have.
"""

import html
import io
from pathlib import Path
from typing import Any

FONT_DIR = Path(__file__).with_name("fonts")
DOCX_FONT = "Times New Roman"
DOCX_SIZE, DOCX_TITLE_SIZE = 13, 14
# A4 with Decree 30/2020 Appendix I's margins (top and bottom 20-25 mm, left 30-35 mm, right 15-20 mm): the
# narrowest the decree allows, so the label/value tables keep as much width as they can.
PAGE_MM = (210, 297)
MARGINS_MM = {"top": 20, "bottom": 20, "left": 30, "right": 15}
# Form 05's ten-row table: share of the text width per column (number, category, four counts, damage). The
# category names are the longest text and the damage a 15-digit amount; the counts are short.
MATRIX_SHARES = (0.055, 0.25, 0.08, 0.08, 0.12, 0.10, 0.12, 0.195)


def recipient_lines(doc: dict[str, Any]) -> list[str]:
    """ "Kính gửi" and "Đồng gửi" lines, when the document names recipients."""
    found = doc.get("recipients") or {}
    lines = []
    if found.get("to"):
        lines.append("Kính gửi: " + "; ".join(found["to"]))
    if found.get("cc"):
        lines.append("Đồng gửi: " + "; ".join(found["cc"]))
    return lines


# XML 1.0 holds no C0 control but tab, line feed and carriage return (nor U+FFFE, U+FFFF): a SIEM's raw log line
# may carry ANSI colours or a bell, and the document must still render, without them.
_NOT_XML = dict.fromkeys([*(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)), 0xFFFE, 0xFFFF])


def xml_safe(text: Any) -> str:
    """`text` without the characters an XML document cannot hold."""
    return str(text).translate(_NOT_XML)


def docx_bytes(doc: dict[str, Any]) -> bytes:
    """The document as a Word file: each value in the table cell beside its label."""
    from docx import Document
    from docx.enum.table import WD_TABLE_ALIGNMENT
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.oxml.ns import qn
    from docx.shared import Cm, Mm, Pt

    d = Document()
    for section in d.sections:
        section.page_width, section.page_height = Mm(PAGE_MM[0]), Mm(PAGE_MM[1])
        section.left_margin, section.right_margin = Mm(MARGINS_MM["left"]), Mm(MARGINS_MM["right"])
        section.top_margin, section.bottom_margin = Mm(MARGINS_MM["top"]), Mm(MARGINS_MM["bottom"])
    text_width_mm = PAGE_MM[0] - MARGINS_MM["left"] - MARGINS_MM["right"]
    style = d.styles["Normal"]
    style.font.name, style.font.size = DOCX_FONT, Pt(DOCX_SIZE)
    # East Asian and complex-script slots too, or Word falls back to another font for some letters.
    fonts = style.element.get_or_add_rPr().get_or_add_rFonts()
    for slot in ("w:ascii", "w:hAnsi", "w:eastAsia", "w:cs"):
        fonts.set(qn(slot), DOCX_FONT)

    def para(text: str, *, bold: bool = False, size: int = DOCX_SIZE, center: bool = False, italic: bool = False):
        p = d.add_paragraph()
        run = p.add_run(xml_safe(text))
        run.bold, run.italic, run.font.size = bold, italic, Pt(size)
        if center:
            p.alignment = WD_ALIGN_PARAGRAPH.CENTER
        return p

    para("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", bold=True, center=True)
    para("Độc lập - Tự do - Hạnh phúc", bold=True, center=True)
    para(doc["board"], center=True)
    para(f"{doc['form']} {doc['basis']}", italic=True, center=True)
    if doc.get("exercise"):
        para("DIỄN TẬP - KHÔNG PHẢI SỰ CỐ THẬT (DRILL)", bold=True, size=DOCX_TITLE_SIZE, center=True)
    para(doc["title"], bold=True, size=DOCX_TITLE_SIZE, center=True)
    para(doc["reference"], center=True)
    para(doc["dated"], italic=True, center=True)
    for line in recipient_lines(doc):
        para(line)
    for section in doc["sections"]:
        para(f"{section['number']}. {section['title']}", bold=True)
        if "rows" in section:
            table = d.add_table(rows=0, cols=2)
            table.style = "Table Grid"
            table.alignment = WD_TABLE_ALIGNMENT.CENTER
            for label, value in section["rows"]:
                cells = table.add_row().cells
                cells[0].text, cells[1].text = xml_safe(label), xml_safe(value)
                cells[0].width, cells[1].width = Cm(6), Mm(text_width_mm - 60)
        elif "table" in section:
            header, rows = section["table"]["header"], section["table"]["rows"]
            table = d.add_table(rows=1, cols=len(header))
            table.style = "Table Grid"
            table.autofit = False
            shares = MATRIX_SHARES if len(header) == len(MATRIX_SHARES) else (1 / len(header),) * len(header)
            widths = [Mm(text_width_mm * share) for share in shares]
            for cell, text in zip(table.rows[0].cells, header, strict=True):
                cell.text = xml_safe(text)
                for run in cell.paragraphs[0].runs:
                    run.bold, run.font.size = True, Pt(10)
            for row in rows:
                for cell, text in zip(table.add_row().cells, row, strict=True):
                    cell.text = xml_safe(text)
                    for run in cell.paragraphs[0].runs:
                        run.font.size = Pt(11)
            # Word reads the width from every cell, not from the column alone.
            for column, width in zip(table.columns, widths, strict=True):
                column.width = width
                for cell in column.cells:
                    cell.width = width
        if section.get("text") is not None:
            para(section["text"])
    para("")
    for i, line in enumerate(doc["signature"]):
        p = para(line, bold=i == 0, italic=i > 0)
        p.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    para(doc["footnote"], italic=True, size=11)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


_CSS = """
@font-face { font-family: "UCSC Serif"; src: url("%(regular)s"); font-weight: normal; }
@font-face { font-family: "UCSC Serif"; src: url("%(bold)s"); font-weight: bold; }
@page { size: A4; margin: %(top)smm %(right)smm %(bottom)smm %(left)smm;
        @bottom-center { content: counter(page) "/" counter(pages); font-family: "UCSC Serif"; font-size: 9pt; } }
html { font-family: "UCSC Serif"; font-size: 12pt; line-height: 1.3; }
.center { text-align: center; margin: 0; }
.nation { font-weight: bold; }
h1 { font-size: 13pt; text-align: center; margin: 10pt 0 4pt; }
h2 { font-size: 12pt; margin: 10pt 0 4pt; }
.drill { text-align: center; font-weight: bold; border: 2pt solid black; padding: 3pt; }
table { width: 100%%; border-collapse: collapse; table-layout: fixed; }
td, th { border: 0.6pt solid black; padding: 3pt 4pt; vertical-align: top;
         white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-word; }
td.label { width: 38%%; }
table.matrix td, table.matrix th { font-size: 8.5pt; padding: 2pt 3pt;
                                   overflow-wrap: normal; word-break: normal; hyphens: none; }
table.matrix th { font-size: 8pt; }
table.matrix td.number { text-align: right; white-space: nowrap; }
.recipient { margin: 2pt 0; }
.signature { text-align: right; margin-top: 14pt; }
.note { font-size: 9pt; font-style: italic; margin-top: 12pt; }
"""


def _escaped(value: Any) -> str:
    return html.escape(xml_safe(value))


def html_text(doc: dict[str, Any]) -> str:
    e = _escaped
    css = _CSS % {
        "regular": (FONT_DIR / "DejaVuSerif.ttf").as_uri(),
        "bold": (FONT_DIR / "DejaVuSerif-Bold.ttf").as_uri(),
        **MARGINS_MM,
    }
    parts = [
        f'<!doctype html><html lang="vi"><head><meta charset="utf-8"><title>{e(doc["title"])}</title>',
        f"<style>{css}</style></head><body>",
        '<p class="center nation">CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM</p>',
        '<p class="center nation">Độc lập - Tự do - Hạnh phúc</p>',
        f'<p class="center">{e(doc["board"])}</p>',
        f'<p class="center"><i>{e(doc["form"])} {e(doc["basis"])}</i></p>',
    ]
    if doc.get("exercise"):
        parts.append('<p class="drill">DIỄN TẬP - KHÔNG PHẢI SỰ CỐ THẬT (DRILL)</p>')
    parts += [
        f"<h1>{e(doc['title'])}</h1>",
        f'<p class="center">{e(doc["reference"])}</p>',
        f'<p class="center"><i>{e(doc["dated"])}</i></p>',
        *(f'<p class="recipient">{e(line)}</p>' for line in recipient_lines(doc)),
    ]
    for section in doc["sections"]:
        parts.append(f"<h2>{e(section['number'])}. {e(section['title'])}</h2>")
        if "rows" in section:
            parts.append("<table>")
            parts += [
                f'<tr><td class="label">{e(label)}</td><td>{e(value)}</td></tr>' for label, value in section["rows"]
            ]
            parts.append("</table>")
        elif "table" in section:
            header = section["table"]["header"]
            shares = MATRIX_SHARES if len(header) == len(MATRIX_SHARES) else (1 / len(header),) * len(header)
            parts.append('<table class="matrix"><colgroup>')
            parts += [f'<col style="width: {share * 100:.1f}%">' for share in shares]
            parts.append("</colgroup><thead><tr>")
            parts += [f"<th>{e(h)}</th>" for h in header]
            parts.append("</tr></thead><tbody>")
            for row in section["table"]["rows"]:
                cells = [
                    f"<td>{e(str(c))}</td>" if i == 1 else f'<td class="number">{e(str(c))}</td>'
                    for i, c in enumerate(row)
                ]
                parts.append("<tr>" + "".join(cells) + "</tr>")
            parts.append("</tbody></table>")
        if section.get("text") is not None:
            parts.append(f'<p style="white-space: pre-wrap">{e(section["text"])}</p>')
    sig = doc["signature"]
    parts.append(f'<p class="signature"><b>{e(sig[0])}</b><br><i>{e(" ".join(sig[1:]))}</i></p>')
    parts.append(f'<p class="note">{e(doc["footnote"])}</p></body></html>')
    return "".join(parts)


def pdf_bytes(doc: dict[str, Any]) -> bytes:
    """The document as PDF/A-free plain PDF with the vendored font embedded (subset)."""
    from weasyprint import HTML

    return HTML(string=html_text(doc), base_url=str(FONT_DIR)).write_pdf()
