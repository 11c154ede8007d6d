"""Soft attention over the CNN grid ("Show, Attend and Tell", Xu et al. 2015).

At each word: additive (Bahdanau) attention over the grid cells from the LSTM state, a sigmoid
gate on the context, an LSTM cell fed the word embedding plus the context, h and c initialised
from the grid mean, and the doubly stochastic regulariser λ·Σ_l(1 − Σ_t α_tl)² added as a loss.
One registered layer holds it all; ``step`` is the same computation for one token, used by
inference, so training and decoding cannot drift apart.
"""

from __future__ import annotations

from captioning.backend import import_keras

keras = import_keras()
ops = keras.ops
L = keras.layers


@keras.saving.register_keras_serializable(package="captioning")
class AttentionDecoder(keras.layers.Layer):
    """[grid (B, P, C), caption ids (B, T)] → next-word probabilities (B, T, V)."""

    def __init__(self, vocab_size, embed_dim=256, units=256, attention_dim=256, dropout=0.5,
                 doubly_stochastic=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embed_dim, self.units = vocab_size, embed_dim, units
        self.attention_dim, self.dropout_rate, self.doubly_stochastic = attention_dim, dropout, doubly_stochastic
        self.embedding = L.Embedding(vocab_size, embed_dim, name="embedding")
        self.grid_attention = L.Dense(attention_dim, name="grid_attention")
        self.state_attention = L.Dense(attention_dim, name="state_attention")
        self.score = L.Dense(1, name="score")
        self.gate = L.Dense(1, activation="sigmoid", name="gate")  # β in the paper, a scalar per step
        self.init_h = L.Dense(units, activation="tanh", name="init_h")
        self.init_c = L.Dense(units, activation="tanh", name="init_c")
        self.cell = L.LSTMCell(units, name="cell")
        self.drop = L.Dropout(dropout)
        self.deep = L.Dense(embed_dim, activation="tanh", name="deep_output")
        self.out = L.Dense(vocab_size, activation="softmax", name="output")

    def build(self, input_shapes):
        grid_shape, _ = input_shapes
        c = grid_shape[-1]
        self.grid_attention.build((None, None, c))
        self.state_attention.build((None, self.units))
        self.score.build((None, None, self.attention_dim))
        self.gate.build((None, self.units))
        self.init_h.build((None, c))
        self.init_c.build((None, c))
        self.embedding.build((None,))
        self.cell.build((None, self.embed_dim + c))
        self.deep.build((None, self.units + c + self.embed_dim))
        self.out.build((None, self.embed_dim))

    # --- the two halves inference uses ---------------------------------------------------------
    def initial_state(self, grid):
        mean = ops.mean(grid, axis=1)
        return [self.init_h(mean), self.init_c(mean)]

    def step(self, grid, projected, tokens, h, c, training=False):
        """One word: returns (probs, h, c, alpha) with alpha (B, P) summing to 1."""
        emb = self.embedding(tokens)
        h, c, context, alpha = self._advance(grid, projected, emb, h, c, training)
        return self._readout(h, context, emb, training), h, c, alpha

    def _advance(self, grid, projected, emb, h, c, training):
        """Attend from the state, then one LSTM step on [word, context]: (h, c, context, alpha)."""
        e = self.score(ops.tanh(projected + self.state_attention(h)[:, None, :]))[..., 0]
        alpha = ops.softmax(e, axis=-1)
        context = ops.sum(grid * alpha[..., None], axis=1) * self.gate(h)
        h, (h, c) = self.cell(ops.concatenate([emb, context], axis=-1), [h, c], training=training)
        return h, c, context, alpha

    def _readout(self, h, context, emb, training):
        """The deep output layer: next-word probabilities from [dropout(h), context, word]."""
        return self.out(self.deep(ops.concatenate([self.drop(h, training=training), context, emb], axis=-1)))

    def call(self, inputs, training=False):
        grid, caption = inputs
        projected = self.grid_attention(grid)
        h, c = self.initial_state(grid)
        emb = self.embedding(caption)  # (B, T, E)

        def one_word(carry, emb_t):
            h, c, context, alpha = self._advance(grid, projected, emb_t, carry[0], carry[1], training)
            return (h, c, context, alpha), (h, c, context, alpha)  # Keras' TF scan: outputs shaped like the carry

        # scan, not a Python loop: the caption length may be unknown when the graph is traced. Only the
        # recurrence runs inside it: dropout draws random numbers, which JAX cannot do inside a scan's
        # body from Keras' seed state, and the readout is one large matmul over every step at once.
        batch = ops.shape(grid)[0]
        init = (h, c, ops.zeros((batch, grid.shape[-1]), h.dtype), ops.zeros((batch, grid.shape[1]), h.dtype))
        _, (hs, _, contexts, alphas) = ops.scan(one_word, init, ops.transpose(emb, (1, 0, 2)))
        hs, contexts, alphas = (ops.transpose(x, (1, 0, 2)) for x in (hs, contexts, alphas))  # batch-major
        probs = self._readout(hs, contexts, emb, training)
        if training and self.doubly_stochastic:
            real = ops.cast(ops.not_equal(caption, 0), alphas.dtype)[..., None]
            coverage = ops.sum(alphas * real, axis=1)  # (B, P): how much each cell was looked at
            self.add_loss(self.doubly_stochastic * ops.mean(ops.sum((1.0 - coverage) ** 2, axis=-1)))
        return probs

    def compute_output_shape(self, input_shapes):
        return (input_shapes[1][0], input_shapes[1][1], self.vocab_size)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
                "units": self.units, "attention_dim": self.attention_dim, "dropout": self.dropout_rate,
                "doubly_stochastic": self.doubly_stochastic}
