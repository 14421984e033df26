"""Where the project's non-Python assets live (the stack runs from a checkout: `pip install -e .`)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
GATEWAY_DIR = REPO_ROOT / "gateway"
DEPLOY_DIR = REPO_ROOT / "deploy"
DEFAULT_CATALOG = DEPLOY_DIR / "catalog" / "models.yaml"
# The reference product's whole catalogue with its lifecycle (described, not deployed here).
REFERENCE_CATALOG = DEPLOY_DIR / "catalog" / "reference.yaml"
DEFAULT_MODEL_REPOSITORY = DEPLOY_DIR / "triton" / "model_repository"
# The guard's learned layer as a Triton model (llmaas up --guard-classifier triton).
GUARD_MODEL_REPOSITORY = DEPLOY_DIR / "triton" / "guard_repository"
GUARD_TRITON_MODEL = "llmaas-guard"
