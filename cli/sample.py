"""A small labelled evaluation set that the project makes itself: its text was written for it, so there is no
third-party document and no licence question. Three born-digital PDFs (a text layer on every page) and two scanned
pages (pixels only), with queries written for specific pages.

    tokendirect eval --build-sample eval-sample/
    tokendirect eval eval-sample/

A larger set (`--sample manuals`) is generated: two born-digital service manuals and scanned service bulletins whose
pages share their sentences; `--sample manuals-images` adds to each query an image of its page, for measuring
hybrid search when the visual signal is strong.
"""

from __future__ import annotations

import json
import shutil
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
    _write_labels(root, QUERIES, {})
    return root


# -- a larger set: two service manuals and service bulletins, generated -----------------------------------------------
# Every page describes one component with the same kinds of facts (an inspection interval, a part number, a torque, a
# fault code), in sentences the pages share, so BM25 has to tell pages apart by the few words that differ. Queries are
# written from one page's facts. All of it is generated from the lists below (no randomness): the same bytes each time.

MANUALS: dict[str, tuple[str, list[str]]] = {
    "pump-station-manual.pdf": (
        "Pump station P-400",
        [
            "impeller",
            "mechanical seal",
            "bearing housing",
            "motor coupling",
            "suction strainer",
            "discharge valve",
            "pressure switch",
            "level sensor",
            "control panel",
            "check valve",
            "cooling fan",
            "grease nipples",
        ],
    ),
    "air-handler-manual.pdf": (
        "Air handling unit AH-20",
        [
            "supply fan",
            "fan belt",
            "filter bank",
            "heating coil",
            "cooling coil",
            "condensate tray",
            "damper actuator",
            "frost thermostat",
            "humidifier",
            "heat wheel",
            "duct smoke detector",
            "inverter drive",
        ],
    ),
}
BULLETINS = ["door interlock", "vibration mount", "drain pump", "isolator switch", "flow meter", "anti-siphon loop"]
SYMPTOMS = ["runs hot", "leaks", "chatters", "trips the breaker", "reads low", "sticks open"]
FASTENERS = ["flange bolts", "clamp screws", "locknut", "cap screws", "retaining nut", "set screws"]
SHARED = [
    "Isolate the supply and lock off the breaker before any work.",
    "Record every reading in the station log and report anything unusual to the duty engineer.",
    "Use only genuine spare parts; others void the warranty.",
]


def _manual_facts(i: int, component: str, prefix: str) -> dict:
    return {
        "component": component,
        "interval": 250 * (i % 8 + 1) + 50 * (i // 8),
        "part": f"{prefix}-{3100 + 37 * i}",
        "torque": 12 + 7 * i,
        "fastener": FASTENERS[i % len(FASTENERS)],
        "code": f"{prefix[0]}{20 + 3 * i}",
        "symptom": SYMPTOMS[i % len(SYMPTOMS)],
    }


def _manual_lines(title: str, section: int, f: dict) -> list[str]:
    return [
        f"{section}. {f['component'].capitalize()}",
        f"{title}: inspect the {f['component']} every {f['interval']} hours of running.",
        f"Spare part {f['part']} replaces the {f['component']} as a whole; keep one in stock.",
        f"Tighten the {f['fastener']} of the {f['component']} to {f['torque']} Nm in a cross pattern.",
        f"Fault code {f['code']} means the {f['component']} {f['symptom']}: stop the unit and check it.",
        SHARED[section % len(SHARED)],
    ]


def _manual_queries(f: dict, kind: int) -> str:
    return [
        f"how often is the {f['component']} inspected",
        f"part number for a new {f['component']}",
        f"torque for the {f['component']} {f['fastener']}",
        f"what does fault {f['code']} mean",
    ][kind % 4]


def build_manuals(root: str | Path, image_queries: bool = False) -> Path:
    """Write the manuals set into `root`: two born-digital service manuals (12 pages each, a text layer), six scanned
    service bulletins (images only) and one query per page. `image_queries`: each query also names an image, the top
    40% of its page on an otherwise blank page, which a visual signal finds easily (a strong visual signal even for the
    test model); the text queries stay the same."""
    root = Path(root)
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    queries: dict[str, tuple[str, str]] = {}
    n = 0
    for name, (title, components) in MANUALS.items():
        prefix = "".join(w[0] for w in title.split()[:2]).upper()
        pages = []
        for i, component in enumerate(components):
            facts = _manual_facts(n, component, prefix)
            pages.append(_manual_lines(title, i + 1, facts))
            n += 1
            queries[f"m{n:02d}"] = (_manual_queries(facts, n), f"{name}#{i + 1}")
        write_text_pdf(corpus / name, pages)
    for i, component in enumerate(BULLETINS):
        facts = _manual_facts(n, component, "SB")
        lines = [f"SERVICE BULLETIN SB-{40 + i}", ""] + _manual_lines("Any unit", i + 1, facts)[1:]
        write_scan(corpus / f"bulletin-{40 + i}.png", [part for line in lines for part in _wrap(line, 52)])
        n += 1
        queries[f"m{n:02d}"] = (_manual_queries(facts, n), f"bulletin-{40 + i}")
    images = _query_images(root, corpus, queries) if image_queries else {}
    _write_labels(root, queries, images)
    return root


def _wrap(line: str, width: int) -> list[str]:
    out, current = [], ""
    for word in line.split():
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return out + [current]


def _query_images(root: Path, corpus: Path, queries: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Each query's image: the top 40% of its page as ingest sees it, the rest blank."""
    from PIL import Image

    from core.pages import render_pages

    folder = root / "queries"
    folder.mkdir(exist_ok=True)
    images = {}
    for qid, (_, corpus_id) in queries.items():
        name, _, number = corpus_id.partition("#")
        path = next(p for p in corpus.iterdir() if p.name == name or p.stem == name)
        page = next(render_pages(path, "query", numbers=[int(number or 1)])).image
        query = Image.new("RGB", page.size, "white")
        query.paste(page.crop((0, 0, page.width, int(0.4 * page.height))), (0, 0))
        query.save(folder / f"{qid}.png")
        images[qid] = f"queries/{qid}.png"
    return images


def _write_labels(root: Path, queries: dict[str, tuple[str, str]], images: dict[str, str]) -> None:
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, (query, _) in queries.items():
            row = {"query-id": qid, "query": query, **({"image": images[qid]} if qid in images else {})}
            f.write(json.dumps(row) + "\n")
    with open(root / "qrels.jsonl", "w", encoding="utf-8") as f:
        for qid, (_, corpus_id) in queries.items():
            f.write(json.dumps({"query-id": qid, "corpus-id": corpus_id, "score": 1}) + "\n")


# -- real PDFs: two manuals that Debian ships, with queries written for their pages ----------------------------------
# libtasn1-doc 4.19.0 (36 pages) and shared-mime-info 2.2 (the specification, version 0.21, 17 pages): technical
# manuals typeset by pdfTeX, with a real text layer. The queries were written for those versions' pages.
DEBIAN_MANUALS = {
    "libtasn1.pdf": (Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"), "libtasn1-doc", 36),
    "shared-mime-info-spec.pdf": (
        Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"),
        "shared-mime-info",
        17,
    ),
}
DEBIAN_QUERIES: dict[str, tuple[str, str]] = {
    "m01": ("which encoding rules does the library support besides ASN.1 parsing", "libtasn1.pdf#4"),
    "m02": ("comments begin with two dashes, C-style comments not supported", "libtasn1.pdf#5"),
    "m03": ("REAL type and AUTOMATIC TAGS are not handled", "libtasn1.pdf#6"),
    "m04": ("header file libtasn1.h and the asn1_node type", "libtasn1.pdf#7"),
    "m05": ("asn1Parser options to check the syntax only and set the array name", "libtasn1.pdf#8"),
    "m06": ("asn1Decoding benchmark and strict DER decoding options", "libtasn1.pdf#10"),
    "m07": ("asn1_parser2tree error description when the file syntax is wrong", "libtasn1.pdf#11"),
    "m08": ("deep copy of a node with asn1_copy_node", "libtasn1.pdf#14"),
    "m09": ("UTCTime value formats for writing a value", "libtasn1.pdf#15"),
    "m10": ("encode an octet string in DER with asn1_octet_der", "libtasn1.pdf#19"),
    "m11": ("decoded length -1 for indefinite length, -2 when too big", "libtasn1.pdf#21"),
    "m12": ("find start and end of an element in a DER encoding, tbsCertificate", "libtasn1.pdf#24"),
    "m13": ("verbatim copying under the free documentation license", "libtasn1.pdf#29"),
    "m14": ("aggregation with independent works", "libtasn1.pdf#32"),
    "s01": ("what version of the shared MIME-info specification is this", "shared-mime-info-spec.pdf#1"),
    "s02": ("RFC 2119 key words MUST and SHOULD", "shared-mime-info-spec.pdf#2"),
    "s03": ("run update-mime-database after installing the XML file", "shared-mime-info-spec.pdf#3"),
    "s04": ("glob elements with a pattern and weight attribute", "shared-mime-info-spec.pdf#4"),
    "s05": ("alias elements such as audio/midi and audio/x-midi", "shared-mime-info-spec.pdf#5"),
    "s06": ("example source file diff.xml", "shared-mime-info-spec.pdf#6"),
    "s07": ("globs2 file lines with weight, MIME type and pattern", "shared-mime-info-spec.pdf#7"),
    "s08": ("__NOGLOBS__ pattern for glob-deleteall", "shared-mime-info-spec.pdf#8"),
    "s09": ("magic file starts with MIME-Magic string, big-endian numbers", "shared-mime-info-spec.pdf#9"),
    "s10": ("mime.cache binary mmappable format header", "shared-mime-info-spec.pdf#11"),
    "s11": ("user.mime_type extended attribute", "shared-mime-info-spec.pdf#14"),
    "s12": ("glob matching then magic sniffing, default application/octet-stream", "shared-mime-info-spec.pdf#15"),
    "s13": ("x-content types for volumes, treemagic", "shared-mime-info-spec.pdf#16"),
    "s14": ("users should never edit the database, use Override.xml", "shared-mime-info-spec.pdf#17"),
}


def build_debian_manuals(root: str | Path) -> Path:
    """Write the Debian manuals set into `root`: the two PDFs copied from /usr/share/doc, and their queries."""
    from core.errors import InputError
    from core.pages import count_pages

    root = Path(root)
    corpus = root / "corpus"
    for source, package, pages in DEBIAN_MANUALS.values():
        if not source.is_file():
            raise InputError(f"{source} is missing: install the Debian package {package}")
        if count_pages(source) != pages:
            raise InputError(f"{source} has {count_pages(source)} pages; the queries were written for {pages}")
    corpus.mkdir(parents=True, exist_ok=True)
    for name, (source, _, _) in DEBIAN_MANUALS.items():
        shutil.copyfile(source, corpus / name)
    _write_labels(root, DEBIAN_QUERIES, {})
    return root


SAMPLES = {
    "basic": build_sample,
    "manuals": build_manuals,
    "manuals-images": lambda root: build_manuals(root, True),
    "debian-manuals": build_debian_manuals,
}
