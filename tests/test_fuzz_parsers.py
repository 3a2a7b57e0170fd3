"""Property-based mutation fuzzing of every input parser (short CI run; the long run is
benchmarks/fuzz_parsers.py).  Property: the public entry point returns a valid object (finite
numbers, consistent shapes) or raises MultiscaleError with one line under 300 characters."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing

TARGETS = fuzzing.targets()
# examples per parser: the whole module stays well under a minute on one core
EXAMPLES = {"map": 500, "yaml": 500, "top": 300, "gro": 80, "pdb": 60, "state": 300}

OP = st.tuples(
    st.sampled_from(fuzzing.OPS),
    st.integers(0, 1 << 20),
    st.integers(0, 1 << 10),
    st.one_of(st.sampled_from(fuzzing.INTERESTING).map(lambda s: s.encode("utf-8")), st.binary(min_size=1, max_size=8)),
)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    out = {}
    for name, t in TARGETS.items():
        d = tmp_path_factory.mktemp(f"fuzz_{name}")
        if t.setup:
            t.setup(d)
        out[name] = d
    return out


def _fuzz(name):
    target = TARGETS[name]

    @settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(seed_file=st.sampled_from(sorted(target.seeds)), ops=st.lists(OP, min_size=1, max_size=4))
    def check(workdirs, seed_file, ops):
        data = fuzzing.mutate(target.seeds[seed_file], ops)
        fuzzing.outcome(target, workdirs[name], seed_file, data)

    return check


@pytest.mark.parametrize("name", list(TARGETS))
def test_seeds_are_accepted(workdirs, name):
    """The unmutated seeds are valid inputs (so the mutations start from something that works)."""
    t = TARGETS[name]
    for seed_file, data in t.seeds.items():
        assert fuzzing.outcome(t, workdirs[name], seed_file, data) == "accepted", seed_file


test_fuzz_map = _fuzz("map")
test_fuzz_yaml = _fuzz("yaml")
test_fuzz_top = _fuzz("top")
test_fuzz_gro = _fuzz("gro")
test_fuzz_pdb = _fuzz("pdb")
test_fuzz_state = _fuzz("state")


def test_mutate_is_deterministic_and_covers_ops():
    import random

    data = b"[ atoms ]\n1 C1 A\n2 C2 B\n"
    for op in fuzzing.OPS:
        out = fuzzing.mutate(data, [(op, 5, 3, b"nan")])
        assert out == fuzzing.mutate(data, [(op, 5, 3, b"nan")])
    a = fuzzing.random_ops(random.Random(1))
    assert a == fuzzing.random_ops(random.Random(1))
