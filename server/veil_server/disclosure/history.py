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

What the suppression pattern reveals: that some box, or some remainder of boxes, holds fewer
than k rows (never whether it holds 0) -- what the k rule on a ``GROUP BY`` already reveals.
What exact mode cannot prevent: inference from public knowledge combined with exact released
cells (an analyst who knows k-1 members of a released cell learns the k-th's contribution to
its sum); differences between releases on two versions of the data (the owner lists versions);
and tables refused because an earlier analyst's table crossed them.
"""

from __future__ import annotations

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
    at_us INTEGER NOT NULL
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


class ConsentChanged(PolicyViolation):
    default_reason = "EXACT_CONSENT_CHANGED"


@dataclass(eq=False)
class Node:
    box: Box
    size: int  # structural (lattice cells)
    released: bool = False
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)


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

    def insert(self, box: Box, released: bool) -> Node:
        existing, parent, inside = self.locate(box)
        if existing is not None:
            existing.released = existing.released or released
            return existing
        node = Node(box, box.size(self.lattice), released, parent)
        for c in inside:
            parent.children.remove(c)
            c.parent = node
        node.children = list(inside)
        parent.children.append(node)
        self.by_box[box] = node
        return node

    def released_below(self, node: Node) -> list[Node]:
        """The largest released populations strictly inside ``node`` (through suppressed ones)."""
        out, stack = [], list(node.children)
        while stack:
            n = stack.pop()
            if n.released:
                out.append(n)
            else:
                stack.extend(n.children)
        return out

    @staticmethod
    def released_above(node: Node) -> Node | None:
        p = node.parent
        while p is not None and not p.released:
            p = p.parent
        return p


class ExactHistory:
    """The persistent history and, per dataset, its forest in memory (rebuilt from the rows on
    first use, and brought up to date with rows other replicas added)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)
        self._forests: dict[str, Forest] = {}
        self._lock = threading.Lock()

    def forest(self, dataset: str, lattice: Lattice) -> Forest:
        key = dataset.lower()
        with self._lock:
            f = self._forests.get(key)
            if f is None or f.lattice is not lattice and f.lattice.pieces != lattice.pieces:
                f = self._forests[key] = Forest(lattice)
        with self.store.reading() as db:
            rows = db.execute("SELECT seq, box, released FROM exact_populations WHERE dataset=? AND seq>? "
                              "ORDER BY seq", (key, f.seq)).fetchall()
        if rows:
            for _, box, released in sorted(rows, key=lambda r: -Box.from_json(r[1]).size(lattice)):
                f.insert(Box.from_json(box), bool(released))
            f.seq = max(r[0] for r in rows)
        return f

    def forget(self, dataset: str) -> None:
        """Drop the cached forest (after a release that did not commit)."""
        with self._lock:
            self._forests.pop(dataset.lower(), None)

    def record(self, dataset: str, query_id: str, populations: list[tuple[Box, bool]]) -> None:
        """In the release transaction: every population of the release, released or not."""
        at = now_us()
        with self.store.joined_tx() as db:
            for box, released in populations:
                db.execute("INSERT INTO exact_populations (dataset, box, released, query_id, at_us) VALUES "
                           "(?,?,?,?,?)", (dataset.lower(), box.to_json(), int(released), query_id, at))

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
    dominated_remainder: object = None  # callable(list[Box] subtracted from box) -> bool, or None


def audit(forest: Forest, atoms: AtomTable, candidates: list[Candidate], *, k: int,
          columns: list[str], dominated=None) -> list[bool]:
    """Insert every candidate (in order) into ``forest``; returns which are released.

    ``columns``: the aggregated columns whose non-null counts must reach k in a remainder too.
    ``dominated(box, minus)``: whether the population ``box`` minus the boxes ``minus`` is
    dominated (exact mode's dominance rule), or None when no rule applies.
    """
    out = []
    for cand in candidates:
        b = cand.box
        if b.empty:
            out.append(False)
            continue
        existing, parent, inside = forest.locate(b)
        # Even a population released before is checked again: this query may aggregate other
        # columns, whose non-null counts (or dominance) in the remainders were never checked.
        ok = cand.primary_ok and _secondary_ok(forest, atoms, b, existing, parent, inside, k, columns, dominated)
        forest.insert(b, ok)
        out.append(ok)
    return out


def _secondary_ok(forest: Forest, atoms: AtomTable, b: Box, existing: Node | None, parent: Node,
                  inside: list[Node], k: int, columns: list[str], dominated) -> bool:
    lat = forest.lattice
    if existing is not None and existing.released:
        parent = existing.parent or forest.root  # the node is already its parent's released child
    below: list[Node] = []
    for n in (existing.children if existing is not None else inside):
        below.extend([n] if n.released else forest.released_below(n))
    if not _remainder_ok(atoms, lat, b, [n.box for n in below], k, columns, dominated):
        return False
    # The released population above b, if any, loses b's area from its remainder.
    above = parent if parent.released else forest.released_above(parent) if parent is not forest.root else None
    if above is None:
        return True
    siblings = [n for n in forest.released_below(above) if not b.contains(n.box, lat) and n.box != b]
    return _remainder_ok(atoms, lat, above.box, [n.box for n in siblings] + [b], k, columns, dominated)


def _remainder_ok(atoms: AtomTable, lat: Lattice, box: Box, minus: list[Box], k: int, columns: list[str],
                  dominated) -> bool:
    structural = box.size(lat) - sum(m.size(lat) for m in minus)
    if structural <= 0:
        return True  # the released populations inside tile it: nothing new can be derived
    for c in ["", *columns]:
        left = atoms.count(box, c) - sum(atoms.count(m, c) for m in minus)
        if left < k:
            return False
    return not (dominated is not None and dominated(box, minus))
