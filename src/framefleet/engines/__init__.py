"""Engines schedule tasks from the ledger onto workers; they never process video themselves."""
