"""Offline PyTorch teachers (HuBERT, ECAPA-TDNN); the only package here that imports torch."""
