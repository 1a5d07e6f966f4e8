"""The ``data`` area (``LOCKGATE_DATA__*``): where the training data and the RAG corpus come from,
and how they are prepared."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from lockgate.settings.base import Area


class DataSettings(Area):
    """Where the training data and the RAG corpus come from, and how they are prepared."""

    # When a data change starts a release is orchestration, and how many processes prepare the
    # rows is speed: neither changes what prep computes.
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset({"change_window_s", "workers"})

    sources: list[str] = Field(
        default=["examples/data/qa.jsonl", "examples/data/qa_contrib.jsonl"],
        description="Training files (.jsonl, .csv or .parquet): local paths, relative to the project root, "
        "or fsspec URLs (file://, s3://, gs://, memory://).",
        min_length=1,
    )
    corpus_dir: str = Field(default="examples/corpus", description="Folder of markdown/text documents.")
    name: str = Field(
        default="quillstone-qa",
        description="Dataset name, used in versions and events.",
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
    )
    eval_fraction: float = Field(default=0.12, gt=0.0, lt=0.5, description="Share of rows held out for eval.")
    max_quarantine_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Fail the prep stage if more than this share of rows is quarantined."
    )
    min_chars: int = Field(default=3, ge=1, description="Shortest acceptable instruction/output, in characters.")
    max_chars: int = Field(default=2000, gt=10, description="Longest acceptable field, in characters.")
    shape: Literal["auto", "qa", "alpaca", "chat"] = Field(
        default="auto",
        description="Record shape of every source: 'qa' (instruction/context/output), 'alpaca' "
        "(instruction/input/output), 'chat' (messages); 'auto' detects it per file from its keys.",
    )
    encoding: str = Field(
        default="utf-8", min_length=1, description="Text encoding of JSONL/CSV sources (a UTF-8 BOM is always skipped)."
    )
    source_shapes: dict[str, Literal["qa", "alpaca", "chat"]] = Field(
        default={}, description="Record shape of one source, keyed as written in sources; wins over shape."
    )
    source_encodings: dict[str, str] = Field(
        default={}, description="Text encoding of one source, keyed as written in sources; wins over encoding."
    )
    change_window_s: int = Field(
        default=60,
        ge=10,  # Prefect's least window for a proactive trigger
        le=86_400,
        description="Debounce of data-change reruns: a release starts once a dataset has had no new "
        "lockgate.dataset.changed for this many seconds, with its latest fingerprint (prefect.yaml's trigger).",
    )
    max_record_lines: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Most lines one quoted CSV field may span before it is taken "
        "for an unterminated quote and quarantined.",
    )
    near_duplicate_threshold: float = Field(
        default=0.85,
        gt=0.5,
        le=1.0,
        description="Estimated Jaccard similarity (MinHash of 3-character shingles) "
        "at or above which two rows are near-duplicates; the one with the smaller content digest is kept.",
    )
    leakage_threshold: float = Field(
        default=0.85,
        gt=0.3,
        le=1.0,
        description="Similarity of question and of answer at or above which a "
        "training row counts as a copy of an eval row and is removed from train.",
    )
    minhash_permutations: int = Field(
        default=128, ge=16, le=512, description="MinHash signature length: more is more exact and slower."
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Processes that validate, redact and sign rows: 0 = one per CPU core, 1 = none besides "
        "the stage's own. The snapshot is the same whatever the number.",
    )
    pii_email: Literal["redact", "drop", "off"] = Field(
        default="redact", description="E-mail addresses: replace with [EMAIL], drop the row, or leave."
    )
    pii_phone: Literal["redact", "drop", "off"] = Field(
        default="redact", description="Phone numbers (libphonenumber rules): replace with [PHONE], drop, or leave."
    )
    pii_card: Literal["redact", "drop", "off"] = Field(
        default="redact", description="Payment card numbers (Luhn-checked): replace with [CARD], drop, or leave."
    )
    pii_ip: Literal["redact", "drop", "off"] = Field(
        default="redact", description="IPv4/IPv6 addresses: replace with [IP], drop the row, or leave."
    )
    pii_secret: Literal["redact", "drop", "off"] = Field(
        default="redact",
        description="API keys and tokens (known prefixes, high-entropy strings): [SECRET], drop, or leave; "
        "also credentials given by their context (password: ..., user:pw@ in URLs, Authorization headers), "
        "replaced with [CREDENTIAL] and counted apart.",
    )
    phone_region: str = Field(
        default="US", pattern=r"^[A-Z]{2}$", description="Region assumed for phone numbers written without +country."
    )
    secret_min_length: int = Field(default=20, ge=8, le=200, description="Shortest token tested for high entropy.")
    secret_min_entropy: float = Field(
        default=4.0,
        gt=0.0,
        le=8.0,
        description="Bits per character from which a mixed-case, digit-bearing token is a secret.",
    )

    @model_validator(mode="after")
    def _known_encodings_and_sources(self) -> DataSettings:
        import codecs

        for name in [self.encoding, *self.source_encodings.values()]:
            try:
                codecs.lookup(name)
            except LookupError:
                raise ValueError(f"unknown text encoding {name!r}") from None
        stray = sorted((set(self.source_shapes) | set(self.source_encodings)) - set(self.sources))
        if stray:
            raise ValueError(f"source_shapes/source_encodings name sources not in sources: {stray}")
        return self
