"""The teachers by role, one interface, one registry.

The paper guides the codec with two frozen teachers, and what matters to training is their *role*, not which
model fills it:
- content (linguistic): frame features on the codec's 50 Hz grid, [ceil(N/320), dim], matched to RVQ level 1 by
  the semantic cosine. HuBERT in the paper; offline, PocketSphinx phone posteriorgrams.
- speaker (timbre, prosody): one utterance embedding [dim] (optionally frame features [ceil(N/320), frame_dim]),
  matched to levels 2..n_q by the acoustic KL. ECAPA-TDNN in the paper; offline, resemblyzer.
The shards store them under the role names (`content`, `speaker`, `speaker_frames`: jaxcodec.data.shards.format),
and the provenance describes each under its role, with the registry name that made it (`name`).

A teacher (the `Teacher` protocol) has its role and registry name, its dimensions, its provenance, `features`
for a batch of clips, and `calibrate`: what its role's loss needs measured on the training split of a finished
shard set (the speaker role: the KL's centring, scale and temperature, jaxcodec/data/shards/calibration.py; the
content role: nothing, its cosine is scale-free). Role base classes (`ContentTeacher`, `SpeakerTeacher`) carry
the role and its calibration. A new teacher is one module with a class on one of them and one line in REGISTRY.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from jaxcodec.data.shards.calibration import DEFAULT_TARGET_NATS, calibrate_shards
from jaxcodec.data.shards.format import CONTENT, SPEAKER
from teachers.errors import TeacherLoadError

if TYPE_CHECKING:
    from teachers.precompute import Options

ROLES = (CONTENT, SPEAKER)

# name → "module:class", per role; imported only when chosen (HuBERT needs transformers, ECAPA speechbrain).
REGISTRY: dict[str, dict[str, str]] = {
    CONTENT: {"hubert": "teachers.hubert:HubertTeacher", "phones": "teachers.phones:PhoneTeacher"},
    SPEAKER: {"ecapa": "teachers.ecapa:EcapaTeacher", "resemblyzer": "teachers.resemblyzer:ResemblyzerTeacher"},
}


class Teacher(Protocol):
    role: ClassVar[str]  # CONTENT or SPEAKER
    name: ClassVar[str]  # its REGISTRY name
    dim: int  # feature size per frame (content) or of the utterance embedding (speaker)
    frame_dim: int | None  # speaker frame features' size, or None

    @classmethod
    def from_options(cls, options: Options) -> Teacher: ...

    def provenance(self) -> dict: ...

    def features(self, wavs: list[np.ndarray], texts: list[str | None]) -> list[dict[str, np.ndarray]]:
        """One dict per clip (16 kHz mono float32), keyed by the role's shard fields."""

    @classmethod
    def calibrate(cls, reader: Any, target_nats: float) -> dict | None:
        """What the role's loss needs of a finished shard set's training split (a ShardReader), or None."""


class ContentTeacher:
    role: ClassVar[str] = CONTENT
    frame_dim: int | None = None

    @classmethod
    def calibrate(cls, reader: Any, target_nats: float = DEFAULT_TARGET_NATS) -> dict | None:
        return None  # the semantic cosine ignores scale and offset per frame: nothing to calibrate


class SpeakerTeacher:
    role: ClassVar[str] = SPEAKER

    @classmethod
    def calibrate(cls, reader: Any, target_nats: float = DEFAULT_TARGET_NATS) -> dict | None:
        return calibrate_shards(reader, target_nats)


def names(role: str) -> list[str]:
    return list(REGISTRY[role])


def teacher_class(role: str, name: str) -> type:
    """The class registered as `name` for `role`; TeacherLoadError for an unknown one."""
    if role not in REGISTRY:
        raise TeacherLoadError(f"unknown teacher role {role!r}: {', '.join(ROLES)}")
    if name not in REGISTRY[role]:
        raise TeacherLoadError(f"unknown {role} teacher {name!r}: {', '.join(REGISTRY[role])}")
    module, cls = REGISTRY[role][name].split(":")
    return getattr(importlib.import_module(module), cls)


def build(role: str, name: str, options: Options) -> Teacher:
    """The teacher registered as `name` for `role`, loaded with precompute's options."""
    return teacher_class(role, name).from_options(options)
