"""A reasoning tree: nodes are steps, a root-to-node path is a partial solution.

Nodes live in one list indexed by ``node_id`` and refer to each other by id, so a
tree of 100,000 nodes is a list of small slotted objects and checkpoints to plain
data without recursion.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class NodeStatus(IntEnum):
    # Ordered so that "is this node done growing" is one comparison.
    OPEN = 0  # a leaf that may still be expanded
    EXPANDING = 1  # a generate request for its children is in flight
    EXPANDED = 2  # has children
    TERMINAL = 3  # a final answer, or max depth reached
    PRUNED = 4  # dropped by the search

    @property
    def is_closed(self) -> bool:
        return self >= NodeStatus.EXPANDED


class Node:
    """One reasoning step. ``text`` is the step itself, without the delimiter."""

    __slots__ = (
        "node_id", "parent_id", "children", "text", "token_ids", "depth",
        "visits", "value_sum", "prior", "scores", "status", "answer", "logprob",
    )

    def __init__(self, node_id: int, parent_id: int, text: str, depth: int,
                 token_ids: tuple[int, ...] = (), prior: float = 1.0, logprob: float = 0.0):
        self.node_id = node_id
        self.parent_id = parent_id  # -1 for the root
        self.children: list[int] = []  # child node ids, in creation order
        self.text = text
        self.token_ids = token_ids
        self.depth = depth
        self.visits = 0
        self.value_sum = 0.0
        self.prior = prior
        self.scores: list[float] = []  # PRM scores of the steps root..this node, if scored
        self.status = NodeStatus.OPEN
        self.answer: str | None = None  # extracted final answer, on terminal nodes
        self.logprob = logprob  # cumulative logprob of this step under the generator

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def score(self) -> float | None:
        """The verifier's score of this step, or None before it was scored."""
        return self.scores[-1] if self.scores else None

    @property
    def is_terminal(self) -> bool:
        return self.status == NodeStatus.TERMINAL

    def __repr__(self) -> str:
        return (f"Node({self.node_id}, parent={self.parent_id}, depth={self.depth}, "
                f"status={self.status.name}, text={self.text!r})")


class Tree:
    """All nodes of one problem's search. Node 0 is the root (the prompt, no step).

    Args:
        problem_id: the problem's key in the job.
        prompt: the text every path starts with.
        delimiter: what separates steps in a prefix (a newline for step-per-line tasks).
    """

    def __init__(self, problem_id: str, prompt: str, delimiter: str = "\n"):
        self.problem_id = problem_id
        self.prompt = prompt
        self.delimiter = delimiter
        self.nodes: list[Node] = [Node(0, -1, "", 0)]  # node_id -> Node

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def add_child(self, parent_id: int, text: str, token_ids: tuple[int, ...] = (),
                  prior: float = 1.0, logprob: float = 0.0) -> Node:
        parent = self.nodes[parent_id]
        node = Node(len(self.nodes), parent_id, text, parent.depth + 1, token_ids, prior, logprob)
        self.nodes.append(node)
        parent.children.append(node.node_id)
        if parent.status < NodeStatus.EXPANDED:
            parent.status = NodeStatus.EXPANDED
        return node

    def add_chain(self, parent_id: int, steps: list[str]) -> Node:
        """Append ``steps`` one below the other under ``parent_id``; returns the last node."""
        node = self.nodes[parent_id]
        for step in steps:
            node = self.add_child(node.node_id, step)
        return node

    def path(self, node_id: int) -> list[Node]:
        """Nodes from the first step to ``node_id`` (the root excluded)."""
        nodes = self.nodes
        out = []
        node = nodes[node_id]
        while node.parent_id >= 0:
            out.append(node)
            node = nodes[node.parent_id]
        out.reverse()
        return out

    def steps(self, node_id: int) -> list[str]:
        """Step texts from the first step to ``node_id``."""
        # Walked for every request and every scored path: this skips path()'s node list.
        nodes = self.nodes
        out = []
        node = nodes[node_id]
        while node.parent_id >= 0:
            out.append(node.text)
            node = nodes[node.parent_id]
        out.reverse()
        return out

    def prefix(self, node_id: int) -> str:
        """The text a generator continues from to expand ``node_id``."""
        steps = self.steps(node_id)
        if not steps:
            return self.prompt
        return self.prompt + self.delimiter.join(steps) + self.delimiter

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if not n.children]

    def terminals(self) -> list[Node]:
        return [n for n in self.nodes if n.status == NodeStatus.TERMINAL]

    def backpropagate(self, node_id: int, value: float) -> None:
        """Add one visit with ``value`` to ``node_id`` and each of its ancestors."""
        node = self.nodes[node_id]
        while True:
            node.visits += 1
            node.value_sum += value
            if node.parent_id < 0:
                return
            node = self.nodes[node.parent_id]

    def prefix_id(self, node_id: int) -> str:
        return f"{self.problem_id}:{node_id}"

    def clear(self) -> None:
        """Drop every node but a fresh root: a finished problem's tree, once it is recorded.

        Its strategy may live on in a reference cycle until a full garbage collection;
        its nodes then go at once instead of with it.
        """
        self.nodes = [Node(0, -1, "", 0)]


def node_labels(record: dict[str, Any]) -> tuple[list[bool | None], list[float | None]]:
    """Per node of a tree record: ``(correct, success_rate)`` (``correct``: some finished path through the node reached a right answer; ``success_rate``: the share of finished paths through it with a right answer; None where no path below has a known verdict)."""
    nodes = record["nodes"]
    verdicts, no_answer = record["verdicts"], record.get("no_answer_verdict")
    wins = [0] * len(nodes)
    known = [0] * len(nodes)  # finished paths at or below each node with a known verdict
    for node_id in range(len(nodes) - 1, -1, -1):  # children always have larger ids
        parent_id, _, _, status, answer = nodes[node_id][:5]
        if status == NodeStatus.TERMINAL:
            verdict = no_answer if answer is None else verdicts.get(answer)
            if verdict is not None:
                known[node_id] += 1
                wins[node_id] += int(verdict)
        if parent_id >= 0:
            known[parent_id] += known[node_id]
            wins[parent_id] += wins[node_id]
    correct = [None if k == 0 else w > 0 for w, k in zip(wins, known)]
    rates = [None if k == 0 else w / k for w, k in zip(wins, known)]
    return correct, rates
