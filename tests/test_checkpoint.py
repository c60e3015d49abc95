"""sen.checkpoint: weights round-trip, the format version is checked, and damaged or hostile weight files are
refused with one line naming the file (library and CLI), never a traceback and never by running their code."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from sen.checkpoint import (
    CHECKPOINT_VERSION,
    MODELS_DIR,
    CheckpointError,
    load_model,
    resolve_model_path,
    save_model,
)
from sen.cli import main
from sen.model import SEN

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "nacl_rocksalt.cif"


class _Boom:
    def __reduce__(self):  # a pickle that would run a command when loaded without weights_only
        return (os.system, ("echo pwned > /tmp/sen_pwned",))


def _good(tmp_path: Path, small_config) -> Path:
    path = tmp_path / "good.pt"
    save_model(path, SEN(small_config).eval(), extra={"epoch": 1})
    return path


def _damaged(tmp_path: Path, small_config) -> dict[str, Path]:
    good = _good(tmp_path, small_config)
    data = good.read_bytes()
    payload = torch.load(good, weights_only=True)
    files = {}

    def write(name: str, content: bytes) -> None:
        files[name] = tmp_path / f"{name}.pt"
        files[name].write_bytes(content)

    def save(name: str, obj) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        write(name, buf.getvalue())

    write("empty", b"")
    write("truncated", data[: len(data) // 2])
    write("text", b"this is not a weights file\n")
    write("corrupt_pickle", pickle.dumps({"arch": "sen"})[:-3])
    save("a_list", [1, 2, 3])
    save("wrong_keys", {"arch": "sen", "version": CHECKPOINT_VERSION, "weights": {}})
    save("other_version", {**payload, "version": CHECKPOINT_VERSION + 1})
    save("wrong_shapes", {**payload, "state_dict": {k: v[..., :1] for k, v in payload["state_dict"].items()}})
    write("malicious_pickle", pickle.dumps(_Boom()))
    save("malicious_zip", {"arch": "sen", "version": CHECKPOINT_VERSION, "extra": _Boom()})  # torch's own format
    return files


def test_a_saved_network_round_trips(tmp_path, small_config):
    path = _good(tmp_path, small_config)
    model = load_model(path)
    assert isinstance(model, SEN) and model.extra == {"epoch": 1} and not model.training


@pytest.mark.parametrize(
    "name",
    ["empty", "truncated", "text", "corrupt_pickle", "a_list", "wrong_keys", "other_version", "wrong_shapes",
     "malicious_pickle", "malicious_zip"],
)  # fmt: skip
def test_damaged_weights_are_refused_in_one_line(tmp_path, small_config, capsys, name):
    Path("/tmp/sen_pwned").unlink(missing_ok=True)
    path = _damaged(tmp_path, small_config)[name]
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message and "Traceback" not in message
    assert main(["predict", str(EXAMPLE), "--model", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and path.name in err
    assert not Path("/tmp/sen_pwned").exists()  # nothing in the file was run


def test_another_version_says_which(tmp_path, small_config):
    path = _damaged(tmp_path, small_config)["other_version"]
    with pytest.raises(CheckpointError, match=f"version {CHECKPOINT_VERSION + 1}.*reads version {CHECKPOINT_VERSION}"):
        load_model(path)


def test_shipped_model_is_found_inside_the_package():
    path = resolve_model_path("sen_mp")
    assert path == MODELS_DIR / "sen_mp" / "model.pt" and path.is_file()
    assert MODELS_DIR.parent.name == "sen" or "SEN_MODELS_DIR" in os.environ
    with pytest.raises(FileNotFoundError, match="no model weights"):
        resolve_model_path("no_such_model")
