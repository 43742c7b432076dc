from offline.bundle.tags import expand_platform, uv_platform, wheel_rank


def test_manylinux_expands_to_older_glibc_tags() -> None:
    tags = expand_platform("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert not any("aarch64" in t for t in tags)


def test_wheel_rank_prefers_specific_and_rejects_foreign() -> None:
    plat = "manylinux_2_28_x86_64"
    specific = wheel_rank("x-1-cp311-cp311-manylinux_2_17_x86_64.whl", "3.11", plat)
    generic = wheel_rank("x-1-py3-none-any.whl", "3.11", plat)
    assert specific is not None and generic is not None and specific < generic
    assert wheel_rank("x-1-cp311-cp311-manylinux_2_34_x86_64.whl", "3.11", plat) is None
    assert wheel_rank("x-1-cp311-cp311-manylinux_2_17_aarch64.whl", "3.11", plat) is None
    assert wheel_rank("x-1-cp312-cp312-manylinux_2_17_x86_64.whl", "3.11", plat) is None
    assert wheel_rank("x-1-cp39-abi3-manylinux_2_17_x86_64.whl", "3.11", plat) is not None


def test_uv_platform() -> None:
    assert uv_platform("manylinux_2_28_aarch64") == "aarch64-manylinux_2_28"
