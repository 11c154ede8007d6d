"""``SequenceLSTM``: the fast path's LSTM, same weights and maths, a cheaper backward pass.

Autodiff through a Keras LSTM's loop forms the weight gradients step by step: every step
multiplies its own slice and adds it to running sums the size of the weights. Here the input
projection of all steps is one matmul, the backward loop carries only what depends on the
previous step, and each weight gradient is one matmul over all steps at the end, as cuDNN
organises it. That saves a good part of a CPU training step. On a GPU, Keras' own LSTM runs
instead (cuDNN, where the backend has it).
"""

from __future__ import annotations

from captioning import hardware
from captioning.backend import import_keras

keras = import_keras()
ops = keras.ops


def lstm_sequence(x, h0, c0, kernel, recurrent_kernel, bias):
    """Every step's hidden and cell state, (B, T, 2·units) = [h | c], for inputs x (B, T, D).

    Keras' gate order (i, f, c, o), sigmoid gates, tanh cell; no masking.
    """

    @ops.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        xt = ops.transpose(x, (1, 0, 2))  # time-major for scan
        zx = ops.matmul(xt, kernel) + bias  # (T, B, 4U): all steps at once

        def step(carry, z):
            h, c, _ = carry
            z = z + ops.matmul(h, recurrent_kernel)
            i, f, g, o = ops.split(z, 4, axis=-1)
            i, f, g, o = ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)
            c = f * c + i * g
            h = o * ops.tanh(c)
            gates = ops.concatenate([i, f, g, o], axis=-1)
            return (h, c, gates), (h, c, gates)  # Keras' TensorFlow scan needs outputs shaped as the carry

        _, (hs, cs, gates) = ops.scan(step, (h0, c0, ops.zeros_like(zx[0])), zx)
        out = ops.transpose(ops.concatenate([hs, cs], axis=-1), (1, 0, 2))

        def grad(*args, upstream=None):
            d_out = ops.transpose(upstream if upstream is not None else args[0], (1, 0, 2))
            dhs, dcs = ops.split(d_out, 2, axis=-1)
            c_prev = ops.concatenate([c0[None], cs[:-1]], axis=0)
            h_prev = ops.concatenate([h0[None], hs[:-1]], axis=0)
            recurrent_t = ops.transpose(recurrent_kernel)
            units = ops.shape(h0)[-1]

            def back(carry, elems):
                dh_next, dc_next, _ = carry
                dh, dc, c, cp, i, f, g, o = (elems[:, k * units:(k + 1) * units] for k in range(8))
                dh = dh + dh_next
                tc = ops.tanh(c)
                dc = dc + dc_next + dh * o * (1 - tc * tc)
                dz = ops.concatenate([dc * g * i * (1 - i), dc * cp * f * (1 - f), dc * i * (1 - g * g),
                                      dh * tc * o * (1 - o)], axis=-1)
                carry = (ops.matmul(dz, recurrent_t), dc * f, dz)
                return carry, carry

            # one packed sequence: Keras' TensorFlow scan cannot check several of unknown length
            elems = ops.concatenate([dhs, dcs, cs, c_prev, gates], axis=-1)
            (dh0, dc0, _), (_, _, dz) = ops.scan(back, (ops.zeros_like(h0), ops.zeros_like(c0), ops.zeros_like(zx[0])),
                                                 elems, reverse=True)
            dz_flat = ops.reshape(dz, (-1, ops.shape(dz)[-1]))
            x_flat = ops.reshape(xt, (-1, ops.shape(x)[-1]))
            d_kernel = ops.matmul(ops.transpose(x_flat), dz_flat)
            d_recurrent = ops.matmul(ops.transpose(ops.reshape(h_prev, (-1, ops.shape(h_prev)[-1]))), dz_flat)
            d_bias = ops.sum(dz_flat, axis=0)
            dx = ops.transpose(ops.matmul(dz, ops.transpose(kernel)), (1, 0, 2))
            return dx, dh0, dc0, d_kernel, d_recurrent, d_bias

        return out, grad

    # weights read here, as tensors: TensorFlow's eager custom gradient refuses variables read inside
    return run(x, h0, c0, *(ops.copy(w) for w in (kernel, recurrent_kernel, bias)))


@keras.saving.register_keras_serializable(package="captioning")
class SequenceLSTM(keras.layers.LSTM):
    """``keras.layers.LSTM`` for the teacher-forced fast path, computed by ``lstm_sequence``.

    Padded steps are computed, not skipped: in the fast path they follow every real step and
    carry zero loss weight, so no real output depends on them. On a GPU, and in any other
    configuration (dropout inside the cell, other activations, reversed or stateful, a mask with
    a single output), Keras' own implementation runs.
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):  # private: keras_private.LSTM_HOOK
        cell = self.cell
        plain = (cell.activation is keras.activations.tanh and cell.recurrent_activation is keras.activations.sigmoid
                 and cell.use_bias and not (cell.dropout or cell.recurrent_dropout or self.go_backwards
                                            or self.stateful or self.unroll)
                 and (mask is None or self.return_sequences) and not hardware.gpu_visible())
        if not plain:
            return super().inner_loop(sequences, initial_state, mask, training)
        out = lstm_sequence(sequences, initial_state[0], initial_state[1], cell.kernel, cell.recurrent_kernel,
                            cell.bias)
        hs, cs = ops.split(out, 2, axis=-1)
        return hs[:, -1], hs, [hs[:, -1], cs[:, -1]]
