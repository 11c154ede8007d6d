"""``EnsembleSteps``: several trained decoders caption together, one step at a time.

Each step averages the members' next-word probabilities (not their log-probabilities: a word one
member rules out stays possible if the others like it), as Show and Tell's ensembles did. Members
keep their own state, so any mix of decoders works (init-inject with merge, a run with its re-run
under another seed); they must share the vocabulary, which the ``Captioner`` checks.
"""

from __future__ import annotations

import numpy as np

from captioning.decoders.steps import StepModel


class EnsembleSteps(StepModel):
    def __init__(self, members):
        self.members = list(members)
        self._sizes = None

    def start(self, features):
        states = [m.start(features) for m in self.members]
        self._sizes = [len(s) for s in states]
        return [a for s in states for a in s]

    def _split(self, state):
        parts, i = [], 0
        for n in self._sizes:
            parts.append(state[i:i + n])
            i += n
        return parts

    def step(self, tokens, state):
        log_ps, new_state = [], []
        for member, part in zip(self.members, self._split(state)):
            log_p, part = member.step(tokens, part)
            log_ps.append(log_p)
            new_state += part
        log_ps = np.stack(log_ps)
        top = log_ps.max(axis=0)
        mean = top + np.log(np.exp(log_ps - top).mean(axis=0))  # log of the mean probability, stably
        return mean, new_state
