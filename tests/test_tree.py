"""Tree structure: paths, prefixes, backpropagation, and the cost of a large tree."""

import random
import tracemalloc

from ponder.search.tree import NodeStatus, Tree


def _small_tree() -> Tree:
    tree = Tree("p0", "Use 1 2 3 4 to make 24.\n")
    a = tree.add_child(0, "1 + 2 = 3")
    b = tree.add_child(0, "4 * 3 = 12")
    tree.add_chain(a.node_id, ["3 * 4 = 12", "12 * 3 = 36"])
    tree.add_child(b.node_id, "12 * 2 = 24")
    return tree


def test_ids_depths_and_parent_status():
    tree = _small_tree()
    assert len(tree) == 6
    assert [n.node_id for n in tree.nodes] == list(range(6))
    assert tree.root.children == [1, 2]
    assert [n.depth for n in tree.nodes] == [0, 1, 1, 2, 3, 2]
    assert tree[1].status == NodeStatus.EXPANDED and tree[5].status == NodeStatus.OPEN
    assert not NodeStatus.EXPANDING.is_closed and NodeStatus.TERMINAL.is_closed


def test_path_steps_and_prefix():
    tree = _small_tree()
    assert [n.node_id for n in tree.path(4)] == [1, 3, 4]
    assert tree.steps(4) == ["1 + 2 = 3", "3 * 4 = 12", "12 * 3 = 36"]
    assert tree.path(0) == [] and tree.prefix(0) == tree.prompt
    assert tree.prefix(5) == "Use 1 2 3 4 to make 24.\n4 * 3 = 12\n12 * 2 = 24\n"
    assert tree.prefix_id(5) == "p0:5"
    assert sorted(n.node_id for n in tree.leaves()) == [4, 5]


def test_custom_delimiter():
    tree = Tree("p", "Q:", delimiter=" | ")
    node = tree.add_chain(0, ["a", "b"])
    assert tree.prefix(node.node_id) == "Q:a | b | "


def test_backpropagate_updates_node_and_ancestors_only():
    tree = _small_tree()
    tree.backpropagate(4, 1.0)
    tree.backpropagate(5, 0.0)
    tree.backpropagate(3, 0.5)
    assert [n.visits for n in tree.nodes] == [3, 2, 1, 2, 1, 1]
    assert tree.root.value == 0.5
    assert tree[1].value == 0.75 and tree[3].value == 0.75
    assert tree[2].value == 0.0 and tree[4].value == 1.0
    assert tree[5].visits == 1 and tree[5].value_sum == 0.0


def test_score_and_terminals():
    tree = _small_tree()
    assert tree[5].score is None
    tree[5].scores = [0.9, 0.7]
    tree[5].status = NodeStatus.TERMINAL
    tree[5].answer = "24"
    assert tree[5].score == 0.7 and tree[5].is_terminal
    assert tree.terminals() == [tree[5]]


def test_clear_leaves_a_fresh_root():
    tree = _small_tree()
    tree.clear()
    assert len(tree) == 1 and tree.root.children == [] and tree.prefix(0) == tree.prompt


def test_hundred_thousand_nodes_fit_in_modest_memory():
    rng = random.Random(0)
    tracemalloc.start()
    try:
        tree = Tree("big", "prompt\n")
        for i in range(1, 100_000):
            tree.add_child(rng.randrange(i), f"step {i}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tree) == 100_000
    assert sum(len(n.children) for n in tree.nodes) == 99_999
    assert all(tree[n.parent_id].depth + 1 == n.depth for n in tree.nodes[1:])
    assert peak < 100 * 2**20, f"a 100k-node tree peaked at {peak / 2**20:.1f} MiB"
    deepest = max(tree.nodes, key=lambda n: n.depth)
    assert len(tree.path(deepest.node_id)) == deepest.depth
