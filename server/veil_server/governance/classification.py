"""Classification and grading (分类分级): each level sets floors an owner may tighten, never loosen.

| level     | min group size | automatic approval | approvals needed | `public` columns | exact release |
|-----------|----------------|--------------------|------------------|------------------|---------------|
| public    | 5              | allowed            | 1                | allowed          | allowed       |
| internal  | 10             | allowed            | 1                | allowed          | allowed       |
| sensitive | 20             | never              | 1                | refused          | refused (DP)  |
| core      | 50             | never              | 2 (of the owners)| refused          | refused (DP)  |

"Exact release" is ``disclosure = "exact"``: above ``internal`` every released number carries
differential-privacy noise, whatever the owner would prefer.

The node's own minimum group size is a further floor over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..query.catalog import ColumnControl, Dataset
from ..errors import InvalidArgument


@dataclass(frozen=True)
class Level:
    name: str
    rank: int
    min_group_size: int
    auto_approve_allowed: bool
    approvals_required: int
    public_columns_allowed: bool
    exact_allowed: bool


LEVELS: dict[str, Level] = {
    lv.name: lv
    for lv in (
        Level("public", 0, 5, True, 1, True, True),
        Level("internal", 1, 10, True, 1, True, True),
        Level("sensitive", 2, 20, False, 1, False, False),
        Level("core", 3, 50, False, 2, False, False),
    )
}

RIGHTS = ("holding", "processing", "operating")  # 持有权、加工使用权、经营权


def level(name: str) -> Level:
    try:
        return LEVELS[name]
    except KeyError:
        raise InvalidArgument(f"classification must be one of {', '.join(LEVELS)}",
                              reason="INVALID_CLASSIFICATION") from None


def check_against_level(ds: Dataset, classification: str, *, auto_approve: bool, approvals_required: int,
                        node_min_group_size: int) -> None:
    """Refuse a dataset whose rules are looser than its level (or the node) allows."""
    lv = level(classification)
    floor = max(lv.min_group_size, node_min_group_size)
    if ds.min_group_size < floor:
        raise InvalidArgument(
            f"min_group_size {ds.min_group_size} is below the floor {floor} for a {lv.name} dataset",
            reason="BELOW_CLASSIFICATION_FLOOR", metadata={"rule": "min_group_size", "floor": str(floor)})
    if auto_approve and not lv.auto_approve_allowed:
        raise InvalidArgument(f"a {lv.name} dataset cannot be approved automatically; set auto_approve = false",
                              reason="BELOW_CLASSIFICATION_FLOOR", metadata={"rule": "auto_approve"})
    if approvals_required < lv.approvals_required:
        raise InvalidArgument(
            f"a {lv.name} dataset needs at least {lv.approvals_required} approvals per query",
            reason="BELOW_CLASSIFICATION_FLOOR", metadata={"rule": "approvals_required"})
    if not ds.disclosure.dp and not lv.exact_allowed:
        raise InvalidArgument(
            f"a {lv.name} dataset releases differentially private figures only; remove disclosure = \"exact\"",
            reason="BELOW_CLASSIFICATION_FLOOR", metadata={"rule": "disclosure"})
    if not lv.public_columns_allowed:
        for c in ds.columns:
            if ColumnControl.PUBLIC in c.controls:
                raise InvalidArgument(
                    f"column {c.name}: 'public' columns are not allowed in a {lv.name} dataset",
                    reason="BELOW_CLASSIFICATION_FLOOR", metadata={"rule": "column_controls", "column": c.name})
