"""Generate the bundled sample files in ``notebooks/data/`` (run once; the outputs are committed).

    python notebooks/make_samples.py

Deterministic: the same fpdf2 / python-docx / Pillow versions give byte-identical files (fixed PDF dates and ZIP
timestamps, a seeded RNG for the scan noise). No downloads: images use Pillow's bundled scalable default font
(``ImageFont.load_default(size=N)``), PDFs use fpdf2's core Helvetica. All text is Latin (no CJK font is installed
on the build machine).

The company, people and numbers are fictional. Facts the retrieval notebooks can ask about:

=====================================================  ====================================  =======================
question                                               answer                                file (page)
=====================================================  ====================================  =======================
What was Q3 revenue?                                   EUR 52.6 million (Q3 2024)            annual_report.pdf (p. 2)
Who is the chief executive of Brightwater Instruments? Marta Ellingsen                       annual_report.pdf (p. 1)
What revenue does Brightwater expect for 2025?         EUR 225 to 235 million                annual_report.pdf (p. 3)
How do I reset my password?                            Settings > Account > Reset password;  product_faq.docx
                                                       6-digit code by email, valid 15 min
Who is the seller on the invoice?                      Blue Harbor Trading Co.               invoice.png
What is the invoice total?                             EUR 3,310.00                          invoice.png
When will firmware 2.0 launch?                         18 March 2025                         meeting_notes.md
Where is the research and development centre?          Trondheim, Norway                     overview.html
=====================================================  ====================================  =======================

``scan_page.png`` is a slightly rotated, noisy 150 dpi "scan" of the prose in ``scan_page.txt`` (the OCR
benchmark's ground truth); ``formula.png`` holds two typeset formulas (raised exponents) for ``formula_recognition``.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import zipfile
from pathlib import Path

from docx import Document
from docx.shared import Pt
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent / "data"
FIXED_DATE = dt.datetime(2025, 1, 31, 12, 0, 0, tzinfo=dt.timezone.utc)
SEED = 20250131

# --------------------------------------------------------------------------------------------------------------
# annual_report.pdf
# --------------------------------------------------------------------------------------------------------------

P1_INTRO = (
    "Brightwater Instruments designs and manufactures sensors that measure the quality of drinking water, "
    "rivers and fish farms. The company was founded in Bergen, Norway, in 2011 and today employs 1,240 people "
    "in six countries. This report describes the year 2024, our fourteenth year of operation, and sets out the "
    "priorities that will guide us through 2025."
)
P1_LETTER = [
    "Dear shareholders, 2024 was the strongest year in the history of Brightwater Instruments. Revenue grew by "
    "21 percent to EUR 195.9 million, and for the first time more than half of our sales came from customers "
    "outside the Nordic region. Municipal water utilities in Germany and the Netherlands adopted our networked "
    "monitoring stations at scale, and aquaculture customers in Chile and Scotland renewed their service "
    "contracts for three more years.",
    "The launch of the AquaSense Pro 3 sensor in September was the defining moment of the year. The new sensor "
    "measures nitrate, turbidity and dissolved oxygen in a single probe and runs for eighteen months on one "
    "battery. Orders for the AquaSense Pro 3 exceeded our plan within ten weeks, and we added a second assembly "
    "line in Stavanger to keep delivery times below four weeks.",
    "We also made difficult choices. We closed our small consumer product line, which never reached "
    "profitability, and moved its engineers to the industrial business. I want to thank every colleague for "
    "their hard work and our customers for their trust. - Marta Ellingsen, Chief Executive Officer",
]
P1_PRIORITIES = [
    "Grow recurring service revenue to 30 percent of total revenue.",
    "Open a sales and service office in Singapore to serve customers in Southeast Asia.",
    "Cut the carbon footprint of every sensor we ship by 25 percent compared with 2022.",
    "Release firmware 2.0 for the AquaSense Pro 3 with remote calibration.",
]

P2_INTRO = [
    "Revenue for the full year 2024 reached EUR 195.9 million, up from EUR 161.9 million in 2023. Growth was "
    "strongest in the second half of the year, when deliveries of the AquaSense Pro 3 began. The table below "
    "shows revenue, gross margin and the number of sensors shipped in each quarter.",
]
P2_TABLE = [
    ("Quarter", "Revenue (EUR million)", "Gross margin", "Sensors shipped"),
    ("Q1 2024", "41.2", "38.5%", "12,400"),
    ("Q2 2024", "44.8", "39.1%", "13,150"),
    ("Q3 2024", "52.6", "41.7%", "16,900"),
    ("Q4 2024", "57.3", "42.4%", "18,250"),
    ("Full year", "195.9", "40.6%", "60,700"),
]
P2_AFTER = [
    "Third-quarter revenue of EUR 52.6 million was a record for the company and 17 percent higher than in the "
    "second quarter. The increase came almost entirely from the first deliveries of the AquaSense Pro 3 to water "
    "utilities in Germany. Gross margin improved in every quarter because the new sensor uses fewer parts and "
    "because we renegotiated our contracts for optical components.",
    "Operating expenses rose by 14 percent to EUR 58.1 million. Most of the increase was spent on research and "
    "development and on the new assembly line in Stavanger. Operating profit was EUR 21.4 million, compared with "
    "EUR 12.8 million a year earlier, and the operating margin widened to 10.9 percent.",
    "Cash flow from operations was EUR 26.7 million. At the end of the year the company held EUR 48.3 million "
    "in cash and had no bank debt. The board proposes a dividend of EUR 0.42 per share, which will be paid in "
    "May 2025 if the annual general meeting approves it.",
]

P3_SECTIONS = [
    (
        "Research and Development",
        [
            "Brightwater spent EUR 19.6 million on research and development in 2024, equal to 10 percent of "
            "revenue. Our research and development centre in Trondheim employs 210 engineers and scientists. "
            "The team filed nine patent applications during the year, most of them on optical methods that "
            "measure nitrate without chemical reagents.",
            "In 2025 the team will focus on firmware 2.0 for the AquaSense Pro 3, which adds remote "
            "calibration, and on a low-cost probe for small rural water systems.",
        ],
    ),
    (
        "Sustainability",
        [
            "We reduced the carbon footprint of an average sensor by 18 percent compared with 2022, mainly by "
            "switching to recycled aluminium housings and by shipping by sea instead of by air. All three of "
            "our factories now run on renewable electricity. Our take-back programme collected 4,100 used "
            "sensors, and 92 percent of their materials were recycled.",
        ],
    ),
    (
        "Outlook for 2025",
        [
            "The order book at the end of 2024 was EUR 88 million, the highest in our history. Based on current "
            "orders and the planned opening of the Singapore office, we expect revenue for 2025 of EUR 225 to "
            "235 million and an operating margin of about 12 percent. The main risks are delays in the supply "
            "of optical components and slower public spending on water infrastructure in Europe.",
            "We thank our customers, employees and shareholders for their continued support.",
        ],
    ),
]


def _pdf_paragraph(pdf: FPDF, text: str) -> None:
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(0, 5.6, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def _pdf_heading(pdf: FPDF, text: str, size: int = 15) -> None:
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", size)
    pdf.cell(0, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def make_annual_report(path: Path) -> None:
    """Write the three-page annual report with a text layer, a numbered list and a table on page 2."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title("Brightwater Instruments Annual Report 2024")
    pdf.set_author("Brightwater Instruments Ltd.")
    pdf.set_creator("aisearch-ingest make_samples.py")
    pdf.set_producer("fpdf2")
    pdf.set_margins(22, 20, 22)
    pdf.set_auto_page_break(auto=True, margin=20)

    # Page 1
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 22)
    pdf.cell(0, 12, "Brightwater Instruments Annual Report 2024", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    _pdf_paragraph(pdf, P1_INTRO)
    _pdf_heading(pdf, "Letter from the Chief Executive")
    for para in P1_LETTER:
        _pdf_paragraph(pdf, para)
    _pdf_heading(pdf, "Strategic priorities for 2025")
    pdf.set_font("Helvetica", "", 11)
    for number, item in enumerate(P1_PRIORITIES, start=1):
        pdf.multi_cell(0, 5.6, f"{number}. {item}", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)

    # Page 2
    pdf.add_page()
    _pdf_heading(pdf, "Financial Performance", size=18)
    for para in P2_INTRO:
        _pdf_paragraph(pdf, para)
    _pdf_heading(pdf, "Quarterly revenue 2024", size=13)
    pdf.set_font("Helvetica", "", 10.5)
    with pdf.table(
        col_widths=(30, 50, 32, 40),
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
        line_height=7,
        padding=1.5,
        first_row_as_headings=True,
    ) as table:
        for row in P2_TABLE:
            table.row(row)
    pdf.ln(5)
    for para in P2_AFTER:
        _pdf_paragraph(pdf, para)

    # Page 3
    pdf.add_page()
    for title, paras in P3_SECTIONS:
        _pdf_heading(pdf, title)
        for para in paras:
            _pdf_paragraph(pdf, para)
    assert pdf.pages_count == 3, pdf.pages_count
    pdf.output(str(path))


# --------------------------------------------------------------------------------------------------------------
# product_faq.docx
# --------------------------------------------------------------------------------------------------------------


def _fix_zip_timestamps(path: Path) -> None:
    """Rewrite a ZIP container (docx) with fixed timestamps and order so the bytes are reproducible."""
    with zipfile.ZipFile(path) as src:
        items = [(info.filename, src.read(info.filename)) for info in src.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in items:
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 31, 12, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, data)
    path.write_bytes(buf.getvalue())


def make_faq(path: Path) -> None:
    """Write the product FAQ: headings, paragraphs, a table and a bulleted list."""
    doc = Document()
    props = doc.core_properties
    props.author = "Brightwater Support"
    props.title = "AquaSense Pro 3 - Frequently Asked Questions"
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.last_modified_by = "Brightwater Support"
    props.revision = 1
    style = doc.styles["Normal"]
    style.font.size = Pt(11)

    doc.add_heading("AquaSense Pro 3 - Frequently Asked Questions", level=0)
    doc.add_paragraph(
        "This guide answers the questions our support team hears most often about the AquaSense Pro 3 water "
        "quality sensor and the AquaSense mobile app. If your question is not answered here, contact "
        "support@brightwater.example or call +47 55 00 12 34 on weekdays between 08:00 and 17:00 CET."
    )

    doc.add_heading("Account and sign-in", level=1)
    doc.add_heading("How do I reset my password?", level=2)
    doc.add_paragraph(
        "Open the AquaSense app and go to Settings > Account > Reset password. Enter the email address of your "
        "account and tap Send code. We email you a 6-digit verification code; enter it in the app and choose a "
        "new password of at least 12 characters. The code expires after 15 minutes, so request a new one if it "
        "has expired. For security reasons, resetting your password signs you out on all other devices."
    )
    doc.add_heading("Can several people share one account?", level=2)
    doc.add_paragraph(
        "Yes. The account owner can invite up to 25 team members under Settings > Team. Each member signs in "
        "with their own email address, and the owner decides whether a member may change sensor settings or "
        "only view measurements."
    )

    doc.add_heading("Sensor and measurements", level=1)
    doc.add_heading("How long does the battery last?", level=2)
    doc.add_paragraph(
        "With the default measurement interval of 15 minutes the battery lasts about 18 months. Shorter "
        "intervals reduce battery life; at one measurement per minute expect about 5 months. The app warns you "
        "when the remaining capacity falls below 10 percent."
    )
    doc.add_heading("How often must the sensor be calibrated?", level=2)
    doc.add_paragraph(
        "Calibrate the nitrate and turbidity channels every 6 months with the Brightwater calibration kit. "
        "Dissolved oxygen needs a one-point calibration in air once a year."
    )

    doc.add_heading("Support plans", level=1)
    doc.add_paragraph("Every sensor includes the Basic plan for the first year. You can upgrade at any time.")
    rows = [
        ("Plan", "Response time", "Price per sensor and month"),
        ("Basic", "2 business days", "Included in year one"),
        ("Professional", "8 business hours", "EUR 9"),
        ("Critical", "2 hours, 24/7", "EUR 24"),
    ]
    table = doc.add_table(rows=len(rows), cols=3)
    table.style = "Table Grid"
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value

    doc.add_heading("Before you contact support", level=1)
    doc.add_paragraph("Please have the following information ready:")
    for item in (
        "the serial number printed on the sensor housing (it starts with BW3-)",
        "the firmware version shown under Settings > About",
        "the time and date when the problem started",
        "a screenshot of any error message in the app",
    ):
        doc.add_paragraph(item, style="List Bullet")
    doc.save(str(path))
    _fix_zip_timestamps(path)


# --------------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


INVOICE_FIELDS = [
    ("Invoice No", "INV-2024-0815"),
    ("Date", "2024-11-14"),
    ("Seller", "Blue Harbor Trading Co."),
    ("Buyer", "Kestrel Labs GmbH"),
    ("Currency", "EUR"),
]
INVOICE_TABLE = [
    ("Item", "Qty", "Unit Price", "Amount"),
    ("AquaSense Pro 3 sensor", "4", "620.00", "2,480.00"),
    ("Calibration kit", "2", "145.00", "290.00"),
    ("Annual support plan", "1", "540.00", "540.00"),
]
INVOICE_TOTALS = [("Subtotal", "3,310.00"), ("VAT (0%)", "0.00"), ("Total", "EUR 3,310.00")]


def make_invoice(path: Path) -> None:
    """Write an invoice image with ``Key: value`` lines and a small ruled table."""
    width, height = 1000, 900
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    draw.text((60, 40), "INVOICE", font=_font(48), fill=0)
    y = 130
    for key, value in INVOICE_FIELDS:
        draw.text((60, y), f"{key}: {value}", font=_font(26), fill=0)
        y += 44
    # ruled table
    cols = [60, 470, 590, 760, 940]
    top = y + 30
    row_h = 52
    for r, row in enumerate(INVOICE_TABLE):
        y0 = top + r * row_h
        if r == 0:
            draw.rectangle((cols[0], y0, cols[-1], y0 + row_h), fill=225)
        for c, value in enumerate(row):
            draw.text((cols[c] + 12, y0 + 13), value, font=_font(24), fill=0)
    bottom = top + len(INVOICE_TABLE) * row_h
    for r in range(len(INVOICE_TABLE) + 1):
        draw.line((cols[0], top + r * row_h, cols[-1], top + r * row_h), fill=60, width=2)
    for x in cols:
        draw.line((x, top, x, bottom), fill=60, width=2)
    y = bottom + 40
    for key, value in INVOICE_TOTALS:
        draw.text((560, y), f"{key}: {value}", font=_font(26), fill=0)
        y += 44
    draw.text((60, height - 70), "Payment due within 30 days. Thank you for your business.", font=_font(22), fill=70)
    img.save(path, optimize=True)


SCAN_TEXT = (
    "The history of the lighthouse keepers of the northern coast is a history of patience. Before the lamps "
    "were automated, a keeper climbed the tower every evening at sunset, trimmed the wick, polished the lens and "
    "wound the clockwork that turned the light. On stormy nights he stayed awake until dawn, because a lamp that "
    "went dark for even a few minutes could send a ship onto the rocks.\n"
    "Most keepers lived with their families on small islands far from the nearest town. Supplies arrived by boat "
    "once a month, weather permitting, and children were often taught at home by their mothers. Letters from the "
    "period describe long winters, short summers and a deep sense of responsibility for the sailors who passed "
    "in the dark.\n"
    "The last manned lighthouse on this coast was automated in 1987. Today many of the old towers are museums, "
    "and visitors can climb the narrow stairs to see the great glass lenses that once guided fishing boats and "
    "cargo ships safely home. The logbooks kept by the keepers, with their careful notes on wind, visibility and "
    "passing vessels, are now a valuable record of the climate of the past century."
)


def _wrap_lines(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: int) -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        words = para.split()
        line = ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if font.getlength(candidate) <= max_width:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
        lines.append("")
    return lines[:-1]


def make_scan(png_path: Path, txt_path: Path) -> None:
    """Write a rotated, blurred, speckled 150 dpi "scan" of SCAN_TEXT and its ground truth."""
    rng = random.Random(SEED)
    width = 1240  # 8.27 in (A4) at 150 dpi
    font = _font(24)  # about 11.5 pt at 150 dpi
    margin = 120
    lines = _wrap_lines(SCAN_TEXT, font, width - 2 * margin)
    line_h = 38
    height = 2 * 110 + line_h * len(lines)
    page = Image.new("L", (width, height), 250)
    draw = ImageDraw.Draw(page)
    y = 110
    for line in lines:
        if line:
            draw.text((margin, y), line, font=font, fill=25)
        y += line_h
    page = page.rotate(0.7, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=250)
    page = page.filter(ImageFilter.GaussianBlur(radius=0.6))
    # deterministic speckle: about 0.4% of the pixels darkened or lightened
    px = page.load()
    assert px is not None
    for _ in range(width * height // 250):
        x = rng.randrange(width)
        yy = rng.randrange(height)
        v = px[x, yy]
        assert isinstance(v, int)
        px[x, yy] = max(0, min(255, v + rng.choice((-90, -60, 40))))
    # a faint grey band along the left edge, as from a scanner lid
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 14, height), fill=215)
    page = page.quantize(colors=16, dither=Image.Dither.NONE)
    page.save(png_path, optimize=True)
    txt_path.write_text(SCAN_TEXT + "\n", encoding="utf-8")


# Each formula is typeset as runs of (text, raised): exponents in a smaller size, raised to the cap height.
FORMULAS = [
    [("E = mc", False), ("2", True)],
    [("a", False), ("2", True), (" + b", False), ("2", True), (" = c", False), ("2", True)],
]
FORMULA_SIZE, EXPONENT_SIZE = 52, 30


def make_formula(path: Path) -> None:
    """Write an image of two typeset formulas (E = mc², a² + b² = c²), with real raised exponents."""
    img = Image.new("L", (560, 220), 255)
    draw = ImageDraw.Draw(img)
    for i, runs in enumerate(FORMULAS):
        x, y = 48.0, 40 + i * 95
        for text, raised in runs:
            font = _font(EXPONENT_SIZE if raised else FORMULA_SIZE)
            draw.text((x, y), text, font=font, fill=0)  # same top: the smaller exponent sits at the cap height
            x += draw.textlength(text, font=font) + (2 if raised else 0)
    img.save(path, optimize=True)


# --------------------------------------------------------------------------------------------------------------
# markdown and HTML
# --------------------------------------------------------------------------------------------------------------

MEETING_NOTES = """\
# Product launch sync - 2025-01-09

Attendees: Marta Ellingsen (CEO), Jonas Brekke (firmware lead), Ingrid Solheim (marketing), Tariq Haddad (support)

## Decisions

- Firmware 2.0 for the AquaSense Pro 3 launches on **18 March 2025**.
- Remote calibration ships enabled by default; customers can switch it off per sensor.
- The Singapore office opens in June 2025 with four staff.

## Action items

| Owner | Task | Due |
|---|---|---|
| Jonas Brekke | Freeze the firmware 2.0 feature set | 2025-02-07 |
| Ingrid Solheim | Publish the launch blog post and release notes | 2025-03-18 |
| Tariq Haddad | Update the FAQ on remote calibration | 2025-03-11 |

## Default calibration settings in firmware 2.0

```yaml
calibration:
  remote: true
  nitrate_interval_days: 180
  oxygen_interval_days: 365
```

Next meeting: 2025-01-23, 10:00 CET.
"""

OVERVIEW_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Brightwater Instruments - Company overview</title>
</head>
<body>
<h1>Brightwater Instruments - Company overview</h1>
<p>Brightwater Instruments Ltd. makes sensors that measure water quality in drinking water networks, rivers and
fish farms. The company was founded in Bergen, Norway, in 2011 and employs 1,240 people.</p>
<h2>Offices</h2>
<table>
<thead><tr><th>City</th><th>Role</th><th>Staff</th></tr></thead>
<tbody>
<tr><td>Bergen, Norway</td><td>Headquarters and sales</td><td>310</td></tr>
<tr><td>Trondheim, Norway</td><td>Research and development centre</td><td>210</td></tr>
<tr><td>Stavanger, Norway</td><td>Sensor assembly</td><td>540</td></tr>
<tr><td>Rotterdam, Netherlands</td><td>European service hub</td><td>180</td></tr>
</tbody>
</table>
<h2>Products</h2>
<ul>
<li><strong>AquaSense Pro 3</strong> - nitrate, turbidity and dissolved oxygen in one probe
(launched September 2024)</li>
<li><strong>AquaSense Station</strong> - a networked monitoring station for water utilities</li>
<li><strong>AquaSense app</strong> - measurements, alarms and calibration reminders on iOS and Android</li>
</ul>
<p>Press contact: press@brightwater.example</p>
</body>
</html>
"""


def main() -> None:
    """Write every sample file next to this script and print their sizes."""
    make_annual_report(HERE / "annual_report.pdf")
    make_faq(HERE / "product_faq.docx")
    make_invoice(HERE / "invoice.png")
    make_scan(HERE / "scan_page.png", HERE / "scan_page.txt")
    make_formula(HERE / "formula.png")
    (HERE / "meeting_notes.md").write_text(MEETING_NOTES, encoding="utf-8")
    (HERE / "overview.html").write_text(OVERVIEW_HTML, encoding="utf-8")
    for name in sorted(p.name for p in HERE.iterdir() if p.suffix != ".py"):
        size = (HERE / name).stat().st_size
        print(f"{name:24} {size:>8,} bytes")
        assert size < 300_000, name


if __name__ == "__main__":
    main()
