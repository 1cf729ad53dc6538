"""Patient-level, stable train/validation/test splits.

* A patient's key is an HMAC of its FHIR reference with the dataset's secret salt
  (pseudonymous: the manifest never holds the reference itself).
* Examples are linked through their patient and their image hash (and, later, near-duplicate
  groups): everything linked lands in one split, so neither a patient nor an identical image
  ever crosses splits.
* A group that no earlier curation assigned gets a split by balanced, label-stratified drawing:
  new groups are taken in the order of a keyed hash (so nothing depends on the order records
  arrive), each into the split that best keeps both the split ratios and each label's share
  per split (as scikit-learn's StratifiedGroupKFold): the split minimising the squared
  deviations of every split's example count from ratio x total and of every split's count of
  each label from ratio x that label's total. An example's label is its confirmed class
  (`SplitInput.label`); unlabelled examples (and segmentation, whose examples carry no label
  here) count only in the overall term, which alone is the split furthest below its ratio.
  Groups of linked copies can be large, and a per-group coin flip would then miss the ratios
  (and the label mix of the small splits) by several points. A group with
  a member assigned by an earlier curation keeps that split: assignments are stored and never
  change. An example that would join two earlier splits is quarantined
  (`duplicate_image_conflict`) instead of moving anything.
* Each example's cluster (`cluster_id`) is its linked component: the unit that is independent
  of every other, which intervals resample (a patient, or a group of copies where larger).
* A link found after both ends were assigned (a newer near-duplicate rule) never moves either:
  each keeps its stored split and `copies_elsewhere` names the other splits.
* The example itself is a node too (`example_node`): a DocumentReference re-filed under a
  patient of another split keeps its split or, when that would link two splits, is
  quarantined (`split_conflict`); an example never changes split silently.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SPLITS = ("train", "validation", "test")
Node = tuple[str, str]  # ("patient" | "image", key)


def patient_key(salt: str, patient_ref: str) -> str:
    return hmac.new(salt.encode(), patient_ref.encode(), hashlib.sha256).hexdigest()[:32]


def cluster_id(salt: str, anchor: str) -> str:
    """The pseudonymous id of a cluster of linked examples (patients, identical images and
    verified copies: what is not independent), from its smallest patient key."""
    return hmac.new(salt.encode(), b"cluster:" + anchor.encode(), hashlib.sha256).hexdigest()[:16]


def hashed_split(salt: str, anchor: str, ratios: Mapping[str, float]) -> str:
    digest = hmac.new(salt.encode(), b"split:" + anchor.encode(), hashlib.sha256).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < ratios["train"]:
        return "train"
    if u < ratios["train"] + ratios["validation"]:
        return "validation"
    return "test"


def example_node(example_id: str) -> Node:
    """The stored node of an example itself (kind "image", so no schema change: keys are
    prefixed): an example keeps its first split even when its patient or image changes."""
    key = example_id if len(example_id) <= 60 else hashlib.sha256(example_id.encode()).hexdigest()
    return ("image", "doc:" + key[:60])


@dataclass(frozen=True, slots=True)
class SplitInput:
    example_id: str
    patient_key: str
    image_keys: tuple[str, ...]
    track_example: bool = False  # also link (and store) the example's own node
    label: str | None = None  # confirmed class, to stratify new groups by (None: unlabelled)
    copy_keys: tuple[str, ...] = ()  # image keys of its verified near-duplicate copies

    def own_nodes(self) -> tuple[Node, ...]:
        own = (example_node(self.example_id),) if self.track_example else ()
        return (("patient", self.patient_key), *(("image", k) for k in self.image_keys), *own)

    def nodes(self) -> tuple[Node, ...]:
        return (*self.own_nodes(), *(("image", k) for k in self.copy_keys))


@dataclass
class SplitResult:
    splits: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)  # example id -> detail
    conflict_reasons: dict[str, str] = field(default_factory=dict)  # example id -> reason
    new_assignments: dict[Node, str] = field(default_factory=dict)
    # examples that keep their stored split while a verified copy sits in another split (a
    # link found after both were assigned): example id -> the other splits
    copies_elsewhere: dict[str, list[str]] = field(default_factory=dict)
    clusters: dict[str, str] = field(default_factory=dict)  # example id -> cluster id


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Node, Node] = {}

    def find(self, node: Node) -> Node:
        parent = self.parent.setdefault(node, node)
        if parent == node:
            return node
        root = self.find(parent)
        self.parent[node] = root
        return root

    def union(self, a: Node, b: Node) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_splits(
    examples: Iterable[SplitInput],
    prior: Mapping[Node, str],
    *,
    salt: str,
    ratios: Mapping[str, float],
) -> SplitResult:
    uf = _UnionFind()
    items = sorted(examples, key=lambda e: e.example_id)
    for ex in items:
        first, *rest = ex.nodes()
        uf.find(first)
        for node in rest:
            uf.union(first, node)
    groups: dict[Node, list[SplitInput]] = defaultdict(list)
    for ex in items:
        groups[uf.find(ex.nodes()[0])].append(ex)

    result = SplitResult()
    for members in groups.values():
        cluster = cluster_id(salt, min(ex.patient_key for ex in members))
        for ex in members:
            result.clusters[ex.example_id] = cluster
    fresh: list[list[SplitInput]] = []
    for members in groups.values():
        nodes = {n for ex in members for n in ex.nodes()}
        known = {n: prior[n] for n in nodes if n in prior}
        if not known:
            fresh.append(members)
        elif len(set(known.values())) == 1:
            anchor = min(ex.patient_key for ex in members)
            split = next(iter(known.values()), None) or hashed_split(salt, anchor, ratios)
            for ex in members:
                result.splits[ex.example_id] = split
            for node in nodes - known.keys():
                result.new_assignments[node] = split
        else:
            _resolve_conflicting_group(members, known, salt, ratios, result)
    _draw_balanced(fresh, {ex.example_id: ex.label for ex in items}, salt, ratios, result)
    return result


def _draw_balanced(
    groups: list[list[SplitInput]],
    labels_of: Mapping[str, str | None],
    salt: str,
    ratios: Mapping[str, float],
    result: SplitResult,
) -> None:
    """Give each new group, in the order of a keyed hash of the group, the split that minimises
    sum over splits t of (ratio_t x N - n_t)^2 + sum over labels l and splits t of
    (ratio_t x N_l - n_lt)^2 once the group is in (counting this curation's examples already
    placed, N and N_l growing with each group taken): expanded, the split s maximising
    g x d_s + sum_l g_l x d_ls, with g, g_l the group's example and label counts and d the
    shortfalls below ratio before the group is placed. Without labels this is the split furthest
    below its ratio; the ratios are missed by at most about one group, and which group lands
    where stays unpredictable without the salt. Ties go to the first split of SPLITS."""
    counts = dict.fromkeys(SPLITS, 0)
    label_counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    label_totals: dict[str, int] = defaultdict(int)
    for example_id, split in result.splits.items():
        counts[split] += 1
        label = labels_of.get(example_id)
        if label is not None:
            label_counts[label][split] += 1
            label_totals[label] += 1
    total = sum(counts.values())

    def order(members: list[SplitInput]) -> bytes:
        anchor = min(ex.patient_key for ex in members)
        return hmac.new(salt.encode(), b"order:" + anchor.encode(), hashlib.sha256).digest()

    for members in sorted(groups, key=order):
        total += len(members)
        labels = Counter(ex.label for ex in members if ex.label is not None)
        for label, n in labels.items():
            label_totals[label] += n

        need = {
            s: len(members) * (ratios[s] * total - counts[s])
            + sum(n * (ratios[s] * label_totals[k] - label_counts[k][s]) for k, n in labels.items())
            for s in SPLITS
        }
        split = max(SPLITS, key=need.__getitem__)
        counts[split] += len(members)
        for label, n in labels.items():
            label_counts[label][split] += n
        for ex in members:
            result.splits[ex.example_id] = split
        for node in {n for ex in members for n in ex.nodes()}:
            result.new_assignments[node] = split


def _resolve_conflicting_group(
    members: list[SplitInput],
    known: dict[Node, str],
    salt: str,
    ratios: Mapping[str, float],
    result: SplitResult,
) -> None:
    """Members link nodes that earlier curations put in different splits: keep every earlier
    assignment, give each example the one split its nodes agree on, quarantine the rest.

    An example an earlier curation assigned keeps that split when only its copies (a
    near-duplicate link found later) sit elsewhere: stored assignments never move, and
    `copies_elsewhere` names the other splits (the report lists them, evaluation leaves such
    test examples out)."""
    node_split = dict(known)
    pending = list(members)
    while pending:
        progress = False
        still: list[SplitInput] = []
        for ex in pending:
            seen = {node_split[n] for n in ex.nodes() if n in node_split}
            own = {node_split[n] for n in ex.own_nodes() if n in node_split}
            stored = known.get(example_node(ex.example_id)) if ex.track_example else None
            if len(seen) > 1 and stored is not None and own == {stored}:
                result.splits[ex.example_id] = stored
                result.copies_elsewhere[ex.example_id] = sorted(seen - {stored})
                for node in ex.own_nodes():
                    if node not in node_split:
                        node_split[node] = stored
                        result.new_assignments[node] = stored
                progress = True
            elif len(seen) > 1:
                if stored is not None:
                    result.conflict_reasons[ex.example_id] = "split_conflict"
                    others = ", ".join(sorted(seen - {stored}))
                    detail = (
                        f"was in {stored} in an earlier snapshot; its patient or image is in "
                        f"{others}"
                    )
                else:
                    result.conflict_reasons[ex.example_id] = "duplicate_image_conflict"
                    detail = "links splits " + ", ".join(sorted(seen))
                result.conflicts[ex.example_id] = detail
                progress = True
            elif len(seen) == 1:
                split = seen.pop()
                result.splits[ex.example_id] = split
                for node in ex.nodes():
                    if node not in node_split:
                        node_split[node] = split
                        result.new_assignments[node] = split
                progress = True
            else:
                still.append(ex)
        pending = still
        if pending and not progress:
            ex = pending[0]  # not linked to anything assigned yet: draw its split
            split = hashed_split(salt, ex.patient_key, ratios)
            for node in ex.nodes():
                node_split[node] = split
                result.new_assignments[node] = split
