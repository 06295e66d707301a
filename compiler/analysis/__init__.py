"""Analyses: facts computed from a model and cached per model version by the pass manager's
:class:`~onnxforge.passmanager.AnalysisManager` (shapes today; use-def and cost views next)."""
