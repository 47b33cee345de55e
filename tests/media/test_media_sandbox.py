"""analyze_isolated(): timeouts, memory limits and crashes stay in the child process."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

from PIL import Image

from workers.media import sandbox
from workers.media.sandbox import analyze_isolated, run_isolated

TARGETS = "sandbox_targets"


def _sample_jpeg(tmp_path):
    path = tmp_path / "sample.jpg"
    Image.new("RGB", (800, 600), (10, 200, 30)).save(path)
    return path


def test_isolated_matches_in_process(tmp_path):
    path = _sample_jpeg(tmp_path)
    result = analyze_isolated(str(path))
    assert result.error is None
    assert result.media_type == "image/jpeg"
    assert (result.info["width"], result.info["height"]) == (800, 600)
    assert result.thumbnail[:4] == b"RIFF"
    assert result.preview is not None


def test_sleeping_child_times_out(tmp_path):
    path = _sample_jpeg(tmp_path)
    result = run_isolated(
        f"{TARGETS}:sleep_forever", str(path), {}, timeout_s=1, memory_mb=1024
    )
    assert result.error == "timed out after 1 s"
    assert result.media_type == "image/jpeg"
    # The caller continues with a new helper.
    assert analyze_isolated(str(path)).error is None


def test_greedy_child_hits_memory_limit(tmp_path):
    path = _sample_jpeg(tmp_path)
    result = run_isolated(
        f"{TARGETS}:allocate_without_bound", str(path), {}, timeout_s=30, memory_mb=512
    )
    assert result.error == "exceeded the memory limit of 512 MB"
    assert analyze_isolated(str(path), memory_mb=512).error is None


def test_crashing_child_reports_signal(tmp_path):
    path = _sample_jpeg(tmp_path)
    result = run_isolated(
        f"{TARGETS}:abort", str(path), {}, timeout_s=30, memory_mb=1024
    )
    assert "killed by SIGABRT" in result.error
    assert analyze_isolated(str(path)).error is None


def test_one_shot_child(tmp_path):
    path = _sample_jpeg(tmp_path)
    result = analyze_isolated(str(path), reuse=False)
    assert result.thumbnail is not None


def test_helper_replaced_after_max_requests(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_REQUESTS", 2)
    path = _sample_jpeg(tmp_path)
    for _ in range(5):
        assert analyze_isolated(str(path), memory_mb=768).error is None


def _analyze_in_daemon(path, queue):
    result = analyze_isolated(path)
    queue.put((result.media_type, result.error, result.thumbnail is not None))


def test_works_from_daemon_process(tmp_path):
    path = _sample_jpeg(tmp_path)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(
        target=_analyze_in_daemon, args=(str(path), queue), daemon=True
    )
    process.start()
    media_type, error, has_thumbnail = queue.get(timeout=60)
    process.join(timeout=60)
    assert process.exitcode == 0
    assert media_type == "image/jpeg"
    assert error is None
    assert has_thumbnail


def test_bomb_rejected_with_low_memory(bomb_png):
    through_sandbox = analyze_isolated(str(bomb_png), memory_mb=512)
    assert through_sandbox.error.startswith("decompression bomb:")

    # A fresh interpreter measures the peak resident memory of analyze() alone.
    # VmHWM is read instead of ru_maxrss, because Linux carries ru_maxrss over
    # from the forked parent (the test runner) across exec.
    script = (
        "import json, sys\n"
        "from workers.media.analyze import analyze\n"
        "result = analyze(sys.argv[1])\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
        "peak_kb = int(status.split()[0])\n"
        "print(json.dumps({'error': result.error, 'peak_kb': peak_kb}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(bomb_png)],
        capture_output=True,
        check=True,
        cwd=sandbox._REPOSITORY_ROOT,
        timeout=120,
    )
    report = json.loads(completed.stdout)
    assert report["error"].startswith("decompression bomb:")
    assert report["peak_kb"] < 200 * 1024
