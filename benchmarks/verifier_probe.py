"""How well the verifier judges Game-of-24 states: AUC of its step score against whether the
numbers left can still make 24, by depth, on random valid partial paths of the dev puzzles
(800-899 and 1000-1099; never the test split).

    python benchmarks/verifier_probe.py [WEIGHTS_DIR]
"""
import json
import random
import sys
import torch
torch.set_num_threads(1)
from ponder.actors.backends.embedded import EmbeddedVerifier
from ponder.search.messages import ScoreRequest
from ponder.tasks import game24, arithmetic
from ponder.models.data import prompt_for
from ponder.models.exact_labels import can_make_24

def auc(pos, neg):
    if not pos or not neg: return float('nan')
    s = sorted([(x, 1) for x in pos] + [(x, 0) for x in neg])
    r = 0
    for i, (x, l) in enumerate(s):
        if l: r += i + 1
    n1, n0 = len(pos), len(neg)
    return (r - n1 * (n1 + 1) / 2) / (n1 * n0)

path = sys.argv[1] if len(sys.argv) > 1 else None
ver = EmbeddedVerifier(model_path=path)
rng = random.Random(1)
everything = game24.load_puzzles()
idx = list(range(800, 900)) + list(range(1000, 1100))
reqs, meta = [], []
for i in idx:
    nums = game24.parse_numbers(everything[i].problem)
    for _ in range(6):
        steps = game24.random_valid_steps(nums, rng, rng.choice((1, 2, 3)))
        st = arithmetic.replay(nums, steps)
        ok = can_make_24(st.numbers) if st else False
        reqs.append(ScoreRequest(len(reqs), prompt_for(nums), [steps])); meta.append((len(steps), ok))
res = ver.score(reqs)
by = {}
for (d, ok), r in zip(meta, res):
    by.setdefault(d, ([], []))[0 if ok else 1].append(r.step_scores[0][-1])
for d, (p, n) in sorted(by.items()):
    print(f"depth {d}: {len(p)} solvable {len(n)} not, auc {auc(p, n):.3f}, mean pos {sum(p)/max(1,len(p)):.3f} neg {sum(n)/max(1,len(n)):.3f}")
print(json.dumps({"benchmark": "verifier_probe", "auc_by_depth": {d: round(auc(p, n), 3) for d, (p, n) in sorted(by.items())}}))
