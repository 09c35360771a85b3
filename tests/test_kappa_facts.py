"""Each κ carries its own facts (issue 11, item 3), and the rest of lionk reads them.

* The built-ins' facts against theory.md §6 (written out here by hand, not read from lionk).
* ``register`` checks the facts a user κ states (ternary, lipschitz, constraint, tier).
* ``to_spec``/``from_spec`` round trips, through ``LionK`` and ``lionk.torch.LionK`` state dicts.
* A user-registered κ works where a built-in does: ``lionk.minimize(radius=...)`` (its radius
  rule), ``lionk.plot.history`` (its norm's label and radius line), ``communication="sign-vote"``
  (when it states ``ternary=True``; refused otherwise) and the conformance suite.
"""

from __future__ import annotations

import importlib.util
import math

import array_api_compat
import numpy as np
import pytest

import lionk
from lionk.kappa import Constraint, Kappa, KappaValidationError, exact_sign

from ._util import textbook

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
HAVE_STRICT = importlib.util.find_spec("array_api_strict") is not None

INF = math.inf

# name, params -> (norm, order, bounded, ternary, discontinuities, lipschitz, tier), theory.md §6
# (the textbook forms: ``textbook(name, **params)``; the defaults are normalised, see below)
BUILTIN_FACTS = [
    ("sign", {}, ("linf", INF, True, True, (0.0,), None, "bitwise")),
    ("huber", {"delta": 0.5}, ("linf", INF, True, False, (), 2.0, "bitwise")),
    ("deadzone", {"e": 0.25}, ("linf", INF, True, True, (-0.25, 0.25), None, "bitwise")),
    ("relativistic", {"delta": 4.0}, ("linf", INF, True, False, (), 0.25, "ulp")),
    ("quadratic", {}, ("l2", 2.0, False, False, (), 1.0, "bitwise")),
    ("l2", {}, ("l2", 2.0, True, False, (), None, "ulp")),
    ("l2", {"scope": "global"}, ("l2", 2.0, True, False, (), None, "ulp")),
    ("lp", {"p": 3.0}, ("lq", 1.5, True, False, (), None, "ulp")),
    ("lp", {"p": 1.5, "scope": "global"}, ("lq", 3.0, True, False, (), None, "ulp")),
    ("relativistic-l2", {"delta": 2.0}, ("l2", 2.0, True, False, (), 0.5, "ulp")),
]


@pytest.mark.parametrize(("name", "params", "facts"), BUILTIN_FACTS,
                         ids=[f"{n}{p}" for n, p, _ in BUILTIN_FACTS])
def test_builtin_facts(name: str, params: dict, facts: tuple) -> None:
    norm, order, bounded, ternary, disc, lip, tier = facts
    k = textbook(name, **params)
    c = k.constraint
    assert (c.norm, c.order, c.bounded, c.scale) == (norm, order, bounded, 1.0)
    assert c.scope == params.get("scope", "tensor")
    assert k.ternary is ternary
    assert k.discontinuities == disc
    assert k.lipschitz == lip
    assert k.tier == tier and k.exact is (tier == "bitwise")
    assert c.radius(0.5) == 2.0 and c.weight_decay_for(4.0) == 0.25  # radius = 1/λ
    lionk.kappa.validate(k)  # the stated facts hold on validate's probes
    facts_dict = k.facts()
    assert facts_dict["constraint"]["norm"] == norm and facts_dict["tier"] == tier


# name -> the norm of the constraint at the defaults: a length measured from the input at every
# step ("auto"), or quadratic's division by RMS(y), is not elementwise and not one fixed K
AUTO_DEFAULTS = [("huber", "linf"), ("relativistic", "linf"), ("deadzone", "linf"),
                 ("relativistic-l2", "l2"), ("quadratic", "l2")]


@pytest.mark.parametrize(("name", "norm"), AUTO_DEFAULTS, ids=[n for n, _ in AUTO_DEFAULTS])
def test_auto_defaults_state_ulp_and_not_separable(name: str, norm: str) -> None:
    k = lionk.kappa.get(name)
    assert k.tier == "ulp" and not k.exact and not k.separable
    c = k.constraint
    assert (c.norm, c.bounded, c.scale) == (norm, True, 1.0)
    assert c.radius(0.5) == 2.0  # radius = 1/λ


def test_constraint_evaluate_against_numpy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(5)
    flat = np.concatenate([a.ravel(), b])
    assert Constraint("linf").evaluate([a, b]) == np.max(np.abs(flat))
    assert Constraint("l2").evaluate([a, b]) == pytest.approx(max(np.linalg.norm(a), np.linalg.norm(b)),
                                                              rel=1e-15)
    assert Constraint("l2", scope="global").evaluate([a, b]) == pytest.approx(
        np.linalg.norm(flat), rel=1e-14)
    assert Constraint("lq", order=3.0, scope="global").evaluate([a, b]) == pytest.approx(
        np.sum(np.abs(flat) ** 3) ** (1 / 3), rel=1e-14)
    assert Constraint("l1").evaluate(a) == pytest.approx(np.sum(np.abs(a)), rel=1e-15)
    spectral = Constraint("spectral", measure=lambda x: np.linalg.norm(x, 2))
    assert spectral.evaluate(a) == np.linalg.norm(a, 2) and spectral.label == "‖x‖ (spectral)"
    assert math.isnan(Constraint("custom").evaluate(a))
    assert Constraint("linf").evaluate([]) == 0.0


@pytest.mark.parametrize(("kwargs", "exc", "fragment"), [
    ({"norm": ""}, TypeError, "norm must be a non-empty str"),
    ({"norm": "lq", "order": 0.5}, ValueError, "order must be >= 1"),
    ({"norm": "linf", "scale": 0.0}, ValueError, "scale must be > 0"),
    ({"norm": "linf", "scope": "layer"}, ValueError, "scope must be 'tensor' or 'global'"),
    ({"norm": "x", "measure": 3}, TypeError, "measure must be callable"),
])
def test_constraint_arguments_are_checked(kwargs, exc, fragment) -> None:
    with pytest.raises(exc, match=fragment):
        Constraint(**kwargs)


# ---------------------------------------------------------------------------------------------
# User κ with facts.


def _abs_sum(y):
    xp = array_api_compat.array_namespace(y)
    return xp.sum(xp.abs(y))


def scaled_sign(s: float = 2.0) -> Kappa:
    """K = s‖y‖₁: Lion in the box ‖x‖_∞ ≤ s/λ (docs/kappa.md's example, with its facts)."""
    s = float(s)
    inv_s = 1.0 / s

    def grad(y):
        return exact_sign(y) * s

    def value(y):
        return _abs_sum(y) * s

    def domain_distance(z):
        xp = array_api_compat.array_namespace(z)
        if z.ndim == 0 or math.prod(z.shape) == 0:
            return xp.maximum(xp.abs(z) * inv_s - 1.0, xp.zeros_like(z)) if z.ndim == 0 \
                else xp.asarray(0.0, dtype=z.dtype)
        return xp.max(xp.maximum(xp.abs(z) * inv_s - 1.0, xp.zeros_like(z)))

    def conjugate(z):
        xp = array_api_compat.array_namespace(z)
        d = domain_distance(z)
        return xp.where(d > 0, xp.full_like(d, xp.inf), xp.zeros_like(d))

    return Kappa("scaled-sign", grad=grad, value=value, conjugate=conjugate,
                 domain_distance=domain_distance, separable=True, params={"s": s},
                 tier="bitwise", discontinuities=(0.0,),
                 constraint=Constraint("linf", scale=s, problem="‖x‖_∞ ≤ s/λ"))


def threshold_vote(t: float = 0.05) -> Kappa:
    """K = Σ max(|y_i| − t, 0): a vote that abstains where |c| ≤ t (deadzone, written by a user)."""
    t = float(t)

    def grad(y):
        xp = array_api_compat.array_namespace(y)
        return xp.where(y > t, 1.0, xp.where(y < -t, -1.0, xp.where(y == y, 0.0, y)))

    def value(y):
        xp = array_api_compat.array_namespace(y)
        return xp.sum(xp.maximum(xp.abs(y) - t, xp.zeros_like(y)))

    def domain_distance(z):
        xp = array_api_compat.array_namespace(z)
        if math.prod(z.shape) == 0:
            return xp.asarray(0.0, dtype=z.dtype)
        return xp.max(xp.maximum(xp.abs(z) - 1.0, xp.zeros_like(z)))

    def conjugate(z):
        xp = array_api_compat.array_namespace(z)
        d = domain_distance(z)
        zc = xp.clip(z, -1.0, 1.0)
        return xp.where(d > 0, xp.full_like(d, xp.inf), xp.sum(xp.abs(zc)) * t)

    return Kappa("threshold-vote", grad=grad, value=value, conjugate=conjugate,
                 domain_distance=domain_distance, separable=True, params={"t": t},
                 tier="bitwise", ternary=True, discontinuities=(-t, t),
                 constraint=Constraint("linf", problem="‖x‖_∞ ≤ 1/λ, plus t‖x‖₁"))


@pytest.fixture
def registered():
    lionk.kappa.register("scaled-sign", scaled_sign)
    lionk.kappa.register("threshold-vote", threshold_vote)
    try:
        yield
    finally:
        lionk.kappa.unregister("scaled-sign")
        lionk.kappa.unregister("threshold-vote")


def _with(k: Kappa, **facts) -> Kappa:
    """``k`` rebuilt from its callables with other facts."""
    kw = dict(grad=k._grad_fn, value=k._value_fn, conjugate=k._conjugate_fn,
              domain_distance=k._distance_fn, separable=k.separable, params=k.params,
              tier=k.tier, ternary=k.ternary, discontinuities=k.discontinuities,
              lipschitz=k.lipschitz, constraint=k.constraint)
    kw.update(facts)
    return Kappa(k.name, **kw)


@pytest.mark.parametrize(("facts", "fragment"), [
    ({"ternary": True}, "states ternary=True, but grad takes values other than -1, 0, +1"),
    ({"constraint": Constraint("linf")}, "states the constraint ‖x‖_∞ <= 1/λ, but dom K* disagrees"),
    ({"constraint": Constraint("l1", scale=2.0)}, "dom K* disagrees"),
    ({"constraint": Constraint("linf", scale=2.0, bounded=False)}, "states an unbounded constraint"),
    ({"lipschitz": 1e6}, "states lipschitz=1000000.0, but"),
])
def test_register_checks_the_stated_facts(facts: dict, fragment: str) -> None:
    bad = _with(scaled_sign(2.0), **facts)
    with pytest.raises(KappaValidationError, match="kappa 'scaled-sign'") as info:
        lionk.kappa.register("scaled-sign", bad)
    assert fragment in str(info.value)
    assert "scaled-sign" not in lionk.kappa.available()


def test_kappa_fact_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="tier must be one of"):
        Kappa("x", tier="exact")
    with pytest.raises(ValueError, match="exact=True contradicts tier='ulp'"):
        Kappa("x", exact=True, tier="ulp")
    with pytest.raises(TypeError, match="constraint must be a lionk.kappa.Constraint"):
        Kappa("x", constraint="linf")
    with pytest.raises(ValueError, match="lipschitz must be >= 0"):
        Kappa("x", lipschitz=-1.0)
    with pytest.raises(TypeError, match="grad must be callable"):
        Kappa("x", grad=1.0)
    k = Kappa("x")
    assert (k.tier, k.constraint, k.ternary, k.discontinuities, k.lipschitz) == (
        "ulp", None, False, (), None)
    k.exact = True
    assert k.tier == "bitwise"


# ---------------------------------------------------------------------------------------------
# Specs.


@pytest.mark.parametrize(("name", "params"), [(n, p) for n, p, _ in BUILTIN_FACTS])
def test_spec_round_trip_builtins(name: str, params: dict) -> None:
    for k in (lionk.kappa.get(name, **params), textbook(name, **params)):
        spec = k.to_spec()
        assert spec == {"name": name, "params": k.params}
        assert lionk.kappa.from_spec(spec) == k
        assert Kappa.from_spec(spec) == k


def test_spec_errors_and_like() -> None:
    k = scaled_sign(3.0)  # not registered: from_spec keeps the κ it was given
    assert lionk.kappa.from_spec(k.to_spec(), like=k) is k
    with pytest.raises(KeyError, match=r"where: cannot rebuild kappa 'scaled-sign'.*register it"):
        lionk.kappa.from_spec(k.to_spec(), where="where")
    with pytest.raises(TypeError, match=r"kappa: expected a kappa name \(str\), a lionk.kappa.Kappa"):
        lionk.kappa.from_spec({"name": "sign"})
    with pytest.raises(TypeError, match=r"cannot rebuild kappa 'huber'.*invalid parameters"):
        lionk.kappa.from_spec({"name": "huber", "params": {"d": 1.0}})
    assert lionk.kappa.from_spec("lion") == lionk.kappa.get("sign")


def test_state_dict_round_trip_with_a_registered_user_kappa(registered) -> None:
    x = np.linspace(-1.0, 1.0, 5)
    opt = lionk.LionK(x, lr=0.01, kappa=lionk.kappa.get("scaled-sign", s=4.0))
    opt.step(np.ones(5))
    sd = opt.state_dict()
    assert sd["hyperparams"]["kappa"] == {"name": "scaled-sign", "params": {"s": 4.0}}
    other = lionk.LionK(np.zeros(5), lr=0.01)
    other.load_state_dict(sd)
    assert other.kappa.name == "scaled-sign" and other.kappa.params == {"s": 4.0}
    assert other.kappa.constraint.scale == 4.0


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_state_dict_round_trip_with_a_registered_user_kappa(registered) -> None:
    import torch

    w = torch.zeros(3, requires_grad=True)
    opt = lionk.torch.LionK([w], lr=0.01, kappa=lionk.kappa.get("scaled-sign", s=4.0))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["kappa"] == {"name": "scaled-sign", "params": {"s": 4.0}}
    w2 = torch.zeros(3, requires_grad=True)
    opt2 = lionk.torch.LionK([w2], lr=0.01)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["kappa"].params == {"s": 4.0}


# ---------------------------------------------------------------------------------------------
# Readers: minimize, plot, sign-vote, conformance.


def _box_problem():
    target = np.array([10.0, -10.0, 0.5])

    def fun(x):
        d = x - target
        return float(0.5 * np.dot(d, d)), d

    return fun


def test_minimize_radius_uses_the_user_kappas_radius_rule(registered) -> None:
    """K = s‖·‖₁ keeps x in ‖x‖_∞ ≤ s/λ: radius=r must give λ = s/r, so the solution of
    min ½‖x − t‖² s.t. ‖x‖_∞ ≤ r is clip(t, −r, r) (a 1/λ rule would give the box of radius s·r)."""
    r, s = 3.0, 2.0
    res = lionk.minimize(_box_problem(), np.zeros(3), jac=True, kappa="scaled-sign", radius=r,
                         maxiter=2000, tol=1e-9)
    assert res.weight_decay == s / r and res.radius == r
    np.testing.assert_allclose(res.x, [3.0, -3.0, 0.5], atol=1e-6)
    assert (res.constraint.norm, res.constraint.scale) == ("linf", s)
    # the history's norm is the constraint's norm of each iterate (‖x_k‖_∞)
    assert res.history["x_norm"][-1] == np.max(np.abs(res.x))
    assert np.all(res.history["x_norm"] <= r * (1 + 1e-12))


def test_minimize_builtin_radius_and_unbounded_kappa_unchanged() -> None:
    res = lionk.minimize(_box_problem(), np.zeros(3), jac=True, radius=3.0, maxiter=2000, tol=1e-9)
    assert res.weight_decay == 1.0 / 3.0 and res.radius == 3.0
    np.testing.assert_allclose(res.x, [3.0, -3.0, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="lr: kappa='quadratic'"):
        lionk.minimize(_box_problem(), np.zeros(3), jac=True, radius=3.0, kappa="quadratic")
    unbounded_user = _with(scaled_sign(1.0), constraint=None)  # no facts: radius = 1/λ
    res = lionk.minimize(_box_problem(), np.zeros(3), jac=True, radius=3.0, maxiter=10,
                         kappa=unbounded_user)
    assert res.weight_decay == 1.0 / 3.0 and res.constraint is None
    assert np.all(np.isnan(res.history["x_norm"]))


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed")
def test_plot_history_reads_the_user_kappas_constraint(registered) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = lionk.minimize(_box_problem(), np.zeros(3), jac=True, kappa="scaled-sign", radius=3.0,
                         maxiter=200)
    by_name = {k: v for k, v in res.items() if k != "constraint"}  # e.g. a result from 0.1
    for result in (res, by_name):  # the fact, or the fact of the κ registered under the name
        fig = lionk.plot.history(result)
        try:
            lines = {ln.get_label(): ln for ln in fig.get_axes()[2].get_lines()}
            assert set(lines) == {"‖x‖_∞", "radius 3"}
            assert list(lines["radius 3"].get_ydata()) == [3.0, 3.0]
        finally:
            plt.close(fig)
    # a κ without a stated constraint: no label, no radius line; quadratic: no radius line
    res2 = lionk.minimize(_box_problem(), np.zeros(3), jac=True, radius=3.0, maxiter=20,
                          kappa=_with(scaled_sign(1.0), constraint=None))
    res3 = lionk.minimize(_box_problem(), np.zeros(3), jac=True, radius=3.0, maxiter=20,
                          kappa="quadratic", lr=0.1)
    for result, labels in ((res2, set()), (res3, {"‖x‖₂"})):
        fig = lionk.plot.history(result)
        try:
            assert {ln.get_label() for ln in fig.get_axes()[2].get_lines()} == labels
        finally:
            plt.close(fig)


def test_ternary_fact_decides_the_vote() -> None:
    from lionk import distributed

    assert distributed.TERNARY_KAPPAS == ("sign", "deadzone")
    assert distributed.is_ternary(threshold_vote())
    assert not distributed.is_ternary(scaled_sign())
    assert not distributed.is_ternary("sign")  # a name is not a κ: resolve it first


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_sign_vote_with_a_user_ternary_kappa(registered, tmp_path) -> None:
    """A one-rank gloo group: the vote of one worker is its own ∇K(c); the user κ stating
    ternary=True runs under communication="sign-vote", bitwise equal to the plain step; a user κ
    that is not ternary is refused, naming the fact."""
    import torch
    import torch.distributed as dist

    def run(**kw):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
        opt = lionk.torch.LionK(model.parameters(), lr=1e-2, weight_decay=0.1,
                                kappa=lionk.kappa.get("threshold-vote", t=0.01), **kw)
        g = torch.Generator().manual_seed(1)
        X, y = torch.randn(16, 4, generator=g), torch.randn(16, generator=g)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(X).squeeze(-1), y).backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    with pytest.raises(ValueError, match=r"kappa: communication='sign-vote'.*Kappa.ternary.*"
                                         r"received 'scaled-sign' \(ternary=False\)"):
        lionk.torch.LionK([torch.zeros(2, requires_grad=True)], communication="sign-vote",
                          kappa="scaled-sign")
    plain = run()
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        voted = run(communication="sign-vote")
    finally:
        dist.destroy_process_group()
    assert len(voted) == len(plain)
    for a, b in zip(voted, plain):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert any(not torch.equal(a, torch.zeros_like(a)) for a in voted)


CONFORMANCE_BACKENDS = ["numpy", "numpy-chunked", "torch-cpu", "array_api_strict"]


@pytest.mark.parametrize("backend_name", CONFORMANCE_BACKENDS)
def test_conformance_cell_for_a_registered_user_kappa(registered, backend_name: str) -> None:
    """The suite takes the tier, the discontinuities (tie accounting) and the domain from the κ:
    a registered user κ gets a full cell (bitwise tier, Lyapunov, phase 1) like a built-in."""
    from conformance import runner
    from conformance.backends import discover

    found = discover([backend_name])
    backend = next(b for b in found if b.name == backend_name)
    if not backend.available:
        pytest.skip(f"{backend_name}: {backend.reason}")
    ref = next(b for b in found if b.name == "numpy")
    for spec in ("scaled-sign", "threshold-vote"):
        cell = runner.run_cell(backend, ref, spec, "float64", 30)
        assert cell["kappa_tier"] == "bitwise" and cell["expected_tier"] == "bitwise"
        assert cell["ok"], cell
        assert cell["tier"] == "bitwise"


def _tie_problem(t: float, t_shifted: float):
    """A constant gradient on 2000 elements, one of which puts c_0 = (1 − b1)·g strictly between
    the thresholds t and t_shifted (a few ulps apart): a tie of ∇K at its stated discontinuity."""
    from conformance.checks import DEFAULT
    from conformance.problems import Problem

    one_minus_b1 = 1.0 - DEFAULT.betas[0]
    g_tie = next(g for g in (0.5 * (1.0 + k * 2.0**-52) for k in range(-64, 64))
                 if t < one_minus_b1 * g <= t_shifted)
    g = np.random.default_rng(5).uniform(2.0, 3.0, 2000)
    g[17] = g_tie

    return Problem(
        name="tie", L=0.0, shapes={"w": (2000,)},
        make_data=lambda rng: {"w": {"g": g}},
        grad_leaf=lambda x, d: d["g"],
        value_leaf=lambda x, d: float(np.dot(d["g"], x)),
        sens_leaf=lambda x, d: np.abs(d["g"]),
    )


def test_conformance_ulp_check_reads_the_kappas_discontinuities() -> None:
    """check_ulp excuses a flipped update at a *stated* discontinuity (a tie) and nowhere else:
    a backend whose threshold is 4e-16 relative off flips one element at step 0; the κ stating
    discontinuities=(−t, t) passes with one counted tie, the same κ without the fact fails."""
    from conformance import checks
    from conformance.backends import discover

    ref = next(b for b in discover(["numpy"]) if b.name == "numpy")
    t = 0.05
    t_shifted = t * (1 + 4e-16)
    assert t < t_shifted
    problem = _tie_problem(t, t_shifted)
    shifted = threshold_vote(t_shifted)

    class Shifted:
        """numpy, stepping with the shifted threshold."""

        name = "shifted"

        def __getattr__(self, item):
            return getattr(ref, item)

        def step_fn(self, *, kappa, **kw):
            return ref.step_fn(kappa=shifted, **kw)

    honest = threshold_vote(t)
    chk = checks.check_ulp(Shifted(), ref, honest, "float64", 3, problem=problem)
    assert chk.ok and chk.detail["flipped_ties"] == 1, chk.detail
    no_fact = _with(honest, discontinuities=())
    chk2 = checks.check_ulp(Shifted(), ref, no_fact, "float64", 3, problem=problem)
    assert not chk2.ok and chk2.detail["flipped_ties"] == 0, chk2.detail
