"""Weights in from the PyTorch peers (transformers' EncodecModel, the speechtokenizer package's SpeechTokenizer)
and out to safetensors: `layout` says where each peer tensor lives in our codec, `convert` moves the numbers,
`files` reads checkpoints and writes workdirs and exported files. No torch here: PyTorch pickles are converted in
a subprocess (`teachers.torch_state`)."""
