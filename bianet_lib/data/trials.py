"""Seeded trial lists for 1:K matching and verification, with a plain-text form.

A trial refers to samples by their row index in one split's SplitData, so a list can never mix
splits. The true candidate sits in a uniformly random slot: a list with the positive always
first lets a constant head score 0% or 100%.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bianet_lib.data.types import SplitData

DIRECTIONS = ("vf", "fv")


@dataclass
class MatchingTrials:
    """1:K matching: ``query`` indexes the query modality ("vf": voices), ``candidates`` [T, K]
    index the other modality, ``target`` is the column of the true match in each row."""

    direction: str
    query: np.ndarray
    candidates: np.ndarray
    target: np.ndarray

    @property
    def k(self) -> int:
        return int(self.candidates.shape[1])

    def __len__(self) -> int:
        return len(self.query)


@dataclass
class VerificationTrials:
    """Voice-face pairs; ``same`` is True for pairs of one identity (half of them)."""

    voice: np.ndarray
    face: np.ndarray
    same: np.ndarray

    def __len__(self) -> int:
        return len(self.voice)


def _by_identity(ids: np.ndarray, n_id: int) -> list[np.ndarray]:
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(n_id + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n_id)]


def _pools(split: SplitData, direction: str):
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    q_meta, c_meta = ((split.voice_meta, split.face_meta) if direction == "vf"
                      else (split.face_meta, split.voice_meta))
    n = split.n_identities
    return (q_meta, c_meta, _by_identity(q_meta["identity"].to_numpy(), n),
            _by_identity(c_meta["identity"].to_numpy(), n))


def _negative_ids(split: SplitData, i: int, gender_matched: bool) -> np.ndarray:
    others = np.arange(split.n_identities) != i
    if gender_matched:
        if "gender" not in split.identities:
            raise ValueError(f"split {split.name!r}: gender-matched trials need a 'gender' column")
        g = split.identities["gender"].to_numpy()
        others &= g == g[i]
    return np.flatnonzero(others)


def _positive(c_idx: np.ndarray, c_meta, q_video: str, other_video: bool,
              rng: np.random.Generator) -> int | None:
    if other_video:
        c_idx = c_idx[c_meta["video"].to_numpy()[c_idx] != q_video]
    return int(rng.choice(c_idx)) if len(c_idx) else None


def make_matching_trials(split: SplitData, direction: str, k: int, n_per_identity: int, seed: int,
                         gender_matched: bool = False,
                         positive_other_video: bool = False) -> MatchingTrials:
    """n_per_identity trials per identity that has samples in both modalities; the K-1
    negatives come from distinct other identities (of the same gender if gender_matched).
    With positive_other_video the positive never shares the query's video; queries without
    such a positive are skipped (an error if none is left)."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    q_meta, c_meta, q_pool, c_pool = _pools(split, direction)
    rng = np.random.default_rng(seed)
    q_videos = q_meta["video"].to_numpy()
    rows = []
    for i in range(split.n_identities):
        if not len(q_pool[i]) or not len(c_pool[i]):
            continue
        neg_ids = _negative_ids(split, i, gender_matched)
        neg_ids = neg_ids[[len(c_pool[j]) > 0 for j in neg_ids]]
        if len(neg_ids) < k - 1:
            raise ValueError(f"split {split.name!r}: identity {i} has only {len(neg_ids)} possible "
                             f"negative identities, 1:{k} needs {k - 1}")
        for _ in range(n_per_identity):
            q = int(rng.choice(q_pool[i]))
            pos = _positive(c_pool[i], c_meta, q_videos[q], positive_other_video, rng)
            if pos is None:
                continue
            negs = [int(rng.choice(c_pool[j])) for j in rng.choice(neg_ids, k - 1, replace=False)]
            t = int(rng.integers(k))
            rows.append((q, negs[:t] + [pos] + negs[t:], t))
    if not rows:
        raise ValueError(f"split {split.name!r}: no {direction} trial could be built")
    return MatchingTrials(direction, np.array([r[0] for r in rows]),
                          np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


def make_verification_trials(split: SplitData, n_pairs: int, seed: int,
                             gender_matched: bool = False,
                             positive_other_video: bool = False) -> VerificationTrials:
    """n_pairs (even) voice-face pairs, exactly half same-identity, in random order."""
    if n_pairs < 2 or n_pairs % 2:
        raise ValueError(f"n_pairs must be even and >= 2, got {n_pairs}")
    _, f_meta, v_pool, f_pool = _pools(split, "vf")
    usable = [i for i in range(split.n_identities) if len(v_pool[i]) and len(f_pool[i])]
    if len(usable) < 2:
        raise ValueError(f"split {split.name!r}: verification needs 2 identities with both modalities")
    rng = np.random.default_rng(seed)
    v_videos = split.voice_meta["video"].to_numpy()
    voice, face, same = [], [], []
    tries = 0
    while len(voice) < n_pairs:
        tries += 1
        if tries > 100 * n_pairs:
            raise ValueError(f"split {split.name!r}: cannot draw {n_pairs} verification pairs")
        positive = len(voice) % 2 == 0
        i = int(rng.choice(usable))
        v = int(rng.choice(v_pool[i]))
        if positive:
            f = _positive(f_pool[i], f_meta, v_videos[v], positive_other_video, rng)
        else:
            negs = [j for j in _negative_ids(split, i, gender_matched) if len(f_pool[j])]
            f = int(rng.choice(f_pool[int(rng.choice(negs))])) if negs else None
        if f is None:
            continue
        voice.append(v)
        face.append(f)
        same.append(positive)
    order = rng.permutation(n_pairs)
    return VerificationTrials(np.array(voice)[order], np.array(face)[order], np.array(same)[order])


def save_trials(trials: MatchingTrials | VerificationTrials, path: str | Path) -> None:
    """One trial per line after a header line naming the kind (and direction, K)."""
    with open(path, "w") as f:
        if isinstance(trials, MatchingTrials):
            f.write(f"# matching direction={trials.direction} k={trials.k}: query target candidates\n")
            for q, t, c in zip(trials.query, trials.target, trials.candidates, strict=True):
                f.write(f"{q} {t} {' '.join(map(str, c))}\n")
        else:
            f.write("# verification: voice face same\n")
            for v, fa, s in zip(trials.voice, trials.face, trials.same, strict=True):
                f.write(f"{v} {fa} {int(s)}\n")


def load_trials(path: str | Path) -> MatchingTrials | VerificationTrials:
    """Read a file written by save_trials; errors name the file and line."""
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty trial file")
    try:
        rows = np.array([[int(x) for x in ln.split()] for ln in lines[1:] if ln.strip()], dtype=int)
    except ValueError as exc:
        raise ValueError(f"{path}: non-integer field ({exc})") from None
    m = re.match(r"# matching direction=(vf|fv) k=(\d+)", lines[0])
    if m:
        k = int(m.group(2))
        if rows.ndim != 2 or rows.shape[1] != k + 2:
            raise ValueError(f"{path}: every line must hold query, target and {k} candidates")
        if (rows[:, 1] < 0).any() or (rows[:, 1] >= k).any():
            raise ValueError(f"{path}: target column outside 0..{k - 1}")
        return MatchingTrials(m.group(1), rows[:, 0], rows[:, 2:], rows[:, 1])
    if lines[0].startswith("# verification"):
        if rows.ndim != 2 or rows.shape[1] != 3:
            raise ValueError(f"{path}: every line must hold voice, face, same")
        return VerificationTrials(rows[:, 0], rows[:, 1], rows[:, 2].astype(bool))
    raise ValueError(f"{path}: first line is not a bianet trial header: {lines[0][:60]!r}")


def read_wen_list(path: str | Path, query_index: dict[str, int], candidate_index: dict[str, int],
                  direction: str, seed: int) -> MatchingTrials:
    """Wen et al.'s lists: per line a query path then candidate paths, positive first,
    separated by whitespace or commas. Paths map to sample indices through the two dicts.
    Because their positive is always first, each row's candidates are shuffled with ``seed``
    (the target then records where the positive went)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    rng = np.random.default_rng(seed)
    query, cands, target = [], [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = [x for x in re.split(r"[\s,]+", line.strip()) if x]
        if not fields:
            continue
        if len(fields) < 3:
            raise ValueError(f"{path}:{n}: need a query and at least 2 candidates, got {len(fields)} fields")
        if cands and len(fields) - 1 != len(cands[0]):
            raise ValueError(f"{path}:{n}: {len(fields) - 1} candidates, earlier lines had {len(cands[0])}")
        for p, index in [(fields[0], query_index)] + [(p, candidate_index) for p in fields[1:]]:
            if p not in index:
                raise ValueError(f"{path}:{n}: path {p!r} is not in the loaded split")
        c = [candidate_index[p] for p in fields[1:]]
        perm = rng.permutation(len(c))
        query.append(query_index[fields[0]])
        cands.append([c[j] for j in perm])
        target.append(int(np.flatnonzero(perm == 0)[0]))
    if not query:
        raise ValueError(f"{path}: no trials")
    return MatchingTrials(direction, np.array(query), np.array(cands), np.array(target))
