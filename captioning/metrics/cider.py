"""CIDEr-D against a fixed reference corpus, fast enough to be a training reward.

The maths of pycocoevalcap's ``Cider`` (the COCO server's CIDEr-D: tf-idf n-grams 1–4, clipped
counts, a Gaussian length penalty with σ = 6, ×10), with two differences that a reward needs:
the document frequencies come from the corpus given once (the train references), not from the
images being scored, and each image's reference vectors are computed once, when first needed, and
reused for every candidate. With ``CiderD(refs).scores(ids, hyps)`` on the same ``refs`` as pycocoevalcap's, the
per-image scores are the same (tested).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

N = 4
SIGMA = 6.0


def ngram_counts(words, n: int = N) -> Counter:
    words = list(words)
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    """``references``: image → list of reference captions (each a list of words)."""

    def __init__(self, references: dict, n: int = N, sigma: float = SIGMA):
        self.n, self.sigma = n, sigma
        counts = {image: [ngram_counts(r, n) for r in refs] for image, refs in references.items()}
        self.doc_freq = defaultdict(float)
        for refs in counts.values():
            for gram in set(g for r in refs for g in r):
                self.doc_freq[gram] += 1
        self.log_images = math.log(float(len(counts)))
        self._counts, self._refs = counts, {}  # each image's vectors made when first scored against
        self._last = None  # the last hypothesis and its vector

    def _vector(self, counts: Counter):
        """tf-idf per n-gram order, each order's norm, and the length (number of words)."""
        vec = [dict() for _ in range(self.n)]
        norm = np.zeros(self.n)
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            value = float(tf) * (self.log_images - math.log(max(1.0, self.doc_freq.get(gram, 0.0))))
            vec[k][gram] = value
            norm[k] += value * value
            if k == 0:
                length += tf
        return vec, np.sqrt(norm), length

    def _similarity(self, hyp, ref) -> float:
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        penalty = math.exp(-((lh - lr) ** 2) / (2 * self.sigma ** 2))
        total = 0.0
        for k in range(self.n):
            if nh[k] == 0 or nr[k] == 0:
                continue
            ref_k = vr[k]
            dot = sum(min(v, ref_k[g]) * ref_k[g] for g, v in vh[k].items() if g in ref_k)
            total += dot / (nh[k] * nr[k])
        return total * penalty

    def score(self, image, words) -> float:
        return float(np.mean(self.similarities(image, words)))

    def similarities(self, image, words, slots=None) -> np.ndarray:
        """CIDEr-D of ``words`` against each of ``image``'s references (or those numbered ``slots``) on
        its own; the mean over all of them is ``score``."""
        refs = self._refs.get(image)
        if refs is None:
            refs = self._refs[image] = [self._vector(r) for r in self._counts[image]]
        hyp = self._hypothesis(words)
        chosen = refs if slots is None else [refs[s] for s in slots]
        return np.array([10.0 * self._similarity(hyp, r) / self.n for r in chosen])

    def _hypothesis(self, words):
        # one candidate is scored against many images in a row (re-ranking, rewards): vectorise it once
        key, last = tuple(words), self._last
        if last is None or last[0] != key:
            last = self._last = (key, self._vector(ngram_counts(key, self.n)))
        return last[1]

    def scores(self, images, hypotheses) -> np.ndarray:
        """One CIDEr-D per (image, hypothesis word list)."""
        return np.array([self.score(i, h) for i, h in zip(images, hypotheses)], dtype=np.float64)


class ReferenceIndex:
    """Every reference caption of a corpus as sparse tf-idf rows, to score many candidates against
    chosen references at once: the maths of ``CiderD`` (same document frequencies, clipping, length
    penalty), as sparse matrix products instead of one dictionary walk per (candidate, reference).

    ``references``: per image, its captions as word lists; rows are numbered image by image
    (``first_row[i]`` is image i's first). N-grams are integer keys over the corpus's own word ids,
    so the whole index is a few numpy arrays (Flickr8k's 30,000 train captions: about 1 s to build).
    """

    def __init__(self, references: list, n: int = N, sigma: float = SIGMA):
        from scipy import sparse
        self._sparse = sparse
        self.n, self.sigma = n, sigma
        self.words: dict = {}
        captions = [[self.words.setdefault(w, len(self.words)) for w in c] for refs in references for c in refs]
        per_image = np.array([len(r) for r in references], np.int64)
        self.first_row = np.concatenate([[0], np.cumsum(per_image)])
        self.lengths = np.array([len(c) for c in captions], np.float64)
        self.log_images = math.log(float(len(references)))
        self._base = len(self.words) + 1
        if self._base ** n >= 2 ** 63:
            raise ValueError(f"{len(self.words)} distinct words are too many for {n}-gram keys in 64 bits")
        row_image = np.repeat(np.arange(len(references)), per_image)
        ids, owner = _joined(captions)
        self.keys, self.idf, self.matrix, self.tf, self.norms = [], [], [], [], np.zeros((len(captions), n))
        for k in range(1, n + 1):
            keys, rows = _grams(ids, owner, k, self._base)
            unique, gram = np.unique(keys, return_inverse=True)
            pairs, tf = np.unique(rows * len(unique) + gram, return_counts=True)
            rows, gram = pairs // len(unique), pairs % len(unique)
            doc = _distinct(row_image[rows] * len(unique) + gram) % len(unique)  # each gram once per image
            idf = self.log_images - np.log(np.maximum(1.0, np.bincount(doc, minlength=len(unique))))
            value = tf * idf[gram]
            self.norms[:, k - 1] = np.sqrt(np.bincount(rows, value * value, minlength=len(captions)))
            self.matrix.append(sparse.csr_matrix((value, (rows, gram)), shape=(len(captions), len(unique))))
            self.tf.append(sparse.csr_matrix((tf.astype(np.float64), (rows, gram)), shape=(len(captions), len(unique))))
            self.keys.append(unique)
            self.idf.append(idf)

    def __len__(self) -> int:
        return len(self.lengths)

    def scores(self, candidates: list, rows: list, weights: list) -> list:
        """Per group g: ``candidates[g]`` (word lists) against the reference rows ``rows[g]``, each
        row's CIDEr-D combined by ``weights[g]`` (len(rows[g]) × m): returns (len(candidates[g]), m).
        A weight column of 1/len(rows[g]) gives each candidate's mean CIDEr-D against those rows."""
        sparse = self._sparse
        flat = [words for group in candidates for words in group]
        cand_group = np.repeat(np.arange(len(candidates)), [len(c) for c in candidates])
        rows = [np.asarray(r, np.int64) for r in rows]
        row_group = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        all_rows = np.concatenate(rows + [np.zeros(0, np.int64)])
        ids, owner = _joined([[self.words.get(w, -1) for w in words] for words in flat])
        squares = self._unknown_squares(flat)
        grams = []
        for k in range(self.n):
            keys, cand = _grams(ids, owner, k + 1, self._base)
            local, inverse = np.unique(keys, return_inverse=True)
            pairs, tf = np.unique(cand * len(local) + inverse, return_counts=True)
            cand, local = pairs // max(len(local), 1), local[pairs % max(len(local), 1)]
            where, found = _lookup(self.keys[k], local)
            idf = np.where(found, self.idf[k][where] if found.any() else 0.0, self.log_images)  # unseen: df 0
            squares[:, k] += np.bincount(cand, (tf * idf) ** 2, minlength=len(flat))
            use = found & (idf > 0)  # a gram in every image weighs nothing
            grams.append((cand[use], where[use], tf[use], idf[use]))
        norms = np.sqrt(squares)
        # Each group's (candidates × its rows) block, dense and padded to the widest group: candidate c
        # meets reference row r only in its own group, at column ``slot[r]``; the orders' products
        # are summed into it by one bincount each (a sparse sum would sort millions of pairs).
        starts = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        width = max((len(r) for r in rows), default=0)
        slot = np.arange(len(all_rows)) - starts[row_group]
        dense = np.zeros(len(flat) * width)
        for k, (cand, gram, tf, idf) in enumerate(grams):
            for dot in self._clipped_dots(k, cand_group[cand] * len(self.keys[k]) + gram, cand, tf, idf,
                                          all_rows, row_group, len(flat), _inverse(norms[:, k])):
                c = np.repeat(np.arange(dot.shape[0]), np.diff(dot.indptr))
                dense += np.bincount(c * width + slot[dot.indices], dot.data, minlength=len(dense))
        dense = dense.reshape(len(flat), width)
        lengths = np.array([len(words) for words in flat], np.float64)
        out, first = [], 0
        for g, (r_, w) in enumerate(zip(rows, weights)):
            block = dense[first:first + len(candidates[g]), :len(r_)]
            penalty = np.exp(-((lengths[first:first + len(block), None] - self.lengths[r_][None, :]) ** 2)
                             / (2 * self.sigma ** 2))
            out.append((10.0 / self.n * block * penalty) @ np.asarray(w, np.float64).reshape(len(r_), -1))
            first += len(block)
        return out

    def _clipped_dots(self, k, cand_keys, cand, tf, idf, all_rows, row_group, candidates, cand_scale) -> list:
        """(candidates × rows) products whose sum is Σ over shared grams of min(a·idf, b·idf)·b·idf, a
        and b the counts in the candidate and the reference: Σ_j (idf·[a ≥ j]) · (idf·b·[b ≥ j]), one
        product per j, each divided by the two vectors' norms (the candidate's times ``cand_scale``,
        the reference's by its own norm) so that the products are cosines. Grams are keyed by
        (group, gram), so a candidate meets only its group's rows."""
        sparse = self._sparse
        grams = len(self.keys[k])
        columns = np.unique(cand_keys)
        refs, refs_tf = self.matrix[k][all_rows], self.tf[k][all_rows]  # one structure: made from the same pairs
        ref_row = np.repeat(np.arange(len(all_rows)), np.diff(refs.indptr))
        in_batch = np.zeros(grams, bool)
        in_batch[columns % grams] = True  # most reference grams are in no candidate: dropped before the lookup
        entry = np.flatnonzero(in_batch[refs.indices] & (refs.data > 0))
        ref_row = ref_row[entry]
        where, shared = _lookup(columns, row_group[ref_row] * grams + refs.indices[entry])
        entry, ref_row, where = entry[shared], ref_row[shared], where[shared]
        ref_data = refs.data[entry] * _inverse(self.norms[all_rows, k])[ref_row]
        ref_tf = refs_tf.data[entry]
        cand_col = np.searchsorted(columns, cand_keys)
        cand_data = idf * cand_scale[cand]
        dots = []
        for j in range(1, int(tf.max(initial=0)) + 1):
            hit, keep = tf >= j, ref_tf >= j
            h = sparse.csr_matrix((cand_data[hit], (cand[hit], cand_col[hit])), shape=(candidates, len(columns)))
            r = sparse.csr_matrix((ref_data[keep], (ref_row[keep], where[keep])), shape=(len(all_rows), len(columns)))
            dots.append(h @ r.T)
        return dots

    def _unknown_squares(self, candidates) -> np.ndarray:
        """Squared norms of the n-grams that hold a word the corpus never uses: not in any reference
        (document frequency 0, so idf = log(images)), they count in a candidate's norm only."""
        out = np.zeros((len(candidates), self.n))
        for i, words in enumerate(candidates):
            if all(w in self.words for w in words):
                continue
            for gram, tf in ngram_counts(words, self.n).items():
                if any(w not in self.words for w in gram):
                    out[i, len(gram) - 1] += (tf * self.log_images) ** 2
        return out


def _distinct(keys):
    """``np.unique(keys)`` by sorting: numpy's default hashing took 2.3 s for each n-gram order's
    (image, gram) keys of COCO's train captions (loading a COCO-sized run's re-ranking files: 25 s → 14 s)."""
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys


def _inverse(norms):
    """1 / norm, and 0 for a zero norm (a vector with no n-grams of that order meets nothing)."""
    return np.divide(1.0, norms, out=np.zeros_like(norms, dtype=np.float64), where=norms > 0)


def _lookup(sorted_keys, keys):
    """(position, found) of each of ``keys`` in ``sorted_keys``."""
    if not len(sorted_keys):
        return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
    where = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return where, sorted_keys[where] == keys


def _joined(captions):
    """All captions' word ids in one array, with -1 between captions, and each position's caption."""
    lengths = np.array([len(c) + 1 for c in captions], np.int64)
    ids = np.full(int(lengths.sum()), -1, np.int64)
    owner = np.repeat(np.arange(len(captions)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for s, c in zip(starts, captions):
        ids[s:s + len(c)] = c
    return ids, owner


def _grams(ids, owner, k: int, base: int):
    """(key, caption) of every k-gram of known words: key = Σ id·base^(k-1-j)."""
    m = len(ids) - k + 1
    if m <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    windows = np.stack([ids[j:j + m] for j in range(k)], axis=1)
    valid = (windows >= 0).all(axis=1)
    windows = windows[valid]
    keys = np.zeros(len(windows), np.int64)
    for j in range(k):
        keys = keys * base + windows[:, j]
    return keys, owner[:m][valid]
