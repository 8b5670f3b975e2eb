"""microgpt_lib.optim against torch.optim, step by step, and its promises: no allocation per
step, flat views that alias their buffer, a state that resumes a run, errors that name the
parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from microgpt_lib import bench, optim
from microgpt_lib.autograd import Value
from microgpt_lib.config import GPTConfig, init_weights, param_shapes

SHAPES = [(5, 3), (7,), (4, 4), (1, 9)]
STEPS = 100

SETTINGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {"lr": 1e-2}),
    ("Adam", {"lr": 1e-2, "betas": (0.85, 0.99), "weight_decay": 0.1}),
    (
        "Adam",
        {"lr": 1e-2, "betas": (0.3, 0.9), "eps": 1e-6},
    ),  # the other branch of the lerp
    ("AdamW", {"lr": 1e-2}),
    ("AdamW", {"lr": 1e-2, "betas": (0.85, 0.99), "weight_decay": 0.1}),
]


def gradients(shapes=SHAPES, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def initial(shapes=SHAPES, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


def run_ours(kind, impl, settings, grads, start, groups=None):
    params = [optim.Parameter(a) for a in start]
    if impl in ("foreach", "fused"):
        optim.flatten_(params)
    spec = (
        params
        if groups is None
        else [{"params": [params[i] for i in g["idx"]], **g["opts"]} for g in groups]
    )
    opt = getattr(optim, kind)(spec, impl=impl, **settings)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad[...] = g
        opt.step()
    return [p.data for p in params]


def run_torch(kind, settings, grads, start, groups=None):
    params = [torch.tensor(a, requires_grad=True) for a in start]
    spec = (
        params
        if groups is None
        else [{"params": [params[i] for i in g["idx"]], **g["opts"]} for g in groups]
    )
    opt = getattr(torch.optim, kind)(spec, **settings)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


def assert_close(ours, reference, rtol=1e-12):
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-14)


@pytest.mark.parametrize("impl", optim.IMPLS)
@pytest.mark.parametrize("kind, settings", SETTINGS, ids=lambda x: str(x))
def test_every_implementation_equals_torch_over_100_steps(kind, settings, impl):
    grads, start = gradients(), initial()
    assert_close(
        run_ours(kind, impl, settings, grads, start),
        run_torch(kind, settings, grads, start),
    )


@pytest.mark.parametrize("impl", ["naive", "inplace"])
@pytest.mark.parametrize("kind", ["AdamW", "Adam", "SGD"])
def test_parameter_groups_with_their_own_settings(kind, impl):
    grads, start = gradients(), initial()
    groups = [
        {"idx": [0, 2], "opts": {"weight_decay": 0.1}},
        {"idx": [1, 3], "opts": {"lr": 3e-3, "weight_decay": 0.0}},
    ]
    settings = {"lr": 0.05, "momentum": 0.9} if kind == "SGD" else {"lr": 1e-2}
    ours = run_ours(kind, impl, settings, grads, start, groups)
    assert_close(ours, run_torch(kind, settings, grads, start, groups))


def test_fused_needs_flat_groups_and_flatten_lays_groups_out_in_order():
    params = [optim.Parameter(a) for a in initial()]
    with pytest.raises(ValueError, match="call optim.flatten_"):
        optim.AdamW(params, impl="fused")
    groups = [
        {"params": [params[0], params[2]], "weight_decay": 0.1},
        {"params": [params[1], params[3]], "weight_decay": 0.0},
    ]
    optim.flatten_(groups)
    opt = optim.AdamW(groups, impl="fused", lr=1e-2)
    assert all(g["flat"] is not None for g in opt.param_groups)
    grads, start = gradients(), initial()
    for p, a in zip(params, start):
        p.data[...] = a
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad[...] = g
        opt.step()
    torch_groups = [
        {"idx": [0, 2], "opts": {"weight_decay": 0.1}},
        {"idx": [1, 3], "opts": {"weight_decay": 0.0}},
    ]
    assert_close(
        [p.data for p in params],
        run_torch("AdamW", {"lr": 1e-2}, grads, start, torch_groups),
    )


def test_a_large_buffer_runs_on_threads_and_gives_the_same_numbers(monkeypatch):
    shapes = [(300, 300), (40_000,)]  # above PARALLEL_MIN in all
    grads, start = gradients(shapes, steps=3), initial(shapes)
    assert sum(int(np.prod(s)) for s in shapes) >= optim.PARALLEL_MIN
    calls = []
    for name in ("adam_kernel_parallel", "sgd_kernel_parallel"):
        real = getattr(optim, name)
        monkeypatch.setattr(
            optim, name, lambda *a, real=real, name=name: calls.append(name) or real(*a)
        )
    for kind, settings in (
        ("AdamW", {"lr": 1e-2}),
        ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ):
        fused = run_ours(kind, "fused", settings, grads, start)
        assert_close(fused, run_ours(kind, "naive", settings, grads, start), rtol=0)
    assert calls == ["adam_kernel_parallel"] * 3 + ["sgd_kernel_parallel"] * 3


def test_flat_views_alias_their_buffer():
    params = [optim.Parameter(a) for a in initial()]
    before = [p.data.copy() for p in params]
    data, grad = optim.flatten_(params)
    assert data.size == sum(int(np.prod(s)) for s in SHAPES)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)  # the values moved, unchanged
    params[2].data[1, 1] = 123.0
    assert 123.0 in data
    data[0] = -7.0
    assert params[0].data[0, 0] == -7.0
    params[1].grad[3] = 5.0
    assert grad[15 + 3] == 5.0  # after the 5 x 3 parameter
    opt = optim.AdamW(params)
    assert (
        opt.param_groups[0]["flat"][0] is not None
        and opt._impl_for(opt.param_groups[0]) == "fused"
    )


@pytest.mark.parametrize("impl", ["inplace", "foreach", "fused"])
@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize(
    "sizes", [[(64, 16), (16,)], [(512, 512)]], ids=["small", "large"]
)
def test_an_in_place_step_allocates_nothing(kind, impl, sizes):
    params = [optim.Parameter(a) for a in initial(sizes)]
    if impl != "inplace":
        optim.flatten_(params)
    settings = (
        {"momentum": 0.9, "weight_decay": 0.01}
        if kind == "SGD"
        else {"weight_decay": 0.01}
    )
    opt = getattr(optim, kind)(params, impl=impl, **settings)
    for p in params:
        p.grad[...] = 0.5
    opt.step()  # the first step (SGD copies into its momentum buffer)
    assert bench.peak_allocation(opt.step) < 1024


def test_the_naive_step_allocates_temporaries():
    params = [optim.Parameter(np.ones((256, 256)))]
    opt = optim.Adam(params, impl="naive")
    assert bench.peak_allocation(opt.step) > 256 * 256 * 8


def test_state_dict_resumes_a_run_exactly():
    grads, start = gradients(), initial()
    straight = run_ours("AdamW", "fused", {"lr": 1e-2}, grads, start)
    params = [optim.Parameter(a) for a in start]
    optim.flatten_(params)
    opt = optim.AdamW(params, lr=1e-2)
    for step_grads in grads[:50]:
        for p, g in zip(params, step_grads):
            p.grad[...] = g
        opt.step()
    saved, weights = opt.state_dict(), [p.data.copy() for p in params]
    assert saved["kind"] == "AdamW" and saved["step"] == 50
    again = [optim.Parameter(w) for w in weights]
    optim.flatten_(again)
    resumed = optim.AdamW(again, lr=0.5)  # the state brings lr back too
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == 1e-2 and resumed.step_count == 50
    for step_grads in grads[50:]:
        for p, g in zip(again, step_grads):
            p.grad[...] = g
        resumed.step()
    assert_close([p.data for p in again], straight, rtol=0)


def test_state_dict_errors_name_what_differs():
    params = [optim.Parameter(a) for a in initial()]
    state = optim.Adam(params).state_dict()
    with pytest.raises(
        ValueError, match="this is a AdamW optimizer; the state is from 'Adam'"
    ):
        optim.AdamW(params).load_state_dict(state)
    others = [optim.Parameter(a) for a in initial([(5, 3), (7,)])]
    with pytest.raises(ValueError, match="parameters"):
        optim.Adam(others).load_state_dict(state)
    state["state"]["0"]["exp_avg"] = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"state 'exp_avg' of '0' has shape \[3, 5\]"):
        optim.Adam(params).load_state_dict(state)


def test_a_non_finite_gradient_stops_the_step_and_changes_nothing():
    params = [optim.Parameter(a) for a in initial()]
    optim.flatten_(params)
    opt = optim.AdamW(dict(zip(["wte", "bias", "wq", "head"], params)))
    params[2].grad[1, 2] = np.nan
    before = [p.data.copy() for p in params]
    with pytest.raises(FloatingPointError, match="parameter 'wq' is not finite"):
        opt.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)
    assert opt.step_count == 0


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"lr": -1.0}, "lr must be in"),
        ({"betas": (1.0, 0.9)}, r"beta1 must be in \[0.0, 1.0\)"),
        ({"betas": (0.9, -0.1)}, "beta2 must be in"),
        ({"betas": 0.9}, "betas must be a pair"),
        ({"eps": 0.0}, r"eps must be in \(0.0"),
        ({"weight_decay": -0.1}, "weight_decay must be in"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        optim.Adam([optim.Parameter(np.ones(3))], **settings)


def test_bad_parameters_are_named():
    class NoGrad:
        data = np.ones(3)

    with pytest.raises(TypeError, match="parameter 'w' has no .grad array"):
        optim.SGD([("w", NoGrad())])
    p = optim.Parameter(np.ones((2, 3)))
    p.grad = np.zeros((3, 2))
    with pytest.raises(
        ValueError,
        match=r"parameter '0': .grad is float64\[3, 2\], .data is float64\[2, 3\]",
    ):
        optim.SGD([p])
    p.grad = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="they must match"):
        optim.SGD([p])
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        optim.SGD([optim.Parameter(np.ones(2))], nesterov=True)
    with pytest.raises(ValueError, match="impl must be"):
        optim.SGD([optim.Parameter(np.ones(2))], impl="gpu")


def test_zero_grad_keeps_the_arrays():
    params = [optim.Parameter(a) for a in initial()]
    grads = [p.grad for p in params]
    for g in grads:
        g += 1.0
    optim.SGD(params).zero_grad()
    assert all(p.grad is g and not g.any() for p, g in zip(params, grads))


def test_gpt_params_and_decay_groups():
    config = GPTConfig(vocab_size=27)
    weights = init_weights(config).map(lambda m: optim.Parameter(np.array(m)))
    opt = optim.AdamW(weights)
    assert [n for n, _ in opt.param_groups[0]["params"]][:3] == ["wte", "wpe", "lm_head"]
    assert (
        sum(p.data.size for _, p in opt.param_groups[0]["params"]) == config.num_params()
    )
    groups = optim.decay_groups(
        [("w", optim.Parameter(np.ones((2, 2)))), ("b", optim.Parameter(np.ones(2)))], 0.1
    )
    assert [(g["weight_decay"], [n for n, _ in g["params"]]) for g in groups] == [
        (0.1, ["w"]),
        (0.0, ["b"]),
    ]
    assert param_shapes(config).wte == (27, 16)


def test_clip_grad_norm_equals_torch():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s) * 10 for s in SHAPES]
    for max_norm in (1.0, 1e6):
        params = [optim.Parameter(np.zeros(s)) for s in SHAPES]
        tensors = [
            torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES
        ]
        for p, t, a in zip(params, tensors, arrays):
            p.grad[...] = a
            t.grad = torch.tensor(a)
        total = optim.clip_grad_norm(params, max_norm)
        reference = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
        assert total == pytest.approx(float(reference), rel=1e-13)
        for p, t in zip(params, tensors):
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-13)
    params[0].grad[0, 0] = np.inf
    assert optim.clip_grad_norm(params, 1.0) == math.inf
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm(params, 0.0)


def test_schedules():
    constant = optim.constant_lr(0.1)
    assert constant(0) == constant(999) == 0.1
    linear = optim.linear_decay_lr(0.01, 1000)
    assert linear(0) == 0.01 and linear(500) == pytest.approx(0.005) and linear(999) > 0
    cosine = optim.warmup_cosine_lr(1e-3, warmup=10, decay_steps=110, min_lr=1e-4)
    assert cosine(0) == pytest.approx(1e-3 / 11) and cosine(9) == pytest.approx(
        1e-3 * 10 / 11
    )
    assert cosine(10) == pytest.approx(1e-3) and cosine(60) == pytest.approx(5.5e-4)
    assert cosine(110) == pytest.approx(1e-4) and cosine(500) == 1e-4
    values = [cosine(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # decays monotonically
    with pytest.raises(ValueError, match="warmup < decay_steps"):
        optim.warmup_cosine_lr(1e-3, warmup=10, decay_steps=5)
    with pytest.raises(ValueError, match="min_lr"):
        optim.warmup_cosine_lr(1e-3, 0, 10, min_lr=1e-2)
    opt = optim.SGD([optim.Parameter(np.ones(2))])
    optim.set_lr(opt, cosine(3))
    assert opt.param_groups[0]["lr"] == cosine(3)


def test_value_adam_is_microgpts_update():
    xs = [Value(0.5), Value(-1.5)]
    opt = optim.ValueAdam(xs)
    reference = [0.5, -1.5]
    m, v = [0.0, 0.0], [0.0, 0.0]
    for t in range(1, 4):
        for x, g in zip(xs, (0.3, -0.2)):
            x.grad = g
        opt.step(0.01)
        for i, g in enumerate((0.3, -0.2)):
            m[i] = 0.85 * m[i] + 0.15 * g
            v[i] = 0.99 * v[i] + 0.01 * g * g
            reference[i] -= (
                0.01 * (m[i] / (1 - 0.85**t)) / ((v[i] / (1 - 0.99**t)) ** 0.5 + 1e-8)
            )
    assert [x.data for x in xs] == reference and all(x.grad == 0.0 for x in xs)


def test_check_finite_false_skips_the_check():
    params = [optim.Parameter(np.ones(3))]
    opt = optim.SGD(params, lr=0.1, check_finite=False)
    params[0].grad[0] = np.nan
    opt.step()  # the caller promised finite gradients: the nan goes through, as in torch
    assert np.isnan(params[0].data[0]) and opt.step_count == 1
