"""The shard format: where the PyTorch teachers (writers) and the JAX trainer (reader) meet. numpy, msgpack and
array_record only: no torch, no jax, no pickle.

A shard set is a directory:
- `shard-00000-of-00016.array_record` …: ArrayRecord files (group size 1, for random access), one record per
  utterance: a msgpack map whose numpy arrays are maps {"__array__": dtype, "shape": [...], "data": bytes}
  (little-endian) and whose other values are plain strings and numbers.
- `shard-00000-of-00016.json` …: one part-index per shard, written after its shard file is complete and renamed.
  The part is the shard's commit marker: a shard file without its part is an interrupted write and is redone.
  It holds the shard's sha256, record count, per-record ids/splits/lengths, rejected utterances with their
  reasons, field dtypes and shapes, and the teachers' provenance.
- `index.json`: the merge of all parts (written once every part exists) and `rejects.jsonl`, every utterance of
  the manifest that is in no shard, with its reason.

The modules, by idea: `errors` (ShardError), `format` (names, record encoding, field specs), `writer` (one shard's
write and commit), `locks` (a writing run's locks), `driver` (the loop that writes a set, shared by `jaxcodec
precompute` and `jaxcodec tokenize`), `index` (parts, merge, index.json), `reader` (ShardReader), `provenance` (what
a set's teachers imply), `calibration` (the speaker teacher's, computed when a set is merged) and `verify`. This
package re-exports the names its users call: the shard set is one contract for many modules and tests
(`shards.ShardReader`, `shards.ShardError`, `shards.verify`, …), which need not know which module holds what; the
rest is reached through its module.
"""

from jaxcodec.data.shards.driver import (
    ShardPlan,
    assign,
    check_existing,
    merge_when_complete,
    plan,
    select,
    write_planned,
    write_shard,
)
from jaxcodec.data.shards.errors import ShardError, error_line
from jaxcodec.data.shards.format import (
    ARRAY_KEY,
    CONTENT,
    INDEX_NAME,
    REJECTS_NAME,
    SPEAKER,
    SPEAKER_EMBEDDING,
    SPEAKER_FRAMES,
    WRITER_OPTIONS,
    decode_record,
    encode_record,
    sha256_file,
    shard_name,
)
from jaxcodec.data.shards.index import load_index, merge_index, read_part, shard_count
from jaxcodec.data.shards.locks import writing
from jaxcodec.data.shards.provenance import (
    by_role,
    config_overrides,
    describe_teachers,
    speaker_calibration,
)
from jaxcodec.data.shards.reader import Requirement, ShardReader
from jaxcodec.data.shards.verify import verify
from jaxcodec.data.shards.writer import ShardWriter, remove_stale_temporaries

__all__ = ["ARRAY_KEY", "CONTENT", "INDEX_NAME", "REJECTS_NAME", "SPEAKER", "SPEAKER_EMBEDDING", "SPEAKER_FRAMES",
           "WRITER_OPTIONS", "Requirement", "ShardError", "ShardPlan", "ShardReader", "ShardWriter",
           "assign", "by_role", "check_existing", "config_overrides", "decode_record", "speaker_calibration",
           "describe_teachers", "encode_record", "error_line", "load_index", "merge_index", "merge_when_complete",
           "plan", "read_part", "remove_stale_temporaries", "select", "sha256_file", "shard_count", "shard_name",
           "verify", "write_planned", "write_shard", "writing"]
