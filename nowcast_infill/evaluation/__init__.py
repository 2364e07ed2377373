"""Evaluation: the one scoring path shared by networks and classical methods
(`scoring.EvaluationMixin`) and the classical methods' LightningModule (`classical.ClassicalModule`)."""
