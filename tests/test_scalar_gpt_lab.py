"""microgpt_lib.scalar_gpt_lab: graph sizes, the side-by-side runs, sampling with and without
the KV cache, and the exercises' checkers (each passes its reference, fails a wrong one)."""

import random

import pytest

from microgpt_lib import scalar_gpt as sg
from microgpt_lib import scalar_gpt_lab as lab
from microgpt_lib.autograd import Value
from microgpt_lib.config import GPTConfig

TOL = 1e-9


def test_fast_graph_is_much_smaller(config, tokenizer):
    model = sg.ScalarGPT.init(config)
    tokens = tokenizer.encode_document("emma")
    nodes_plain, edges_plain = lab.graph_size(sg.document_loss(model, tokens, "plain"))
    nodes_fast, edges_fast = lab.graph_size(sg.document_loss(model, tokens, "fast"))
    # both graphs contain the 4,192 parameters (the leaves); the plain one ~10x more on top
    assert nodes_fast > 4192 and nodes_plain - 4192 > 10 * (nodes_fast - 4192)
    assert edges_plain > 1.5 * edges_fast


def test_side_by_side_rows(names, tokenizer):
    rows = lab.side_by_side(
        names[:50], tokenizer, 2, variants=(("plain", False), ("fast", True))
    )
    assert [(r["impl"], r["gc"]) for r in rows] == [
        ("plain", "enabled"),
        ("fast", "paused"),
    ]
    for row in rows:
        assert (
            row["steps"] == 2 and len(row["losses"]) == 2 and row["max_loss_diff"] < TOL
        )
        assert row["ms_per_step"] > 0 and row["speedup"] > 0
        assert {f"{p}_ms" for p in lab.PHASES} <= set(row)
    assert rows[0]["nodes_per_step"] > rows[1]["nodes_per_step"]
    assert rows[0]["speedup"] == 1.0
    # microgpt's recipe: the first step trains start_run's model on start_run's first name
    model, order, _ = sg.start_run(names[:50], GPTConfig(vocab_size=27), 42)
    first = sg.document_loss(model, tokenizer.encode_document(order[0]), "plain").data
    assert rows[0]["losses"][0] == first


def test_microgpt_reference_start_is_start_run(config, names):
    order, state_dict, rng = lab.microgpt_reference_start(names, config, 42)
    model, order_run, rng_run = sg.start_run(names, config, 42)
    assert order == order_run
    flat = [w for matrix in state_dict.values() for row in matrix for w in row]
    assert flat == [p.data for p in model.parameters()]
    assert rng.getstate() == rng_run.getstate()


def test_backward_passes_are_timed_per_edge(config, tokenizer):
    model = sg.ScalarGPT.init(config)
    row = lab.backward_passes(model, tokenizer.encode_document("emma"), repeats=1)
    assert row["impl"] == "fast" and row["edges"] > row["nodes"] > 4192
    assert row["sort_ms"] > 0 and row["chain_ms"] > 0
    assert row["sort_ns_per_edge"] == pytest.approx(1e6 * row["sort_ms"] / row["edges"])
    assert all(p.grad == 0.0 for p in model.parameters())  # it worked on a twin


def test_sampling_without_the_cache_draws_the_same_names(config, tokenizer):
    model = sg.ScalarGPT.init(config, 4)
    tokens = tokenizer.encode_document("isabella")[:-1]
    keys, values = sg.new_cache(config)
    for pos, token in enumerate(tokens):
        cached = sg.gpt(model, token, pos, keys, values)
    recomputed = lab.logits_recomputed(model, tokens)
    assert [v.data for v in recomputed] == [v.data for v in cached]  # bit for bit
    for seed in (0, 1):
        assert lab.sample_recompute(model, tokenizer, 6, 0.8, seed) == sg.sample(
            model, tokenizer, 6, 0.8, seed
        )
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        lab.sample_recompute(model, tokenizer, temperature=-1)


def test_kv_cache_rows_and_sampling_rows(config, tokenizer):
    model = sg.ScalarGPT.init(config, 4)
    rows = lab.kv_cache_rows(model, tokenizer.encode_document("anna"), repeats=1)
    assert [r["position"] for r in rows] == list(range(6))
    assert all(r["cached_ms"] > 0 and r["recompute_ms"] > 0 for r in rows)
    with pytest.raises(ValueError, match="need 1 to 16 tokens"):
        lab.kv_cache_rows(model, [26] * 17)
    cached, recompute = lab.sampling_rows(model, tokenizer, 3, repeats=1)
    assert (cached["sampler"], recompute["sampler"]) == ("KV cache", "recompute")
    assert cached["same_names"] and recompute["same_names"]
    assert cached["tokens"] == recompute["tokens"] >= 3
    # n tokens: n positions with the cache, n(n+1)/2 without
    assert cached["positions"] == cached["tokens"] < recompute["positions"]
    assert cached["tokens_per_s"] > 0 and recompute["ms_per_name"] > 0


# ---- the exercises' checkers


def _softmax_fused_diagonal_only(logits):
    # a plausible slip: only d p_i / d z_i, as if the other logits did not matter
    p = sg.softmax_floats([v.data for v in logits])
    zs = tuple(logits)
    return [
        Value(pi, zs, tuple(pi * (1 - pi) if j == i else 0.0 for j in range(len(p))))
        for i, pi in enumerate(p)
    ]


def test_check_softmax_fused():
    assert "match" in lab.check_softmax_fused(lab.reference_softmax_fused)
    with pytest.raises(AssertionError, match="i != j"):
        lab.check_softmax_fused(_softmax_fused_diagonal_only)
    with pytest.raises(AssertionError, match="one node per output"):
        lab.check_softmax_fused(sg.softmax)  # the plain blocks are correct, not fused


def _rmsnorm_gain_forgets_gain_in_scale(x, gain, eps):
    # a plausible slip: d(out_j)/d(scale) written as x_j, forgetting the gain
    out = lab.reference_rmsnorm_gain(x, gain, eps)
    for node, v in zip(out, x):
        local = node._local_grads
        node._local_grads = (local[0], v.data, local[2])
    return out


def test_check_rmsnorm_gain():
    assert "match" in lab.check_rmsnorm_gain(lab.reference_rmsnorm_gain)
    with pytest.raises(AssertionError, match=r"gradient reaching x\["):
        lab.check_rmsnorm_gain(_rmsnorm_gain_forgets_gain_in_scale)
    with pytest.raises(AssertionError, match="new nodes"):
        lab.check_rmsnorm_gain(
            lambda x, gain, eps: [g * y for g, y in zip(gain, sg.rmsnorm(x, eps))]
        )


def _complete_recomputing(model, tokenizer, prefix, count, temperature, seed):
    # right names, wrong cost: the whole prefix runs again for every new token
    rng = random.Random(seed)
    names = []
    for _ in range(count):
        tokens = [tokenizer.bos, *tokenizer.encode(prefix)]
        while len(tokens) < model.config.block_size + 1:
            token = sg.next_token(lab.logits_recomputed(model, tokens), temperature, rng)
            if token == tokenizer.bos:
                break
            tokens.append(token)
        names.append(tokenizer.decode(tokens))
    return names


def _complete_reseeding(model, tokenizer, prefix, count, temperature, seed):
    # a plausible slip: a fresh generator per name, so every name is the same
    return [
        lab.reference_complete(model, tokenizer, prefix, 1, temperature, seed)[0]
        for _ in range(count)
    ]


def test_check_complete(config, tokenizer):
    model = sg.ScalarGPT.init(config, 6)
    assert "same names" in lab.check_complete(lab.reference_complete, model, tokenizer)
    assert _complete_recomputing(model, tokenizer, "ma", 8, 0.8, 1) == (
        lab.reference_complete(model, tokenizer, "ma", 8, 0.8, 1)
    )
    with pytest.raises(AssertionError, match="computed again"):
        lab.check_complete(_complete_recomputing, model, tokenizer)
    with pytest.raises(AssertionError, match="one generator for all the names"):
        lab.check_complete(_complete_reseeding, model, tokenizer)
    with pytest.raises(ValueError, match="longer than the context"):
        lab.reference_complete(model, tokenizer, "a" * 16)


def test_suite_runs_quick(suite_options):
    rows = lab.suite_scalar_gpt(suite_options(steps=2))
    assert [r["kind"] for r in rows] == ["step"] * 4 + ["curve"]
    assert len(rows[-1]["losses"]) == 2 and rows[-1]["samples"]
