"""Scoring trained models on whole tiers: metrics, reports, plots and submission files."""
