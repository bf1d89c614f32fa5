"""Micro-benchmarks of bassray's models (plain PyTorch; figures for docs and reports)."""
