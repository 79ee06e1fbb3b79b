#!/usr/bin/env python3
"""TensorBoard event files, read and written by the reference implementations.

Two jobs:
  make-fixture OUT_DIR   writes test/fixtures/tensorboard/: an event file from
                         torch.utils.tensorboard.SummaryWriter with known scalars (expected.json
                         lists them), the file test/log/tensorboard.test.ts decodes and compares
                         sft's writer against.
  read PATH              reads an event file, or every event file under a folder, with
                         TensorBoard's own code and prints JSON: the records (CRC-checked by
                         TensorBoard's record reader; any corruption raises), the scalars
                         TensorBoard's EventAccumulator sees, and the runs its EventMultiplexer
                         finds in a log folder (what `tensorboard --logdir` shows).

Readers used (no TensorFlow installed): tensorboard 2.21's stub record reader
(tensorboard.compat.tensorflow_stub.pywrap_tensorflow.PyRecordReader_New: checks both masked
CRC32Cs of every record), tensorboard.compat.proto.event_pb2 to parse each Event, and
tensorboard.backend.event_processing.{event_accumulator,event_multiplexer}.

Recreate the venv:
  python3 -m venv .venv-ref && .venv-ref/bin/pip install --index-url file:///opt/pypi/simple \
      --extra-index-url file:///opt/pypi-more/simple torch transformers peft safetensors \
      sentencepiece protobuf tensorboard
Run:
  .venv-ref/bin/python scripts/reference/read_tfevents.py make-fixture test/fixtures/tensorboard
  .venv-ref/bin/python scripts/reference/read_tfevents.py read output/run/runs
"""
import glob
import json
import os
import shutil
import sys
import tempfile

# The fixture's scalars: (tag, step, value, wall_time). Steps cover 1-, 2- and 3-byte varints;
# values include ones float32 cannot hold exactly, zero, a negative and a large number.
FIXTURE_SCALARS = [
    ("train/loss", 1, 2.3456, 1700000001.25),
    ("train/learning_rate", 1, 1e-4, 1700000001.25),
    ("train/grad_norm", 1, 0.0, 1700000001.25),
    ("train/epoch", 1, 0.01, 1700000001.25),
    ("train/loss", 150, 1.0, 1700000150.5),
    ("train/learning_rate", 150, 5.5e-5, 1700000150.5),
    ("train/grad_norm", 150, -3.75, 1700000150.5),
    ("train/loss", 100000, 0.123456789, 1700100000.0),
    ("train/train_runtime", 100000, 123456.789, 1700100000.0),
]


def make_fixture(out_dir):
    from torch.utils.tensorboard import SummaryWriter

    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp()
    w = SummaryWriter(log_dir=tmp)
    for tag, step, value, wall in FIXTURE_SCALARS:
        w.add_scalar(tag, value, step, walltime=wall)
    w.close()
    (path,) = glob.glob(os.path.join(tmp, "events.out.tfevents.*"))
    # A fixed name: the real one holds the time, host and pid of the machine that wrote it.
    shutil.copyfile(path, os.path.join(out_dir, "torch.tfevents"))
    shutil.rmtree(tmp)
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(
            {
                "writer": "torch.utils.tensorboard.SummaryWriter (torch %s)" % __import__("torch").__version__,
                "scalars": [{"tag": t, "step": s, "value": v, "wall_time": w} for t, s, v, w in FIXTURE_SCALARS],
            },
            f,
            indent=1,
        )
        f.write("\n")
    print(json.dumps(read_file(os.path.join(out_dir, "torch.tfevents")), indent=1))


def read_records(path):
    """Every record's bytes, through TensorBoard's CRC-checking reader; raises on corruption."""
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow

    reader = pywrap_tensorflow.PyRecordReader_New(path.encode())
    out = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return out
        out.append(reader.record())


def read_file(path):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.backend.event_processing import event_accumulator

    events = []
    for raw in read_records(path):
        e = event_pb2.Event.FromString(raw)
        if e.SerializeToString() != raw:
            raise ValueError("%s: an event does not re-serialize to the same bytes" % path)
        d = {"wall_time": e.wall_time, "step": e.step, "what": e.WhichOneof("what")}
        if d["what"] == "file_version":
            d["file_version"] = e.file_version
        if d["what"] == "summary":
            d["values"] = [{"tag": v.tag, "simple_value": v.simple_value, "kind": v.WhichOneof("value")} for v in e.summary.value]
        events.append(d)
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    scalars = {
        tag: [{"step": s.step, "value": s.value, "wall_time": s.wall_time} for s in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
    }
    return {"path": path, "records": len(events), "events": events, "scalars": scalars}


def read(target):
    from tensorboard.backend.event_processing import event_multiplexer

    if os.path.isfile(target):
        print(json.dumps({"files": [read_file(target)]}, indent=1))
        return
    files = sorted(glob.glob(os.path.join(target, "**", "*tfevents*"), recursive=True))
    if not files:
        raise SystemExit("%s: no event files" % target)
    mux = event_multiplexer.EventMultiplexer(size_guidance={"scalars": 0})
    mux.AddRunsFromDirectory(target)
    mux.Reload()
    runs = {run: tags["scalars"] for run, tags in mux.Runs().items()}
    print(json.dumps({"files": [read_file(f) for f in files], "runs": runs}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make-fixture":
        make_fixture(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "read":
        read(sys.argv[2])
    else:
        raise SystemExit(__doc__)
