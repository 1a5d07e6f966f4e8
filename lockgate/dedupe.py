"""Exact and near-duplicate removal and train/eval leakage, with bounded memory.

Rows go into a scratch SQLite file as they are read (the row, its content digest, a
normalised key and three MinHash signatures: everything trained on, the question, the
answer). Candidate pairs come from LSH bands (rows sharing a band), every candidate is
confirmed by its estimated Jaccard similarity, and the row kept is always the one with the
smallest content digest, so the result does not depend on file or row order. What the index
needs of a row (``IndexEntry``) is computed apart from it (``Fingerprinter``), for many rows at
once, in whichever process prepares them.

- near-duplicate: the whole row *and* the question are similar. Paraphrases of one fact
  (other words, same passage and answer) are kept: they teach the model, and the split
  keeps them on one side.
- leaked: a training row whose question and answer are both near copies of an eval row's.
  Templated questions about different things ("port of the Relay" / "port of the Kiln")
  have different answers, so they are not leaks.

Rows whose numbers differ ("shelf 1" / "shelf 11", "port 7095" / "port 7096") state different
facts however alike their words, so a near-duplicate or a leak must carry the same numbers.
Memory stays flat in the number of rows: SQLite keeps what does not fit its page cache on
disk, and band hashes wait in files split by hash, one part sorted in memory at a time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SHINGLE = 3  # characters per shingle: short enough for one-line questions
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+")
# Kinds of signature: what is trained on (near-duplicates), and the question alone (leakage).
FULL, QUESTION = 0, 1


def normalise(text: str) -> str:
    """Case-folded words joined by single spaces: punctuation and spacing do not make a row new."""
    return " ".join(_WORD.findall(text.casefold()))


def shingles(text: str) -> list[int]:
    """Overlapping character n-grams of the normalised text, each as a 32-bit hash.

    Computed for the whole text at once with numpy: hashing shingle by shingle in Python is
    most of the cost of prep at scale.
    """
    codes = np.frombuffer(normalise(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < SHINGLE:
        codes = np.concatenate([codes, np.zeros(SHINGLE - len(codes), dtype=np.uint64)])
    # Code points are below 2**21, so three of them pack into one 63-bit integer exactly.
    n = len(codes) - SHINGLE + 1
    packed = np.zeros(n, dtype=np.uint64)
    for i in range(SHINGLE):
        packed = (packed << np.uint64(21)) | codes[i : n + i]
    with np.errstate(over="ignore"):
        mixed = (packed * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    return [int(v) for v in np.unique(mixed).tolist()]


@functools.lru_cache(maxsize=16)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that best separate pairs above and below ``threshold``.

    Weighs missed pairs three times as much as extra candidates, since every candidate is
    checked anyway.
    """
    s = np.linspace(0.0, 1.0, 401)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        r = num_perm // b
        p = 1 - (1 - s**r) ** b
        fp = np.trapezoid(np.where(s < threshold, p, 0.0), s)
        fn = np.trapezoid(np.where(s >= threshold, 1 - p, 0.0), s)
        err = fp + 3 * fn
        if err < best_err:
            best, best_err = (b, r), float(err)
    return best


class Signer:
    """MinHash signatures that share one set of permutations (so they can be compared).

    The values are datasketch's ``affine32`` MinHash of ``shingles`` (murmur3's finaliser, then
    ``a * h + b`` modulo 2**32 per permutation), computed for many texts at once with numpy:
    one text at a time, numpy's per-call overhead is most of the cost of prep at scale.
    """

    BLOCK = 64  # texts signed together: larger blocks outgrow the CPU cache

    def __init__(self, num_perm: int, seed: int = 1) -> None:
        # datasketch's affine32 permutations for this seed (an odd ``a`` and any ``b``), drawn as it
        # draws them; importing datasketch for them would cost each worker process a third of a second.
        gen = np.random.RandomState(seed)
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        self.num_perm = num_perm
        self._a, self._b = a[:, None], b[:, None]

    def sign(self, text: str) -> np.ndarray[Any, np.dtype[np.uint32]]:
        """The signature of one text."""
        signature: np.ndarray[Any, np.dtype[np.uint32]] = self.sign_many([text])[0]
        return signature

    def sign_many(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.uint32]]:
        """The signatures of many texts, one row each, equal to ``sign`` of each."""
        return self.sign_normalised([normalise(text) for text in texts])

    def sign_normalised(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.uint32]]:
        """``sign_many`` of texts already ``normalise``d."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for start in range(0, len(texts), self.BLOCK):
            block = texts[start : start + self.BLOCK]
            out[start : start + len(block)] = self._sign_block(block)
        return out

    def _sign_block(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.uint32]]:
        hashes, starts = _shingle_block(texts)
        hashes = _fmix32(hashes)
        with np.errstate(over="ignore"):
            permuted = self._a * hashes[None, :]
            permuted += self._b
        return np.minimum.reduceat(permuted, starts, axis=1).T


def _shingle_block(texts: list[str]) -> tuple[np.ndarray[Any, np.dtype[np.uint32]], np.ndarray[Any, np.dtype[np.intp]]]:
    """The shingle hashes of several normalised texts end to end (as ``shingles`` gives them, repeats
    kept: a minimum does not change with them), and where each text's hashes start."""
    padded = [n if len(n) >= SHINGLE else n + "\0" * (SHINGLE - len(n)) for n in texts]
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    lengths = np.fromiter(map(len, padded), dtype=np.intp, count=len(padded))
    n = len(codes) - SHINGLE + 1
    packed = np.zeros(n, dtype=np.uint64)
    for i in range(SHINGLE):
        packed = (packed << np.uint64(21)) | codes[i : n + i]
    # A shingle that starts in the last SHINGLE - 1 characters of a text runs into the next one.
    whole = np.ones(n, dtype=bool)
    ends = np.cumsum(lengths)
    for k in range(1, SHINGLE):
        crossing = ends - k
        whole[crossing[crossing < n]] = False
    with np.errstate(over="ignore"):
        mixed = ((packed[whole] * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)).astype(np.uint32)
    starts = np.zeros(len(padded), dtype=np.intp)
    np.cumsum(lengths[:-1] - SHINGLE + 1, out=starts[1:])
    return mixed, starts


def _fmix32(h: np.ndarray[Any, np.dtype[np.uint32]]) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before its permutations."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two stored signatures."""
    x, y = np.frombuffer(a, dtype=np.uint32), np.frombuffer(b, dtype=np.uint32)
    return float(np.mean(x == y))


@dataclass(frozen=True)
class SetAside:
    """A row removed by dedupe or leakage, and the row it duplicates; ``raw`` is the cleaned, redacted row."""

    source: str
    line: int
    outcome: str
    reason: str
    raw: str


class IndexEntry(NamedTuple):
    """One valid row as the index stores it, made by ``Fingerprinter`` (in any process: it is plain data).

    ``row`` is (id, digest, normalised key, split, source, line, body, numbers), ``sigs`` is
    (id, whole-row signature, question's, answer's) and ``bands`` the hashes of its LSH bands,
    the whole row's then the question's. The id is the record's place in the input, so ids
    grow in input order.
    """

    row: tuple[int, str, str, str, str, int, str, str]
    sigs: tuple[int, bytes, bytes, bytes]
    bands: tuple[int, ...]


class Fingerprinter:
    """What the index needs of each row, computed for many rows at once and without the index."""

    def __init__(self, num_perm: int, threshold: float, leakage_threshold: float) -> None:
        self.signer = Signer(num_perm)
        self.full_bands = lsh_bands(threshold, num_perm)
        self.question_bands = lsh_bands(leakage_threshold, num_perm)
        rng = np.random.default_rng(7)
        self._mult = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)

    def _band_hashes(self, sigs: np.ndarray[Any, np.dtype[np.uint32]], bands: tuple[int, int]) -> list[list[int]]:
        b, r = bands
        with np.errstate(over="ignore"):
            mixed = (sigs[:, : b * r].astype(np.uint64) * self._mult[: b * r]).reshape(len(sigs), b, r)
            summed = mixed.sum(axis=2, dtype=np.uint64)
        return summed.view(np.int64).tolist()  # type: ignore[no-any-return]

    def _sign_triples(self, normalised: list[str]) -> np.ndarray[Any, np.dtype[np.uint32]]:
        """The signatures of (full, question, answer) normalised texts, three rows per triple.

        The full text of a row usually starts with its question and ends with its answer, so its
        shingles are theirs plus those of the part between (overlapping each by ``SHINGLE`` - 1
        characters): its signature is the minimum of the three, which spares signing the
        question and the answer twice. Where the full text is not so made, it is signed whole.
        """
        n = len(normalised) // 3
        full, questions, answers = normalised[0::3], normalised[1::3], normalised[2::3]
        reach = SHINGLE - 1
        composed = [
            len(q) >= SHINGLE and len(a) >= SHINGLE and len(f) >= len(q) + len(a) and f.startswith(q) and f.endswith(a)
            for f, q, a in zip(full, questions, answers, strict=True)
        ]
        middles = [
            f[len(q) - reach : len(f) - len(a) + reach] if whole else f
            for f, q, a, whole in zip(full, questions, answers, composed, strict=True)
        ]
        signed = self.signer.sign_normalised([*questions, *answers, *middles])
        q_sigs, a_sigs, m_sigs = signed[:n], signed[n : 2 * n], signed[2 * n :]
        full_sigs = np.where(np.array(composed)[:, None], np.minimum(np.minimum(q_sigs, a_sigs), m_sigs), m_sigs)
        return np.stack([full_sigs, q_sigs, a_sigs], axis=1)

    def entries(self, rows: list[tuple[int, dict[str, Any], str, str, int, tuple[str, str, str]]]) -> list[IndexEntry]:
        """Each (id, row, split, source, line, (full, question, answer) texts) as an ``IndexEntry``."""
        if not rows:
            return []
        normalised = [normalise(text) for *_, triple in rows for text in triple]
        sigs = self._sign_triples(normalised).reshape(len(rows), 3, -1)
        full_bands = self._band_hashes(sigs[:, 0], self.full_bands)
        question_bands = self._band_hashes(sigs[:, 1], self.question_bands)
        out = []
        for i, (rid, row, split, source, line, (_, question, answer)) in enumerate(rows):
            body = json.dumps(row, ensure_ascii=False, sort_keys=True)
            digest = hashlib.sha256(body.encode()).hexdigest()
            norm = hashlib.sha256(normalised[3 * i].encode()).hexdigest()
            nums = " ".join(sorted(_NUMBER.findall(f"{question}\n{answer}")))
            # Only rows with the same numbers may pair, so each band hash carries them: XOR with
            # one value per set of numbers keeps equal bands equal among such rows, and spares
            # the candidate join the many look-alike rows that differ only in a number.
            salt = int.from_bytes(hashlib.sha256(nums.encode()).digest()[:8], "big", signed=True)
            bands = tuple(h ^ salt for h in full_bands[i] + question_bands[i])
            out.append(
                IndexEntry(
                    (rid, digest, norm, split, source, line, body, nums),
                    (rid, sigs[i, 0].tobytes(), sigs[i, 1].tobytes(), sigs[i, 2].tobytes()),
                    bands,
                )
            )
        return out


class DedupeIndex:
    """The scratch store of kept-so-far rows, queried for duplicates and leakage.

    Rows and signatures go into SQLite; band hashes go into flat files beside it, split by hash
    into ``BAND_PARTS`` parts, so that rows sharing a band are found by sorting one part at a
    time in memory (a part is 1/``BAND_PARTS`` of them) instead of indexing every band in SQLite.
    """

    BAND_PARTS = 64
    _BAND = np.dtype([("band", np.int16), ("h", np.int64), ("id", np.int64)])

    def __init__(self, path: Path, num_perm: int, threshold: float, leakage_threshold: float) -> None:
        self.db = sqlite3.connect(path)
        # Signatures sit in a table of their own: the joins that find candidates read only the
        # small rows table, and a signature is read only to confirm a candidate.
        self.db.executescript(
            """
            PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;
            PRAGMA cache_size=-16000;
            CREATE TABLE rows (id INTEGER PRIMARY KEY, digest TEXT, norm TEXT, split TEXT, source TEXT,
                               line INT, body TEXT, nums TEXT, outcome TEXT DEFAULT 'kept', reason TEXT);
            CREATE TABLE sigs (id INTEGER PRIMARY KEY, sig BLOB, qsig BLOB, asig BLOB);
            CREATE TABLE candidates (kind INT, x INT, y INT);
            """
        )
        self.fingerprints = Fingerprinter(num_perm, threshold, leakage_threshold)
        self.threshold = threshold
        self.leakage_threshold = leakage_threshold
        self._n_full = self.fingerprints.full_bands[0]
        self._band_paths = [path.with_name(f"{path.name}.bands{i}") for i in range(self.BAND_PARTS)]
        for band_path in self._band_paths:
            band_path.write_bytes(b"")
        self._pending_rows: list[tuple[Any, ...]] = []
        self._pending_sigs: list[tuple[int, bytes, bytes, bytes]] = []
        self._pending_bands: list[tuple[int, ...]] = []
        self._pending_ids: list[int] = []
        self._last_id = 0

    def add(self, row: dict[str, Any], split: str, source: str, line: int, texts: tuple[str, str, str]) -> None:
        """Store one valid (cleaned, redacted) row and the signatures of its (full, question, answer) texts."""
        self.add_entries(self.fingerprints.entries([(self._last_id + 1, row, split, source, line, texts)]))

    def add_entries(self, entries: Iterable[IndexEntry]) -> None:
        """Store rows fingerprinted by a ``Fingerprinter`` with this index's settings, in input order.

        Raises:
            ValueError: for an id not above every id stored before (ids give the input order).
        """
        for entry in entries:
            if entry.row[0] <= self._last_id:
                raise ValueError(f"row id {entry.row[0]} is not above the last one stored, {self._last_id}")
            self._last_id = entry.row[0]
            self._pending_rows.append(entry.row)
            self._pending_sigs.append(entry.sigs)
            self._pending_bands.append(entry.bands)
            self._pending_ids.append(entry.row[0])
        if len(self._pending_rows) >= 2000:
            self._flush()

    def _flush(self) -> None:
        self.db.executemany(
            "INSERT INTO rows (id, digest, norm, split, source, line, body, nums) VALUES (?,?,?,?,?,?,?,?)",
            self._pending_rows,
        )
        self.db.executemany("INSERT INTO sigs VALUES (?,?,?,?)", self._pending_sigs)
        if self._pending_bands:
            hashes = np.array(self._pending_bands, dtype=np.int64)
            records = np.empty(hashes.shape, dtype=self._BAND)
            records["band"] = np.arange(hashes.shape[1], dtype=np.int16)
            records["h"] = hashes
            records["id"] = np.array(self._pending_ids, dtype=np.int64)[:, None]
            flat = records.ravel()
            part = flat["h"].view(np.uint64) % np.uint64(self.BAND_PARTS)
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(self.BAND_PARTS + 1, dtype=np.uint64))
            for i, band_path in enumerate(self._band_paths):
                if bounds[i] < bounds[i + 1]:
                    with band_path.open("ab") as fh:
                        flat[order[bounds[i] : bounds[i + 1]]].tofile(fh)
        self._pending_rows.clear()
        self._pending_sigs.clear()
        self._pending_bands.clear()
        self._pending_ids.clear()

    def _find_candidates(self) -> None:
        """Every pair of rows (x < y) sharing a band of the same kind, into ``candidates``."""
        pairs: list[tuple[int, int, int]] = []
        for band_path in self._band_paths:
            records = np.fromfile(band_path, dtype=self._BAND)
            band_path.unlink()
            if len(records) < 2:
                continue
            records = records[np.lexsort((records["id"], records["h"], records["band"]))]
            key_changes = (records["band"][1:] != records["band"][:-1]) | (records["h"][1:] != records["h"][:-1])
            starts = np.flatnonzero(np.concatenate(([True], key_changes)))
            sizes = np.diff(np.append(starts, len(records)))
            shared = sizes > 1
            kinds = np.where(records["band"][starts[shared]] < self._n_full, FULL, QUESTION).tolist()
            ids = records["id"].tolist()
            for kind, start, size in zip(kinds, starts[shared].tolist(), sizes[shared].tolist(), strict=True):
                group = ids[start : start + size]  # in id order: x < y
                pairs += [(kind, x, y) for i, x in enumerate(group) for y in group[i + 1 :]]
                if len(pairs) >= 20000:
                    self.db.executemany("INSERT INTO candidates VALUES (?,?,?)", pairs)
                    pairs.clear()
        self.db.executemany("INSERT INTO candidates VALUES (?,?,?)", pairs)
        self.db.execute("CREATE INDEX candidates_kind ON candidates (kind)")

    def resolve(self) -> None:
        """Mark exact duplicates, then near-duplicates, then training rows leaked from eval."""
        self._flush()
        db = self.db
        db.execute("CREATE INDEX rows_norm ON rows (norm, digest, id)")
        self._find_candidates()
        # Exact (normalised): the smallest digest of each group stays.
        db.execute(
            """
            UPDATE rows SET outcome = 'duplicate', reason = (
                SELECT 'exact duplicate of ' || k.source || ':' || k.line FROM rows k
                WHERE k.norm = rows.norm ORDER BY k.digest, k.id LIMIT 1)
            WHERE id != (SELECT k.id FROM rows k WHERE k.norm = rows.norm ORDER BY k.digest, k.id LIMIT 1)
            """
        )
        self._mark_pairs(FULL, "near_duplicate", self.threshold)
        self._mark_pairs(QUESTION, "leaked", self.leakage_threshold)
        db.commit()

    def _mark_pairs(self, kind: int, outcome: str, threshold: float) -> None:
        db = self.db
        db.execute("DROP TABLE IF EXISTS pairs")
        cross_split = "AND ra.split != rb.split" if outcome == "leaked" else ""
        db.execute(
            f"""
            CREATE TEMP TABLE pairs AS SELECT DISTINCT c.x AS x, c.y AS y FROM candidates c
            JOIN rows ra ON ra.id = c.x JOIN rows rb ON rb.id = c.y
            WHERE c.kind = ? AND ra.outcome = 'kept' AND rb.outcome = 'kept' AND ra.nums = rb.nums {cross_split}
            """,
            (kind,),
        )
        # Near-duplicates must match on the whole row and the question; leaks on question and answer.
        first, second = ("sig", "qsig") if kind == FULL else ("qsig", "asig")
        # Each confirmed pair as (row that may go, row it copies): for leaks the training copy
        # (the eval row stays, so eval still measures what it did), for near-duplicates the
        # row later in digest order.
        db.execute("CREATE TEMP TABLE near (loser INT, keeper INT, reason TEXT)")
        confirmed: list[tuple[int, int, str]] = []
        query = (
            f"SELECT ra.id, ra.digest, ra.split, ra.source, ra.line, sa.{first}, sa.{second}, "
            f"rb.id, rb.digest, rb.split, rb.source, rb.line, sb.{first}, sb.{second} "
            "FROM pairs JOIN rows ra ON ra.id = pairs.x JOIN rows rb ON rb.id = pairs.y "
            "JOIN sigs sa ON sa.id = pairs.x JOIN sigs sb ON sb.id = pairs.y"
        )
        for aid, adig, asplit, asrc, aline, a1, a2, bid, bdig, _bsplit, bsrc, bline, b1, b2 in db.execute(query):
            sim = min(similarity(a1, b1), similarity(a2, b2))
            if sim < threshold:
                continue
            if outcome == "leaked":
                loser, keeper, other = (
                    (aid, bid, f"{bsrc}:{bline}") if asplit == "train" else (bid, aid, f"{asrc}:{aline}")
                )
                reason = f"near copy of eval row {other} (similarity {sim:.2f})"
            else:
                a_first = (adig, aid) < (bdig, bid)
                loser, keeper, other = (bid, aid, f"{asrc}:{aline}") if a_first else (aid, bid, f"{bsrc}:{bline}")
                reason = f"near duplicate of {other} (similarity {sim:.2f})"
            confirmed.append((loser, keeper, reason))
            if len(confirmed) >= 2000:
                db.executemany("INSERT INTO near VALUES (?,?,?)", confirmed)
                confirmed.clear()
        db.executemany("INSERT INTO near VALUES (?,?,?)", confirmed)
        # In digest order, a row goes only as a copy of a row still kept: when row 3 copies
        # row 2 that copies row 1, row 2 goes and row 3 stays unless it copies row 1 too.
        # A keeper comes before its loser in this order, so its own fate is settled first.
        marks: dict[int, str] = {}
        ordered = db.execute(
            "SELECT near.loser, near.keeper, near.reason FROM near JOIN rows rl ON rl.id = near.loser "
            "JOIN rows rk ON rk.id = near.keeper ORDER BY rl.digest, rl.id, rk.digest, rk.id"
        )
        for loser, keeper, reason in ordered:
            if loser not in marks and keeper not in marks:
                marks[loser] = reason
        db.executemany(
            "UPDATE rows SET outcome = ?, reason = ? WHERE id = ?", [(outcome, r, i) for i, r in marks.items()]
        )
        db.execute("DROP TABLE near")
        db.execute("DROP TABLE pairs")

    def kept(self, split: str) -> Iterator[dict[str, Any]]:
        """Kept rows of one split, in digest order (so file and row order never matter)."""
        for body in self.kept_json(split):
            yield json.loads(body)

    def kept_json(self, split: str) -> Iterator[str]:
        """``kept`` as stored: each row's JSON, keys sorted, not ASCII-escaped (as written to a split's file)."""
        cur = self.db.execute("SELECT body FROM rows WHERE outcome = 'kept' AND split = ? ORDER BY digest", (split,))
        for (body,) in cur:
            yield body

    def set_aside(self) -> Iterator[SetAside]:
        """Rows removed as duplicates, near-duplicates or leaks, in input order."""
        cur = self.db.execute(
            "SELECT source, line, outcome, reason, body FROM rows WHERE outcome != 'kept' ORDER BY id"
        )
        for source, line, outcome, reason, raw in cur:
            yield SetAside(source, line, outcome, reason, raw)

    def counts(self) -> dict[str, int]:
        """Rows per outcome ('kept' split into 'train' and 'eval')."""
        out: dict[str, int] = {}
        for outcome, split, n in self.db.execute("SELECT outcome, split, COUNT(*) FROM rows GROUP BY outcome, split"):
            key = split if outcome == "kept" else outcome
            out[key] = out.get(key, 0) + n
        return out

    def close(self) -> None:
        self.db.close()
        for band_path in self._band_paths:
            band_path.unlink(missing_ok=True)
