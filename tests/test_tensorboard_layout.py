"""The grid's TensorBoard layout: one chart per task, one layout however often a grid resumes."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata

from rltransfer.experiment.spec import as_spec
from rltransfer.experiment.tensorboard import write_layout


def _layouts(directory: Path) -> list[layout_pb2.Layout]:
    found = []
    for events in sorted(directory.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tensor in acc.Tensors(metadata.CONFIG_SUMMARY_TAG):
            layout = layout_pb2.Layout()
            layout.ParseFromString(tensor.tensor_proto.string_val[0])
            found.append(layout)
    return found


def test_one_layout_per_grid_however_often_it_is_written(tmp_path: Path) -> None:
    spec = as_spec({"name": "t", "family": "cartpole", "targets": ["long", "heavy"], "arms": ["scratch", "freeze"]})
    directory = write_layout(spec, tmp_path)
    (tmp_path / ".layout-killed").mkdir()  # a runner killed while writing it
    write_layout(spec, tmp_path)  # a resumed grid writes it again
    (layout,) = _layouts(directory)
    assert not list(tmp_path.glob(".layout-*"))
    charts = {c.title: [chart.title for chart in c.chart] for c in layout.category}
    assert charts == {
        "evaluation return per task (all arms)": ["long", "heavy"],
        "training episode return per task (all arms)": ["long", "heavy"],
    }
    (chart,) = [c for c in layout.category[0].chart if c.title == "heavy"]
    assert list(chart.multiline.tag) == [r"eval/heavy/(mean_return|ep_rew_mean)$"]
