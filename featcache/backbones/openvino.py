"""The OpenVINO runtime: the frozen base converted once to OpenVINO IR, run in float32 or bfloat16.

The conversion (which needs TensorFlow) is cached under ``$FEATCACHE_HOME/openvino/<key>/`` (default
``~/.cache/featcache``), keyed by the weights, the image size and the OpenVINO version, so later
runs load the IR without importing TensorFlow. The IR takes uint8 pixels and applies the base's
``preprocess_input`` itself; its weights stay float32 on disk. With the bf16 hint only the CPU's
arithmetic drops to bfloat16 (fast where the CPU has AVX-512 BF16 or AMX, emulated and slow
elsewhere); with f32 every element of the vectors is within 2e-5 of TensorFlow's (at most 1.4e-5 on
the 341 validation images of the clothing dataset at 150 px, elements up to 5.4).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from featcache.backbones.keras_app import KerasBackbone
from featcache.backbones.protocol import Embedder
from featcache.backbones.registry import TORCH_MEAN, TORCH_STD
from featcache.errors import ConfigError, FeatcacheError
from featcache.hashing import json_sha256

log = logging.getLogger(__name__)

HOME_ENV = "FEATCACHE_HOME"
MODEL_XML = "xception_gap.xml"
CONVERSION_VERSION = 1  # bump when the conversion below changes what the IR computes
INFERENCE_PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
INSTALL_HINT = "pip install 'featcache[openvino]'"


def require_openvino(precision: str) -> None:
    """ConfigError naming the install command when OpenVINO is not importable; imports nothing."""
    if importlib.util.find_spec("openvino") is None:
        raise ConfigError(
            f"runtime openvino (precision {precision}) needs OpenVINO, which is not installed; run {INSTALL_HINT}"
        )


def featcache_home() -> Path:
    """``$FEATCACHE_HOME``, else ``$XDG_CACHE_HOME/featcache``, else ``~/.cache/featcache``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "featcache"


class OpenVinoBackbone:
    """``base`` (a :class:`KerasBackbone`) run by OpenVINO's CPU plugin at ``precision`` (float32, bfloat16).

    ``cache_dir`` holds converted models (default ``featcache_home() / "openvino"``).
    """

    def __init__(self, base: KerasBackbone, precision: str = "bfloat16", cache_dir: Path | None = None):
        self.base = base
        self.precision = precision
        self.cache_dir = cache_dir

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def dim(self) -> int:
        return self.base.dim

    def identity(self) -> dict:
        """The base model's identity plus the runtime and its arithmetic; no import of OpenVINO."""
        return {
            **self.base.identity(),
            "runtime": "openvino",
            "inference_precision": INFERENCE_PRECISIONS[self.precision],
        }

    def build(self) -> Embedder:
        """A function from uint8 pixels (n, s, s, 3) to float32 vectors (n, dim)."""
        import openvino as ov

        core = ov.Core()
        hint = INFERENCE_PRECISIONS[self.precision]
        if hint == "bf16":
            _warn_without_native_bf16(core)
        compiled = core.compile_model(str(self.converted()), "CPU", {"INFERENCE_PRECISION_HINT": hint})
        request = compiled.create_infer_request()

        def embed(batch: np.ndarray) -> np.ndarray:
            pixels = np.ascontiguousarray(batch, dtype=np.uint8)
            # The output tensor is reused by the next call: copy it out.
            return np.array(request.infer({0: pixels})[0], dtype=np.float32, copy=True)

        return embed

    def converted(self) -> Path:
        """The IR of the model, converting and caching it on first use."""
        folder = Path(self.cache_dir or featcache_home() / "openvino") / self._key()
        xml = folder / MODEL_XML
        if xml.is_file() and xml.with_suffix(".bin").is_file():
            return xml
        log.info("converting %s to OpenVINO IR in %s (once)", self.base.spec.application, folder)
        try:
            _convert(self.base, folder)
        except FeatcacheError:
            raise
        except Exception as exc:  # the converter raises many types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(
                f"OpenVINO could not convert the Keras model ({reason}); use --runtime tensorflow --precision float32"
            ) from None
        return xml

    def _key(self) -> str:
        import openvino as ov

        fields = {
            "identity": self.base.identity(),
            "image_size": self.base.image_size,
            "openvino": ov.get_version(),
            "conversion": CONVERSION_VERSION,
        }
        return json_sha256(fields)[:24]


def _convert(base: KerasBackbone, folder: Path) -> None:
    """Write ``folder/MODEL_XML`` (+ .bin) atomically: uint8 pixels in, pooled float32 vectors out."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    size = base.image_size
    with warnings.catch_warnings():  # the converter calls the model with a list of one tensor
        warnings.filterwarnings("ignore", message="The structure of `inputs`", category=UserWarning)
        model = ov.convert_model(base.build_model(), input=[(-1, size, size, 3)])
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8)
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    if base.spec.scaling == "tf":  # preprocess_input: x / 127.5 - 1 == (x - 127.5) / 127.5
        steps.mean(127.5).scale(127.5)
    elif base.spec.scaling == "torch":  # (x / 255 - mean) / std == (x - 255 mean) / (255 std)
        steps.mean([255 * m for m in TORCH_MEAN]).scale([255 * s for s in TORCH_STD])
    model = ppp.build()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        ov.save_model(model, str(tmp / MODEL_XML), compress_to_fp16=False)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same conversion first
            if not (folder / MODEL_XML).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _warn_without_native_bf16(core) -> None:
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        log.warning(
            "this CPU has no native bfloat16 arithmetic (AVX-512 BF16 or AMX); OpenVINO emulates it, "
            "which is slower than float32 — use --precision float32 on this machine"
        )
