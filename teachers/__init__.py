"""Offline PyTorch teachers (HuBERT, ECAPA-TDNN, phones, resemblyzer) and the precompute that runs them; the only
package here that imports torch. `teachers.evaluation` holds the PyTorch evaluation tools (ASR, speaker encoder)
that `jaxcodec eval` runs in subprocesses."""
