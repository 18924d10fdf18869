"""flake.nix parses, and flake.lock pins exactly its inputs to the verified revisions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAKE = ROOT / "flake.nix"
LOCK = ROOT / "flake.lock"
NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]

# the verified pins (shared/nix/INPUTS.md): rev, narHash, lastModified
PINS = {
    "nixpkgs": (
        "6b5e5b7a6631f065bf6908986990b37d845f847f",
        "sha256-smTKQXMLLStzc8zJevMCckbk3My7SvbbLmPYZUJJKW4=",
        1786593342,
    ),
    "flake-parts": (
        "427bf4bd9435fdf21321c8cc628c24efc14c0f7a",
        "sha256-4dtXQk/NMePegK/nWp5NSeuZKLATItOq61lpEvmXqGw=",
        1785627969,
    ),
    "process-compose-flake": (
        "99bea96cf269cfd235833ebdf645b567069fd398",
        "sha256-XXekPAxzbv1DmHFo3Elmj/vDnvWc1V0jdDUvM0/Wf7k=",
        1767863885,
    ),
    "services-flake": (
        "4f56c8f1cbd09c774a491a47acd3605a6eb7adfa",
        "sha256-z0CqDCjs+xU/Yw2/VkS8Mz7qzw4AsZ+AMwEMmqSSKh0=",
        1787074068,
    ),
}


def declared_inputs() -> dict[str, str]:
    """Input name -> URL, from the ``inputs = { ... };`` block of flake.nix."""
    block = re.search(r"\n  inputs = \{\n(.*?)\n  \};", FLAKE.read_text(), re.S)
    assert block is not None, "flake.nix has no inputs block"
    return dict(re.findall(r'^\s+([\w-]+)\.url = "([^"]+)";', block.group(1), re.M))


def original_of(url: str) -> dict[str, str]:
    """The lock's ``original`` object for a github: URL, as Nix writes it."""
    kind, path = url.split(":", 1)
    owner, repo, *ref = path.split("/")
    original = {"owner": owner, "repo": repo, "type": kind}
    if ref:
        original["ref"] = ref[0]
    return original


def test_lock_names_exactly_the_declared_inputs() -> None:
    lock = json.loads(LOCK.read_text())
    inputs = declared_inputs()
    assert lock["version"] == 7 and lock["root"] == "root"
    assert set(lock["nodes"]["root"]["inputs"]) == set(inputs)
    assert set(lock["nodes"]) == set(inputs) | {"root"}
    for name, url in inputs.items():
        node = lock["nodes"][lock["nodes"]["root"]["inputs"][name]]
        assert node["original"] == original_of(url), name
        rev, nar_hash, last_modified = PINS[name]
        assert node["locked"]["rev"] == rev, name
        assert node["locked"]["narHash"] == nar_hash, name
        assert node["locked"]["lastModified"] == last_modified, name
        assert {k: v for k, v in node["locked"].items() if k in ("owner", "repo", "type")} == {
            k: v for k, v in original_of(url).items() if k != "ref"
        }
    # the follows is a path from the root, and inputs-free flakes get no "inputs" key
    assert lock["nodes"]["flake-parts"]["inputs"] == {"nixpkgs-lib": ["nixpkgs"]}
    assert "nixpkgs-lib.follows" in FLAKE.read_text()
    for name in ("nixpkgs", "process-compose-flake", "services-flake"):
        assert "inputs" not in lock["nodes"][name]


def test_lock_is_canonical_json() -> None:
    text = LOCK.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="nix is not installed")
def test_flake_parses() -> None:
    subprocess.run(["nix-instantiate", "--parse", str(FLAKE)], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("nix") is None, reason="nix is not installed")
def test_nix_reads_the_lock_without_rewriting_it() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("nix reads a flake from a git checkout")
    before = LOCK.read_bytes()
    result = subprocess.run(
        [*NIX, "flake", "metadata", "--no-update-lock-file", "--offline", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert LOCK.read_bytes() == before
    for name, (rev, _, _) in PINS.items():
        assert rev in result.stdout, name
