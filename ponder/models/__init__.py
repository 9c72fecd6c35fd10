"""The embedded default model: a small char-level GPT generator and a process reward model.

Both are trained by ``ponder train`` (``ponder.models.train``) on Game-of-24 traces,
never on the test puzzles 900-999, and ship in ``ponder/models/weights``. The
backends in ``ponder.actors.backends.embedded`` serve them to the engine;
``load_generator()`` / ``load_verifier()`` give the bare torch modules.
"""

from ponder.models.checkpoint import WEIGHTS_DIR, load_generator, load_verifier

__all__ = ["WEIGHTS_DIR", "load_generator", "load_verifier"]
