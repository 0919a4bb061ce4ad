"""Evaluation: FLIP protocol, RITM click protocol, prompt-ellipse baseline, Ray fan-out and report."""
