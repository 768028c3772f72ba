"""The operator's dashboard, the demo chat page and the embeddable chat widget."""

from nexus_ingest.dashboard.routes import install

__all__ = ["install"]
