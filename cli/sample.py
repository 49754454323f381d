"""A small labelled evaluation set that the project makes itself: its text was written for it, so there is no
third-party document and no licence question. Three born-digital PDFs (a text layer on every page) and two scanned
pages (pixels only), with queries written for specific pages.

    tokendirect eval --build-sample eval-sample/
    tokendirect eval eval-sample/
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

# file -> pages; a page is its title and paragraphs
DOCUMENTS: dict[str, list[list[str]]] = {
    "river-survey.pdf": [
        [
            "River Lark survey 2025: overview",
            "Field teams walked eleven kilometres of the River Lark between the mill weir and the estuary in May.",
            "Water level was read at four gauges; gauge 7 below the footbridge showed 2.31 metres, the highest spring "
            "reading since the gauges were installed.",
            "This report covers birds, water chemistry and the works we recommend to the drainage board.",
        ],
        [
            "Birds along the river",
            "A grey heron colony of 48 occupied nests stands in the alder carr north of the weir, up from 41 nests.",
            "Kingfishers were seen at three sandy banks; one burrow held young in the second week of the survey.",
            "Sand martins returned to the quarry face, but mink tracks near the reed bed are "
            "a worry for ground nesters.",
        ],
        [
            "Water chemistry",
            "Samples B1 to B6 were sent to the county laboratory. Nitrate ranged from 4.2 to 9.8 milligrams per litre, "
            "highest below the arable drains.",
            "Dissolved oxygen fell to 61 percent saturation in the slow pool behind the weir on warm afternoons.",
            "Phosphate stayed under the threshold for good status at every site except the outfall at Cooper's Lane.",
        ],
        [
            "Recommended works",
            "Plant a willow buffer strip along the arable drains to trap silt and take up nitrate before it reaches "
            "the river.",
            "Fence the cattle drinking bay at Hollow Farm so the bank can recover.",
            "Repeat the survey in the same week next year so that the nest counts can be compared.",
        ],
    ],
    "brewing-handbook.pdf": [
        [
            "Malting",
            "Barley is steeped in water until the grain holds about 45 percent moisture, then left to germinate for "
            "four to five days.",
            "Germination builds the enzymes the brewer needs later. Kilning stops it: a gentle kiln gives pale malt, "
            "a hotter one gives amber and brown malts with toasted flavours.",
        ],
        [
            "Mashing",
            "Crushed malt is mixed with hot water in the mash tun. At 63 to 67 degrees Celsius the amylase enzymes "
            "turn starch into sugars that yeast can ferment.",
            "A cooler mash gives a drier beer, a warmer one a fuller body. After an hour the sweet wort is run off and "
            "the grain bed is rinsed, which brewers call sparging.",
        ],
        [
            "Fermentation",
            "Zymurgy, the study of fermentation, is the heart of brewing. Ale yeast works near the top of the "
            "vessel at 18 to 22 degrees; lager yeast works cooler and slower.",
            "Attenuation measures how much sugar the yeast has eaten: most ales finish between 70 and 80 percent.",
            "Keep the vessel clean and the temperature steady, or the yeast makes off-flavours.",
        ],
        [
            "Packaging",
            "Bottle-conditioned beer gets a small dose of priming sugar before capping; the yeast ferments it and "
            "carbonates the beer in about two weeks.",
            "Casks are filled with finings to clear the beer and vented in the cellar before serving.",
            "Store bottles upright, cool and out of the light.",
        ],
    ],
    "bridge-inspection.pdf": [
        [
            "Old Mill Bridge: structure",
            "Old Mill Bridge is a three-span masonry arch bridge of sandstone, built in 1842 and widened in 1931 "
            "with a concrete deck on the downstream side.",
            "The spans are 9, 11 and 9 metres; the piers stand on timber piles driven into gravel.",
        ],
        [
            "Defects found",
            "Spalling of the sandstone voussoirs on the north arch exposes the rubble fill behind.",
            "Scour has removed gravel around the upstream nose of pier 2, leaving a hollow 0.6 metres deep.",
            "Vegetation roots have opened the joints of the downstream parapet.",
        ],
        [
            "Load assessment",
            "The arches were assessed by the MEXE method with modern corrections. The bridge carries 40 tonne vehicles "
            "on the original spans; the 1931 deck is limited to 26 tonnes until it is strengthened.",
        ],
        [
            "Maintenance plan",
            "Fill the scour hole at pier 2 with rock armour before winter floods.",
            "Repoint the parapet with lime mortar; cement mortar would harm the sandstone.",
            "Inspect the bridge again in two years, or after any flood higher than gauge 7 at 3 metres.",
        ],
    ],
}
# Scanned pages: drawn as images, so they have no text layer (text search finds them only with --ocr-text).
SCANS: dict[str, list[str]] = {
    "scan-cooperage-invoice.png": [
        "HOLLOW FARM COOPERAGE",
        "",
        "Invoice 7781       12 June 2025",
        "",
        "To: Lark Valley Brewery",
        "",
        "4 oak casks, 72 litre        880.00",
        "Re-hooping 2 casks            96.00",
        "Delivery                      25.00",
        "",
        "Total due: 1,001.00",
        "Payment within 30 days.",
    ],
    "scan-ferry-notice.png": [
        "NOTICE TO PASSENGERS",
        "",
        "From 1 November the estuary ferry",
        "runs every 40 minutes instead of 20.",
        "",
        "The last crossing leaves at 18:30.",
        "Bicycles travel free of charge.",
        "",
        "The harbour master",
    ],
}
# query-id -> (query, corpus-id of its one relevant page)
QUERIES: dict[str, tuple[str, str]] = {
    "q01": ("How many heron nests were counted?", "river-survey.pdf#2"),
    "q02": ("nitrate levels below the arable drains", "river-survey.pdf#3"),
    "q03": ("kingfisher burrow with young", "river-survey.pdf#2"),
    "q04": ("willow buffer strip to trap silt", "river-survey.pdf#4"),
    "q05": ("water level at gauge 7", "river-survey.pdf#1"),
    "q06": ("what temperature converts starch to sugar", "brewing-handbook.pdf#2"),
    "q07": ("zymurgy", "brewing-handbook.pdf#3"),
    "q08": ("priming sugar for bottle conditioning", "brewing-handbook.pdf#4"),
    "q09": ("steeping and germination of barley", "brewing-handbook.pdf#1"),
    "q10": ("yeast attenuation of ales", "brewing-handbook.pdf#3"),
    "q11": ("scour hole at the pier", "bridge-inspection.pdf#2"),
    "q12": ("weight limit of the 1931 deck", "bridge-inspection.pdf#3"),
    "q13": ("when was the masonry arch bridge built", "bridge-inspection.pdf#1"),
    "q14": ("lime mortar repointing of the parapet", "bridge-inspection.pdf#4"),
    "q15": ("oak casks invoice total", "scan-cooperage-invoice.png"),
    "q16": ("ferry timetable change in November", "scan-ferry-notice.png"),
}


def write_text_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A born-digital PDF: each page's lines set as real text (a text layer pdftotext reads back); the first line
    of a page is its title."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime(2025, 1, 1, tzinfo=timezone.utc))  # the same bytes, so the same doc_id, each time
    pdf.set_auto_page_break(False)
    for lines in pages:
        pdf.add_page()
        for k, line in enumerate(lines):
            pdf.set_font("Helvetica", style="B" if k == 0 else "", size=20 if k == 0 else 13)
            pdf.multi_cell(0, 11 if k == 0 else 7, line, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    pdf.output(str(path))
    return Path(path)


def write_scan(path: Path, lines: list[str]) -> Path:
    """A page as a scanner would give it: an image with no text layer."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", (850, 1100), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=26)
    for row, line in enumerate(lines):
        draw.text((90, 110 + row * 40), line, fill="black", font=font)
    page.save(path)
    return Path(path)


def build_sample(root: str | Path) -> Path:
    """Write the sample set (corpus/, queries.jsonl, qrels.jsonl) into `root`; files already there are replaced."""
    root = Path(root)
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, pages in DOCUMENTS.items():
        write_text_pdf(corpus / name, pages)
    for name, lines in SCANS.items():
        write_scan(corpus / name, lines)
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, (query, _) in QUERIES.items():
            f.write(json.dumps({"query-id": qid, "query": query}) + "\n")
    with open(root / "qrels.jsonl", "w", encoding="utf-8") as f:
        for qid, (_, corpus_id) in QUERIES.items():
            f.write(json.dumps({"query-id": qid, "corpus-id": corpus_id, "score": 1}) + "\n")
    return root
