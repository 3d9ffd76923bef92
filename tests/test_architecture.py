"""The layering is written down in .importlinter and checked here (docs/architecture.md, "The map")."""
import configparser
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# the job package's modules the orchestrator may import: the specs, the store and its layout,
# results, draws, manifests, progress records, errors, the dataset catalogue, the method registry,
# the public API
CONTRACT_MODULES = {
    "jobs", "jobs.api", "jobs.draws", "jobs.errors", "jobs.hashing", "jobs.layout", "jobs.progress", "jobs.results",
    "jobs.snapshots", "jobs.spec", "jobs.store", "jobs.store.base", "jobs.store.local", "jobs.store.s3", "jobs.data", "jobs.data.errors", "jobs.data.registry",
    "jobs.averaging", "jobs.averaging.errors", "jobs.averaging.methods",
}


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "broken" not in proc.stdout.split("Contracts:")[-1].replace("0 broken", "")


def _contracts() -> dict[str, configparser.SectionProxy]:
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    prefix = "importlinter:contract:"
    return {name[len(prefix):]: config[name] for name in config.sections() if name.startswith(prefix)}


def _jobs_modules() -> set[str]:
    names = set()
    for path in (REPO / "jobs").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_jobs_module_is_either_contract_or_forbidden_to_the_orchestrator():
    """A new module under jobs/ must be placed on one side of the line: added to CONTRACT_MODULES
    (the orchestrator may import it) or to the forbidden list in .importlinter (internals)."""
    contract = _contracts()["orchestrator-uses-the-jobs-contract"]
    forbidden = {line.strip() for line in contract["forbidden_modules"].splitlines() if line.strip()}

    def covered(module: str) -> bool:
        return module in CONTRACT_MODULES or any(module == f or module.startswith(f + ".") for f in forbidden)

    unplaced = sorted(m for m in _jobs_modules() if not covered(m))
    assert not unplaced, f"place these in CONTRACT_MODULES or in .importlinter's forbidden_modules: {unplaced}"
    assert not CONTRACT_MODULES & forbidden


def test_the_layering_contracts_are_all_written_down():
    kinds = {name: c["type"] for name, c in _contracts().items()}
    assert kinds == {
        "jobs-independent": "forbidden",
        "orchestrator-uses-the-jobs-contract": "forbidden",
        "kubernetes-only-in-k8s-backend": "protected",
        "boto3-only-in-store": "protected",
        "commands-independent": "independence",
        "backends-know-no-cli": "forbidden",
    }
