"""Greedy and beam search as TensorFlow graph ops, for the SavedModel export.

The same searches as ``captioning.inference.search`` (its docstrings explain the rules), written
with ``tf.while_loop`` over fixed shapes so they can live inside a serving signature: finished
images stay in the batch, frozen, instead of leaving it. Beam scores are summed in float64 as the
Python search sums them, so both choose the same captions. ``Steps`` is a decoder's two graphs
from ``RecurrentSteps`` (im2txt's "feed the image" and "one step"), banned tokens masked.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

NEG = -float("inf")


def _neg(dtype=tf.float64):
    return tf.constant(NEG, dtype)


@dataclasses.dataclass
class Steps:
    feed_image: object  # Keras model: [features, zero states…] → [context…, states…]
    one_step: object  # Keras model: [token, context…, states…] → [log p, context…, states…]
    units: int
    n_states: int
    banned: list  # token ids never emitted (padding, unknown word, start)
    vocab_size: int
    start_id: int
    end_id: int
    max_length: int  # tokens, the start token included

    def start(self, features):
        rows = tf.shape(features)[0]
        zeros = [tf.zeros((rows, self.units)) for _ in range(self.n_states)]
        return list(self.feed_image([features, *zeros], training=False))

    def step(self, tokens, state):
        out = self.one_step([tokens, *state], training=False)
        banned = sorted(set(self.banned))
        mask = tf.scatter_nd([[b] for b in banned], tf.fill([len(banned)], _neg(tf.float32)), [self.vocab_size])
        return out[0] + mask, list(out[1:])


def greedy(steps: Steps, features):
    """(tokens (B, T), lengths (B,), log p (B,)): the likeliest word at each step."""
    rows, steps_max = tf.shape(features)[0], steps.max_length - 1
    state = steps.start(features)

    def body(t, tokens, state, out, length, logp, done):
        log_p, new_state = steps.step(tokens, state)
        nxt = tf.argmax(log_p, axis=-1, output_type=tf.int32)
        chosen = tf.cast(tf.gather(log_p, nxt, batch_dims=1), tf.float64)
        logp = tf.where(done, logp, logp + chosen)
        out = tf.where(tf.logical_and(tf.range(steps_max)[None, :] == t, ~done[:, None]), nxt[:, None], out)
        length = tf.where(done, length, tf.fill([rows], t + 1))
        return t + 1, nxt, new_state, out, length, logp, done | (nxt == steps.end_id)

    loop = (tf.constant(0), tf.fill([rows], steps.start_id), state, tf.zeros([rows, steps_max], tf.int32),
            tf.zeros([rows], tf.int32), tf.zeros([rows], tf.float64), tf.zeros([rows], tf.bool))
    _, _, _, out, length, logp, _ = tf.while_loop(
        lambda t, tokens, state, out, length, logp, done: (t < steps_max) & ~tf.reduce_all(done), body, loop,
        shape_invariants=_any_size(loop))
    return out, length, logp


def beam(steps: Steps, features, k, alpha: float):
    """(tokens (B, T), lengths (B,), log p (B,)): beam search of width ``k`` (a scalar tensor), finished
    captions ranked by log p / length**alpha; the best partial caption where none finished."""
    rows, steps_max = tf.shape(features)[0], steps.max_length - 1
    words = tf.minimum(2 * k, steps.vocab_size)  # each beam's best words: all of a tiny vocabulary
    width = tf.minimum(2 * k, k * words)
    state = [tf.repeat(s, k, axis=0) for s in steps.start(features)]
    first = tf.concat([tf.zeros([rows, 1], tf.float64), tf.fill([rows, k - 1], _neg())], 1)
    at = tf.range(steps_max)

    def body(t, tokens, state, beam_logp, seqs, best, count, active, fallback):
        log_p, new_state = steps.step(tokens, state)
        values, ids = tf.math.top_k(log_p, words)  # banned words come last, at -inf, and are never taken
        total = tf.reshape(beam_logp[:, :, None] + tf.cast(tf.reshape(values, [rows, k, words]), tf.float64),
                           [rows, k * words])
        cand_logp, cand = tf.math.top_k(total, width)
        parent = cand // words
        tok = tf.gather(tf.reshape(ids, [rows, k * words]), cand, batch_dims=1)
        finite = tf.math.is_finite(cand_logp)
        ends, grows = finite & (tok == steps.end_id), finite & (tok != steps.end_id)
        rank = tf.cumsum(tf.cast(grows, tf.int32), axis=1)
        taken = grows & (rank <= k)
        kth = tf.where(rank[:, -1] >= k, tf.argmax(tf.cast(rank >= k, tf.int32), axis=1, output_type=tf.int32),
                       tf.fill([rows], width))
        ends &= (tf.range(width)[None, :] < kth[:, None]) & active[:, None]
        # the best caption ending here, offered to each image's best so far
        score = tf.where(ends, cand_logp / tf.cast(t + 1, tf.float64) ** alpha, _neg())
        j = tf.argmax(score, axis=1, output_type=tf.int32)
        top = tf.reduce_max(score, axis=1)
        ended = tf.gather(seqs, tf.gather(parent, j, batch_dims=1), batch_dims=1)
        ended = tf.where(at[None, :] == t, tf.fill(tf.shape(ended), steps.end_id), ended)
        b_seq, b_len, b_logp, b_score = best
        better = top > b_score
        best = (tf.where(better[:, None], ended, b_seq), tf.where(better, tf.fill([rows], t + 1), b_len),
                tf.where(better, tf.gather(cand_logp, j, batch_dims=1), b_logp), tf.where(better, top, b_score))
        count += tf.reduce_sum(tf.cast(ends, tf.int32), axis=1)
        # the k continuations of each image, in rank order
        slot = tf.argsort(tf.cast(~taken, tf.int32), axis=1, stable=True)[:, :k]
        keep = tf.gather(taken, slot, batch_dims=1)
        new_logp = tf.where(keep, tf.gather(cand_logp, slot, batch_dims=1), _neg())
        new_parent = tf.where(keep, tf.gather(parent, slot, batch_dims=1), tf.zeros_like(slot))
        new_tok = tf.where(keep, tf.gather(tok, slot, batch_dims=1), tf.fill(tf.shape(slot), steps.end_id))
        seqs = tf.gather(seqs, new_parent, batch_dims=1)
        seqs = tf.where(at[None, None, :] == t, new_tok[:, :, None], seqs)
        fallback = (tf.where(active[:, None], new_logp, fallback[0]), tf.where(active[:, None, None], seqs, fallback[1]))
        active &= (count < k) & tf.reduce_any(keep, axis=1)
        gather = tf.reshape(tf.range(rows)[:, None] * k + new_parent, [-1])
        new_state = [tf.gather(s, gather) for s in new_state]
        return t + 1, tf.reshape(new_tok, [-1]), new_state, new_logp, seqs, best, count, active, fallback

    seqs = tf.zeros([rows, k, steps_max], tf.int32)
    best = (tf.zeros([rows, steps_max], tf.int32), tf.zeros([rows], tf.int32), tf.zeros([rows], tf.float64),
            tf.fill([rows], _neg()))
    loop = (tf.constant(0), tf.fill([rows * k], steps.start_id), state, first, seqs, best,
            tf.zeros([rows], tf.int32), tf.ones([rows], tf.bool), (first, seqs))
    t, *_, best, _, _, (fb_logp, fb_seqs) = tf.while_loop(
        lambda t, *rest: (t < steps_max) & tf.reduce_any(rest[6]), body, loop, shape_invariants=_any_size(loop))
    j = tf.argmax(fb_logp, axis=1, output_type=tf.int32)
    finished = tf.math.is_finite(best[3])
    return (tf.where(finished[:, None], best[0], tf.gather(fb_seqs, j, batch_dims=1)),
            tf.where(finished, best[1], tf.fill([rows], t)), tf.where(finished, best[2], tf.gather(fb_logp, j, batch_dims=1)))


def _any_size(loop):
    """Loop variables keep their rank, not their sizes: a width known when tracing (the default beam)
    must not be baked into the loop that serves every width."""
    return tf.nest.map_structure(lambda x: tf.TensorShape([None] * x.shape.rank), loop)


def to_text(tokens, lengths, words, steps: Steps):
    """Captions as strings: the words before the end token, without padding or start markers."""
    position = tf.range(tf.shape(tokens)[1])[None, :]
    keep = (position < lengths[:, None]) & (tokens != steps.end_id)
    for banned in steps.banned:
        keep &= tokens != banned
    return tf.strings.reduce_join(tf.ragged.boolean_mask(tf.gather(words, tokens), keep), axis=1, separator=" ")
