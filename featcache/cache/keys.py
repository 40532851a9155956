"""Finding keys (content hashes, view keys, paths) among millions, with no Python object per key."""

from __future__ import annotations

import numpy as np

from featcache.cache.layout import bytes_column

#: keys looked up at once by KeyIndex.find
FIND_CHUNK = 1 << 16


class KeyIndex:
    """Keys (content hashes, view keys, paths) to entry ids: the keys indexed first (an existing cache's, by
    the million) kept as the bytes array they came in and ordered by a 64-bit hash of each key, found by
    binary search on the hashes (no object, no copy per key), and a dictionary of those added later (what
    a run computes). A key keeps its first entry unless added with ``replace``."""

    #: later keys are merged into the ordered base when there are more of them than this
    MERGE_AT = 1 << 16

    def __init__(self):
        self._base = _Ordered(np.zeros(0, dtype="S1"), np.zeros(0, dtype=np.int64))
        self._later: dict[bytes, int] = {}
        self._later_view: _Ordered | None = None

    def __len__(self) -> int:
        return len(self._base) + len(self._later)

    def __contains__(self, key) -> bool:
        key = key.encode() if isinstance(key, str) else bytes(key)
        return key in self._later or self._base.get(key) >= 0

    def keys(self) -> list[str]:
        return [k.decode() for k in self._base.ordered_keys().tolist()] + [k.decode() for k in self._later]

    def add(self, keys, ids: np.ndarray | None = None, replace: bool = False) -> None:
        """Index ``keys`` with ``ids`` (default: their positions in ``keys``; an array of fixed-width bytes is
        kept as it is: do not change it afterwards)."""
        keys = bytes_column(keys)
        if not len(self):
            self._base = _Ordered(keys, None if ids is None else np.asarray(ids, dtype=np.int64))
            return
        ids = np.arange(len(keys), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if replace:
            self._later.update(zip(keys.tolist(), ids.tolist()))
        else:
            listed = keys.tolist()
            for i in np.flatnonzero(self.find(keys) < 0).tolist():
                self._later.setdefault(listed[i], int(ids[i]))
        self._later_view = None  # made again by the next find
        if len(self._later) > self.MERGE_AT:
            self._merge()

    def find(self, keys) -> np.ndarray:
        """The entry id of each of ``keys``, -1 where unknown, int64 (n,); looked up a chunk at a time, so
        what the lookup needs besides the answer stays small however many keys are asked."""
        keys = bytes_column(keys)
        if len(keys) > FIND_CHUNK:
            return np.concatenate([self.find(keys[i : i + FIND_CHUNK]) for i in range(0, len(keys), FIND_CHUNK)])
        hashes = _hash64(keys)
        ids = self._base.find(hashes, keys)
        if self._later:
            if self._later_view is None:
                self._later_view = _Ordered(*self._later_arrays())
            found = self._later_view.find(hashes, keys)
            ids = np.where(found >= 0, found, ids)
        return ids

    def _later_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The keys added later and their ids, as arrays."""
        later = np.array(list(self._later), dtype=bytes)
        return later, np.fromiter(self._later.values(), dtype=np.int64, count=len(self._later))

    def _merge(self) -> None:
        later, ids = self._later_arrays()
        # a later key's entry comes first, so it wins over the base's
        keys = np.concatenate([later, self._base.ordered_keys()])
        self._base = _Ordered(keys, np.concatenate([ids, self._base.ids]))
        self._later, self._later_view = {}, None


class _Ordered:
    """``keys`` (not copied) with their ids, ordered by hash: ``hashes`` increasing, ``pos`` the position in
    ``keys`` of each, ``ids`` its id (its position, the same array, when ``ids`` is None); a repeated key is
    kept at its first occurrence only."""

    def __init__(self, keys: np.ndarray, ids: np.ndarray | None):
        hashes = _hash64(keys)
        order = np.argsort(hashes, kind="stable")
        hashes = hashes[order]
        first = np.ones(len(order), dtype=bool)
        same = np.flatnonzero(hashes[1:] == hashes[:-1])  # repeated keys, and the rare collisions
        first[same + 1] = keys[order[same + 1]] != keys[order[same]]
        pos = order[first]
        del order
        self.keys, self.hashes = keys, hashes[first]
        self.pos = pos.astype(np.int32) if len(pos) < 2**31 else pos  # 4 bytes a key, not 8
        self.ids = self.pos if ids is None else ids[pos]

    def __len__(self) -> int:
        return len(self.pos)

    def ordered_keys(self) -> np.ndarray:
        return self.keys[self.pos]

    def get(self, key: bytes) -> int:
        """The id of one key, -1 when absent."""
        hashed = np.uint64(_hash_one(key))
        return self._scan(int(np.searchsorted(self.hashes, hashed)), key, hashed)

    def find(self, hashes: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The id of each of ``keys`` (whose hashes are ``hashes``), -1 where absent."""
        ids = np.full(len(keys), -1, dtype=np.int64)
        if not len(self.pos) or not len(keys):
            return ids
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.pos) - 1)
        candidate = np.flatnonzero(self.hashes[at] == hashes)
        equal = self.keys[self.pos[at[candidate]]] == keys[candidate]
        ids[candidate[equal]] = self.ids[at[candidate[equal]]]
        for i in candidate[~equal].tolist():  # another key with the same hash comes first
            ids[i] = self._scan(int(at[i]), keys[i], hashes[i])
        return ids

    def _scan(self, at: int, key: bytes, hashed) -> int:
        """The id of ``key`` among the keys from ``at`` on that have its hash ``hashed``, or -1."""
        while at < len(self.pos) and self.hashes[at] == hashed:
            if self.keys[self.pos[at]] == key:
                return int(self.ids[at])
            at += 1
        return -1


def _hash64(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each fixed-width bytes key, the same at any width (trailing zero bytes are padding);
    made a chunk of keys at a time, so its temporaries stay small however many keys there are."""
    if len(keys) > FIND_CHUNK:
        return np.concatenate([_hash64(keys[i : i + FIND_CHUNK]) for i in range(0, len(keys), FIND_CHUNK)])
    width = -(-keys.dtype.itemsize // 8) * 8
    words = np.ascontiguousarray(keys.astype(f"S{width}", copy=False)).view("<u8").reshape(len(keys), width // 8)
    hashes = np.full(len(keys), _HASH_START, dtype=np.uint64)
    for k in range(words.shape[1]):
        word = words[:, k]
        mixed = (hashes ^ word) * np.uint64(_HASH_PRIME)
        hashes = np.where(word != 0, mixed ^ (mixed >> np.uint64(29)), hashes)
    return hashes


def _hash_one(key: bytes) -> int:
    """:func:`_hash64` of one key, without numpy (what a membership test per file costs)."""
    key = key.rstrip(b"\0")
    hashed = _HASH_START
    for k in range(0, len(key), 8):
        word = int.from_bytes(key[k : k + 8], "little")
        if word:
            mixed = ((hashed ^ word) * _HASH_PRIME) & _MASK64
            hashed = mixed ^ (mixed >> 29)
    return hashed


_HASH_START, _HASH_PRIME, _MASK64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


class StoredKeys:
    """Keys left where they are, in a column of a file (an existing cache's content hashes, by the million):
    only each key's 64-bit hash and row are held, ordered by hash (12 bytes a key instead of the key and
    its index); a key whose hash is found is read back from the file to confirm it. ``column`` has a length
    and reads the column a block at a time and at given rows (:class:`featcache.cache.layout.ColumnReader`); rows where
    ``keep`` is False are left out. A repeated key is held once, at its first row, so that a key shared by
    many rows (one placeholder image copied thousands of times) costs one read-back, not one per row."""

    def __init__(self, column, keep: np.ndarray | None = None):
        self._column = column
        hashes, at = np.empty(len(column) if keep is None else int(np.count_nonzero(keep)), dtype=np.uint64), 0
        for start, block in column.blocks():
            found = _hash64(block if keep is None else block[keep[start : start + len(block)]])
            hashes[at : at + len(found)] = found
            at += len(found)
        order = np.argsort(hashes, kind="stable")  # equal hashes stay in row order
        hashes.sort()  # in place: hashes[order], without a second array
        rows = order if keep is None else np.flatnonzero(keep)[order]
        del order
        rows = rows.astype(np.int32) if len(rows) and rows.max() < 2**31 else rows
        first = self._first_of_each_key(hashes, rows)
        if first is not None:
            hashes, rows = hashes[first], rows[first]
        self.hashes, self.rows = hashes, rows

    def _first_of_each_key(self, hashes: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        """Which of the held (hash-ordered) rows to keep: the first row of each key, bool (n,); None when
        no two rows share a hash. Only the rows whose hash is repeated are read back (repeated keys, and
        the rare keys whose hashes collide): equal keys have equal hashes, so they lie in one run."""
        same = np.flatnonzero(hashes[1:] == hashes[:-1])
        if not len(same):
            return None
        shared = np.union1d(same, same + 1)  # positions in a run of equal hashes, increasing
        distinct, inverse = np.unique(rows[shared], return_inverse=True)
        keys = self._column.rows(distinct)[inverse]
        _, first = np.unique(keys, return_index=True)  # in a run, rows come in row order: the first is kept
        keep = np.ones(len(rows), dtype=bool)
        keep[shared] = False
        keep[shared[first]] = True
        return keep

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key) -> bool:
        key = key.encode() if isinstance(key, str) else bytes(key)
        hashed = np.uint64(_hash_one(key))
        at = int(np.searchsorted(self.hashes, hashed))
        if at == len(self.hashes) or self.hashes[at] != hashed:
            return False  # most keys asked (new contents) end here, without numpy's per-call cost of find
        return bool(self.find([key])[0] >= 0)

    def close(self) -> None:
        self._column.close()

    def keys(self) -> list[str]:
        """Every key held (in row order), decoded."""
        rows = np.unique(self.rows.astype(np.int64))
        return [k.decode() for k in self._column.rows(rows).tolist()]

    def find(self, keys) -> np.ndarray:
        """The first row holding each of ``keys``, -1 where none, int64 (n,)."""
        keys = bytes_column(keys)
        if len(keys) > FIND_CHUNK:
            return np.concatenate([self.find(keys[i : i + FIND_CHUNK]) for i in range(0, len(keys), FIND_CHUNK)])
        found = np.full(len(keys), -1, dtype=np.int64)
        if not len(self.rows) or not len(keys):
            return found
        hashed = _hash64(keys)
        lo, hi = np.searchsorted(self.hashes, hashed, "left"), np.searchsorted(self.hashes, hashed, "right")
        which = np.repeat(np.arange(len(keys)), hi - lo)  # a key for each held row of its hash ...
        if not len(which):
            return found
        runs = np.cumsum(hi - lo) - (hi - lo)
        rows = self.rows[lo[which] + np.arange(len(which)) - runs[which]].astype(np.int64)  # ... and that row
        distinct, inverse = np.unique(rows, return_inverse=True)
        equal = self._column.rows(distinct)[inverse] == keys[which]
        which, rows = which[equal], rows[equal]
        first = np.unique(which, return_index=True)[1]  # each key's rows come in row order
        found[which[first]] = rows[first]
        return found
