"""Evaluation: objective metrics, and (later) ASR, speaker, voice conversion, probes and the report."""
