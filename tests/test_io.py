"""rocktokens.core.io: atomic writers."""


def test_atomic_file_gives_the_umask_mode_not_mkstemp_0600(tmp_path):
    import os
    import stat

    from rocktokens.core.io import atomic_file

    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "x.txt") as tmp:
            tmp.write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o644
