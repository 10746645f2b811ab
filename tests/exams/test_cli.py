"""``lophoc exam``: create from a file, read results, export a log that verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.lessons.conftest import REPO, SECRET, Crowd, ServerProcess

from .conftest import exam_file


def lophoc(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``lophoc`` on ``data_dir`` with the servers' token key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOPHOC_")}
    env["LOPHOC_SECRET"] = SECRET
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_create_sit_results_and_export(tmp_path: Path, crowd: Crowd) -> None:
    """A file made into a room by the CLI is sat, graded and exported intact."""
    data = tmp_path / "node" / "data"
    data.mkdir(parents=True)
    path = tmp_path / "exam.yaml"
    path.write_text(yaml.safe_dump(exam_file("exam-cli", 2), allow_unicode=True))
    created = lophoc(data, "exam", "create", str(path), "--data-dir", str(data))
    assert created.returncode == 0, created.stderr
    tokens = {a["user"]: a["token"] for a in json.loads(created.stdout)["students"]}

    node = ServerProcess(tmp_path / "node")
    node.start()
    try:
        student = await crowd.enter("s-1", node, tokens["s-1"], "exam-cli")
        await student.client.fetch_exam("exam-cli")
        await student.client.save_answer("exam-cli", "q3", "cold")
        await student.client.submit_exam("exam-cli")
    finally:
        node.stop()

    results = lophoc(
        data, "exam", "results", "exam-cli", "--csv", "--data-dir", str(data)
    )
    assert results.returncode == 0, results.stderr
    rows = {line.split(",")[2]: line for line in results.stdout.splitlines()[1:]}
    assert rows["s-1"].split(",")[4:6] == ["submitted", "1"]
    assert rows["s-0"].split(",")[4] == "not_started"

    log = tmp_path / "exam-cli.log"
    exported = lophoc(
        data, "exam", "export-log", "exam-cli", "-o", str(log), "--data-dir", str(data)
    )
    assert exported.returncode == 0, exported.stderr
    checked = lophoc(data, "verify-log", str(log))
    assert checked.returncode == 0, checked.stdout
    assert "signed checkpoints: intact" in checked.stdout
    lines = log.read_text().splitlines()
    log.write_text(
        "\n".join(line for line in lines if '"kind":"submitted"' not in line)
    )
    cut = lophoc(data, "verify-log", str(log))
    assert cut.returncode == 1


def test_bad_file_names_the_paths(tmp_path: Path) -> None:
    """A bad exam file is refused with the path of each bad part."""
    exam = exam_file("exam-bad", 2)
    exam["extra_minutes"] = {"s-77": 5}
    exam["paper"]["sections"][0]["items"][2]["answer"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(exam))
    refused = lophoc(tmp_path, "exam", "create", str(path), "--data-dir", str(tmp_path))
    assert refused.returncode == 2
    assert "paper.sections[0].items[2].answer" in refused.stderr
