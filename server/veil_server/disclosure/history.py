"""Exact mode, part 2: the dataset's release history, across all analysts and with no window,
and the audit every exact release passes.

The history is the set of every population (box, :mod:`.lattice`) that an exact release on the
dataset has described: each cell of each released table, whether it was released or suppressed,
and each sub-cell of an encrypted-input sum. It records structure, never a value, and has no
window: nothing ever leaves it.

**Refusals are structural.** The populations must form a *laminar* family: any two are nested or
disjoint. A table one of whose cells partly overlaps an earlier population (``GROUP BY sex`` after
``GROUP BY region``, or ``WHERE age >= 40`` after ``WHERE age >= 30``) is refused with
``EXACT_TABLE_OVERLAPS`` -- whatever the data holds, since the family records suppressed cells
too. (Refusing crossing tables is one of the statistical offices' answers to linked tables; the
other, secondary suppression across crossing tables, needs a search whose outcome is not simple
to bound. Cross-tabulate the dimensions in one query instead: its cells nest.)

**Suppression is how the data speaks.** In a laminar family, what an analyst can compute exactly
from the released cells is known: the span of their indicator vectors is spanned by the disjoint
*remainders* r(P) = P minus the largest released populations inside P, and the 0/1 vectors in it are
exactly the unions of remainders. So no population of fewer than k rows can be derived, by any
linear combination of released answers, iff every remainder is structurally empty (the released
children tile P) or holds at least k rows. A cell is released only if (primary) it has at least
k rows and k values of each aggregated column, no dominance rule fires on it, and (secondary) the
remainders it creates -- its own, and its released parent's -- pass the same test. An empty
remainder counts as small: whether a difference holds 0 or 1 rows must not show.

**One family per column.** What is known exactly differs by column: a cell released with
``COUNT(*)`` only tells its row count, not its sum of ``x``, and its ``x`` values were never checked
(k non-null values, dominance) when it was released. So each node records the columns it was
released for (``known``: ``""`` for its rows, then each aggregated column, an encrypted-input sum's
value columns included), and the remainders are computed per column ``c`` over the nodes known for
``c`` only. (Taking a node known for ``c`` when it was released without ``c`` would let
``SUM(x)`` over P, ``COUNT(*)`` over a one-value sub-box C, then ``SUM(x)`` over P minus C give C's
sum; counting a node known for rows whenever it was released is safe, since every released node has
at least k rows.) The structure (laminar family) is one for all columns.

What the suppression pattern reveals: that some box, or some remainder of boxes, holds fewer
than k rows (never whether it holds 0) -- what the k rule on a ``GROUP BY`` already reveals.
What exact mode cannot prevent: inference from public knowledge combined with exact released
cells (an analyst who knows k-1 members of a released cell learns the k-th's contribution to
its sum); differences between releases on two versions of the data (the owner lists versions);
and tables refused because an earlier analyst's table crossed them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from ..state.store import StateStore, now_us
from ..errors import PolicyViolation
from .lattice import AtomTable, Box, Lattice

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exact_populations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    box TEXT NOT NULL,
    released INTEGER NOT NULL,
    query_id TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    known TEXT
);
CREATE INDEX IF NOT EXISTS exact_populations_by_dataset ON exact_populations (dataset, seq);
CREATE TABLE IF NOT EXISTS exact_consent_snapshots (
    query_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    snapshot TEXT NOT NULL
)
"""


class TableOverlaps(PolicyViolation):
    default_reason = "EXACT_TABLE_OVERLAPS"


# A release's columns: "#x" when it tells how many rows have a value of x (COUNT(x)), "x" when it
# tells x's magnitudes (SUM, AVG, VARIANCE, STDDEV of x, an encrypted-input sum of x); "" its rows.
COUNTED = "#"


def release_columns(functions_and_columns) -> list[str]:
    """The history columns of (revealing magnitudes?, column) pairs."""
    out: list[str] = []
    for magnitudes, column in functions_and_columns:
        c = column.lower()
        for token in ([COUNTED + c, c] if magnitudes else [COUNTED + c]):
            if token not in out:
                out.append(token)
    return out


# ``known`` of a history row written before columns were recorded: released for every column (what
# it was then taken to mean).
ALL = "*"


def known_set(released: bool | frozenset[str] | set[str]) -> frozenset[str]:
    """What a population was released for: a set of columns ("" its rows), or True/False."""
    if released is True:
        return frozenset({ALL})
    if released is False:
        return frozenset()
    return frozenset(released)


class ConsentChanged(PolicyViolation):
    default_reason = "EXACT_CONSENT_CHANGED"


@dataclass(eq=False)
class Node:
    box: Box
    size: int  # structural (lattice cells)
    known: frozenset[str] = frozenset()  # columns it was released for ("" its rows); empty: suppressed
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)

    @property
    def released(self) -> bool:
        return bool(self.known)

    def knows(self, column: str) -> bool:
        """Released with ``column`` ("": its rows; every release tells those)."""
        return bool(self.known) and (column == "" or column in self.known or ALL in self.known)


class Forest:
    """The laminar family of a dataset's populations (a virtual root holds the top level)."""

    def __init__(self, lattice: Lattice) -> None:
        self.lattice = lattice
        self.root = Node(Box(()), -1)
        self.by_box: dict[Box, Node] = {}
        self.seq = 0  # the last history row folded in

    def locate(self, box: Box) -> tuple[Node | None, Node, list[Node]]:
        """(the node equal to ``box`` or None, the deepest node containing it, its children that
        ``box`` would contain). Raises TableOverlaps if ``box`` crosses any population."""
        found = self.by_box.get(box)
        if found is not None:
            return found, found.parent or self.root, found.children
        lat = self.lattice
        node = self.root
        while True:
            inside: list[Node] = []
            deeper = None
            for child in node.children:
                if child.box.disjoint(box, lat):
                    continue
                if child.box.contains(box, lat):
                    deeper = child
                    break
                if box.contains(child.box, lat):
                    inside.append(child)
                    continue
                raise TableOverlaps(
                    "this table's populations partly overlap a table released earlier on this dataset (by you or "
                    "another analyst); in exact mode released tables must nest or be disjoint: cross-tabulate "
                    "the dimensions in one query, or use a DP dataset", metadata={"rule": "laminar"})
            if deeper is None:
                return None, node, inside
            node = deeper

    def insert(self, box: Box, released: bool | frozenset[str] | set[str]) -> Node:
        known = known_set(released)
        existing, parent, inside = self.locate(box)
        if existing is not None:
            existing.known = existing.known | known
            return existing
        node = Node(box, box.size(self.lattice), known, parent)
        for c in inside:
            parent.children.remove(c)
            c.parent = node
        node.children = list(inside)
        parent.children.append(node)
        self.by_box[box] = node
        return node

    def released_below(self, node: Node, column: str = "") -> list[Node]:
        """The largest populations strictly inside ``node`` released for ``column`` (through the
        others)."""
        out, stack = [], list(node.children)
        while stack:
            n = stack.pop()
            if n.knows(column):
                out.append(n)
            else:
                stack.extend(n.children)
        return out

    @staticmethod
    def released_above(node: Node, column: str = "") -> Node | None:
        p = node.parent
        while p is not None and not p.knows(column):
            p = p.parent
        return p


class ExactHistory:
    """The persistent history and, per dataset, its forest in memory (rebuilt from the rows on
    first use, and brought up to date with rows other replicas added)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)
        with store.joined_tx() as db:  # a state written before the columns were recorded
            if db.kind == "sqlite":
                names = {r[1] for r in db.execute("PRAGMA table_info(exact_populations)").fetchall()}
                if "known" not in names:
                    db.execute("ALTER TABLE exact_populations ADD COLUMN known TEXT")
            else:
                db.execute("ALTER TABLE exact_populations ADD COLUMN IF NOT EXISTS known TEXT")
        self._forests: dict[str, Forest] = {}
        self._lock = threading.Lock()

    def forest(self, dataset: str, lattice: Lattice) -> Forest:
        key = dataset.lower()
        with self._lock:
            f = self._forests.get(key)
            if f is None or f.lattice is not lattice and f.lattice.pieces != lattice.pieces:
                f = self._forests[key] = Forest(lattice)
        with self.store.reading() as db:
            rows = db.execute("SELECT seq, box, released, known FROM exact_populations WHERE dataset=? AND seq>? "
                              "ORDER BY seq", (key, f.seq)).fetchall()
        if rows:
            for _, box, released, known in sorted(rows, key=lambda r: -Box.from_json(r[1]).size(lattice)):
                f.insert(Box.from_json(box), _decode_known(bool(released), known))
            f.seq = max(r[0] for r in rows)
        return f

    def forget(self, dataset: str) -> None:
        """Drop the cached forest (after a release that did not commit)."""
        with self._lock:
            self._forests.pop(dataset.lower(), None)

    def record(self, dataset: str, query_id: str, populations: list[tuple[Box, bool | frozenset[str]]]) -> None:
        """In the release transaction: every population of the release, released (for which
        columns) or not."""
        at = now_us()
        with self.store.joined_tx() as db:
            for box, released in populations:
                known = known_set(released)
                db.execute("INSERT INTO exact_populations (dataset, box, released, query_id, at_us, known) VALUES "
                           "(?,?,?,?,?,?)", (dataset.lower(), box.to_json(), int(bool(known)), query_id, at,
                                             json.dumps(sorted(known))))

    def record_snapshot(self, dataset: str, query_id: str, snapshot: str) -> None:
        """In the release transaction of a consent dataset: the consent snapshot its populations
        were counted under."""
        with self.store.joined_tx() as db:
            db.execute("INSERT INTO exact_consent_snapshots (query_id, dataset, snapshot) VALUES (?,?,?)",
                       (query_id, dataset.lower(), snapshot))

    def check_snapshot(self, dataset: str, snapshot: str, boxes: list[Box], lattice: Lattice) -> None:
        """Consent changes count as differencing. A population counted under one consent snapshot
        and the same (or an overlapping) population under another differ by the subjects whose
        consent changed: released exactly, the two would reveal a withdrawn subject's values. So
        the populations of other snapshots (and those recorded with none) are treated as other
        populations that cross every population they meet: a table whose cells overlap one of them
        is refused, structurally (it depends on the boxes and the digests, never on a value;
        the digests are in every result). A table disjoint from them is released as usual."""
        with self.store.reading() as db:
            rows = db.execute(
                "SELECT DISTINCT p.box FROM exact_populations p LEFT JOIN exact_consent_snapshots s "
                "ON s.query_id = p.query_id WHERE p.dataset=? AND COALESCE(s.snapshot, '') <> ?",
                (dataset.lower(), snapshot)).fetchall()
        earlier = [Box.from_json(r[0]) for r in rows]
        for b in boxes:
            if b.empty:
                continue
            if any(not e.empty and not b.disjoint(e, lattice) for e in earlier):
                raise ConsentChanged(
                    "the consent state for this purpose changed since earlier exact releases of populations "
                    "this query overlaps; an exact release now could reveal a subject who withdrew. Ask for "
                    "populations disjoint from the earlier ones, or ask the owner to release the dataset with DP",
                    metadata={"rule": "consent_snapshot"})

    def count(self, dataset: str) -> int:
        with self.store.reading() as db:
            (n,) = db.execute("SELECT COUNT(*) FROM exact_populations WHERE dataset=?", (dataset.lower(),)).fetchone()
        return int(n)


def _decode_known(released: bool, text: str | None) -> frozenset[str]:
    if not released:
        return frozenset()
    if text is None:
        return frozenset({ALL})  # written before the columns were recorded
    return frozenset(json.loads(text))


def check_structure(forest: Forest, boxes: list[Box]) -> None:
    """Refuse (structurally) a table whose populations cross the history or each other."""
    for b in boxes:
        if not b.empty:
            forest.locate(b)
    lat = forest.lattice
    nonempty = [b for b in boxes if not b.empty]
    for i, a in enumerate(nonempty):  # a table's own cells are disjoint; sub-cells nest in them
        for b in nonempty[i + 1:]:
            if not (a.disjoint(b, lat) or a.contains(b, lat) or b.contains(a, lat)):
                raise TableOverlaps("this query's own populations overlap; it cannot be released in exact mode",
                                    metadata={"rule": "laminar"})


@dataclass
class Candidate:
    box: Box
    primary_ok: bool  # k rows, k values per aggregated column, not dominated
    # The value columns this population would be released for (None: the audit's ``columns``).
    columns: list[str] | None = None


def audit(forest: Forest, atoms: AtomTable, candidates: list[Candidate], *, k: int,
          columns: list[str], dominated=None) -> list[bool]:
    """Insert every candidate (in order) into ``forest``; returns which are released.

    ``columns``: the aggregated columns whose non-null counts must reach k in a remainder too
    (a candidate may name its own). ``dominated(box, minus, column)``: whether the population
    ``box`` minus the boxes ``minus`` is dominated in ``column`` (exact mode's dominance rule), or
    None when no rule applies.
    """
    out = []
    for cand in candidates:
        b = cand.box
        if b.empty:
            out.append(False)
            continue
        cols = list(columns if cand.columns is None else cand.columns)
        existing, parent, inside = forest.locate(b)
        # Even a population released before is checked again: this query may aggregate other
        # columns, whose non-null counts (or dominance) in the remainders were never checked.
        ok = cand.primary_ok and all(_secondary_ok(forest, atoms, b, existing, parent, inside, k, c, dominated)
                                     for c in ["", *cols])
        forest.insert(b, frozenset(["", *cols]) if ok else frozenset())
        out.append(ok)
    return out


def _secondary_ok(forest: Forest, atoms: AtomTable, b: Box, existing: Node | None, parent: Node,
                  inside: list[Node], k: int, column: str, dominated) -> bool:
    """The remainders this release of ``b`` for ``column`` creates, in ``column``'s family (the
    populations released for ``column``), hold k rows with a value of it and are not dominated."""
    lat = forest.lattice
    if existing is not None and existing.knows(column):
        parent = existing.parent or forest.root  # the node is already its parent's released child
    below: list[Node] = []
    for n in (existing.children if existing is not None else inside):
        below.extend([n] if n.knows(column) else forest.released_below(n, column))
    if not _remainder_ok(atoms, lat, b, [n.box for n in below], k, column, dominated):
        return False
    # The population above b released for this column, if any, loses b's area from its remainder.
    above = parent if parent.knows(column) else \
        forest.released_above(parent, column) if parent is not forest.root else None
    if above is None:
        return True
    siblings = [n for n in forest.released_below(above, column) if not b.contains(n.box, lat) and n.box != b]
    return _remainder_ok(atoms, lat, above.box, [n.box for n in siblings] + [b], k, column, dominated)


def _remainder_ok(atoms: AtomTable, lat: Lattice, box: Box, minus: list[Box], k: int, column: str,
                  dominated) -> bool:
    structural = box.size(lat) - sum(m.size(lat) for m in minus)
    if structural <= 0:
        return True  # the populations released for this column inside tile it: nothing new
    values = column.removeprefix(COUNTED)
    left = atoms.count(box, values) - sum(atoms.count(m, values) for m in minus)
    if left < k:
        return False
    magnitudes = column and not column.startswith(COUNTED)
    return not (magnitudes and dominated is not None and dominated(box, minus, column))
