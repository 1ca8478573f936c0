"""Evaluation tools, not teachers: PyTorch models that `jaxcodec eval` runs in a subprocess (jaxcodec never imports
torch) over a list of audio files, writing one output file: `asr` (transcripts by a transformers ASR model) and
`speaker` (speaker embeddings by resemblyzer or ECAPA-TDNN). `jaxcodec.eval.torch_subprocess` launches them."""
