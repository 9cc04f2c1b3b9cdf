"""Output-folder locks: a second job on the same folder is refused at once; the lock ends with the job."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from radfm.utils.lock import FolderLockedError, lock_folder, locks_folder


def test_second_lock_is_refused_and_freed_on_release(tmp_path):
    first = lock_folder(tmp_path / "out", "job A")
    with pytest.raises(FolderLockedError, match=r"job B is already writing here \(lock held by pid \d+\)"):
        lock_folder(tmp_path / "out", "job B")
    first.release()
    lock_folder(tmp_path / "out", "job B").release()


def test_lock_held_by_another_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from radfm.utils.lock import lock_folder
        lock = lock_folder({str(tmp_path)!r}, "radfm evaluate")
        print("locked", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            lock_folder(tmp_path, "radfm evaluate")
    finally:
        holder.kill()  # like kill -9: the kernel drops the lock
        holder.wait()
    lock_folder(tmp_path, "radfm evaluate").release()


def test_decorated_job_releases_on_error_and_removes_the_folder_it_made(tmp_path):
    @locks_folder("output", "job")
    def job(output: str, fail: bool = False) -> str:
        with pytest.raises(FolderLockedError):
            lock_folder(output)  # held while the job runs
        if fail:
            raise ValueError("bad input")
        return "done"

    with pytest.raises(ValueError):
        job(str(tmp_path / "new"), fail=True)
    assert not (tmp_path / "new").exists()  # nothing half-made left behind
    assert job(output=str(tmp_path / "new")) == "done"
    assert job(str(tmp_path / "new")) == "done"  # released after the first call
