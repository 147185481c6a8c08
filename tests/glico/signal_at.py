"""A batch policy that sends SIGINT to this process during one of its calls: tests of interrupted trainings."""
import os
import signal

from glico.experiments.policies import load_policy_state, policy_state


class SignalAt:
    """The policy ``inner``, sending SIGINT to this process during its ``at``-th call (1-based); its state is
    ``inner``'s, so a resumed training continues ``inner``'s draws."""

    def __init__(self, inner, at):
        self.inner, self.at, self.calls = inner, at, 0

    def __call__(self, images, labels, idx):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.inner(images, labels, idx)

    def state_dict(self):
        return policy_state(self.inner)

    def load_state_dict(self, state):
        load_policy_state(self.inner, state)
