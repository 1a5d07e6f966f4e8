"""Write the demo data set: a docs corpus about a fictional product and a QA set grounded in it.

Run from the repository root: ``python examples/generate_samples.py``. The output is
deterministic (fixed seed) and is committed, so the demo never needs this script; it is
kept so the data can be regenerated or grown.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PRODUCT = "Quillstone"
COMPONENTS = [
    ("Relay", "forwards pick orders from the planner to the floor robots"),
    ("Planner", "turns customer orders into pick lists"),
    ("Ledger", "records every stock movement in the warehouse"),
    ("Beacon", "tracks the position of each robot on the floor"),
    ("Sorter", "routes parcels to the right outbound dock"),
    ("Gantry", "moves pallets between the high racks"),
    ("Harbor", "schedules trucks at the loading bays"),
    ("Lantern", "serves the operator dashboard"),
    ("Compass", "plans collision free paths for robots"),
    ("Anchor", "stores robot maps and floor layouts"),
    ("Quarry", "answers stock level queries"),
    ("Shuttle", "drives the small parts conveyor"),
    ("Spindle", "balances work across the pick stations"),
    ("Tally", "counts items during cycle counts"),
    ("Warden", "enforces safety zones around people"),
    ("Vault", "keeps encryption keys for the fleet"),
    ("Signal", "sends alerts to the on call operators"),
    ("Forge", "builds firmware images for the robots"),
    ("Pulley", "controls the vertical lifts"),
    ("Ratchet", "tightens retry budgets when the network is slow"),
    ("Kiln", "compresses old telemetry into archives"),
    ("Meridian", "synchronises clocks across the site"),
    ("Orchard", "groups orders into picking waves"),
    ("Pylon", "charges robot batteries on a schedule"),
    ("Rivet", "validates barcodes at the packing tables"),
    ("Sextant", "measures parcel weight and size"),
    ("Tether", "keeps robots connected to the site network"),
    ("Umber", "detects damaged goods on camera"),
    ("Winch", "lowers heavy items from the mezzanine"),
    ("Zephyr", "cools the server room and battery bays"),
]
TEAMS = ["Conveyor", "Dock", "Fleet", "Inventory", "Routing", "Safety", "Platform", "Telemetry"]


def component_facts(rng: random.Random, name: str, purpose: str) -> dict[str, str]:
    """Draw the attributes of one component."""
    return {
        "name": name,
        "purpose": purpose,
        "port": str(rng.randrange(7000, 9900)),
        "idle": str(rng.choice([15, 20, 30, 45, 60, 90, 120])),
        "config": f"/etc/quillstone/{name.lower()}.toml",
        "capacity": str(rng.choice([8, 16, 24, 32, 48, 64, 96, 128])),
        "team": rng.choice(TEAMS),
        "version": f"{rng.randrange(1, 4)}.{rng.randrange(0, 10)}",
    }


def component_doc(f: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Render a component page and return it with the paragraph that holds each fact."""
    n = f["name"]
    paragraphs = {
        "purpose": f"The {PRODUCT} {n} {f['purpose']}.",
        "network": (
            f"The {n} listens on port {f['port']} by default. "
            f"The {n} closes connections idle for more than {f['idle']} seconds."
        ),
        "config": (
            f"The {n} reads its settings from {f['config']}. The {n} accepts at most {f['capacity']} concurrent robots."
        ),
        "ownership": (
            f"The {n} is maintained by the {f['team']} team. The {n} was introduced in {PRODUCT} {f['version']}."
        ),
    }
    doc = "\n\n".join(
        [
            f"# {PRODUCT} {n}",
            paragraphs["purpose"],
            "## Network",
            paragraphs["network"],
            "## Configuration",
            paragraphs["config"],
            "## Ownership",
            paragraphs["ownership"],
        ]
    )
    return doc + "\n", paragraphs


def qa_rows(f: dict[str, str], paragraphs: dict[str, str]) -> list[dict[str, str]]:
    """Two phrasings of a question for each fact, each answer a sentence of the page."""
    n = f["name"]
    facts = [
        (
            "purpose",
            [f"What does the {n} do?", f"What is the {PRODUCT} {n} for?"],
            f"The {PRODUCT} {n} {f['purpose']}.",
        ),
        (
            "network",
            [f"Which port does the {n} listen on?", f"What is the default port of the {n}?"],
            f"The {n} listens on port {f['port']} by default.",
        ),
        (
            "network",
            [f"When does the {n} close idle connections?", f"How long may a connection to the {n} stay idle?"],
            f"The {n} closes connections idle for more than {f['idle']} seconds.",
        ),
        (
            "config",
            [f"Where does the {n} read its settings from?", f"Which config file does the {n} use?"],
            f"The {n} reads its settings from {f['config']}.",
        ),
        (
            "config",
            [f"How many robots can the {n} serve at once?", f"How many concurrent robots does the {n} accept?"],
            f"The {n} accepts at most {f['capacity']} concurrent robots.",
        ),
        (
            "ownership",
            [f"Which team maintains the {n}?", f"Who owns the {n}?"],
            f"The {n} is maintained by the {f['team']} team.",
        ),
        (
            "ownership",
            [f"When was the {n} introduced?", f"In which release did the {n} appear?"],
            f"The {n} was introduced in {PRODUCT} {f['version']}.",
        ),
    ]
    rows = []
    for section, questions, answer in facts:
        for q in questions:
            rows.append(
                {
                    "instruction": q,
                    "context": paragraphs[section],
                    "output": answer,
                    "source_doc": f"{n.lower()}.md",
                }
            )
    return rows


def main(root: Path | None = None) -> None:
    root = root or Path(__file__).resolve().parent
    rng = random.Random(20261129)
    docs_dir = root / "corpus"
    data_dir = root / "data"
    docs_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for name, purpose in COMPONENTS:
        facts = component_facts(rng, name, purpose)
        doc, paragraphs = component_doc(facts)
        (docs_dir / f"{name.lower()}.md").write_text(doc, encoding="utf-8")
        rows.extend(qa_rows(facts, paragraphs))
    overview = [
        f"# {PRODUCT} overview",
        "",
        f"{PRODUCT} is a warehouse robotics platform. It is made of these components:",
        "",
    ]
    overview += [f"- **{n}**: {p}." for n, p in COMPONENTS]
    (docs_dir / "overview.md").write_text("\n".join(overview) + "\n", encoding="utf-8")
    with (data_dir / "qa.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    # A contributed file as it arrives in real life: some good rows, an exact duplicate,
    # a row with an e-mail address to redact, and rows that must be quarantined.
    contrib = [
        json.dumps(
            {
                "instruction": "Who should I e-mail about the Relay?",
                "context": paragraphs_for(rows, "relay.md", "maintained"),
                "output": "Ask the on call operator at ops.lead@quillstone.example.",
                "source_doc": "relay.md",
            }
        ),
        json.dumps(rows[0]),
        '{"instruction": "What does the Vault keep?", "context": "The Vault keeps keys.", ',
        json.dumps({"instruction": "Which port does the Zephyr use?", "context": "", "source_doc": "zephyr.md"}),
        json.dumps({"instruction": 42, "context": "x", "output": "y", "source_doc": "none.md"}),
    ]
    (data_dir / "qa_contrib.jsonl").write_text("\n".join(contrib) + "\n", encoding="utf-8")


def paragraphs_for(rows: list[dict[str, str]], doc: str, needle: str) -> str:
    """The first context of a document that mentions a word."""
    return next(r["context"] for r in rows if r["source_doc"] == doc and needle in r["context"])


if __name__ == "__main__":
    main()
