"""Names of the entries of an export archive."""

import pytest

from workers.exports.names import MAX_COMPONENT, NameAllocator, safe_name


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("back\\slash.jpg", "back_slash.jpg"),
        ("..\\..\\evil.jpg", ".._.._evil.jpg"),
        ("/abs/../x.jpg", "abs/x.jpg"),
        ("a/./b/c.jpg", "a/b/c.jpg"),
        ("bell\x07.jpg", "bell_.jpg"),
        ("..", "file"),
        ("trailing. ", "trailing"),
    ],
)
def test_safe_name_cases(path, expected):
    assert safe_name(path) == expected


def test_long_name_keeps_extension():
    name = safe_name("x" * 250 + ".jpg")
    assert len(name) == MAX_COMPONENT
    assert name.endswith("x.jpg")
    odd = safe_name("y" * 250 + "." + "z" * 30)
    assert odd == ("y" * 250 + "." + "z" * 30)[:MAX_COMPONENT]


def test_allocator_numbers_clashes():
    allocator = NameAllocator()
    assert [allocator.allocate(n) for n in ("a.jpg", "A.jpg", "a.jpg")] == [
        "a.jpg", "A (2).jpg", "a (3).jpg",
    ]
