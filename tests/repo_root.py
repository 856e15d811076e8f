"""The repository's root, for tests that run its commands and scripts."""
import pathlib

REPO_PATH = pathlib.Path(__file__).resolve().parents[1]
REPO = str(REPO_PATH)
