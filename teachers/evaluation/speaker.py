"""Speaker embeddings of a list of audio files, for `jaxcodec eval` (which never imports torch itself).

    python -m teachers.evaluation.speaker --encoder resemblyzer|ecapa[:SOURCE] --list files.txt --out embeddings.npz

`files.txt` holds one audio path per line; the output is an npz with `embeddings` float32 [N, dim] in the list's
order (L2-normalised), `paths`, and `model` (what made them). A file that cannot be read gets a NaN row and its
reason in `errors`, never a crash. The npz is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from jaxcodec import atomic, audio
from jaxcodec.data.shards.format import SPEAKER_EMBEDDING
from teachers.evaluation.file_list import file_list_tool


def load_encoder(spec: str, device: str = "cpu"):
    """'resemblyzer' (offline, ships in its wheel), 'ecapa' (speechbrain/spkrec-ecapa-voxceleb) or
    'ecapa:SOURCE' (a hub id or local directory)."""
    kind, _, source = spec.partition(":")
    if kind == "resemblyzer":
        from teachers.resemblyzer import ResemblyzerTeacher

        return ResemblyzerTeacher(device=device), "resemblyzer"
    if kind == "ecapa":
        from teachers.ecapa import DEFAULT_ECAPA, EcapaTeacher

        teacher = EcapaTeacher(source or DEFAULT_ECAPA, device=device)
        return teacher, teacher.source
    raise ValueError(f"unknown speaker encoder {spec!r}: resemblyzer, ecapa or ecapa:SOURCE")


def embed_files(encoder, paths: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    rows, errors = [], {}
    for path in paths:
        try:
            wav, _ = audio.read(path)
            embedding = np.asarray(encoder([wav])[0][SPEAKER_EMBEDDING], np.float32)
            rows.append(embedding / max(float(np.linalg.norm(embedding)), 1e-12))
        except (audio.AudioError, ValueError, RuntimeError) as err:
            errors[path] = " ".join(str(err).split())
            rows.append(None)
    dim = next((len(r) for r in rows if r is not None), 1)
    return np.stack([r if r is not None else np.full(dim, np.nan, np.float32) for r in rows]), errors


def main(argv: list[str] | None = None) -> int:
    args, paths = file_list_tool("python -m teachers.evaluation.speaker", __doc__.splitlines()[0], ".npz", argv,
                                 lambda p: p.add_argument("--encoder", default="resemblyzer"))
    try:
        encoder, model = load_encoder(args.encoder, args.device)
    except Exception as err:  # a model that cannot load: one line for the caller to show
        print(f"speaker encoder {args.encoder}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    embeddings, errors = embed_files(encoder, paths)
    with atomic.replacing(args.out) as tmp, open(tmp, "wb") as f:
        np.savez(f, embeddings=embeddings, paths=np.array(paths), model=np.array(model),
                 errors=np.array(json.dumps(errors)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
