"""The trained codec as a tokenizer: `jaxcodec.load(W)` → `Tokenizer` with `encode` (waveforms → RVQ tokens)
and `decode` (tokens → waveforms), numpy in and out, jitted underneath.

A training workdir W (or its `checkpoints/` folder) is enough: the config comes from the checkpoint, the codec's
parameters and codebooks from the chosen step (latest by default, or "best" by validation mel loss). Nothing of
the training state beyond the codec is kept in memory.

Variable lengths: every distinct input shape is one XLA compilation. To bound them, inputs are zero-padded at the
end to a multiple of `bucket_seconds` (default 1 s) and the outputs trimmed back to ceil(N / hop) frames and N
samples. The codec is not causal, so right padding can change the last frames within its receptive field
(~30 ms at the paper's widths) slightly; `bucket_seconds=0` compiles each exact length instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from jaxcodec import audio

DEFAULT_BUCKET_SECONDS = 1.0
# Long audio is encoded (and codes decoded) in windows of CHUNK_SECONDS, each seeing CONTEXT_SECONDS more on both
# sides that it does not keep, so memory is bounded by the window, whatever the file's length. The context covers
# the convolutions' receptive field many times over; what it cannot cover is the LSTM's memory of older audio, so
# codes near a seam can differ from a whole-file encoding (measured and bounded in tests/test_tokenizer.py).
CHUNK_SECONDS = 30.0
CONTEXT_SECONDS = 1.0


class Tokenizer:
    def __init__(self, config, graphdef, params, rest, *, step: int | None = None,
                 bucket_seconds: float = DEFAULT_BUCKET_SECONDS, chunk_seconds: float = CHUNK_SECONDS,
                 context_seconds: float = CONTEXT_SECONDS):
        import jax
        from flax import nnx

        self.config, self.step = config, step
        self.bucket = max(int(round(bucket_seconds * config.model.sample_rate)), 0)
        # window and context in whole frames (0 = never chunk)
        self.chunk_frames = max(int(chunk_seconds * config.model.frame_rate), 0)
        self.context_frames = max(int(round(context_seconds * config.model.frame_rate)), 0)
        self._graphdef, self._params, self._rest = graphdef, params, rest

        def encode(params, rest, wav_bn, n_q):
            return nnx.merge(graphdef, params, rest).encode(wav_bn, n_q=n_q)

        def decode(params, rest, codes_bqt, n_levels):
            return nnx.merge(graphdef, params, rest).decode(codes_bqt, n_levels)

        self._encode = jax.jit(encode, static_argnums=3)
        self._decode = jax.jit(decode)

    @classmethod
    def from_codec(cls, codec, *, step: int | None = None, **options):
        from flax import nnx

        graphdef, params, rest = nnx.split(codec, nnx.Param, ...)
        return cls(codec.config, graphdef, params, rest, step=step, **options)

    def codec(self):
        """The codec as an nnx module (e.g. to export or fine-tune it)."""
        from flax import nnx

        return nnx.merge(self._graphdef, self._params, self._rest)

    # --- facts ---------------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.model.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.model.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.model.frame_rate

    @property
    def n_q(self) -> int:
        return self.config.rvq.n_q

    @property
    def codebook_size(self) -> int:
        return self.config.rvq.codebook_size

    def codebooks(self) -> np.ndarray:
        """float32 [n_q, codebook_size, dimension]: each level's code vectors (the RVQ's EMA codebooks), e.g. to
        embed tokens for a probe: level l's token c stands for codebooks()[l, c]."""
        return np.asarray(self.codec().quantizer.embed[...])

    # --- encode / decode -------------------------------------------------------------------------------------------
    def _padded_length(self, n: int, multiple: int) -> int:
        if self.bucket:
            multiple = self.bucket  # a whole number of hops: 1 s = 50 frames at 16 kHz / 320
        return -(-n // multiple) * multiple

    def _as_batch(self, wav, sample_rate: int | None) -> tuple[np.ndarray, bool]:
        """[N], [B, N] or [B, C, N] at `sample_rate` → float32 [B, N] at the codec's rate (channels averaged and
        the rate converted with a warning, as `jaxcodec.audio` does for files); also whether the input was 1-D."""
        wav = np.asarray(wav, np.float32)
        single = wav.ndim == 1
        if wav.ndim == 3:
            warnings.warn(f"downmixing {wav.shape[1]} channels to mono (the channel mean)", stacklevel=3)
            wav = wav.mean(axis=1, dtype=np.float32)
        wav_bn = wav[None] if single else wav
        if wav_bn.ndim != 2 or wav_bn.shape[1] == 0:
            raise ValueError(f"expected a waveform [N], a batch [B, N] or [B, channels, N] with N > 0, got shape "
                             f"{wav.shape}")
        if not np.all(np.isfinite(wav_bn)):
            raise ValueError("waveform has NaN or Inf samples")
        if sample_rate is not None and sample_rate != self.sample_rate:
            if sample_rate <= 0:
                raise ValueError(f"sample_rate must be positive, got {sample_rate}")
            warnings.warn(f"resampling {sample_rate} Hz → {self.sample_rate} Hz", stacklevel=3)
            wav_bn = np.stack([audio.resample(w, sample_rate, self.sample_rate) for w in wav_bn])
        return wav_bn, single

    def encode(self, wav: np.ndarray, n_q: int | None = None, *, sample_rate: int | None = None) -> np.ndarray:
        """float [N], [B, N] or [B, channels, N] → int32 [n_q, T] (for [N]) or [B, n_q, T], T = ceil(N' / hop)
        with N' the length at the codec's rate. `sample_rate` (default: the codec's) other than the codec's is
        resampled; channels are averaged; both with a warning. `n_q` (default all) sets the bitrate."""
        wav_bn, single = self._as_batch(wav, sample_rate)
        n_q = self.n_q if n_q is None else n_q
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be in 1..{self.n_q}, got {n_q}")
        hop = self.hop_length
        frames = -(-wav_bn.shape[1] // hop)
        codes = self._windowed(frames, lambda a, b: self._encode_whole(wav_bn[:, a * hop: b * hop], n_q),
                               axis=-1, scale=1)
        return codes[0] if single else codes

    def _encode_whole(self, wav_bn: np.ndarray, n_q: int) -> np.ndarray:
        n = wav_bn.shape[1]
        padded = np.pad(wav_bn, ((0, 0), (0, self._padded_length(n, self.hop_length) - n)))
        return np.asarray(self._encode(self._params, self._rest, padded, n_q))[..., :-(-n // self.hop_length)]

    def _windowed(self, frames: int, run, axis: int, scale: int) -> np.ndarray:
        """run(a, b) on frames [a, b) whole, or, past one window, per window with context, keeping each window's
        own frames (`scale` output samples per frame along `axis`) and concatenating them."""
        window, context = self.chunk_frames, self.context_frames
        if not window or frames <= window + 2 * context:
            return run(0, frames)
        pieces = []
        for start in range(0, frames, window):
            a, b = max(start - context, 0), min(start + window + context, frames)
            keep_from, keep_to = (start - a) * scale, (min(start + window, frames) - a) * scale
            piece = run(a, b)
            pieces.append(np.take(piece, np.arange(keep_from, min(keep_to, piece.shape[axis])), axis=axis))
        return np.concatenate(pieces, axis=axis)

    def semantic_tokens(self, wav: np.ndarray, *, sample_rate: int | None = None) -> np.ndarray:
        """RVQ level 1, the level distilled towards HuBERT (linguistic content): int32 [T] or [B, T]."""
        return self.encode(wav, 1, sample_rate=sample_rate)[..., 0, :]

    def acoustic_tokens(self, wav: np.ndarray, *, sample_rate: int | None = None) -> np.ndarray:
        """RVQ levels 2..n_q, aligned to ECAPA-TDNN (timbre, prosody): int32 [n_q − 1, T] or [B, n_q − 1, T]."""
        return self.encode(wav, sample_rate=sample_rate)[..., 1:, :]

    def decode(self, codes: np.ndarray, num_samples: int | None = None) -> np.ndarray:
        """int [n_q', T] or [B, n_q', T] (the first n_q' ≤ n_q levels) → float32 [N] or [B, N], N = num_samples
        or T · hop_length."""
        codes = np.asarray(codes)
        single = codes.ndim == 2
        codes_bqt = codes[None] if single else codes
        if codes_bqt.ndim != 3 or not np.issubdtype(codes_bqt.dtype, np.integer):
            raise ValueError(f"expected integer codes [n_q, T] or [B, n_q, T], got {codes.dtype} {codes.shape}")
        if codes_bqt.size and (codes_bqt.min() < 0 or codes_bqt.max() >= self.codebook_size):
            raise ValueError(f"codes must be in 0..{self.codebook_size - 1}, got {codes_bqt.min()}..{codes_bqt.max()}")
        if codes_bqt.shape[1] > self.n_q:
            raise ValueError(f"codes have {codes_bqt.shape[1]} levels, the codec has {self.n_q}")
        t = codes_bqt.shape[2]
        wav = self._windowed(t, lambda a, b: self._decode_whole(codes_bqt[:, :, a:b]), axis=-1,
                             scale=self.hop_length)
        wav = wav[:, : (num_samples or t * self.hop_length)]
        return wav[0] if single else wav

    def _decode_whole(self, codes_bqt: np.ndarray) -> np.ndarray:
        levels, t = codes_bqt.shape[1:]
        frames_per_bucket = self.bucket // self.hop_length if self.bucket else 1
        t_padded = -(-t // frames_per_bucket) * frames_per_bucket
        # Fewer levels (a lower bitrate) are padded to n_q and masked by a traced count, so every bitrate shares
        # one compiled decoder per length bucket.
        padded = np.pad(codes_bqt.astype(np.int32), ((0, 0), (0, self.n_q - levels), (0, t_padded - t)))
        wav = self._decode(self._params, self._rest, padded, np.int32(levels))
        return np.asarray(wav)[:, : t * self.hop_length]

    def reconstruct(self, wav: np.ndarray, n_q: int | None = None, *, sample_rate: int | None = None) -> np.ndarray:
        """encode then decode, at the codec's rate, trimmed to the input's length there."""
        wav_bn, single = self._as_batch(wav, sample_rate)
        out = self.decode(self.encode(wav_bn, n_q), num_samples=wav_bn.shape[-1])
        return out[0] if single else out


def load(workdir: str | Path, step: int | str | None = None, **options) -> Tokenizer:
    """The codec of a training workdir (or its checkpoints/ folder) at `step`: None = latest, "best" = lowest
    validation mel loss, or a step number; or of a file written by `jaxcodec export` (config inside). `options`
    go to `Tokenizer` (bucket_seconds, chunk_seconds, context_seconds). Raises FileNotFoundError / ValueError
    with what to do."""
    from jaxcodec import workdir as workdir_lib

    _, codec, restored = workdir_lib.load_codec(workdir, step)
    return Tokenizer.from_codec(codec, step=restored, **options)
