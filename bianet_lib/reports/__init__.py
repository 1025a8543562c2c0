"""Reports: markdown tables and sentences generated from measured numbers (never computing them)."""
