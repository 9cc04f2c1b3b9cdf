import pytest

from radfm.utils.cli import as_list


@pytest.mark.parametrize("value, expected", [
    (None, []),
    ("", []),
    ("a", ["a"]),
    ("a, b,,c ", ["a", "b", "c"]),
    (("a", "b"), ["a", "b"]),
    (["a,b", "c"], ["a", "b", "c"]),
    ("[x.jsonl,y.jsonl]", ["x.jsonl", "y.jsonl"]),
    ("['x', \"y\"]", ["x", "y"]),
    (3, ["3"]),
    ((1, "two"), ["1", "two"]),
])
def test_as_list_accepts_what_fire_passes(value, expected):
    assert as_list(value) == expected
